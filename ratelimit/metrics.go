package ratelimit

import "time"

// Metrics receives the limiter's events; main wires it to Prometheus. Calls
// happen on the caller's goroutine right after the Redis round trip, so an
// implementation must be cheap and safe for concurrent use. Egress may have
// many values; an implementation that labels by it should bound cardinality.
type Metrics interface {
	// Acquired counts a granted lease; reserved says the caller redeemed a
	// reservation it was given earlier.
	Acquired(egress, group string, reserved bool)
	// Denied counts a denial by reason: ReasonRate, ReasonSessions,
	// ReasonCoolDown or ReasonFailover.
	Denied(egress, group, reason string)
	// Reserved counts a denied caller that was granted a future slot
	// ("wait granted"), wait being the time until that slot.
	Reserved(egress, group string, wait time.Duration)
	// CoolDownOpened counts a new pause of a provider (not the repeats that
	// other workers report while it is already paused).
	CoolDownOpened(egress, group, reason string, d time.Duration)
	// LeasesRestored counts leases the keeper put back after a failover
	// lost them.
	LeasesRestored(n int)
}

// NopMetrics discards every event; it is the default.
type NopMetrics struct{}

func (NopMetrics) Acquired(string, string, bool)                        {}
func (NopMetrics) Denied(string, string, string)                        {}
func (NopMetrics) Reserved(string, string, time.Duration)               {}
func (NopMetrics) CoolDownOpened(string, string, string, time.Duration) {}
func (NopMetrics) LeasesRestored(int)                                   {}

var _ Metrics = NopMetrics{}
