package validator

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// A refusal of the random catch-all RCPT that is not "no such mailbox" (too
// many recipients, a block) proves nothing: it is not remembered as "not
// catch-all", and a block on it still pauses the provider at once.
func TestCatchAllInconclusiveRepliesAreNotRemembered(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		random       *smtp.SMTPError
		wantCoolDown bool
	}{
		{"too many recipients", &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 5, 3}, Message: "Too many recipients"}, false},
		{"blocked", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
				if strings.HasPrefix(to, "user") {
					return nil
				}
				return tt.random
			}})
			g := newCountingGate()
			p := newTestProber(t, srv.Port(), g, nil)
			for _, r := range addrs(2, "example.com") {
				got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), r, false)
				if got.CatchAll != nil {
					t.Errorf("%s: catch-all %s from an inconclusive reply", r, fmtPtr(got.CatchAll))
				}
				if got.Outcome.Verdict != Valid {
					t.Errorf("%s: verdict %s, want the real RCPT's valid to stand", r, got.Outcome.Verdict)
				}
			}
			if _, known := p.catchAllCache.CatchAll(t.Context(), "example.com"); known {
				t.Error("an inconclusive catch-all reply was remembered")
			}
			g.mu.Lock()
			events := strings.Join(g.events, ",")
			g.mu.Unlock()
			if got := strings.Contains(events, ActionCoolDown.String()); got != tt.wantCoolDown {
				t.Errorf("cool-down reported = %v, want %v (events %s)", got, tt.wantCoolDown, events)
			}
		})
	}
}

// A 421 answered to RSET on a reused session is the server throttling us:
// it is reported (the cool-down opens) and the same host is not redialled
// at once.
func TestRsetRefusalOnReusedSessionIsReported(t *testing.T) {
	t.Parallel()
	script := `
< 220 mx.example.com ESMTP
> EHLO *
< 250 mx.example.com
> MAIL FROM:<*>
< 250 2.1.0 Ok
> RCPT TO:<alice@a.example>
< 250 2.1.5 Ok
> RSET
< 421 4.7.0 Try again later, closing connection.
! close
`
	f := smtptest.StartScript(t, script)
	g := newCountingGate()
	p := poolProber(t, f.Port(), g, nil)
	if got := p.Probe(t.Context(), mxSet(f.Addr().Addr()), "alice@a.example", false); got.Outcome.Verdict != Valid {
		t.Fatalf("first probe %+v", got.Outcome)
	}
	got := p.Probe(t.Context(), mxSet(f.Addr().Addr()), "bob@b.example", false)
	if got.Outcome.Reason != ReasonRateLimited || got.Outcome.Verdict != Unknown {
		t.Errorf("second probe %+v, want unknown/rate_limited from the RSET reply", got.Outcome)
	}
	if n := f.Conns(); n != 1 {
		t.Errorf("%d connections: a throttled host must not be redialled at once", n)
	}
	g.mu.Lock()
	events := strings.Join(g.events, ",")
	g.mu.Unlock()
	if !strings.Contains(events, ActionCoolDown.String()) {
		t.Errorf("no cool-down reported: %s", events)
	}
}

// A parked session that announced its idle timeout ("421 … timeout
// exceeded") is dropped unread; the next address is asked on a new
// session, never answered by the stale 421.
func TestParkedSessionThatSpokeIsDropped(t *testing.T) {
	t.Parallel()
	script := `
< 220 mx.example.com ESMTP
> EHLO *
< 250 mx.example.com
> MAIL FROM:<*>
< 250 2.1.0 Ok
> RCPT TO:<*>
< 250 2.1.5 Ok
! pause 200ms
< 421 4.4.2 mx.example.com Error: timeout exceeded
! hang
`
	f := smtptest.StartScript(t, script)
	p := poolProber(t, f.Port(), nil, nil)
	if got := p.Probe(t.Context(), mxSet(f.Addr().Addr()), "alice@a.example", false); got.Outcome.Verdict != Valid {
		t.Fatalf("first probe %+v", got.Outcome)
	}
	// Let the unsolicited line (sent 200 ms after the 250) reach our
	// socket while the session is parked; the peer's timing is what is
	// under test, and the fake has no signal for "sent".
	time.Sleep(700 * time.Millisecond)
	got := p.Probe(t.Context(), mxSet(f.Addr().Addr()), "bob@a.example", false)
	if got.Outcome.Verdict != Valid {
		t.Fatalf("probe answered by the stale session: %+v", got.Outcome)
	}
	if f.Conns() < 2 {
		t.Fatal("the parked session that spoke was reused")
	}
}

