package worker_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// flakyLimiter fails its first Acquires as an unreachable Redis does.
type flakyLimiter struct {
	worker.Limiter
	failures atomic.Int32
}

func (f *flakyLimiter) Acquire(ctx context.Context, req ratelimit.Request) (*ratelimit.Lease, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	}
	return f.Limiter.Acquire(ctx, req)
}

// A Redis error while a task runs is our failure, not the recipient's: the
// task comes back within seconds and spends no retry, however long the
// greylisting schedule is (here its first retry is an hour away).
func TestInfrastructureErrorRetriedWithinSeconds(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{smtp: smtptest.Options{}, noWorker: true})
	lcfg := ratelimit.DefaultConfig()
	lcfg.Prefix = "infra:rl:"
	real, err := ratelimit.New(b.rdb, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyLimiter{Limiter: real}
	flaky.failures.Store(2)
	o := b.env().options()
	adjust := o.Adjust
	o.Adjust = func(wc *worker.Config, vc *validator.Config) {
		adjust(wc, vc)
		wc.Retry = worker.RetryPolicy{FirstDelay: time.Hour, MaxDelay: time.Hour, GiveUpAfter: 2 * time.Hour}
		vc.Gate = worker.NewGate(flaky, "test", nil)
	}
	workertest.Start(t, b.rdb, o)
	start := time.Now()
	st := b.waitFor(t, b.enqueue(t, "alice@example.test"), 30*time.Second)
	if st.Result.Verdict != tasks.VerdictValid {
		t.Fatalf("%s/%s, want valid", st.Result.Verdict, st.Result.Reason)
	}
	if st.Retried != 0 {
		t.Errorf("retried %d: an infrastructure error spent the task's retries", st.Retried)
	}
	if took := time.Since(start); took > 2*worker.InfraRetryMax+5*time.Second {
		t.Errorf("took %s after two Redis errors", took)
	}
	if n := flaky.failures.Load(); n > -1 {
		t.Errorf("the limiter was asked %d times, want 3", 2-n)
	}
}
