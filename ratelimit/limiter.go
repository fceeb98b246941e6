package ratelimit

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/redis/go-redis/v9"
)

// Denial reasons, in DeniedError.Reason and Metrics.Denied.
const (
	ReasonRate     = "rate"      // the provider's token bucket is empty
	ReasonSessions = "sessions"  // all sessions to the MX host are in use
	ReasonCoolDown = "cool_down" // the provider throttled or blocked us recently
	// ReasonFailover: the provider's keys moved to a new Redis master a
	// moment ago, and leases the old one held may still be coming back
	// (Config.FailoverSettle).
	ReasonFailover = "failover"
)

// ErrDenied matches every *DeniedError with errors.Is.
var ErrDenied = errors.New("ratelimit: denied")

// ErrLeaseLost is returned by Lease.Extend when the lease has expired (or
// was released): another session may already hold its place, so the caller
// should end its session or Acquire again.
var ErrLeaseLost = errors.New("ratelimit: lease expired or released")

// DeniedError says Acquire refused and when to try again. It is not a
// failure: the caller reschedules its work RetryIn from now.
type DeniedError struct {
	Reason  string        // ReasonRate, ReasonSessions, ReasonCoolDown or ReasonFailover
	RetryIn time.Duration // from the moment Redis decided
	Until   time.Time     // Redis time of the decision + RetryIn (for cool-downs: the pause's end)
	// Reservation, for ReasonRate, names the slot kept for this caller at
	// Until: pass it back as Request.Reservation to redeem it. Empty when
	// the next slot lay beyond Config.ReserveHorizon.
	Reservation string
	// Detail is the reason the provider was paused (ReasonCoolDown only).
	Detail                string
	Egress, Group, MXHost string
}

