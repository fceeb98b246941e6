package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/ratelimit"
)

// TestHammerHoldsTheRate runs independent clients (each its own Limiter and
// Redis connection pool, as separate worker processes would be) against one
// provider for ten seconds. Admissions must never exceed what the bucket
// allows over the elapsed time on Redis's clock, and must reach 95% of it:
// reservations waste at most one token per caller at the end of the run.
func TestHammerHoldsTheRate(t *testing.T) {
	t.Parallel()
	const (
		rate, burst        = 50, 5
		clients, perClient = 4, 2
		runFor             = 10 * time.Second
	)
	b := setup(t, ratelimit.Config{Default: ratelimit.Limit{Rate: rate, Per: time.Second, Burst: burst, Sessions: 1000}})
	limiters := make([]*ratelimit.Limiter, clients)
	for i := range limiters {
		limiters[i] = b.limiter()
	}
	ctx := context.Background()
	rdb := redistest.Client(t)

	var admitted, redenied atomic.Int64
	errs := make(chan error, clients*perClient)
	start := redisNow(t, rdb)
	deadline := time.Now().Add(runFor)
	var wg sync.WaitGroup
	for c, l := range limiters {
		for g := range perClient {
			wg.Go(func() {
				req := ratelimit.Request{Egress: "192.0.2.77", MXHost: fmt.Sprintf("mx%d.hammer.example", (c+g)%3)}
				for {
					le, err := l.Acquire(ctx, req)
					if err == nil {
						admitted.Add(1)
						if err := le.Release(ctx); err != nil {
							errs <- err
							return
						}
						req.Reservation = ""
						continue
					}
					var d *ratelimit.DeniedError
					if !errors.As(err, &d) || d.Reason != ratelimit.ReasonRate {
						errs <- fmt.Errorf("client %d/%d: %v", c, g, err)
						return
					}
					if req.Reservation != "" {
						redenied.Add(1) // came back at its slot and was refused
					}
					req.Reservation = d.Reservation
					if time.Now().Add(d.RetryIn).After(deadline) {
						return
					}
					timer := time.NewTimer(d.RetryIn)
					<-timer.C
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	elapsed := redisNow(t, rdb).Sub(start)
	limit := burst + rate*elapsed.Seconds()
	got := float64(admitted.Load())
	t.Logf("%d clients × %d goroutines, %s: admitted %.0f of at most %.1f (%.1f%%)", clients, perClient, elapsed.Round(time.Millisecond), got, limit, 100*got/limit)
	if got > limit {
		t.Errorf("admitted %.0f sessions in %s; the limit is %.1f", got, elapsed, limit)
	}
	if got < 0.95*limit {
		t.Errorf("admitted %.0f sessions in %s; want at least 95%% of %.1f", got, elapsed, limit)
	}
	if n := redenied.Load(); n != 0 {
		t.Errorf("%d callers came back at their reserved slot and were denied again", n)
	}
}
