package validator

import (
	"fmt"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// A server with a hard error limit (Postfix's smtpd_hard_error_limit) ends
// the first session that reaches it with "421 … too many errors"; the
// verdicts it gave stand, and later sessions to the host stay one error
// below the limit, so the limit is met once and never again.
func TestErrorLimitLowersRejectBudget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		limit int
		pipe  bool
	}{{1, false}, {2, false}, {3, false}, {2, true}, {3, true}} {
		limit := tc.limit
		t.Run(fmt.Sprintf("limit %d, pipelining %v", limit, tc.pipe), func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, smtptest.Options{ErrorLimit: limit, RcptDefault: errUnknownUser})
			p := newTestProber(t, srv.Port(), nil, func(c *ProbeConfig) {
				c.CatchAllProbe, c.Transcript, c.Pipelining = false, false, tc.pipe
			})
			mx := mxSet(srv.Addr().Addr())
			for i := range 8 {
				rcpt := fmt.Sprintf("nobody%d@example.com", i)
				if got := p.Probe(t.Context(), mx, rcpt, false); got.Outcome.Verdict != Invalid {
					t.Errorf("%s: %+v err %v, want invalid", rcpt, got.Outcome, got.Err)
				}
			}
			want := max(limit-1, 1)
			if b, ok := p.localBudgets.RejectBudget(t.Context(), "mx1.example.com"); !ok || b != want {
				t.Errorf("learnt budget %d (%v), want %d", b, ok, want)
			}
			// Limit 1: every refusal reaches it; nothing can avoid that
			// but not asking. Otherwise only the first session met it.
			if hits := srv.ErrorLimitHits(); limit > 1 && hits != 1 {
				t.Errorf("sessions ended by the error limit = %d, want 1", hits)
			}
			p.Close()
		})
	}
}

// The limit met on a reused session, as the reply to the first command of
// the next probe: that address was never asked; a new session asks it.
func TestErrorLimitOnReusedSessionAsksAgain(t *testing.T) {
	t.Parallel()
	fake := smtptest.StartScript(t, `
		< 220 mx.example.com ESMTP
		> EHLO probe.mxprobe.test
		< 250 mx.example.com
		> MAIL FROM:<verify@mxprobe.test>
		< 250 Ok
		> RCPT TO:<*>
		< 550 5.1.1 No such user
		> *
		< 421 4.7.0 mx.example.com Error: too many errors
		! close`)
	p := newTestProber(t, fake.Port(), nil, func(c *ProbeConfig) { c.CatchAllProbe = false })
	mx := mxSet(fake.Addr().Addr())
	for _, rcpt := range []string{"a@example.com", "b@example.com"} {
		if got := p.Probe(t.Context(), mx, rcpt, false); got.Outcome.Verdict != Invalid {
			t.Errorf("%s: %+v err %v, want invalid", rcpt, got.Outcome, got.Err)
		}
	}
	if b, ok := p.localBudgets.RejectBudget(t.Context(), "mx1.example.com"); !ok || b != 1 {
		t.Errorf("learnt budget %d (%v), want 1", b, ok)
	}
	p.Close()
	if n := fake.Conns(); n != 2 {
		t.Errorf("connections = %d, want 2", n)
	}
}

