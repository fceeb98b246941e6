package ratelimit_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/ratelimit"
)

// failoverWorld is a master, its replica, and clients that dial whichever
// of the two is "the master" for them now, as a Sentinel-aware client does
// once Sentinel announces the switch.
type failoverWorld struct {
	t              *testing.T
	master, spare  *redistest.Server
	target         atomic.Pointer[string]
	cfg            ratelimit.Config
	limiters       []*ratelimit.Limiter
	clients        []*redis.Client
	restored       chan int // leases the keepers put back, per pass that put any
	cleanPasses    chan struct{}
	keeperFailures atomic.Int64
}

func newFailoverWorld(t *testing.T, lim ratelimit.Limit) *failoverWorld {
	t.Helper()
	w := &failoverWorld{t: t, restored: make(chan int, 64), cleanPasses: make(chan struct{}, 1)}
	w.master = redistest.StartServer(t)
	w.spare = redistest.StartReplica(t, w.master)
	addr := w.master.Addr()
	w.target.Store(&addr)
	w.cfg = ratelimit.Config{
		Default:        lim,
		FailoverSettle: 6 * time.Second,
		LeaseKeepEvery: 50 * time.Millisecond,
	}
	return w
}

// limiter is one worker process's limiter on a client of its own.
func (w *failoverWorld) limiter() *ratelimit.Limiter {
	w.t.Helper()
	rdb := redis.NewClient(&redis.Options{
		Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, *w.target.Load())
		},
		MaxRetries: 3,
	})
	w.t.Cleanup(func() { _ = rdb.Close() })
	l, err := ratelimit.New(rdb, w.cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	ratelimit.OnKeep(l, func(back int, err error) {
		if err != nil {
			w.keeperFailures.Add(1)
		} else {
			select {
			case w.cleanPasses <- struct{}{}:
			default:
			}
		}
		if back > 0 {
			w.restored <- back
		}
	})
	w.limiters = append(w.limiters, l)
	w.clients = append(w.clients, rdb)
	return l
}

// switchOver points every client at the promoted replica and closes their
// connections to the old master, as a client that hears of the switch does.
func (w *failoverWorld) switchOver() {
	w.t.Helper()
	addr := w.spare.Addr()
	w.target.Store(&addr)
	c := w.master.Client(w.t)
	if err := c.Do(context.Background(), "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		w.t.Fatalf("CLIENT KILL on the old master: %v", err)
	}
}

// replicate waits until the replica has every write the master took.
func (w *failoverWorld) replicate() {
	w.t.Helper()
	c := w.master.Client(w.t)
	n, err := c.Do(context.Background(), "WAIT", 1, 10000).Int()
	if err != nil || n != 1 {
		w.t.Fatalf("WAIT 1 = %d, %v; want the replica to acknowledge", n, err)
	}
}

// advance moves every limiter's clock on together.
func (w *failoverWorld) advance(d time.Duration) {
	for _, l := range w.limiters {
		ratelimit.Advance(l, d)
	}
}

