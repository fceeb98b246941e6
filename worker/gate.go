package worker

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

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

	// sessions, when set, advertises admitted sessions to other workers
	// and keeps one reservation per MX host (sessions.go).
	sessions *Sessions
	// hostLocks serialise the limiter asks per MX host (striped).
	hostLocks [64]sync.Mutex

	// releaseLease releases a lease (tests replace it); onRetried, when
	// set, hears how a background release retry ended (tests).
	releaseLease func(context.Context, *ratelimit.Lease) error
	onRetried    func(error)
}

// ShareSessions makes the Gate advertise each session it admits through s,
// so other workers hand it their addresses for the same MX host, and lets
// only the first task denied for an empty bucket reserve a slot per MX host:
// the others come back to join the session that slot opens.
func (g *Gate) ShareSessions(s *Sessions) { g.sessions = s }

var _ validator.Gate = (*Gate)(nil)

// NewGate returns a Gate for sessions leaving from egress (the source IP or
// proxy identity: receivers count per client IP, docs/smtp.md §7).
func NewGate(l Limiter, egress string, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if egress == "" {
		egress = "default"
	}
	return &Gate{limiter: l, egress: egress, log: log, now: time.Now, cooling: make(map[string]time.Time),
		releaseLease: func(ctx context.Context, l *ratelimit.Lease) error { return l.Release(ctx) }}
}

// SlotWait is how close a reserved rate slot must be for the Gate to wait
// for it in the handler instead of handing the task back to asynq. asynq
// keeps retry times in whole seconds, rounded down, and moves due retries to
// their queue every SchedulerInterval (1 s in `mxprobe worker`), so a
// rescheduled task comes back up to about 2 s before or after its slot;
// denial aims it a second early and the Gate waits the rest. The wait is
// bounded: at most Rate × SlotWait tasks per provider hold a handler slot
// while waiting, for at most SlotWait each (docs/design.md, "A denial never
// sleeps a goroutine": the minutes-long waits are still rescheduled).
const SlotWait = 2 * time.Second

type reservationKey struct{}

// withReservation lets the Gate reserve rate slots under the task id, which
// survives retries, so a task coming back at its slot redeems it.
func withReservation(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, reservationKey{}, id)
}

// WithReservation is withReservation for a caller outside the queue (the
// check command): asks made under one id after a denial redeem the slot the
// first one reserved instead of reserving another.
func WithReservation(ctx context.Context, id string) context.Context { return withReservation(ctx, id) }