// A fresh session whose RCPT gets the 421 (the limit met by an earlier
// error of the same session) answers unknown and retryable: the address is
// asked again later, never failed, and no cool-down is asked for.
func TestErrorLimitAtRcptIsRetryableUnknown(t *testing.T) {
	t.Parallel()
	fake := smtptest.StartScript(t, `
		< 220 mx.example.com ESMTP
		> EHLO probe.mxprobe.test
		< 502 5.5.2 Error: command not recognized
		> HELO probe.mxprobe.test
		< 250 mx.example.com
		> MAIL FROM:<verify@mxprobe.test>
		< 250 Ok
		> RCPT TO:<*>
		< 421 4.7.0 mx.example.com Error: too many errors
		! close`)
	g := &recordingGate{}
	p := newTestProber(t, fake.Port(), g, func(c *ProbeConfig) { c.CatchAllProbe = false })
	got := p.Probe(t.Context(), mxSet(fake.Addr().Addr()), "a@example.com", false)
	if got.Outcome.Verdict != Unknown || !got.Outcome.Retryable || got.Outcome.Reason != ReasonTooManyErrors || got.Outcome.Action == ActionCoolDown {
		t.Errorf("got %+v, want unknown, retryable, too_many_errors, no cool-down", got.Outcome)
	}
	if b, ok := p.localBudgets.RejectBudget(t.Context(), "mx1.example.com"); !ok || b != 1 {
		t.Errorf("learnt budget %d (%v), want 1", b, ok)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, o := range g.outcomes {
		if o.Action == ActionCoolDown {
			t.Errorf("reported %+v: a server's error limit is no cool-down", o)
		}
	}
}

// The in-process budgets only go down, expire after their TTL, treat a
// budget below 1 as 1, and key hosts by case-folded name without the dot.
func TestMemoryRejectBudgets(t *testing.T) {
	t.Parallel()
	clk := &testClock{t: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	m := NewMemoryRejectBudgets()
	m.now = clk.Now
	ctx := t.Context()
	if _, ok := m.RejectBudget(ctx, "mx.example.com"); ok {
		t.Fatal("budget known before any was learnt")
	}
	for _, step := range []struct{ set, want int }{{3, 3}, {2, 2}, {5, 2}, {-4, 1}, {0, 1}} {
		m.LowerRejectBudget(ctx, "MX.Example.COM.", step.set, time.Hour)
		if n, ok := m.RejectBudget(ctx, "mx.example.com"); !ok || n != step.want {
			t.Errorf("after %d: budget %d (%v), want %d", step.set, n, ok, step.want)
		}
	}
	clk.Advance(time.Hour)
	if n, ok := m.RejectBudget(ctx, "mx.example.com"); ok {
		t.Errorf("budget %d still known after its TTL", n)
	}
	// Once expired, a higher budget may be learnt again.
	m.LowerRejectBudget(ctx, "mx.example.com", 4, time.Hour)
	if n, _ := m.RejectBudget(ctx, "mx.example.com"); n != 4 {
		t.Errorf("budget after expiry %d, want 4", n)
	}
}

// Bad closing notices: a 421 that never ends, or a line that only starts
// like one, is no closing notice; the session is out of step and the RCPT
// gets no verdict, within the command timeout.
func TestClosingNoticeHostile(t *testing.T) {
	t.Parallel()
	head := `
		< 220 mx.example.com ESMTP
		> EHLO probe.mxprobe.test
		< 250 mx.example.com
		> MAIL FROM:<verify@mxprobe.test>
		< 250 Ok
		> RCPT TO:<a@example.com>
	`
	tests := []struct {
		name string
		tail string
		want Verdict
	}{
		{name: "421 multi-line that never ends", tail: "! burst 550 5.1.1 No such user || 421-4.7.0 closing\n! hang", want: Unknown},
		{name: "421x is not a reply", tail: "! burst 550 5.1.1 No such user || 421x too many errors\n! hang", want: Unknown},
		{name: "well-formed 421 after the reply", tail: "! burst 550 5.1.1 No such user || 421 4.7.0 Error: too many errors\n! close", want: Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := smtptest.StartScript(t, head+tt.tail)
			p := newTestProber(t, fake.Port(), nil, func(c *ProbeConfig) {
				c.CatchAllProbe, c.CommandTimeout = false, 300*time.Millisecond
			})
			got := p.Probe(t.Context(), mxSet(fake.Addr().Addr()), "a@example.com", false)
			if got.Outcome.Verdict != tt.want {
				t.Errorf("got %+v err %v, want %s", got.Outcome, got.Err, tt.want)
			}
			if _, learnt := p.localBudgets.RejectBudget(t.Context(), "mx1.example.com"); learnt != (tt.want == Invalid) {
				t.Errorf("budget learnt = %v, want %v", learnt, tt.want == Invalid)
			}
		})
	}
}