// A lease written to the old master after the replica was promoted is
// lost with it. Without the fence the new master would count one session
// fewer and admit one beyond the cap; with it nothing is admitted for the
// settle time, the holder's keeper puts the lease back, and the cap holds.
func TestFailoverKeepsSessionCap(t *testing.T) {
	t.Parallel()
	w := newFailoverWorld(t, ratelimit.Limit{Rate: 1_000_000, Per: time.Second, Burst: 1_000_000, Sessions: 2})
	first, second, third := w.limiter(), w.limiter(), w.limiter()
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}

	held := acquire(t, first, req)
	w.replicate()
	w.spare.Promote(t)
	// Two masters now: the old one still takes this lease, and the new one
	// will never see it.
	lost := acquire(t, second, req)
	deny(t, third, req, ratelimit.ReasonSessions) // the cap, on the old master
	w.switchOver()

	spare := w.spare.Client(t)
	d := deny(t, third, req, ratelimit.ReasonFailover)
	if d.RetryIn <= 0 || d.RetryIn > w.cfg.FailoverSettle {
		t.Errorf("failover denial RetryIn = %v; want within the settle time %v", d.RetryIn, w.cfg.FailoverSettle)
	}

	// The second limiter's keeper puts its lost lease back on the new master.
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	select {
	case n := <-w.restored:
		if n != 1 {
			t.Fatalf("keeper put back %d leases; want 1", n)
		}
	case <-timeout.C:
		t.Fatalf("no keeper put the lost lease back (keeper errors: %d)", w.keeperFailures.Load())
	}
	ses, err := spare.ZRange(ctx, findSesKey(t, spare, "mx.example.com"), 0, -1).Result()
	if err != nil || len(ses) != 2 {
		t.Fatalf("leases on the new master = %v, %v; want the two held", ses, err)
	}

	// After the settle time the cap counts both leases again.
	w.advance(w.cfg.FailoverSettle + time.Millisecond)
	deny(t, third, req, ratelimit.ReasonSessions)
	if err := lost.Release(ctx); err != nil {
		t.Fatalf("Release of the restored lease: %v", err)
	}
	acquire(t, third, req)
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A failover that lost nothing costs only the settle time; a released
// lease is not put back by the keeper.
func TestFailoverSettlesThenAdmits(t *testing.T) {
	t.Parallel()
	w := newFailoverWorld(t, ratelimit.Limit{Rate: 1_000_000, Per: time.Second, Burst: 1_000_000, Sessions: 2})
	a, b := w.limiter(), w.limiter()
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	held := acquire(t, a, req)
	gone := acquire(t, a, ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx2.example.com"})
	if err := gone.Release(ctx); err != nil {
		t.Fatal(err)
	}
	w.replicate()
	w.spare.Promote(t)
	w.switchOver()

	deny(t, b, req, ratelimit.ReasonFailover)
	// A pair whose keys were never on the old master is not held up.
	acquire(t, b, ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.other.example"})

	w.advance(w.cfg.FailoverSettle + time.Millisecond)
	acquire(t, b, req) // cap 2: the held lease and this one
	deny(t, b, req, ratelimit.ReasonSessions)
	spare := w.spare.Client(t)
	if n, err := spare.Exists(ctx, findSesKey(t, spare, "mx2.example.com")).Result(); err != nil || n != 0 {
		t.Errorf("released lease's key on the new master: exists=%d, %v; want gone", n, err)
	}
	// Two keeper passes without error after the switch: the second began
	// after it, on the new master.
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	for range 2 {
		select {
		case <-w.cleanPasses:
		case <-timeout.C:
			t.Fatalf("no keeper pass succeeded on the new master (keeper errors: %d)", w.keeperFailures.Load())
		}
	}
	select {
	case n := <-w.restored:
		t.Errorf("keeper put back %d leases after a failover that lost none", n)
	default:
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// findSesKey returns the session-lease key of mx on c, or "" (a key that
// does not exist).
func findSesKey(t *testing.T, c *redis.Client, mx string) string {
	t.Helper()
	keys, err := c.Keys(context.Background(), "*:ses:"+mx).Result()
	if err != nil {
		t.Fatal(err)
	}
	switch len(keys) {
	case 0:
		return "no-such-key"
	case 1:
		return keys[0]
	}
	t.Fatalf("several session keys for %s: %v", mx, keys)
	return ""
}

// The embedded in-process Redis (miniredis, what serve runs without
// --redis-url) cannot run INFO inside a script: the limiter works there
// without a fence, and its keeper's passes succeed.
func TestEmbeddedRedisWithoutReplicationID(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	l, err := ratelimit.New(rdb, ratelimit.Config{Default: ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 100, Sessions: 1},
		LeaseKeepEvery: 10 * time.Millisecond, FailoverSettle: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	passes := make(chan error, 1)
	ratelimit.OnKeep(l, func(_ int, err error) {
		select {
		case passes <- err:
		default:
		}
	})
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	le := acquire(t, l, req)
	deny(t, l, req, ratelimit.ReasonSessions)
	if err := <-passes; err != nil {
		t.Fatalf("keeper pass on the embedded Redis: %v", err)
	}
	if err := le.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	acquire(t, l, req)
}
