package worker

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
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
type Gate struct {
	limiter Limiter
	egress  string
	log     *slog.Logger
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
	return &Gate{limiter: l, egress: egress, log: log}
}

type reservationKey struct{}

// withReservation lets the Gate reserve rate slots under the task id, which
// survives retries, so a task coming back at its slot redeems it.
func withReservation(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, reservationKey{}, id)
}

// Admit implements validator.Gate.
func (g *Gate) Admit(ctx context.Context, host validator.MXHost) (func(validator.Outcome), error) {
	res, _ := ctx.Value(reservationKey{}).(string)
	lease, err := g.limiter.Acquire(ctx, ratelimit.Request{Egress: g.egress, MXHost: host.Name, Reservation: res})
	if err != nil {
		return nil, err
	}
	return func(o validator.Outcome) {
		// The session is over whatever ctx says now: release with a fresh,
		// short context so a cancelled task does not hold the slot until
		// the lease expires.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			g.log.Warn("releasing session lease", "mx_host", host.Name, "err", err)
		}
		if o.Action != validator.ActionCoolDown {
			return
		}
		group := g.limiter.Group(host.Name)
		until, err := g.limiter.CoolDown(rctx, g.egress, group, string(o.Reason))
		if err != nil {
			g.log.Error("opening cool-down", "provider", group, "err", err)
			return
		}
		g.log.Warn("provider throttles or blocks this host; every worker pauses it",
			"provider", group, "mx_host", host.Name, "reason", o.Reason, "until", until,
			"hint", "run 'mxprobe doctor' to check this host's reverse DNS, SPF and block-list status")
	}, nil
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
	if d.Reason != ratelimit.ReasonRate {
		spread := min(in/10, time.Minute) + 100*time.Millisecond
		in += time.Duration(rand.Int64N(int64(spread)))
	}
	if in <= 0 {
		in = 10 * time.Millisecond
	}
	return in, d.Reason, true
}
