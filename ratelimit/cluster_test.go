package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/ratelimit"
)

// TestRedisCluster runs every operation on a Redis Cluster node, which
// refuses any script whose keys lie in different slots (CROSSSLOT): the hash
// tags must put each pair's keys in one slot.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	srv := redistest.StartCluster(t)
	l, err := ratelimit.New(srv.ClusterClient(t), ratelimit.Config{
		Default: ratelimit.Limit{Rate: 1, Per: time.Minute, Burst: 1, Sessions: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	le := acquire(t, l, req)
	if err := le.Extend(ctx); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	deny(t, l, req, ratelimit.ReasonSessions)
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
	d := deny(t, l, req, ratelimit.ReasonRate)
	ratelimit.Advance(l, d.RetryIn)
	acquire(t, l, ratelimit.Request{Egress: req.Egress, MXHost: req.MXHost, Reservation: d.Reservation})
	for _, p := range []struct{ egress, group string }{{"192.0.2.1", "example.com"}, {"192.0.2.2", "google.com"}, {"192.0.2.3", "yahoodns.net"}} {
		if _, err := l.CoolDown(ctx, p.egress, p.group, "421 4.7.0"); err != nil {
			t.Fatalf("CoolDown %v: %v", p, err)
		}
	}
	deny(t, l, req, ratelimit.ReasonCoolDown)
	ps, err := l.Paused(ctx)
	if err != nil || len(ps) != 3 {
		t.Fatalf("Paused = %+v, %v; want 3 pauses", ps, err)
	}
	if err := l.Resume(ctx, "192.0.2.2", "google.com"); err != nil {
		t.Fatal(err)
	}
	if ps, err := l.Paused(ctx); err != nil || len(ps) != 2 {
		t.Fatalf("Paused after Resume = %+v, %v; want 2", ps, err)
	}
}
