package ratelimit

import "time"

// Advance moves l's view of Redis's clock forward by d, so tests can step
// over lease, reservation and cool-down expiries without waiting. Limiters
// sharing keys in a test must be advanced together.
func Advance(l *Limiter, d time.Duration) { l.offset.Add(d.Microseconds()) }

// OnKeep makes f hear of every keeper pass of l: the leases it put back
// and the pipeline's error. Set it before l's first Acquire.
func OnKeep(l *Limiter, f func(back int, err error)) { l.onKeep = f }
