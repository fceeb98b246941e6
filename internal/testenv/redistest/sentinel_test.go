package redistest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
)

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	for _, kill := range []bool{false, true} {
		name := "graceful"
		if kill {
			name = "kill"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := redistest.StartSentinel(t)
			c := d.FailoverClient(t, nil)
			ctx := context.Background()
			if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if err := d.Master.Client(t).Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
				t.Fatal(err)
			}
			switched := d.Switched()
			start := time.Now()
			if kill {
				d.Master.Kill(t)
			} else {
				d.Failover(t)
			}
			select {
			case <-switched:
			case <-time.After(30 * time.Second):
				t.Fatal("no +switch-master")
			}
			t.Logf("%s: new master announced %.1f s after the failover began", name, time.Since(start).Seconds())
			// During a graceful failover the old master takes writes until
			// the sentinels demote it, and the client follows once it hears
			// +switch-master: the write that counts is one the new master has.
			newMaster := d.Replica.Client(t)
			for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				err := c.Set(ctx, "k", "after", 0).Err()
				if err == nil && newMaster.Get(ctx, "k").Val() == "after" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("writes through the failover client do not reach the new master: %v", err)
				}
			}
			t.Logf("%s: writes reach the new master %.1f s after the failover began", name, time.Since(start).Seconds())
			if info := newMaster.Info(ctx, "replication").Val(); !strings.Contains(info, "role:master") {
				t.Fatalf("the replica was not promoted:\n%s", info)
			}
		})
	}
}