// A "550 5.1.1 no such mailbox" for a real candidate proves the domain is
// not a catch-all: the domain's next accepted address is answered without
// the random RCPT (a certain refusal that counts toward harvest limits).
// Other refusals, even ones classified mailbox_not_found, prove nothing:
// catch-all servers refuse bad syntax, moved or blocked users too.
func TestMailboxNotFoundProvesNotCatchAll(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		refusal    *smtp.SMTPError
		wantRandom bool // the random catch-all RCPT is sent for the accepted address
	}{
		{"550 5.1.1 user unknown", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table"}, false},
		{"550 5.7.1 policy refusal", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Recipient address rejected: Access denied"}, true},
		// Catch-all servers refuse these for particular local parts too.
		{"501 5.1.3 bad address syntax", &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}, true},
		{"550 5.1.6 user moved", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 6}, Message: "Recipient address rejected: user has moved"}, true},
		{"550 without an enhanced code", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.NoEnhancedCode, Message: "Recipient address rejected: User unknown"}, true},
		{"552 too many recipients", &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 5, 3}, Message: "Too many recipients"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var seen []string
			srv := smtptest.Start(t, smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
				mu.Lock()
				seen = append(seen, to)
				mu.Unlock()
				switch {
				case strings.HasPrefix(to, "user"):
					return nil
				case strings.HasPrefix(to, "nobody"):
					return tt.refusal
				}
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
			}})
			p := newTestProber(t, srv.Port(), nil, nil)
			mx := mxSet(srv.Addr().Addr())
			if got := p.Probe(t.Context(), mx, "nobody@example.com", false); got.Outcome.Verdict == Valid {
				t.Fatalf("nobody: %+v", got.Outcome)
			}
			got := p.Probe(t.Context(), mx, "user00@example.com", false)
			if got.Outcome.Verdict != Valid {
				t.Fatalf("user00: %+v, want valid", got.Outcome)
			}
			mu.Lock()
			random := len(seen) - 2
			mu.Unlock()
			if (random > 0) != tt.wantRandom {
				t.Errorf("RCPTs seen %q: random catch-all RCPT sent = %v, want %v", seen, random > 0, tt.wantRandom)
			}
			if !tt.wantRandom && (got.CatchAll == nil || *got.CatchAll) {
				t.Errorf("CatchAll = %s, want false (remembered from the user-unknown refusal)", fmtPtr(got.CatchAll))
			}
		})
	}
}

// panickyGate admits through a countingGate, but its admissions panic at
// Report: a stand-in for a bug anywhere in the conversation.
type panickyGate struct{ *countingGate }

func (g panickyGate) Admit(ctx context.Context, h MXHost) (Admission, error) {
	a, err := g.countingGate.Admit(ctx, h)
	return panickyAdmission{a}, err
}

type panickyAdmission struct{ Admission }

func (panickyAdmission) Report(Outcome) { panic("bug in the conversation") }

// A panic in the middle of a conversation closes the connection and gives
// the session's lease back at once, then reaches the caller (the worker
// turns it into a retry): no session slot is held until the lease's TTL,
// and no half-used session is parked.
func TestPanicMidConversationReleasesTheSession(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{})
	g := newCountingGate()
	p := newTestProber(t, srv.Port(), panickyGate{g}, nil)
	func() {
		defer func() {
			if r := recover(); r != "bug in the conversation" {
				t.Errorf("recovered %v; want the panic to reach the caller", r)
			}
		}()
		p.Probe(t.Context(), mxSet(srv.Addr().Addr()), "alice@example.com", false)
	}()
	g.waitDone(t, 1)
	if admitted, done := g.counts(); admitted != 1 || done != 1 {
		t.Errorf("admitted %d, done %d; want the one session's lease given back", admitted, done)
	}
	if n := p.pool.parked(); n != 0 {
		t.Errorf("%d sessions parked after a panic; want none", n)
	}
}

