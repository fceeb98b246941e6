package ratelimit

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Limit is the budget of one (egress, provider group) pair.
type Limit struct {
	// Rate new sessions are allowed per Per. Required, ≥ 1.
	Rate int
	// Per is the period Rate is counted over. Required, > 0.
	Per time.Duration
	// Burst is how many sessions may start back to back after a quiet
	// period. Required, ≥ 1.
	Burst int
	// Sessions is the number of concurrent SMTP sessions allowed per MX host
	// of the group. 0 means Config.Default's Sessions, and in Config.Default
	// itself DefaultSessions.
	Sessions int
}

// DefaultSessions is the concurrent-session cap per (egress, MX host) when a
// Limit leaves Sessions at 0 (docs/smtp.md §4: start at 2; Exchange allows
// 20 per source and Postfix 50, so 2 stays far below what trips them).
const DefaultSessions = 2

// interval is the emission interval 1/rate in microseconds, rounded up so the
// enforced rate is never above the configured one.
func (l Limit) interval() int64 {
	return int64(math.Ceil(float64(l.Per.Microseconds()) / float64(l.Rate)))
}

func (l Limit) String() string {
	return fmt.Sprintf("%d per %s, burst %d, %d sessions", l.Rate, l.Per, l.Burst, l.Sessions)
}

func (l Limit) validate() error {
	switch {
	case l.Rate <= 0:
		return fmt.Errorf("rate %d: must be at least 1", l.Rate)
	case l.Per <= 0:
		return fmt.Errorf("period %s: must be positive", l.Per)
	case l.Per < time.Millisecond:
		return fmt.Errorf("period %s: must be at least 1ms", l.Per)
	case l.Burst < 1:
		return fmt.Errorf("burst %d: must be at least 1", l.Burst)
	case l.Sessions < 0:
		return fmt.Errorf("sessions %d: must not be negative", l.Sessions)
	case l.Per.Microseconds()/int64(l.Rate) < 1:
		return fmt.Errorf("rate %d per %s: faster than one per microsecond", l.Rate, l.Per)
	}
	return nil
}

// CoolDownConfig shapes the exponential pause after a provider throttles or
// blocks us (docs/smtp.md §4: 15 min → 1 h → 4 h).
type CoolDownConfig struct {
	// Initial is the first pause. Default 15 min.
	Initial time.Duration
	// Multiplier grows each further pause. Default 4.
	Multiplier float64
	// Max caps a pause. Default 4 h.
	Max time.Duration
	// ResetAfter is how long a provider must stay quiet after its last
	// pause ended before the next block starts again at Initial. Default 24 h.
	ResetAfter time.Duration
}

// Config configures a Limiter. Zero scalar fields take the documented
// defaults; maps are used as given (nil means none). DefaultConfig returns a
// Config with the built-in provider limits and overrides filled in.
type Config struct {
	// Prefix starts every key. Default "mxprobe:rl:". It must not contain
	// braces: the hash tag that pins a provider's keys to one Redis Cluster
	// slot follows it.
	Prefix string

	// Default is the limit of any group without an entry in Providers.
	// Zero means 10 per minute, burst 3, 2 sessions (docs/smtp.md §4).
	Default Limit

	// Providers holds per-group limits, keyed by group name (see Group).
	Providers map[string]Limit

	// Overrides maps an MX host suffix to a group name, for providers whose
	// registrable domain is shared by services with separate budgets, e.g.
	// "olc.protection.outlook.com" (consumer Outlook) apart from
	// "mail.protection.outlook.com" (Microsoft 365 tenants). The longest
	// matching suffix wins; a suffix matches the host itself or any name
	// below it at a label boundary.
	Overrides map[string]string

	// LeaseTTL is how long a session lease lives unless extended; a crashed
	// worker's session frees itself after this. Default 2 min (a probe is
	// banner + EHLO + STARTTLS + MAIL + ≤10 RCPT; long sessions call Extend).
	LeaseTTL time.Duration

	// SessionRetry caps the RetryIn given when all sessions of an MX host
	// are busy (sessions usually end long before their lease expires).
	// Default 5 s.
	SessionRetry time.Duration

	// ReserveHorizon bounds how far ahead a denied caller may reserve a
	// slot. Beyond it the caller is told to come back when a reservation is
	// possible, so the reservation set stays small. Default 1 h.
	ReserveHorizon time.Duration

	// ReserveGrace is how long after its slot a reservation can still be
	// redeemed. It must cover the caller's scheduling delay (asynq moves
	// retries to the queue every few seconds). Default 30 s.
	ReserveGrace time.Duration

	// FailoverSettle is how long a provider admits no new session after
	// its keys are found on a different Redis master than the one that
	// last wrote them and this master is the replica that was promoted
	// (a Sentinel or Cluster failover; not a restart):
	// leases written to the old master just before may be lost, and their
	// holders' keepers put them back meanwhile (see LeaseKeepEvery).
	// Default 6 s.
	FailoverSettle time.Duration

	// LeaseKeepEvery is how often each Limiter puts the leases it holds
	// back into Redis where a failover lost them. It must be well below
	// FailoverSettle. Default 2 s.
	LeaseKeepEvery time.Duration

	// CoolDown shapes pauses after blocks.
	CoolDown CoolDownConfig

	// Metrics receives counters. Default NopMetrics.
	Metrics Metrics
}

