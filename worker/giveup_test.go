package worker_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// dayRetry gives up after a day, far beyond every test here: only the
// producer's deadline can end a pause early.
var dayRetry = worker.RetryPolicy{FirstDelay: time.Second, Multiplier: 2, MaxDelay: time.Hour, GiveUpAfter: 24 * time.Hour, Jitter: 0.1}

// coolDown pauses the test's provider for d with reason, through a limiter
// of its own on the worker's keys (another worker's report, as it were),
// and returns the pause's end.
func (b *bundle) coolDown(t *testing.T, d time.Duration, reason string) time.Time {
	t.Helper()
	lcfg := ratelimit.DefaultConfig()
	lcfg.Prefix = "test:rl:"
	lcfg.CoolDown = ratelimit.CoolDownConfig{Initial: d, Multiplier: 1, Max: d, ResetAfter: time.Hour}
	other, err := ratelimit.New(b.rdb, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	until, err := other.CoolDown(t.Context(), "test", other.Group("mx.example.test"), reason)
	if err != nil {
		t.Fatal(err)
	}
	return until
}

// waitCompleted waits (bounded) until asynq has marked task id completed:
// nothing of it is left scheduled to run again.
func (b *bundle) waitCompleted(t *testing.T, queue, id string) *asynq.TaskInfo {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		info, err := b.insp.GetTaskInfo(queue, id)
		if err == nil && info.State == asynq.TaskStateCompleted {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not completed: %+v (%v)", id, info, err)
		}
	}
}

// checkFinishedAtOnce asserts what a task held back past its deadline or
// give-up must show: a final unknown with the hold's reason, decided before
// the limit came (the task did not wait it out), without SMTP traffic or a
// used retry, its callback delivered, signed, exactly once, and nothing left
// scheduled.
func (b *bundle) checkFinishedAtOnce(t *testing.T, id, reason string, limit time.Time) {
	t.Helper()
	st := b.waitFor(t, id, 30*time.Second)
	r := st.Result
	if !r.Final || r.Verdict != tasks.VerdictUnknown || r.Reason != reason {
		t.Fatalf("result %+v, want a final unknown/%s", r, reason)
	}
	if !r.CheckedAt.Before(limit) {
		t.Errorf("decided at %s, not before %s: the task waited instead of ending at once", r.CheckedAt, limit)
	}
	if st.Retried != 0 || r.Attempts != 1 {
		t.Errorf("retried %d, attempts %d: denials use no retries", st.Retried, r.Attempts)
	}
	cb := b.receiver.next(t)
	if cb.TaskID != id || !cb.Final || cb.Verdict != tasks.VerdictUnknown || cb.Reason != reason {
		t.Errorf("callback %+v", cb)
	}
	b.waitCompleted(t, tasks.QueueDefault, id)
	b.waitCompleted(t, tasks.QueueDefault, "cb_"+id)
	b.receiver.mu.Lock()
	bad := b.receiver.bad
	b.receiver.mu.Unlock()
	if n := b.receiver.calls.Load(); n != 1 || bad != 0 {
		t.Errorf("%d callback requests (%d badly signed), want exactly one signed delivery", n, bad)
	}
}

// A provider paused for an hour holds back a task whose deadline (a minute
// away) comes first: the task ends at once as unknown/blocked with its
// callback, rather than at its deadline or the pause's end.
func TestCoolDownPastDeadlineEndsAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{retry: dayRetry})
	b.coolDown(t, time.Hour, "blocked")
	deadline := time.Now().Add(time.Minute)
	id := b.enqueue(t, "pia@example.test", tasks.Deadline(deadline))
	b.checkFinishedAtOnce(t, id, "blocked", deadline)
	if n := b.smtp.Conns(); n != 0 {
		t.Errorf("%d SMTP connections to a provider that is cooling down", n)
	}
}

// The retry policy's give-up horizon (`mxprobe worker --retry-give-up`)
// ends a cool-down wait the same way, without any producer deadline: give-up
// a minute, pause an hour.
func TestCoolDownPastGiveUpEndsAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{retry: worker.RetryPolicy{FirstDelay: time.Second, Multiplier: 2, MaxDelay: 10 * time.Second, GiveUpAfter: time.Minute, Jitter: 0.1}})
	b.coolDown(t, time.Hour, "rate_limited")
	enqueued := time.Now()
	id := b.enqueue(t, "quin@example.test")
	b.checkFinishedAtOnce(t, id, "rate_limited", enqueued.Add(time.Minute))
	if n := b.smtp.Conns(); n != 0 {
		t.Errorf("%d SMTP connections to a provider that is cooling down", n)
	}
}

