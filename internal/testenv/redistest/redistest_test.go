package redistest_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestClientAndPrefix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.Client(t)
	if os.Getenv(redistest.EnvURL) == "" && !strings.HasPrefix(redistest.URL(t), "redis://127.0.0.1:") {
		t.Fatalf("URL = %q; want a private loopback server", redistest.URL(t))
	}
	p1, p2 := redistest.Prefix(t), redistest.Prefix(t)
	if p1 == p2 {
		t.Fatalf("Prefix returned %q twice", p1)
	}
	if strings.ContainsAny(p1, "{}*?[]") {
		t.Fatalf("Prefix %q has hash-tag or glob characters", p1)
	}
	if err := c.Set(ctx, p1+"k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, p1+"k").Result(); err != nil || got != "v" {
		t.Fatalf("Get = %q, %v; want v", got, err)
	}
}

func TestPrefixCleanup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var key string
	t.Run("inner", func(t *testing.T) {
		key = redistest.Prefix(t) + "k"
		if err := redistest.Client(t).Set(ctx, key, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
	n, err := redistest.Client(t).Exists(ctx, key).Result()
	if err != nil || n != 0 {
		t.Fatalf("key %q after cleanup: exists=%d err=%v; want 0", key, n, err)
	}
}

func TestServerKillRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := redistest.StartServer(t)
	c := s.Client(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Kill(t)
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("Ping after Kill succeeded")
	}
	s.Restart(t)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("Ping after Restart: %v", err)
	}
	if n, _ := c.Exists(ctx, "k").Result(); n != 0 {
		t.Fatal("data survived a restart with persistence off")
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := redistest.StartCluster(t)
	c := s.ClusterClient(t)
	if err := c.Set(ctx, "{a}x", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Cluster rules are enforced: keys of one script must share a slot.
	err := c.Eval(ctx, "return redis.call('MGET', KEYS[1], KEYS[2])", []string{"a", "b"}).Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("cross-slot script: %v; want CROSSSLOT", err)
	}
	if err := c.Eval(ctx, "return redis.call('MGET', KEYS[1], KEYS[2])", []string{"{a}x", "{a}y"}).Err(); err != nil {
		t.Fatalf("same-slot script: %v", err)
	}
}

// Counter: a command is one round trip, a pipeline of three is one round
// trip and three commands, and a new connection's handshake is neither.
func TestCounter(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	var c redistest.Counter
	rdb.AddHook(&c)
	ctx := context.Background()
	key := redistest.Prefix(t) + "k"
	if err := rdb.Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	pipe := rdb.Pipeline()
	pipe.Get(ctx, key)
	pipe.Get(ctx, key)
	pipe.Del(ctx, key)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if rt, n := c.RoundTrips(), c.Commands(); rt != 2 || n != 4 {
		t.Errorf("round trips %d, commands %d; want 2 and 4", rt, n)
	}
}