// DefaultConfig returns the built-in configuration: the conservative default
// limit, higher limits for the large providers (docs/smtp.md §4 suggests
// 10–20 new sessions per minute and up to 5 sessions for Google/Microsoft;
// we stay at the low end) and the Microsoft 365 / consumer Outlook split
// (docs/smtp.md §7).
func DefaultConfig() Config {
	big := Limit{Rate: 20, Per: time.Minute, Burst: 5, Sessions: 3}
	return Config{
		Prefix:  "mxprobe:rl:",
		Default: Limit{Rate: 10, Per: time.Minute, Burst: 3, Sessions: DefaultSessions},
		Providers: map[string]Limit{
			"google.com":                  big,
			"mail.protection.outlook.com": big,
			"olc.protection.outlook.com":  {Rate: 10, Per: time.Minute, Burst: 3, Sessions: 2},
			"yahoodns.net":                big,
		},
		Overrides: map[string]string{
			"mail.protection.outlook.com": "mail.protection.outlook.com",
			"olc.protection.outlook.com":  "olc.protection.outlook.com",
		},
		LeaseTTL:       2 * time.Minute,
		SessionRetry:   5 * time.Second,
		ReserveHorizon: time.Hour,
		ReserveGrace:   30 * time.Second,
		FailoverSettle: 6 * time.Second,
		LeaseKeepEvery: 2 * time.Second,
		CoolDown: CoolDownConfig{
			Initial:    15 * time.Minute,
			Multiplier: 4,
			Max:        4 * time.Hour,
			ResetAfter: 24 * time.Hour,
		},
		Metrics: NopMetrics{},
	}
}

// withDefaults fills zero scalar fields from DefaultConfig and copies the
// maps, so later changes by the caller do not reach a running Limiter.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Prefix == "" {
		c.Prefix = d.Prefix
	}
	if c.Default == (Limit{}) {
		c.Default = d.Default
	}
	if c.Default.Sessions == 0 {
		c.Default.Sessions = DefaultSessions
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = d.LeaseTTL
	}
	if c.SessionRetry == 0 {
		c.SessionRetry = d.SessionRetry
	}
	if c.ReserveHorizon == 0 {
		c.ReserveHorizon = d.ReserveHorizon
	}
	if c.ReserveGrace == 0 {
		c.ReserveGrace = d.ReserveGrace
	}
	if c.FailoverSettle == 0 {
		c.FailoverSettle = d.FailoverSettle
	}
	if c.LeaseKeepEvery == 0 {
		c.LeaseKeepEvery = d.LeaseKeepEvery
	}
	if c.CoolDown.Initial == 0 {
		c.CoolDown.Initial = d.CoolDown.Initial
	}
	if c.CoolDown.Multiplier == 0 {
		c.CoolDown.Multiplier = d.CoolDown.Multiplier
	}
	if c.CoolDown.Max == 0 {
		c.CoolDown.Max = d.CoolDown.Max
	}
	if c.CoolDown.ResetAfter == 0 {
		c.CoolDown.ResetAfter = d.CoolDown.ResetAfter
	}
	if c.Metrics == nil {
		c.Metrics = NopMetrics{}
	}
	providers := make(map[string]Limit, len(c.Providers))
	for g, l := range c.Providers {
		if l.Sessions == 0 {
			l.Sessions = c.Default.Sessions
		}
		providers[strings.ToLower(strings.TrimSuffix(g, "."))] = l
	}
	c.Providers = providers
	overrides := make(map[string]string, len(c.Overrides))
	for s, g := range c.Overrides {
		overrides[strings.ToLower(strings.Trim(s, "."))] = strings.ToLower(strings.TrimSuffix(g, "."))
	}
	c.Overrides = overrides
	return c
}