// Admit implements validator.Gate: one provider token and one session lease
// per new SMTP session.
func (g *Gate) Admit(ctx context.Context, host validator.MXHost) (validator.Admission, error) {
	res, _ := ctx.Value(reservationKey{}).(string)
	req := ratelimit.Request{Egress: g.egress, MXHost: host.Name, Reservation: res}
	lease, err := g.acquire(ctx, req)
	var d *ratelimit.DeniedError
	if err != nil && errors.As(err, &d) && d.Reason == ratelimit.ReasonRate && d.Reservation != "" && d.RetryIn <= SlotWait {
		// A reserved slot this close is redeemed at its instant, here:
		// asynq could bring the task back only to the whole second (see
		// SlotWait), and tasks redeeming late slots together would reach
		// the provider in a clump faster than its rate.
		t := time.NewTimer(d.RetryIn)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err // still a denial: the task is rescheduled
		case <-t.C:
		}
		req.Reservation = d.Reservation
		lease, err = g.acquire(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	if g.sessions != nil {
		g.sessions.hold(ctx, host.Name)
	}
	// The session may outlive the task that opened it (it is parked for
	// the next address): keep the context's values, never its end.
	return &admission{g: g, ctx: context.WithoutCancel(ctx), host: host.Name, group: g.limiter.Group(host.Name), lease: lease}, nil
}

// acquire asks the limiter. With session sharing, the asks for one MX host
// are taken one at a time in this process, so that of many tasks denied at
// once only the first reserves a slot and marks it (markNext): the others
// then see the mark and reserve nothing (joinNext).
func (g *Gate) acquire(ctx context.Context, req ratelimit.Request) (*ratelimit.Lease, error) {
	if g.sessions == nil {
		return g.limiter.Acquire(ctx, req)
	}
	mu := &g.hostLocks[fnv32(req.MXHost)%uint32(len(g.hostLocks))]
	mu.Lock()
	defer mu.Unlock()
	redeem, err := g.joinNext(ctx, req.MXHost, req.Reservation)
	if err != nil {
		return nil, err
	}
	if redeem == "" {
		// An ask that may reserve a new slot is taken one at a time for
		// the MX host across the fleet, so that of tasks denied at once
		// in several workers only one reserves (and marks) a slot; the
		// others see the mark and join. A task that finds the host's
		// ask under way comes back in a moment.
		unlock, ok := g.sessions.lockHost(ctx, req.MXHost)
		if !ok {
			return nil, &joinDenial{DeniedError: &ratelimit.DeniedError{Reason: ratelimit.ReasonRate, RetryIn: 200 * time.Millisecond,
				Until: g.now().Add(200 * time.Millisecond), Egress: g.egress, Group: g.limiter.Group(req.MXHost), MXHost: req.MXHost}}
		}
		defer unlock()
		if redeem, err = g.joinNext(ctx, req.MXHost, req.Reservation); err != nil {
			return nil, err // marked by another worker just before us
		}
	}
	onBehalf := redeem != "" && redeem != req.Reservation
	if redeem != "" {
		req.Reservation = redeem
	}
	lease, err := g.limiter.Acquire(ctx, req)
	if err == nil && lease.Reserved {
		g.sessions.clearNext(ctx, req.MXHost, req.Reservation)
	}
	var d *ratelimit.DeniedError
	if err != nil && errors.As(err, &d) && d.Reason == ratelimit.ReasonRate && d.Reservation != "" {
		// Asking on the owner's behalf found its reservation gone (it
		// was redeemed a moment ago, or lapsed) and reserved the next
		// slot under the owner's name: the mark must say so, else it
		// would keep naming a slot long past.
		g.sessions.markNext(ctx, req.MXHost, d.Reservation, d.Until, d.RetryIn+time.Minute, onBehalf)
	}
	return lease, err
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

// joinNext denies a new session to host while another task's reservation
// is due to open one: this task reserves nothing and comes back just after
// that slot, to join the session it opens (sessions.go).
//
// redeem names the reservation to redeem now: the task's own, or, once the
// marked slot has passed without its session, the owner's. The owner is
// then late (asynq brings a retry back a second or more after its time,
// later on a loaded machine), or gone; its token is spent either way, and
// the first task of the host to come back opens the session with it, so
// the tasks waiting to join neither wait for the owner nor reserve slots of
// their own (each would cost a session). An owner that comes back after
// that joins the session, like any other task.
func (g *Gate) joinNext(ctx context.Context, host, res string) (redeem string, err error) {
	if g.sessions == nil {
		return "", nil
	}
	slot, owner, ok, mine := g.sessions.nextSession(ctx, host, res)
	if mine || ok && owner == res {
		// We hold a reserved slot (another worker's may have won the
		// mark): ask the limiter, which redeems it.
		return res, nil
	}
	if !ok {
		return "", nil
	}
	back := slot.Add(g.sessions.cfg.JoinDelay)
	in := back.Sub(g.now())
	if in <= 0 {
		return owner, nil
	}
	return "", &joinDenial{DeniedError: &ratelimit.DeniedError{Reason: ratelimit.ReasonRate, RetryIn: in, Until: back,
		Egress: g.egress, Group: g.limiter.Group(host), MXHost: host}}
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
		if err := a.g.releaseLease(ctx, a.lease); err != nil {
			// Redis unreachable (a failover, say): an unreleased lease
			// would hold its session place for the whole TTL (minutes),
			// so keep trying in the background until it is released or
			// would have expired anyway.
			a.g.log.Warn("releasing session lease; will retry", "mx_host", a.host, "err", err)
			go a.g.retryRelease(a.ctx, a.lease, a.host)
		}
		if a.g.sessions != nil {
			a.g.sessions.release(ctx, a.host)
		}
	})
}

// ReleaseRetryMax bounds the pause between retries of a failed lease
// release (exponential from 100 ms, jittered).
const ReleaseRetryMax = 2 * time.Second

// retryRelease retries a failed release until it succeeds or the lease's
// expiry has passed (after which the limiter forgets it by itself).
func (g *Gate) retryRelease(ctx context.Context, lease *ratelimit.Lease, host string) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.RandomizationFactor = 100*time.Millisecond, ReleaseRetryMax, 0.5
	b.MaxElapsedTime = 0
	deadline := lease.Expires
	err := backoff.Retry(func() error {
		if !g.now().Before(deadline) {
			return backoff.Permanent(errors.New("lease expired before it could be released"))
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return g.releaseLease(rctx, lease)
	}, b)
	if g.onRetried != nil {
		g.onRetried(err)
	}
	if err != nil {
		g.log.Warn("session lease not released; it expires by itself", "mx_host", host, "err", err)
		return
	}
	g.log.Info("session lease released after a retry", "mx_host", host)
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
	var jd *joinDenial
	if errors.As(err, &jd) {
		// Back just after the reserved slot, all together: the session
		// it opens takes them in turn. A little spread keeps them from
		// one instant.
		return max(d.RetryIn, 10*time.Millisecond) + time.Duration(rand.Int64N(int64(min(d.RetryIn/2, time.Second)+250*time.Millisecond))), d.Reason, true
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
