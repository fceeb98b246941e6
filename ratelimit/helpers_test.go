package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/ratelimit"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// fast is a limit high enough that rate never denies, for tests about
// sessions and cool-downs.
var fast = ratelimit.Limit{Rate: 1_000_000, Per: time.Second, Burst: 1_000_000, Sessions: 2}

// testBundle is one test's world: a prefix of its own on the package's
// Redis and a Config for the limiters it creates.
type testBundle struct {
	t      *testing.T
	cfg    ratelimit.Config
	prefix string
}

func setup(t *testing.T, cfg ratelimit.Config) *testBundle {
	t.Helper()
	cfg.Prefix = redistest.Prefix(t)
	return &testBundle{t: t, cfg: cfg, prefix: cfg.Prefix}
}

// limiter returns a limiter on its own Redis client, as another worker
// process would have.
func (b *testBundle) limiter() *ratelimit.Limiter {
	b.t.Helper()
	l, err := ratelimit.New(redistest.Client(b.t), b.cfg)
	if err != nil {
		b.t.Fatalf("New: %v", err)
	}
	return l
}

// countedLimiter is limiter with a counter of the commands its client
// sends.
func (b *testBundle) countedLimiter() (*ratelimit.Limiter, *cmdCounter) {
	b.t.Helper()
	counter := &cmdCounter{}
	rdb := redistest.Client(b.t)
	rdb.AddHook(counter)
	l, err := ratelimit.New(rdb, b.cfg)
	if err != nil {
		b.t.Fatalf("New: %v", err)
	}
	return l, counter
}

// acquire expects a lease.
func acquire(t *testing.T, l *ratelimit.Limiter, req ratelimit.Request) *ratelimit.Lease {
	t.Helper()
	le, err := l.Acquire(context.Background(), req)
	if err != nil {
		t.Fatalf("Acquire(%+v) = %v; want a lease", req, err)
	}
	return le
}

// deny expects a denial for reason.
func deny(t *testing.T, l *ratelimit.Limiter, req ratelimit.Request, reason string) *ratelimit.DeniedError {
	t.Helper()
	le, err := l.Acquire(context.Background(), req)
	var d *ratelimit.DeniedError
	if !errors.As(err, &d) {
		t.Fatalf("Acquire(%+v) = %v, %v; want *DeniedError(%s)", req, le, err, reason)
	}
	if !errors.Is(err, ratelimit.ErrDenied) {
		t.Fatalf("errors.Is(%v, ErrDenied) = false", err)
	}
	if le != nil {
		t.Fatalf("Acquire returned both a lease and %v", err)
	}
	if d.Reason != reason {
		t.Fatalf("Acquire(%+v) denied for %q (%v); want %q", req, d.Reason, d, reason)
	}
	return d
}

// redisNow reads Redis's clock, the one the limiter uses.
func redisNow(t *testing.T, c *redis.Client) time.Time {
	t.Helper()
	now, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return now
}

// cmdCounter is a go-redis hook counting the commands that reach the wire,
// pipelined ones included: the round-trip count of the tests and benchmark.
// The handshake of a new connection (HELLO, CLIENT SETINFO…) also passes
// through hooks; it is per connection, not per Acquire, so it is not counted.
type cmdCounter struct{ n atomic.Int64 }

func (c *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.count(cmd)
		return next(ctx, cmd)
	}
}

func (c *cmdCounter) count(cmd redis.Cmder) {
	switch cmd.Name() {
	case "hello", "client", "auth", "select":
	default:
		c.n.Add(1)
	}
}
func (c *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			c.count(cmd)
		}
		return next(ctx, cmds)
	}
}

// recorder is a Metrics that remembers events.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}
func (r *recorder) Acquired(_, g string, reserved bool) {
	if reserved {
		r.add("acquired-reserved " + g)
		return
	}
	r.add("acquired " + g)
}
func (r *recorder) Denied(_, g, reason string)                     { r.add("denied " + reason + " " + g) }
func (r *recorder) Reserved(_, g string, _ time.Duration)          { r.add("reserved " + g) }
func (r *recorder) CoolDownOpened(_, g, _ string, _ time.Duration) { r.add("cooldown " + g) }
func (r *recorder) LeasesRestored(n int)                           { r.add(fmt.Sprintf("restored %d", n)) }
func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}
