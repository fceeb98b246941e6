package validator

import (
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// The real RCPT is accepted and the random one proves nothing: the address
// stays valid, its catch-all state is unknown, and nothing is remembered for
// the domain, so the next probe sends the random RCPT again.
func TestCatchAllInconclusiveIsUnknownAndNotRemembered(t *testing.T) {
	t.Parallel()
	head := `
		< 220 mx.example.com ESMTP
		> EHLO probe.mxprobe.test
		< 250 mx.example.com
		> MAIL FROM:<verify@mxprobe.test>
		< 250 Ok
		> RCPT TO:<alice@example.com>
		< 250 Ok
		> RCPT TO:<*>
	`
	tests := []struct {
		name string
		tail string
	}{
		{name: "dropped", tail: "! close"},
		{name: "reset", tail: "! reset"},
		{name: "4yz", tail: "< 451 4.3.0 Try again later\n> QUIT\n! close"},
		{name: "refusal not about the mailbox", tail: "< 550 5.7.1 Relaying denied\n> QUIT\n! close"},
		{name: "timed out", tail: "! hang"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := smtptest.StartScript(t, head+tt.tail)
			cache := NewMemoryCatchAllCache(0, 0)
			p := newTestProber(t, fake.Port(), nil, func(c *ProbeConfig) {
				c.CatchAllCache = cache
				c.Pool.Disabled = true
				c.CommandTimeout = 300 * time.Millisecond // the hang case
			})
			got := p.Probe(t.Context(), mxSet(fake.Addr().Addr()), "alice@example.com", false)
			if got.Outcome.Verdict != Valid || got.CatchAllState != CatchAllUnknown || got.CatchAll != nil {
				t.Fatalf("got %+v catch_all_state %q catch_all %v, want valid, unknown, nil", got.Outcome, got.CatchAllState, got.CatchAll)
			}
			if _, known := cache.CatchAll(t.Context(), "example.com"); known {
				t.Errorf("an inconclusive catch-all test was remembered")
			}
		})
	}
}

// An acceptance of the random RCPT that NOOP shows was not its own answer
// (a stray 250, then the RCPT's real 550 answering the NOOP) must not mark
// the domain catch-all for a day.
func TestCatchAllAcceptanceIsConfirmed(t *testing.T) {
	t.Parallel()
	fake := smtptest.StartScript(t, `
		< 220 mx.example.com ESMTP
		> EHLO probe.mxprobe.test
		< 250 mx.example.com
		> MAIL FROM:<verify@mxprobe.test>
		< 250 Ok
		> RCPT TO:<alice@example.com>
		< 250 Ok
		> RCPT TO:<*>
		< 250 2.1.5 Ok
		> NOOP
		< 550 5.1.1 No such user
		! close`)
	cache := NewMemoryCatchAllCache(0, 0)
	p := newTestProber(t, fake.Port(), nil, func(c *ProbeConfig) { c.CatchAllCache = cache; c.Pool.Disabled = true })
	got := p.Probe(t.Context(), mxSet(fake.Addr().Addr()), "alice@example.com", false)
	if got.Outcome.Verdict != Valid || got.CatchAllState != CatchAllUnknown {
		t.Fatalf("got %+v catch_all_state %q, want valid with the catch-all state unknown", got.Outcome, got.CatchAllState)
	}
	if v, known := cache.CatchAll(t.Context(), "example.com"); known {
		t.Errorf("remembered catch-all=%v from an unconfirmed acceptance", v)
	}
}
