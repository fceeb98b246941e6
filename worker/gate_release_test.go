package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/validator"
)

// A release that fails (Redis unreachable for a moment) is retried in the
// background within about a second, so the session place is free again at
// once instead of after the lease's TTL (minutes).
func TestFailedLeaseReleaseIsRetried(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	cfg := ratelimit.DefaultConfig()
	cfg.Prefix = redistest.Prefix(t)
	cfg.Default = ratelimit.Limit{Rate: 100, Per: time.Second, Burst: 10, Sessions: 1}
	l, err := ratelimit.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGate(l, "test", nil)
	var fails atomic.Int32
	fails.Store(3)
	real := g.releaseLease
	g.releaseLease = func(ctx context.Context, lease *ratelimit.Lease) error {
		if fails.Add(-1) >= 0 {
			return errors.New("dial tcp: connection refused")
		}
		return real(ctx, lease)
	}
	retried := make(chan error, 1)
	g.onRetried = func(err error) { retried <- err }
	ctx := context.Background()
	host := validator.MXHost{Name: "mx.example.test"}
	adm, err := g.Admit(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(ctx, host); !errors.Is(err, ratelimit.ErrDenied) {
		t.Fatalf("second session while one is open: %v, want a sessions denial", err)
	}
	start := time.Now()
	adm.Done()
	select {
	case err := <-retried:
		if err != nil {
			t.Fatalf("retry ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the failed release was not retried")
	}
	if took := time.Since(start); took > 5*ReleaseRetryMax {
		t.Errorf("released %s after the first failure", took)
	}
	adm2, err := g.Admit(ctx, host)
	if err != nil {
		t.Fatalf("after the retried release the place is still taken: %v", err)
	}
	adm2.Done()
}