func (e *DeniedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ratelimit: denied (%s) for %s via %s: retry in %s", e.Reason, e.Group, e.Egress, e.RetryIn)
	if e.Detail != "" {
		fmt.Fprintf(&b, " (paused: %s)", e.Detail)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrDenied) true.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// Request names what a caller wants to start: a session from Egress to
// MXHost.
type Request struct {
	// Egress identifies the source the session leaves from: the source IP,
	// or the proxy's identity. Receivers count per client IP
	// (docs/smtp.md §7), so each egress has its own budgets.
	Egress string
	// MXHost is the host to connect to; its Group selects the budget.
	MXHost string
	// Reservation is the caller's stable identity for reservations (for
	// example the task ID, which survives retries) or the
	// DeniedError.Reservation of an earlier denial. When the bucket is empty
	// the slot is reserved under it; coming back at that slot with the same
	// value redeems it. Empty: a fresh one is generated on denial.
	Reservation string
}

// Lease is the right to hold one SMTP session to an MX host. Release it when
// the session ends; Extend it during long sessions. It is meant for the one
// goroutine running the session.
type Lease struct {
	ID                    string
	Egress, Group, MXHost string
	Expires               time.Time // Redis time; Extend moves it
	Reserved              bool      // admitted by redeeming a reservation

	l     *Limiter
	key   string
	fence string
	// exp mirrors Expires (µs) for the Limiter's keeper, which reads it
	// from its own goroutine; released stops the keeper putting the lease
	// back once Release has begun.
	exp      atomic.Int64
	released atomic.Bool
	// renewed is when the lease was granted or last extended, on this
	// process's monotonic clock, with the test clock offset at that moment:
	// ExtendIfDue measures the lease's age without comparing this host's
	// clock with Redis's.
	renewed       time.Time
	renewedOffset int64
}

// Release frees the session slot at once. Releasing twice is harmless.
func (le *Lease) Release(ctx context.Context) error {
	le.l.forget(le)
	if err := le.l.rdb.ZRem(ctx, le.key, le.ID).Err(); err != nil {
		return fmt.Errorf("ratelimit: release lease %s: %w", le.ID, err)
	}
	return nil
}

// Extend renews the lease for Config.LeaseTTL from now.
func (le *Lease) Extend(ctx context.Context) error {
	r, err := extendScript.Run(ctx, le.l.rdb, []string{le.key}, le.l.offset.Load(), le.ID, le.l.cfg.LeaseTTL.Microseconds()).Int64Slice()
	if err != nil {
		return fmt.Errorf("ratelimit: extend lease %s: %w", le.ID, err)
	}
	if len(r) != 2 {
		return fmt.Errorf("ratelimit: extend lease %s: unexpected reply %v", le.ID, r)
	}
	if r[0] == 0 {
		return ErrLeaseLost
	}
	le.Expires = time.UnixMicro(r[1])
	le.exp.Store(r[1])
	le.markRenewed()
	return nil
}

// ExtendIfDue extends the lease only once a quarter of Config.LeaseTTL has
// passed since it was granted or last extended, so a caller can renew before
// each use of a long-lived session without a Redis round trip per use
// (a pooled session serving ten addresses in a second renews nothing). It reports whether it went to Redis. A lease that is not due is
// assumed alive: it can only have been lost to expiry, which is three
// quarters of a TTL away, or to a Redis failover (which the Limiter's keeper
// repairs, see Config.LeaseKeepEvery). So a caller must size
// Config.LeaseTTL so that three quarters of it outlast its longest use
// between two calls (worker.LeaseTTLFor).
func (le *Lease) ExtendIfDue(ctx context.Context) (bool, error) {
	if le.age() < le.l.cfg.LeaseTTL/4 {
		return false, nil
	}
	return true, le.Extend(ctx)
}

func (le *Lease) markRenewed() {
	le.renewed = time.Now()
	le.renewedOffset = le.l.offset.Load()
}

// age is the time since the lease was granted or last extended.
func (le *Lease) age() time.Duration {
	return time.Since(le.renewed) + time.Duration(le.l.offset.Load()-le.renewedOffset)*time.Microsecond
}

// Pause is one paused (egress, provider group).
type Pause struct {
	Egress, Group string
	Reason        string
	Since, Until  time.Time
	Step          int // 1 for the first pause in a row, 2 for the next, …
}

// Limiter enforces the limits for every worker sharing one Redis. It is safe
// for concurrent use; create one per process.
type Limiter struct {
	rdb   redis.UniversalClient
	cfg   Config
	steps []any // cool-down length per step, µs; the last repeats

	// offset shifts the scripts' clock, in µs. Only this package's tests
	// set it, to step over expiries without waiting.
	offset atomic.Int64

	// The keeper (keep.go): the leases this process holds, and whether
	// its goroutine runs. passMu is held for each of its passes, so a
	// Release waits for a pass that may put its lease back before it
	// removes the lease itself.
	liveMu  sync.Mutex
	live    map[*Lease]struct{}
	keeping bool
	passMu  sync.RWMutex
	// onKeep, when set, hears of every keeper pass (tests): the leases
	// put back, and the pass's error.
	onKeep func(back int, err error)
}

// New checks cfg and returns a Limiter using rdb. It does not contact Redis:
// a Redis that is down shows as errors from Acquire.
func New(rdb redis.UniversalClient, cfg Config) (*Limiter, error) {
	if rdb == nil {
		return nil, errors.New("ratelimit: nil Redis client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Limiter{rdb: rdb, cfg: cfg, steps: coolDownSteps(cfg.CoolDown)}, nil
}

// coolDownSteps lists the pauses 15 min, 1 h, 4 h… (with the defaults)
// from cenkalti/backoff, without jitter: every worker must compute the same
// pause, and the script, not the caller, picks the step so that concurrent
// reports of one block do not escalate it twice.
func coolDownSteps(c CoolDownConfig) []any {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     c.Initial,
		RandomizationFactor: 0,
		Multiplier:          c.Multiplier,
		MaxInterval:         c.Max,
		MaxElapsedTime:      0, // never stop
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	var steps []any
	for range 64 {
		d := min(b.NextBackOff(), c.Max)
		steps = append(steps, d.Microseconds())
		if d >= c.Max {
			break
		}
	}
	return steps
}

// Limit returns the limit that applies to a group.
func (l *Limiter) Limit(group string) Limit {
	if lim, ok := l.cfg.Providers[group]; ok {
		return lim
	}
	return l.cfg.Default
}

func (l *Limiter) tag(egress, group string) string {
	return l.cfg.Prefix + "{" + egress + "|" + group + "}"
}

// Acquire asks to start one session. It returns a Lease, a *DeniedError
// (errors.Is ErrDenied) saying when to come back, or another error when
// Redis cannot be asked — never a lease it could not confirm. It makes one
// Redis round trip and never waits for capacity.
func (l *Limiter) Acquire(ctx context.Context, req Request) (*Lease, error) {
	if err := checkEgress(req.Egress); err != nil {
		return nil, fmt.Errorf("ratelimit: egress %q: %w", req.Egress, err)
	}
	mx := normHost(req.MXHost)
	if err := checkName(mx); err != nil {
		return nil, fmt.Errorf("ratelimit: MX host %q: %w", req.MXHost, err)
	}
	if len(req.Reservation) > 200 {
		return nil, fmt.Errorf("ratelimit: reservation id longer than 200 bytes")
	}
	g := l.Group(mx)
	lim := l.Limit(g)
	tag := l.tag(req.Egress, g)
	keys := []string{tag + ":tat", tag + ":res", tag + ":ses:" + mx, tag + ":cd", tag + ":fence"}
	leaseID := newID()
	r, err := acquireScript.Run(ctx, l.rdb, keys,
		l.offset.Load(),
		lim.interval(),
		lim.Burst,
		l.cfg.ReserveHorizon.Microseconds(),
		l.cfg.ReserveGrace.Microseconds(),
		lim.Sessions,
		l.cfg.LeaseTTL.Microseconds(),
		leaseID,
		req.Reservation,
		newID(),
		l.cfg.SessionRetry.Microseconds(),
		l.cfg.FailoverSettle.Microseconds(),
	).Slice()
	if err != nil {
		return nil, fmt.Errorf("ratelimit: acquire %s via %s: %w", g, req.Egress, err)
	}
	code, now, at, str, flag, err := parseAcquire(r)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: acquire %s via %s: %w", g, req.Egress, err)
	}
	m := l.cfg.Metrics
	if code == 0 {
		m.Acquired(req.Egress, g, flag == 1)
		le := &Lease{
			ID: leaseID, Egress: req.Egress, Group: g, MXHost: mx,
			Expires: time.UnixMicro(at), Reserved: flag == 1,
			l: l, key: keys[2], fence: keys[4],
		}
		le.exp.Store(at)
		le.markRenewed()
		l.hold(le)
		return le, nil
	}
	d := &DeniedError{Egress: req.Egress, Group: g, MXHost: mx}
	switch code {
	case 1:
		d.Reason = ReasonRate
		d.Reservation = str
		if flag == 1 {
			m.Reserved(req.Egress, g, time.Duration(at-now)*time.Microsecond)
		}
	case 2:
		d.Reason = ReasonSessions
		// Everyone waiting for a session would otherwise come back at the
		// same instant; spread them over the second half of the wait.
		if w := at - now; w > 1 {
			at = now + w/2 + mrand.Int64N(w/2+1)
		}
	case 3:
		d.Reason = ReasonCoolDown
		d.Detail = str
	case 4:
		d.Reason = ReasonFailover
	default:
		return nil, fmt.Errorf("ratelimit: acquire: unexpected reply code %d", code)
	}
	d.RetryIn = time.Duration(max(at-now, 0)) * time.Microsecond
	d.Until = time.UnixMicro(at)
	m.Denied(req.Egress, g, d.Reason)
	return nil, d
}

func parseAcquire(r []any) (code, now, at int64, str string, flag int64, err error) {
	if len(r) != 5 {
		return 0, 0, 0, "", 0, fmt.Errorf("unexpected reply %v", r)
	}
	var ok [5]bool
	code, ok[0] = r[0].(int64)
	now, ok[1] = r[1].(int64)
	at, ok[2] = r[2].(int64)
	str, ok[3] = r[3].(string)
	flag, ok[4] = r[4].(int64)
	if ok != [5]bool{true, true, true, true, true} {
		return 0, 0, 0, "", 0, fmt.Errorf("unexpected reply %v", r)
	}
	return code, now, at, str, flag, nil
}

// CoolDown pauses a provider group for an egress after the provider
// throttled or blocked us (421, 4.7.x rate limits, RBL text: the validator
// classifies the reply). Every worker's Acquire for the pair is denied at
// once. The pause grows 15 min → 1 h → 4 h (Config.CoolDown) for blocks in a
// row and starts over after a quiet Config.CoolDown.ResetAfter. A report
// while a pause is running does not lengthen it: many workers see the same
// block. It returns the end of the pause in force.
//
// It takes two round trips: one to the pair's keys, one to the index that
// Paused reads (they lie in different Cluster slots). If the second fails
// the pause is still in force and the error says so.
func (l *Limiter) CoolDown(ctx context.Context, egress, group, reason string) (time.Time, error) {
	if err := checkEgress(egress); err != nil {
		return time.Time{}, fmt.Errorf("ratelimit: egress %q: %w", egress, err)
	}
	if err := checkName(group); err != nil {
		return time.Time{}, fmt.Errorf("ratelimit: group %q: %w", group, err)
	}
	tag := l.tag(egress, group)
	args := append([]any{l.offset.Load(), reason, l.cfg.CoolDown.ResetAfter.Microseconds()}, l.steps...)
	r, err := coolDownScript.Run(ctx, l.rdb, []string{tag + ":cd", tag + ":cdstep"}, args...).Slice()
	if err != nil {
		return time.Time{}, fmt.Errorf("ratelimit: cool-down %s via %s: %w", group, egress, err)
	}
	if len(r) != 6 {
		return time.Time{}, fmt.Errorf("ratelimit: cool-down: unexpected reply %v", r)
	}
	opened, _ := r[0].(int64)
	now, _ := r[1].(int64)
	untilUS, _ := r[2].(int64)
	until := time.UnixMicro(untilUS)
	if opened == 0 {
		return until, nil
	}
	l.cfg.Metrics.CoolDownOpened(egress, group, reason, time.Duration(untilUS-now)*time.Microsecond)
	err = indexAddScript.Run(ctx, l.rdb, []string{l.cfg.Prefix + "paused"}, l.offset.Load(), egress+"|"+group, untilUS).Err()
	if err != nil {
		return until, fmt.Errorf("ratelimit: cool-down %s via %s is in force but not listed by Paused: %w", group, egress, err)
	}
	return until, nil
}

// Resume ends a pause early (an operator's decision). The step count is kept,
// so a new block soon after still escalates.
func (l *Limiter) Resume(ctx context.Context, egress, group string) error {
	if err := checkEgress(egress); err != nil {
		return fmt.Errorf("ratelimit: egress %q: %w", egress, err)
	}
	if err := checkName(group); err != nil {
		return fmt.Errorf("ratelimit: group %q: %w", group, err)
	}
	if err := l.rdb.Del(ctx, l.tag(egress, group)+":cd").Err(); err != nil {
		return fmt.Errorf("ratelimit: resume %s via %s: %w", group, egress, err)
	}
	if err := l.rdb.ZRem(ctx, l.cfg.Prefix+"paused", egress+"|"+group).Err(); err != nil {
		return fmt.Errorf("ratelimit: resume %s via %s: %w", group, egress, err)
	}
	return nil
}

// Paused lists the pauses in force, soonest end first. It reads one index
// key (so it works when the pairs' keys live in many Cluster slots), then
// each pair's record in one pipeline; the pair's record is the authority,
// so an index entry whose pause was resumed is skipped.
func (l *Limiter) Paused(ctx context.Context) ([]Pause, error) {
	r, err := pausedScript.Run(ctx, l.rdb, []string{l.cfg.Prefix + "paused"}, l.offset.Load()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("ratelimit: paused: %w", err)
	}
	if len(r)%2 != 1 {
		return nil, fmt.Errorf("ratelimit: paused: unexpected reply %v", r)
	}
	var now int64
	fmt.Sscan(r[0], &now)
	type entry struct {
		egress, group string
		cmd           *redis.SliceCmd
	}
	var entries []entry
	pipe := l.rdb.Pipeline()
	for i := 1; i < len(r); i += 2 {
		egress, group, ok := strings.Cut(r[i], "|")
		if !ok {
			continue
		}
		entries = append(entries, entry{egress, group, pipe.HMGet(ctx, l.tag(egress, group)+":cd", "until", "reason", "since", "step")})
	}
	if len(entries) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("ratelimit: paused: %w", err)
		}
	}
	var out []Pause
	for _, e := range entries {
		v := e.cmd.Val()
		var until, since int64
		var step int
		if len(v) != 4 || v[0] == nil {
			continue
		}
		fmt.Sscan(fmt.Sprint(v[0]), &until)
		if until <= now {
			continue
		}
		fmt.Sscan(fmt.Sprint(v[2]), &since)
		fmt.Sscan(fmt.Sprint(v[3]), &step)
		reason, _ := v[1].(string)
		out = append(out, Pause{
			Egress: e.egress, Group: e.group, Reason: reason,
			Since: time.UnixMicro(since), Until: time.UnixMicro(until), Step: step,
		})
	}
	slices.SortFunc(out, func(a, b Pause) int {
		return cmp.Or(a.Until.Compare(b.Until), strings.Compare(a.Group, b.Group), strings.Compare(a.Egress, b.Egress))
	})
	return out, nil
}

// checkEgress keeps the egress usable inside a key's hash tag and as the
// left half of an index member "egress|group".
func checkEgress(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 255 {
		return errors.New("longer than 255 bytes")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '{' || r == '}' || r == '|' {
			return fmt.Errorf("character %q not allowed", r)
		}
	}
	return nil
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}
