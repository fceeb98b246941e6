package redisconn

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
)

// A cluster client reloads its slot map when a command fails on the
// network (its master died), at most once per window (a second), and every
// 5 s anyway.
func TestClusterClientReloadsOnNetworkErrors(t *testing.T) {
	t.Parallel()
	srv := redistest.StartCluster(t)
	c, h := newClusterClientHook(&redis.ClusterOptions{Addrs: []string{srv.Addr()}, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if n := h.reload.Load(); n != 0 {
		t.Fatalf("%d reloads before any error", n)
	}
	h.every = time.Hour // the failed commands below take seconds: count one window
	srv.Kill(t)
	for range 5 {
		_ = c.Get(ctx, "k").Err()
	}
	if n := h.reload.Load(); n != 1 {
		t.Errorf("%d reloads after 5 failed commands in one window, want 1", n)
	}
	if got := c.Options().ClusterStateReloadInterval; got != 5*time.Second {
		t.Errorf("ClusterStateReloadInterval %s, want 5s", got)
	}
}

// A master of a 3-master cluster is killed: once its replica is promoted,
// mxprobe's cluster client writes to that master's slots again within
// seconds (go-redis alone: up to its 60 s reload interval).
func TestClusterFailoverRecoversInSeconds(t *testing.T) {
	t.Parallel()
	c := redistest.StartClusterN(t, 3, time.Second)
	cc := NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), MaxRetries: 1, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { cc.Close() })
	ctx := context.Background()
	// A key in the first master's slots (0–5460).
	key := ""
	for i := 0; key == ""; i++ {
		k := "k" + strconv.Itoa(i)
		slot, err := cc.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if slot < 5461 {
			key = k
		}
	}
	if err := cc.Set(ctx, key, "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	promoted := c.PromotedAfter(0)
	killed := time.Now()
	c.Masters[0].Kill(t)
	var at time.Time
	select {
	case <-promoted:
		at = time.Now()
	case <-time.After(30 * time.Second):
		t.Fatal("the replica was not promoted")
	}
	for {
		err := cc.Set(ctx, key, "after", 0).Err()
		if err == nil {
			break
		}
		if time.Since(at) > 10*time.Second {
			t.Fatalf("still failing %s after the promotion: %v", time.Since(at).Round(time.Millisecond), err)
		}
	}
	back := time.Since(at)
	t.Logf("master killed; replica promoted after %s; writes to its slots again %s after the promotion",
		at.Sub(killed).Round(time.Millisecond), back.Round(time.Millisecond))
	if back > 5*time.Second {
		t.Errorf("writes came back %s after the promotion, want within 5 s", back)
	}
}

func TestMain(m *testing.M) { redistest.Main(m) }
