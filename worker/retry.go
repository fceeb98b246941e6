package worker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"

	"github.com/mxprobe/mxprobe/tasks"
)

// RetryPolicy is the schedule for temporary outcomes (greylisting, other 4yz,
// timeouts, DNS SERVFAIL). Defaults follow docs/smtp.md §2: first retry
// after the greylisting delay, then growing to hours, final after about a
// day.
type RetryPolicy struct {
	// FirstDelay is the earliest first retry (default 6 min: postgrey's 300 s
	// delay plus margin; RFC 5321 §4.5.4.1 asks for patience).
	FirstDelay time.Duration
	// Multiplier grows each following delay (default 3: 6 m, 18 m, 54 m …).
	Multiplier float64
	// MaxDelay caps one delay (default 4 h).
	MaxDelay time.Duration
	// GiveUpAfter is the total time after which a temporary outcome becomes
	// a final unknown (default 24 h).
	GiveUpAfter time.Duration
	// Jitter spreads retries of a burst of tasks, as a fraction of each
	// delay (default 0.2; 0 < Jitter < 1). Never below FirstDelay.
	Jitter float64
}

// DefaultRetryPolicy is used for fields left zero.
var DefaultRetryPolicy = RetryPolicy{
	FirstDelay:  6 * time.Minute,
	Multiplier:  3,
	MaxDelay:    4 * time.Hour,
	GiveUpAfter: 24 * time.Hour,
	Jitter:      0.2,
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy
	if p.FirstDelay != 0 {
		d.FirstDelay = p.FirstDelay
	}
	if p.Multiplier != 0 {
		d.Multiplier = p.Multiplier
	}
	if p.MaxDelay != 0 {
		d.MaxDelay = p.MaxDelay
	}
	if p.GiveUpAfter != 0 {
		d.GiveUpAfter = p.GiveUpAfter
	}
	if p.Jitter != 0 {
		d.Jitter = p.Jitter
	}
	return d
}

func (p RetryPolicy) validate() error {
	switch {
	case p.FirstDelay <= 0:
		return errors.New("retry policy: FirstDelay must be positive")
	case p.Multiplier < 1:
		return errors.New("retry policy: Multiplier must be at least 1")
	case p.MaxDelay < p.FirstDelay:
		return errors.New("retry policy: MaxDelay must be at least FirstDelay")
	case p.GiveUpAfter < p.FirstDelay:
		return errors.New("retry policy: GiveUpAfter must be at least FirstDelay")
	case p.Jitter < 0 || p.Jitter >= 1:
		return errors.New("retry policy: Jitter must be in [0, 1)")
	}
	if n := p.MaxRetries(); n >= tasks.MaxRetryCeiling {
		return fmt.Errorf("retry policy: %d retries exceed the task ceiling of %d; raise FirstDelay or lower GiveUpAfter", n, tasks.MaxRetryCeiling)
	}
	return nil
}

// schedule returns the nominal (jitter-free) delays of the policy.
func (p RetryPolicy) schedule() []time.Duration {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     p.FirstDelay,
		RandomizationFactor: 0, // jitter is applied by Delay, above the floor
		Multiplier:          p.Multiplier,
		MaxInterval:         p.MaxDelay,
		MaxElapsedTime:      0,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	var out []time.Duration
	var total time.Duration
	for total < p.GiveUpAfter && len(out) < tasks.MaxRetryCeiling {
		d := b.NextBackOff()
		out = append(out, d)
		total += d
	}
	return out
}

// MaxRetries is how many retries the policy allows before a temporary
// outcome becomes final: the attempts whose delays fit in GiveUpAfter.
func (p RetryPolicy) MaxRetries() int { return len(p.schedule()) }

// Delay is the wait before retry n+1 (n retries done so far), with jitter,
// never shorter than the server's hint nor than FirstDelay.
func (p RetryPolicy) Delay(n int, hint time.Duration) time.Duration {
	s := p.schedule()
	if n >= len(s) {
		n = len(s) - 1
	}
	d := s[n]
	if p.Jitter > 0 {
		// Only upwards: a greylisting retry that comes early is wasted and
		// postgrey logs it as an early retry.
		d += time.Duration(rand.Float64() * p.Jitter * float64(d))
	}
	return max(d, hint, p.FirstDelay)
}

// RateLimitError asks asynq to run the task again after RetryIn without
// counting a failure: the shared limiter said "not now", nothing failed
// (docs/design.md, "Rate-limited is not failed").
type RateLimitError struct {
	RetryIn time.Duration
	Reason  string
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("rate limited (%s): retry in %s", e.Reason, e.RetryIn.Round(time.Millisecond))
}

// TemporaryError is a temporary outcome (greylisted, 4yz, timeout): asynq
// counts it as a failure and retries on the RetryPolicy schedule.
type TemporaryError struct {
	Reason string
	// Hint is the server's requested delay, a lower bound for the retry.
	Hint time.Duration
	// Delay, when set, is the exact wait the handler already chose (and
	// told the producer as next_attempt_at).
	Delay time.Duration
}

func (e *TemporaryError) Error() string { return "temporary: " + e.Reason }

// isFailure is asynq's IsFailure: only temporary outcomes use up retries.
func isFailure(err error) bool {
	var rl *RateLimitError
	var ie *InfraError
	return !errors.As(err, &rl) && !errors.As(err, &ie)
}

// InfraError: our own infrastructure failed (Redis unreachable, a failover
// under way), not the recipient's server. The task comes back within
// seconds on its own short, jittered schedule (InfraRetryMin to
// InfraRetryMax), not on the greylisting schedule, and spends no retry:
// an outage says nothing about the address (docs/reliability.md).
type InfraError struct{ Err error }

func (e *InfraError) Error() string { return "infrastructure: " + e.Err.Error() }
func (e *InfraError) Unwrap() error { return e.Err }

// InfraRetryMin and InfraRetryMax bound the delay after an InfraError:
// uniform between them, so a fleet that met the same outage does not come
// back in one instant.
const (
	InfraRetryMin = time.Second
	InfraRetryMax = 5 * time.Second
)

func infraDelay() time.Duration {
	return InfraRetryMin + time.Duration(rand.Int64N(int64(InfraRetryMax-InfraRetryMin)))
}

// retryDelay is asynq's RetryDelayFunc for both task types.
func (w *Worker) retryDelay(n int, err error, t *asynq.Task) time.Duration {
	var rl *RateLimitError
	if errors.As(err, &rl) {
		return rl.RetryIn
	}
	var ie *InfraError
	if errors.As(err, &ie) {
		return infraDelay()
	}
	if errors.Is(err, asynq.ErrLeaseExpired) {
		// A worker died mid-task: run it again soon. Greylisting is not
		// the cause, so its delay does not apply.
		return time.Second
	}
	if t.Type() == tasks.TypeCallback {
		var ce *CallbackError
		var hint time.Duration
		if errors.As(err, &ce) {
			hint = ce.RetryAfter
		}
		return w.callbackRetry.Delay(n, hint)
	}
	var te *TemporaryError
	var hint time.Duration
	if errors.As(err, &te) {
		if te.Delay > 0 {
			return te.Delay
		}
		hint = te.Hint
	}
	return w.retry.Delay(n, hint)
}