// A rate-limit denial whose slot lies past the deadline ends at once too:
// one token an hour, taken by another worker, so the task's address cannot
// be probed before its deadline.
func TestRateSlotPastDeadlineEndsAtOnce(t *testing.T) {
	t.Parallel()
	limit := ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 1, Sessions: 1}
	b := setup(t, setupOpts{retry: dayRetry, limit: limit})
	lcfg := ratelimit.DefaultConfig()
	lcfg.Prefix, lcfg.Default = "test:rl:", limit
	other, err := ratelimit.New(b.rdb, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	lease, err := other.Acquire(t.Context(), ratelimit.Request{Egress: "test", MXHost: "mx.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(t.Context()); err != nil { // the token stays spent
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	id := b.enqueue(t, "ros@example.test", tasks.Deadline(deadline))
	b.checkFinishedAtOnce(t, id, "rate_limited", deadline)
	if n := b.smtp.Conns(); n != 0 {
		t.Errorf("%d SMTP connections without a token", n)
	}
}

// A request sharing the probe of another whose provider is paused for an
// hour does not wait for that leader past its own deadline: it asks itself,
// is denied, and ends at once. The leader, with no deadline and a day's
// give-up, keeps waiting.
func TestFollowerOfACooledDownLeaderEndsAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{retry: dayRetry})
	b.coolDown(t, time.Hour, "blocked")
	leader := b.enqueue(t, "sam@example.test")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		info, err := b.insp.GetTaskInfo(tasks.QueueDefault, leader)
		if err == nil && info.State == asynq.TaskStateRetry {
			break // denied, and holding the lead for its hour
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader was never held back: %+v (%v)", info, err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	id := b.enqueue(t, "sam@example.test", tasks.Deadline(deadline))
	b.checkFinishedAtOnce(t, id, "blocked", deadline)
	if st, err := b.client.Get(t.Context(), leader); err != nil || st.Done() {
		t.Errorf("leader %+v (%v): should still wait for its provider", st, err)
	}
}

// logSignal is a slog handler that tells, once, when a record's attributes
// contain want.
type logSignal struct {
	want string
	ch   chan struct{}
}

func (h *logSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h *logSignal) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if strings.Contains(a.Value.String(), h.want) {
			select {
			case h.ch <- struct{}{}:
			default:
			}
			return false
		}
		return true
	})
	return nil
}
func (h *logSignal) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logSignal) WithGroup(string) slog.Handler      { return h }

// A pause that ends before the deadline is waited out: the task is held
// back (the worker logs the cool-down denial), then probes and gets its
// real verdict after the pause, on its first attempt.
func TestCoolDownEndingBeforeDeadlineIsWaitedOut(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noWorker: true})
	denied := &logSignal{want: "rate limited (" + ratelimit.ReasonCoolDown + ")", ch: make(chan struct{}, 1)}
	o := b.env().options()
	o.Log = slog.New(denied)
	adjust := o.Adjust
	o.Adjust = func(wc *worker.Config, vc *validator.Config) {
		adjust(wc, vc)
		wc.Retry = dayRetry
	}
	until := b.coolDown(t, 3*time.Second, "blocked")
	workertest.Start(t, b.rdb, o)
	id := b.enqueue(t, "tia@example.test", tasks.Deadline(time.Now().Add(time.Minute)))
	select {
	case <-denied.ch:
	case <-time.After(30 * time.Second):
		t.Fatal("the task was never held back by the cool-down")
	}
	st := b.waitFor(t, id, 30*time.Second)
	r := st.Result
	if !r.Final || r.Verdict != tasks.VerdictValid || r.Attempts != 1 || st.Retried != 0 {
		t.Fatalf("result %+v (retried %d), want a final valid from the first attempt", r, st.Retried)
	}
	if r.CheckedAt.Before(until) {
		t.Errorf("probed at %s, before the pause ended at %s", r.CheckedAt, until)
	}
	if n := b.smtp.Conns(); n == 0 {
		t.Error("no SMTP connection: the verdict was not probed")
	}
	if cb := b.receiver.next(t); cb.TaskID != id || cb.Verdict != tasks.VerdictValid {
		t.Errorf("callback %+v", cb)
	}
}
