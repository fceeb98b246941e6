package worker

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/validator"
)

// Limiter is what the worker needs of *ratelimit.Limiter.
type Limiter interface {
	Acquire(ctx context.Context, req ratelimit.Request) (*ratelimit.Lease, error)
	CoolDown(ctx context.Context, egress, group, reason string) (time.Time, error)
	Group(mxHost string) string
}

var _ Limiter = (*ratelimit.Limiter)(nil)

// Gate puts every SMTP session the validator opens under the shared limits:
// a provider token, a session lease for the MX host, and no session at all
// while the provider is cooling down. It is the one place where a reply that
// says "you are throttled or blocked" becomes a cool-down for every worker.
//
// A session the validator keeps open for the next address (its session
// pool) holds its lease until it closes; serving another address on it costs
// no new token, because no new session is opened.
type Gate struct {
	limiter Limiter
	egress  string
	log     *slog.Logger
	now     func() time.Time

	// cooling remembers the cool-downs this process opened, provider →
	// until, so that parked sessions to a paused provider are closed rather
	// than reused (other workers' cool-downs reach us at the next Admit).
	mu      sync.Mutex
	cooling map[string]time.Time
}

var _ validator.Gate = (*Gate)(nil)

// NewGate returns a Gate for sessions leaving from egress (the source IP or
// proxy identity: receivers count per client IP, smtp-probing.md §7).
func NewGate(l Limiter, egress string, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if egress == "" {
		egress = "default"
	}
	return &Gate{limiter: l, egress: egress, log: log, now: time.Now, cooling: make(map[string]time.Time)}
}

// SlotWait is how close a reserved rate slot must be for the Gate to wait
// for it in the handler instead of handing the task back to asynq. asynq
// keeps retry times in whole seconds, rounded down, and moves due retries to
// their queue every SchedulerInterval (1 s in `mxprobe worker`), so a
// rescheduled task comes back up to about 2 s before or after its slot;
// denial aims it a second early and the Gate waits the rest. The wait is
// bounded: at most Rate × SlotWait tasks per provider hold a handler slot
// while waiting, for at most SlotWait each (design.md's "never sleeps a
// goroutine" is about the minutes-long waits, which are still rescheduled).
const SlotWait = 2 * time.Second

type reservationKey struct{}

// withReservation lets the Gate reserve rate slots under the task id, which
// survives retries, so a task coming back at its slot redeems it.
func withReservation(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, reservationKey{}, id)
}

// Admit implements validator.Gate: one provider token and one session lease
// per new SMTP session.
func (g *Gate) Admit(ctx context.Context, host validator.MXHost) (validator.Admission, error) {
	res, _ := ctx.Value(reservationKey{}).(string)
	req := ratelimit.Request{Egress: g.egress, MXHost: host.Name, Reservation: res}
	lease, err := g.limiter.Acquire(ctx, req)
	var d *ratelimit.DeniedError
	if err != nil && errors.As(err, &d) && d.Reason == ratelimit.ReasonRate && d.Reservation != "" && d.RetryIn <= SlotWait {
		// A reserved slot this close is redeemed at its instant, here:
		// asynq could bring the task back only to the whole second (see
		// SlotWait), and tasks redeeming late slots together would reach
		// the provider in a clump faster than its rate (issue 7c).
		t := time.NewTimer(d.RetryIn)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err // still a denial: the task is rescheduled
		case <-t.C:
		}
		req.Reservation = d.Reservation
		lease, err = g.limiter.Acquire(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	// The session may outlive the task that opened it (it is parked for
	// the next address): keep the context's values, never its end.
	return &admission{g: g, ctx: context.WithoutCancel(ctx), host: host.Name, group: g.limiter.Group(host.Name), lease: lease}, nil
}

// admission is one admitted session's lease.
type admission struct {
	g     *Gate
	ctx   context.Context
	host  string
	group string
	lease *ratelimit.Lease
	once  sync.Once
}

// Report opens the provider's cool-down the moment a reply asks for it,
// not when the session closes.
func (a *admission) Report(o validator.Outcome) {
	if o.Action != validator.ActionCoolDown {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
	defer cancel()
	until, err := a.g.limiter.CoolDown(ctx, a.g.egress, a.group, string(o.Reason))
	if err != nil {
		a.g.log.Error("opening cool-down", "provider", a.group, "err", err)
		return
	}
	a.g.mu.Lock()
	if len(a.g.cooling) > 4096 {
		clear(a.g.cooling) // bounded; forgetting only costs a reuse check
	}
	a.g.cooling[a.group] = until
	a.g.mu.Unlock()
	a.g.log.Warn("provider throttles or blocks this host; every worker pauses it",
		"provider", a.group, "mx_host", a.host, "reason", o.Reason, "until", until,
		"hint", "run 'mxprobe doctor' to check this host's reverse DNS, SPF and block-list status")
}

// Reusable refuses reuse while this process knows the provider is cooling
// down.
func (a *admission) Reusable() bool {
	a.g.mu.Lock()
	until, ok := a.g.cooling[a.group]
	if ok && !a.g.now().Before(until) {
		delete(a.g.cooling, a.group)
		ok = false
	}
	a.g.mu.Unlock()
	if ok {
		return false
	}
	// A reused session renews its lease once a quarter of the lease's TTL
	// has passed, so a session handed from probe to probe never outlives
	// it, while the usual session, ten addresses in a second or two, costs
	// no Redis round trip per reuse. Three quarters of the TTL must outlast
	// one attempt: Config.AttemptTimeout and LeaseTTLFor. A lease already
	// lost (expired, or Redis lost it) ends the session.
	ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
	defer cancel()
	if _, err := a.lease.ExtendIfDue(ctx); err != nil {
		a.g.log.Info("session lease could not be renewed; closing the session", "mx_host", a.host, "err", err)
		return false
	}
	return true
}

// Done releases the session lease, once.
func (a *admission) Done() {
	a.once.Do(func() {
		// Released with a fresh, short context so that a cancelled task
		// does not hold the slot until the lease expires.
		ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
		defer cancel()
		if err := a.lease.Release(ctx); err != nil {
			a.g.log.Warn("releasing session lease", "mx_host", a.host, "err", err)
		}
	})
}

// denial recognises the limiter's "not now" behind the validator's
// GateError and says when to come back. Cool-down and session denials get a
// random spread so that a thousand waiting tasks do not return in the same
// instant (rate denials already carry distinct reserved slots).
func denial(err error) (time.Duration, string, bool) {
	var d *ratelimit.DeniedError
	if !errors.As(err, &d) {
		return 0, "", false
	}
	in := d.RetryIn
	if d.Reason == ratelimit.ReasonRate && d.Reservation != "" && in > SlotWait {
		// Back a second early: asynq's whole-second rounding and its
		// forwarder tick then land the task within SlotWait before its
		// slot, never after, and the Gate redeems it on time.
		in -= time.Second
	}
	// Rate denials with a reservation already have distinct slots; those
	// beyond the reservation horizon share one "come back then" and need
	// the same spread as the rest.
	if d.Reason != ratelimit.ReasonRate || d.Reservation == "" {
		spread := min(in/10, time.Minute) + 100*time.Millisecond
		in += time.Duration(rand.Int64N(int64(spread)))
	}
	if in <= 0 {
		in = 10 * time.Millisecond
	}
	return in, d.Reason, true
}