// With pipelining, QUIT goes in the last RCPT's group; a server that
// answers the RCPT and then closes without its 221 must not turn the
// answer into a connection failure (which moved on to the next MX, whose
// accept-everything answer came back as valid).
func TestPipelinedQuitWithout221KeepsTheAnswer(t *testing.T) {
	t.Parallel()
	second := smtptest.Start(t, smtptest.Options{Listen: netip.AddrPortFrom(loopback2, 0)})
	fake := smtptest.StartScript(t, `
		< 220 mx.example.com ESMTP
		> EHLO *
		< 250-mx.example.com
		< 250 PIPELINING
		> MAIL FROM:<*>
		> RCPT TO:<*>
		> QUIT
		< 250 2.1.0 Ok
		< 550 5.1.1 <alice@example.com>: Recipient address rejected: User unknown
		! close`, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), second.Addr().Port()))
	p := newTestProber(t, fake.Port(), nil, func(c *ProbeConfig) {
		c.Pipelining, c.Pool.Disabled, c.CatchAllProbe = true, true, false
	})
	got := p.Probe(t.Context(), mxSet(fake.Addr().Addr(), loopback2), "alice@example.com", false)
	if got.Outcome.Verdict != Invalid || got.Outcome.Reason != ReasonMailboxNotFound || second.Conns() != 0 {
		t.Errorf("got %s/%s from %s (err %v), backup MX asked %d times; want the first MX's invalid and no second host",
			got.Outcome.Verdict, got.Outcome.Reason, got.Host, got.Err, second.Conns())
	}
}

// A reused session that times out after the RCPT was sent is a slow or
// tarpitting server, not a stale session: the address is not asked again
// on a new connection (that doubles the load it pushes back on); the
// attempt ends unknown/timeout, retryable.
func TestReusedSessionTimeoutIsNotReasked(t *testing.T) {
	t.Parallel()
	f := smtptest.StartScript(t, `
< 220 mx.example.com ESMTP
> EHLO *
< 250 mx.example.com
> MAIL FROM:<*>
< 250 2.1.0 Ok
> RCPT TO:<*>
< 250 2.1.5 Ok
> RCPT TO:<*>
! hang
`)
	g := newCountingGate()
	p := poolProber(t, f.Port(), g, func(c *ProbeConfig) { c.CommandTimeout = 300 * time.Millisecond })
	if got := p.Probe(t.Context(), mxSet(f.Addr().Addr()), "alice@a.example", false); got.Outcome.Verdict != Valid {
		t.Fatalf("first probe %+v", got.Outcome)
	}
	got := p.Probe(t.Context(), mxSet(f.Addr().Addr()), "bob@a.example", false)
	admitted, _ := g.counts()
	if got.Outcome.Verdict != Unknown || got.Outcome.Reason != ReasonTimeout || !got.Outcome.Retryable || f.Conns() != 1 || admitted != 1 {
		t.Errorf("got %s/%s retryable %v, %d connections, %d admissions; want unknown/timeout on the one session",
			got.Outcome.Verdict, got.Outcome.Reason, got.Outcome.Retryable, f.Conns(), admitted)
	}
}

// A reused session whose RSET is refused with anything but a 421 or a
// throttle (here 502) is dropped, and the address, never asked, is asked
// on a new session: no final answer comes from a refused RSET.
func TestRsetRefusalAsksOnANewSession(t *testing.T) {
	t.Parallel()
	// Every connection plays this: the first takes alice and refuses the
	// RSET before bob; the second takes bob ("> *" is then its QUIT).
	f := smtptest.StartScript(t, `
< 220 mx.example.com ESMTP
> EHLO *
< 250 mx.example.com
> MAIL FROM:<*>
< 250 2.1.0 Ok
> RCPT TO:<*>
< 250 2.1.5 Ok
> *
< 502 5.5.2 Error: command not recognized
! close
`)
	p := poolProber(t, f.Port(), newCountingGate(), nil)
	mx := mxSet(f.Addr().Addr())
	if got := p.Probe(t.Context(), mx, "alice@a.example", false); got.Outcome.Verdict != Valid {
		t.Fatalf("alice: %+v", got.Outcome)
	}
	got := p.Probe(t.Context(), mx, "bob@b.example", false)
	if got.Outcome.Verdict != Valid || f.Conns() != 2 {
		t.Errorf("bob: %s/%s after a refused RSET, %d connections; want valid, asked on a second session", got.Outcome.Verdict, got.Outcome.Reason, f.Conns())
	}
}

// The random catch-all RCPT is a recipient like any other: with it, ten
// addresses of a new domain take 11 RCPTs, so a session bounded at 10
// recipients cannot carry them all.
func TestCatchAllRcptCountsTowardTheSessionBound(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
		if strings.HasPrefix(to, "user") {
			return nil
		}
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
	}})
	p := newTestProber(t, srv.Port(), nil, nil) // catch-all probe on, pool on (10 recipients)
	for _, a := range addrs(10, "example.com") {
		if got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), a, false); got.Outcome.Verdict != Valid {
			t.Fatalf("%s: %+v", a, got.Outcome)
		}
	}
	if rcpts, conns := srv.Commands("RCPT"), srv.Conns(); rcpts != 11 || conns != 2 {
		t.Errorf("%d RCPTs on %d sessions; want 11 on 2 (at most 10 per session)", rcpts, conns)
	}
}