// Validate reports every problem in c (after defaults are applied), so a bad
// configuration fails at start-up with one clear message.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if strings.ContainsAny(c.Prefix, "{}") {
		errs = append(errs, fmt.Errorf("prefix %q: must not contain braces (they would break the Redis Cluster hash tag)", c.Prefix))
	}
	if err := c.Default.validate(); err != nil {
		errs = append(errs, fmt.Errorf("default limit: %w", err))
	}
	for _, g := range slices.Sorted(maps.Keys(c.Providers)) {
		if err := checkName(g); err != nil {
			errs = append(errs, fmt.Errorf("provider %q: %w", g, err))
		}
		if err := c.Providers[g].validate(); err != nil {
			errs = append(errs, fmt.Errorf("provider %q: %w", g, err))
		}
	}
	for _, s := range slices.Sorted(maps.Keys(c.Overrides)) {
		if err := checkName(s); err != nil {
			errs = append(errs, fmt.Errorf("override suffix %q: %w", s, err))
		}
		if err := checkName(c.Overrides[s]); err != nil {
			errs = append(errs, fmt.Errorf("override %q → group %q: %w", s, c.Overrides[s], err))
		}
	}
	for name, d := range map[string]time.Duration{
		"lease TTL":            c.LeaseTTL,
		"session retry":        c.SessionRetry,
		"reservation horizon":  c.ReserveHorizon,
		"reservation grace":    c.ReserveGrace,
		"failover settle":      c.FailoverSettle,
		"lease keep interval":  c.LeaseKeepEvery,
		"cool-down initial":    c.CoolDown.Initial,
		"cool-down max":        c.CoolDown.Max,
		"cool-down reset time": c.CoolDown.ResetAfter,
	} {
		if d < time.Millisecond {
			errs = append(errs, fmt.Errorf("%s %s: must be at least 1ms", name, d))
		}
	}
	if c.CoolDown.Multiplier < 1 || math.IsNaN(c.CoolDown.Multiplier) || math.IsInf(c.CoolDown.Multiplier, 0) {
		errs = append(errs, fmt.Errorf("cool-down multiplier %v: must be a finite number ≥ 1", c.CoolDown.Multiplier))
	}
	if c.LeaseKeepEvery*2 > c.FailoverSettle {
		errs = append(errs, fmt.Errorf("lease keep interval %s: must be at most half the failover settle time %s, so every holder puts its leases back before sessions are admitted again", c.LeaseKeepEvery, c.FailoverSettle))
	}
	if c.CoolDown.Max < c.CoolDown.Initial {
		errs = append(errs, fmt.Errorf("cool-down max %s: below initial %s", c.CoolDown.Max, c.CoolDown.Initial))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ratelimit: invalid config: %w", err)
	}
	return nil
}

// checkName accepts a lower-case DNS name (or IP literal) of sane length: the
// strings that become group names and, through them, Redis keys.
func checkName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	if len(s) > 253 {
		return errors.New("longer than 253 octets")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" {
			return errors.New("empty label")
		}
		if len(label) > 63 {
			return fmt.Errorf("label %q longer than 63 octets", label)
		}
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.', r == '_', r == ':':
		default:
			return fmt.Errorf("character %q not allowed (want lower-case letters, digits, '-', '_', '.', ':')", r)
		}
	}
	return nil
}
