package validator

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

const (
	testHelo = "probe.mxprobe.test"
	testFrom = "verify@mxprobe.test"
)

var (
	errUnknownUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<x>: Recipient address rejected: User unknown in virtual mailbox table"}
	loopback2      = netip.MustParseAddr("127.0.0.2")
)

// newTestProber builds a Prober aimed at port with test-friendly timeouts;
// mutate adjusts the config.
func newTestProber(t *testing.T, port int, gate Gate, mutate func(*ProbeConfig)) *Prober {
	t.Helper()
	cfg := ProbeConfig{
		HeloName:       testHelo,
		MailFrom:       testFrom,
		Port:           port,
		ConnectTimeout: 5 * time.Second,
		CommandTimeout: 5 * time.Second,
		CatchAllProbe:  true,
		Transcript:     true,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := NewProber(cfg, gate)
	if err != nil {
		t.Fatalf("NewProber: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// mxSet makes an MX set of hosts mx1.example.com, mx2.example.com… at the
// given loopback addresses, in order.
func mxSet(addrs ...netip.Addr) MXSet {
	s := MXSet{Domain: "example.com"}
	for i, a := range addrs {
		s.Hosts = append(s.Hosts, MXHost{Name: "mx" + string(rune('1'+i)) + ".example.com", Pref: uint16(10 * (i + 1)), Addrs: []netip.Addr{a}})
	}
	return s
}

func TestProbeVerdicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		opts         smtptest.Options
		rcpt         string
		wantVerdict  Verdict
		wantReason   Reason
		wantStage    Stage
		wantCode     int
		wantRetry    bool
		wantAction   Action
		wantCatchAll *bool
		wantRcpts    int // RCPTs the server saw
	}{
		{
			name: "valid", opts: smtptest.Options{Rcpt: map[string]*smtp.SMTPError{"alice@example.com": nil}, RcptDefault: errUnknownUser},
			wantVerdict: Valid, wantReason: ReasonMailboxExists, wantStage: StageRcpt, wantCode: 250, wantCatchAll: ptr(false), wantRcpts: 2,
		},
		{
			name: "mailbox not found 550 5.1.1", opts: smtptest.Options{RcptDefault: errUnknownUser},
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound, wantStage: StageRcpt, wantCode: 550, wantRcpts: 1,
		},
		{
			name:        "greylisted 450 4.2.0",
			opts:        smtptest.Options{RcptDefault: &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "<alice@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html"}},
			wantVerdict: Unknown, wantReason: ReasonGreylisted, wantStage: StageRcpt, wantCode: 450, wantRetry: true, wantRcpts: 1,
		},
		{
			name: "catch-all", opts: smtptest.Options{},
			wantVerdict: Risky, wantReason: ReasonCatchAll, wantStage: StageCatchAll, wantCode: 250, wantCatchAll: ptr(true), wantRcpts: 2,
		},
		{
			name:        "RBL 554 5.7.1 blocked using is never invalid",
			opts:        smtptest.Options{RcptDefault: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org"}},
			wantVerdict: Unknown, wantReason: ReasonBlocked, wantStage: StageRcpt, wantCode: 554, wantRetry: true, wantAction: ActionCoolDown, wantRcpts: 1,
		},
		{
			name:        "452 too many recipients",
			opts:        smtptest.Options{RcptDefault: &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}},
			wantVerdict: Unknown, wantReason: ReasonTooManyRcpts, wantStage: StageRcpt, wantCode: 452, wantRetry: true, wantAction: ActionNewSession, wantRcpts: 1,
		},
		{
			name:        "mailbox full",
			opts:        smtptest.Options{RcptDefault: &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "<alice@example.com>: Mailbox full"}},
			wantVerdict: Risky, wantReason: ReasonMailboxFull, wantStage: StageRcpt, wantCode: 552, wantRcpts: 1,
		},
		{
			name:        "disabled",
			opts:        smtptest.Options{RcptDefault: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 2, 1}, Message: "The email account that you tried to reach is disabled."}},
			wantVerdict: Invalid, wantReason: ReasonMailboxDisabled, wantStage: StageRcpt, wantCode: 550, wantRcpts: 1,
		},
		{
			name:        "MAIL FROM rejected",
			opts:        smtptest.Options{Mail: &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address rejected: not owned by user"}},
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantStage: StageMail, wantCode: 553, wantAction: ActionFixSender, wantRcpts: 0,
		},
		{
			name: "SMTPUTF8 needed but not offered", rcpt: "jörg@example.com", opts: smtptest.Options{},
			wantVerdict: Unknown, wantReason: ReasonUnverifiableEAI, wantStage: StageMail, wantRcpts: 0,
		},
		{
			name: "SMTPUTF8 needed and offered", rcpt: "jörg@example.com",
			opts:        smtptest.Options{SMTPUTF8: true, Rcpt: map[string]*smtp.SMTPError{"jörg@example.com": nil}, RcptDefault: errUnknownUser},
			wantVerdict: Valid, wantReason: ReasonMailboxExists, wantStage: StageRcpt, wantCode: 250, wantCatchAll: ptr(false), wantRcpts: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, tt.opts)
			p := newTestProber(t, srv.Port(), nil, nil)
			rcpt := tt.rcpt
			if rcpt == "" {
				rcpt = "alice@example.com"
			}
			utf8 := strings.ContainsFunc(rcpt, func(r rune) bool { return r > 127 })
			got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), rcpt, utf8)
			if got.Outcome.Verdict != tt.wantVerdict || got.Outcome.Reason != tt.wantReason {
				t.Fatalf("outcome = %s/%s (rule %q, err %v), want %s/%s", got.Outcome.Verdict, got.Outcome.Reason, got.Outcome.Rule, got.Err, tt.wantVerdict, tt.wantReason)
			}
			if got.Stage != tt.wantStage {
				t.Errorf("stage = %s, want %s", got.Stage, tt.wantStage)
			}
			if tt.wantCode == 0 && got.Reply != nil || tt.wantCode != 0 && (got.Reply == nil || got.Reply.Code != tt.wantCode) {
				t.Errorf("reply = %+v, want code %d", got.Reply, tt.wantCode)
			}
			if got.Outcome.Retryable != tt.wantRetry || got.Outcome.Action != tt.wantAction {
				t.Errorf("retryable, action = %v, %v; want %v, %v", got.Outcome.Retryable, got.Outcome.Action, tt.wantRetry, tt.wantAction)
			}
			if (got.CatchAll == nil) != (tt.wantCatchAll == nil) || got.CatchAll != nil && *got.CatchAll != *tt.wantCatchAll {
				t.Errorf("CatchAll = %v, want %v", fmtPtr(got.CatchAll), fmtPtr(tt.wantCatchAll))
			}
			if got.Err != nil {
				t.Errorf("Err = %v, want nil", got.Err)
			}
			if got.Host != "mx1.example.com" || got.Addr != srv.Addr().Addr() {
				t.Errorf("host, addr = %s, %s", got.Host, got.Addr)
			}
			if n := len(srv.Rcpts()); n != tt.wantRcpts {
				t.Errorf("server saw %d RCPTs %q, want %d", n, srv.Rcpts(), tt.wantRcpts)
			}
			if n := srv.Commands("DATA"); n != 0 {
				t.Errorf("DATA sent %d times; the prober must never send DATA", n)
			}
			if n := srv.Conns(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
			if utf8 && tt.wantRcpts > 0 && !strings.HasSuffix(lastSent(got.Transcript, "MAIL"), " SMTPUTF8") {
				t.Errorf("MAIL without SMTPUTF8: %q", lastSent(got.Transcript, "MAIL"))
			}
			if !utf8 && strings.Contains(lastSent(got.Transcript, "MAIL"), "SMTPUTF8") {
				t.Errorf("SMTPUTF8 sent for an ASCII mailbox")
			}
		})
	}
}

func fmtPtr(b *bool) string {
	if b == nil {
		return "nil"
	}
	if *b {
		return "true"
	}
	return "false"
}

// lastSent returns the last line we sent that starts with verb.
func lastSent(tr []TranscriptLine, verb string) string {
	s := ""
	for _, l := range tr {
		if l.Dir == ">" && strings.HasPrefix(l.Line, verb) {
			s = l.Line
		}
	}
	return s
}

func TestProbeProfileAcceptsAll(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{})
	p := newTestProber(t, srv.Port(), nil, nil)
	mx := MXSet{Domain: "yahoo.com", Hosts: []MXHost{{Name: "mta5.am0.yahoodns.net.", Addrs: []netip.Addr{srv.Addr().Addr()}}}}
	got := p.Probe(t.Context(), mx, "alice@yahoo.com", false)
	if got.Outcome.Verdict != Risky || got.Outcome.Reason != ReasonAcceptsAllAtRcpt {
		t.Fatalf("outcome = %+v, want risky/accepts_all_at_rcpt", got.Outcome)
	}
	if n := len(srv.Rcpts()); n != 1 {
		t.Errorf("%d RCPTs; the catch-all probe is pointless at Yahoo", n)
	}
	if got.CatchAll != nil {
		t.Errorf("CatchAll = %v, want nil (not tested)", *got.CatchAll)
	}
}

func TestProbeSkipsCatchAllForGoogle(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{})
	p := newTestProber(t, srv.Port(), nil, nil)
	mx := MXSet{Domain: "gmail.com", Hosts: []MXHost{{Name: "gmail-smtp-in.l.google.com", Addrs: []netip.Addr{srv.Addr().Addr()}}}}
	got := p.Probe(t.Context(), mx, "alice@gmail.com", false)
	if got.Outcome.Verdict != Valid || got.CatchAll != nil || len(srv.Rcpts()) != 1 {
		t.Fatalf("outcome %+v, CatchAll %v, RCPTs %q; want valid, untested, 1 RCPT", got.Outcome, fmtPtr(got.CatchAll), srv.Rcpts())
	}
}

func TestProbeMXFallback(t *testing.T) {
	t.Parallel()
	t.Run("primary down, secondary answers", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.Options{Rcpt: map[string]*smtp.SMTPError{"alice@example.com": nil}, RcptDefault: errUnknownUser})
		// Nothing listens on 127.0.0.2 at the server's port.
		p := newTestProber(t, srv.Port(), nil, nil)
		got := p.Probe(t.Context(), mxSet(loopback2, srv.Addr().Addr()), "alice@example.com", false)
		if got.Outcome.Verdict != Valid || got.Host != "mx2.example.com" {
			t.Fatalf("outcome %+v from %s (err %v), want valid from mx2", got.Outcome, got.Host, got.Err)
		}
	})
	t.Run("5yz RCPT: next MX never tried", func(t *testing.T) {
		t.Parallel()
		first := smtptest.Start(t, smtptest.Options{RcptDefault: errUnknownUser})
		second := smtptest.Start(t, smtptest.Options{Listen: netip.AddrPortFrom(loopback2, first.Addr().Port())})
		p := newTestProber(t, first.Port(), nil, nil)
		got := p.Probe(t.Context(), mxSet(first.Addr().Addr(), loopback2), "alice@example.com", false)
		if got.Outcome.Verdict != Invalid {
			t.Fatalf("outcome %+v, want invalid", got.Outcome)
		}
		if first.Conns() != 1 || second.Conns() != 0 {
			t.Errorf("connections: first %d, second %d; want 1, 0", first.Conns(), second.Conns())
		}
	})
	t.Run("4yz RCPT: next MX never tried", func(t *testing.T) {
		t.Parallel()
		first := smtptest.Start(t, smtptest.Options{RcptDefault: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary lookup failure"}})
		second := smtptest.Start(t, smtptest.Options{Listen: netip.AddrPortFrom(loopback2, first.Addr().Port())})
		p := newTestProber(t, first.Port(), nil, nil)
		got := p.Probe(t.Context(), mxSet(first.Addr().Addr(), loopback2), "alice@example.com", false)
		if got.Outcome.Reason != ReasonTempFailure || second.Conns() != 0 {
			t.Errorf("outcome %+v, second MX connections %d; want temporary_failure and 0", got.Outcome, second.Conns())
		}
	})
	t.Run("421 at banner: next MX answers", func(t *testing.T) {
		t.Parallel()
		second := smtptest.Start(t, smtptest.Options{Listen: netip.AddrPortFrom(loopback2, 0)})
		fake := smtptest.StartScript(t, `
			< 421 4.7.0 mx1.example.com Error: too many connections from 127.0.0.1
			> QUIT
			! close
		`, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), second.Addr().Port()))
		p := newTestProber(t, fake.Port(), nil, nil)
		got := p.Probe(t.Context(), mxSet(fake.Addr().Addr(), loopback2), "alice@example.com", false)
		if got.Outcome.Verdict != Risky || got.Host != "mx2.example.com" {
			t.Errorf("outcome %+v from %s, want risky/catch_all from mx2", got.Outcome, got.Host)
		}
	})
	t.Run("every MX down", func(t *testing.T) {
		t.Parallel()
		closed := smtptest.ClosedPort(t)
		p := newTestProber(t, int(closed.Port()), nil, nil)
		got := p.Probe(t.Context(), mxSet(closed.Addr(), loopback2), "alice@example.com", false)
		if got.Outcome.Reason != ReasonConnectFailed || !got.Outcome.Retryable || !errors.Is(got.Err, ErrConnect) {
			t.Errorf("outcome %+v, err %v; want connect_failed, retryable, ErrConnect", got.Outcome, got.Err)
		}
	})
}

func TestProbeBannerRateLimited(t *testing.T) {
	t.Parallel()
	fake := smtptest.StartScript(t, `
		< 421 4.7.0 mx.example.com Error: too many connections from 127.0.0.1
		> QUIT
		! close
	`)
	p := newTestProber(t, fake.Port(), nil, nil)
	got := p.Probe(t.Context(), mxSet(fake.Addr().Addr()), "alice@example.com", false)
	want := Outcome{Verdict: Unknown, Reason: ReasonRateLimited, Retryable: true, Action: ActionCoolDown, Rule: "6 rate limited"}
	if got.Outcome != want || got.Stage != StageBanner {
		t.Errorf("got %+v at %s, want %+v at banner", got.Outcome, got.Stage, want)
	}
}

func TestProbeSTARTTLS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		opts       smtptest.Options
		verify     bool
		trust      bool
		wantReason Reason
		wantTLS    bool
	}{
		{name: "offered and used, opportunistic", opts: smtptest.Options{TLS: true}, wantReason: ReasonCatchAll, wantTLS: true},
		{name: "offered and verified", opts: smtptest.Options{TLS: true, Domain: "mx1.example.com"}, verify: true, trust: true, wantReason: ReasonCatchAll, wantTLS: true},
		{name: "verification fails", opts: smtptest.Options{TLS: true, Domain: "mx1.example.com"}, verify: true, wantReason: ReasonTLSError},
		{name: "wrong name fails verification", opts: smtptest.Options{TLS: true, Domain: "other.test"}, verify: true, trust: true, wantReason: ReasonTLSError},
		{name: "handshake broken", opts: smtptest.Options{BrokenTLS: true}, wantReason: ReasonTLSError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, tt.opts)
			p := newTestProber(t, srv.Port(), nil, func(c *ProbeConfig) {
				c.TLSVerify = tt.verify
				if tt.trust {
					c.TLSRootCAs = srv.CertPool()
				}
			})
			got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), "alice@example.com", false)
			if got.Outcome.Reason != tt.wantReason || got.TLS != tt.wantTLS {
				t.Fatalf("outcome %+v TLS %v (err %v), want %s TLS %v", got.Outcome, got.TLS, got.Err, tt.wantReason, tt.wantTLS)
			}
			if tt.wantReason == ReasonTLSError {
				if got.Outcome.Verdict != Unknown || !got.Outcome.Retryable || !errors.Is(got.Err, ErrTLS) || got.Stage != StageSTARTTLS {
					t.Errorf("TLS failure: %+v at %s, err %v; want unknown, retryable, ErrTLS at starttls", got.Outcome, got.Stage, got.Err)
				}
				if srv.Commands("RCPT") != 0 {
					t.Errorf("RCPT sent after a failed handshake")
				}
			}
			if tt.wantTLS && srv.TLSSessions() != 1 {
				t.Errorf("server saw %d TLS sessions, want 1", srv.TLSSessions())
			}
		})
	}
}

// TestProbeTLSFallback: after a broken handshake, the next probe of that
// host goes plaintext when verification is off, and never when it is on.
func TestProbeTLSFallback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		verify     bool
		wantSecond Reason
	}{
		{name: "opportunistic falls back to plaintext", wantSecond: ReasonCatchAll},
		{name: "verify never falls back", verify: true, wantSecond: ReasonTLSError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, smtptest.Options{BrokenTLS: true})
			p := newTestProber(t, srv.Port(), nil, func(c *ProbeConfig) { c.TLSVerify = tt.verify })
			first := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), "alice@example.com", false)
			if first.Outcome.Reason != ReasonTLSError {
				t.Fatalf("first probe: %+v, want tls_error", first.Outcome)
			}
			second := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), "alice@example.com", false)
			if second.Outcome.Reason != tt.wantSecond || second.TLS {
				t.Errorf("second probe: %+v TLS %v, want %s without TLS", second.Outcome, second.TLS, tt.wantSecond)
			}
		})
	}
}

// TestProbeHostile: each hostile peer ends within its bound with unknown,
// retryable, never invalid (docs/reliability.md §1).
func TestProbeHostile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		script     string
		cmdTimeout time.Duration
		ctxTimeout time.Duration
		wantErr    error
		wantReason Reason
		wantStage  Stage
	}{
		{name: "banner never sent: command timeout", script: "! hang", cmdTimeout: 200 * time.Millisecond,
			wantErr: errTimeout, wantReason: ReasonTimeout, wantStage: StageBanner},
		{name: "banner never sent: session bound", script: "! hang", cmdTimeout: time.Minute, ctxTimeout: 200 * time.Millisecond,
			wantErr: errTimeout, wantReason: ReasonTimeout, wantStage: StageBanner},
		{name: "one byte at a time: session bound holds", script: "! slow 50ms 220 mx.example.com ESMTP a very slow banner indeed", cmdTimeout: time.Minute, ctxTimeout: 300 * time.Millisecond,
			wantErr: errTimeout, wantReason: ReasonTimeout, wantStage: StageBanner},
		{name: "endless line", script: "! endless 220-", wantErr: ErrLineTooLong, wantReason: ReasonSMTPError, wantStage: StageBanner},
		{name: "10,000-line reply", script: "< 220 hi\n> EHLO " + testHelo + "\n! repeat 10000 250-x", wantErr: ErrReplyTooLong, wantReason: ReasonSMTPError, wantStage: StageEHLO},
		{name: "malformed code", script: "< 2x0 hi", wantErr: ErrMalformedReply, wantReason: ReasonSMTPError, wantStage: StageBanner},
		{name: "accept then close", script: "! close", wantErr: errAnyIO, wantReason: ReasonSMTPError, wantStage: StageBanner},
		{name: "reset during RCPT", script: `
			< 220 mx.example.com ESMTP
			> EHLO ` + testHelo + `
			< 250 mx.example.com
			> MAIL FROM:<` + testFrom + `>
			< 250 2.1.0 Ok
			> RCPT TO:<alice@example.com>
			! close`, wantErr: errAnyIO, wantReason: ReasonSMTPError, wantStage: StageRcpt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := smtptest.StartScript(t, tt.script)
			p := newTestProber(t, fake.Port(), nil, func(c *ProbeConfig) {
				if tt.cmdTimeout != 0 {
					c.CommandTimeout = tt.cmdTimeout
				}
			})
			ctx := t.Context()
			if tt.ctxTimeout != 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxTimeout)
				defer cancel()
			}
			start := time.Now()
			got := p.Probe(ctx, mxSet(fake.Addr().Addr()), "alice@example.com", false)
			took := time.Since(start)
			if bound := max(tt.cmdTimeout, tt.ctxTimeout) + 2*time.Second; tt.ctxTimeout != 0 && took > tt.ctxTimeout+2*time.Second || took > bound && tt.cmdTimeout < time.Minute {
				t.Errorf("took %v, beyond the bound", took)
			}
			checkHostile(t, got, tt.wantErr, tt.wantReason, tt.wantStage)
			var pe *ProbeError
			if !errors.As(got.Err, &pe) || pe.Host != "mx1.example.com" {
				t.Errorf("err %v is not a *ProbeError naming the host", got.Err)
			}
		})
	}
}

var (
	errTimeout = errors.New("any timeout")
	errAnyIO   = errors.New("any I/O error")
)

// TestProbeTranscript checks the conversation line by line; the fake fails
// the test on any line we send that the script does not expect.
func TestProbeTranscript(t *testing.T) {
	t.Parallel()
	catchAll := CatchAllLocalPart("example.com", testFrom, time.Now())
	tests := []struct {
		name        string
		script      string
		rcpt        string
		wantVerdict Verdict
		wantReason  Reason
	}{
		{
			name: "EHLO, MAIL, RCPT, catch-all RCPT, QUIT",
			script: `
				< 220-mx.example.com ESMTP
				< 220 no UCE
				> EHLO ` + testHelo + `
				< 250-mx.example.com
				< 250-PIPELINING
				< 250 8BITMIME
				> MAIL FROM:<` + testFrom + `>
				< 250 2.1.0 Ok
				> RCPT TO:<alice@example.com>
				< 250 2.1.5 Ok
				> RCPT TO:<` + catchAll + `@example.com>
				< 550 5.1.1 <` + catchAll + `@example.com>: Recipient address rejected: User unknown
				> QUIT
				< 221 2.0.0 Bye`,
			wantVerdict: Valid, wantReason: ReasonMailboxExists,
		},
		{
			name: "EHLO rejected: HELO fallback",
			script: `
				< 220 old.example.com SMTP
				> EHLO ` + testHelo + `
				< 502 5.5.1 Command not implemented
				> HELO ` + testHelo + `
				< 250 old.example.com
				> MAIL FROM:<` + testFrom + `>
				< 250 Ok
				> RCPT TO:<alice@example.com>
				< 550 5.1.1 No such user
				> QUIT
				< 221 Bye`,
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound,
		},
		{
			name: "STARTTLS refused with 454: continue in plaintext",
			script: `
				< 220 mx.example.com ESMTP
				> EHLO ` + testHelo + `
				< 250-mx.example.com
				< 250 STARTTLS
				> STARTTLS
				< 454 4.7.0 TLS not available due to local problem
				> MAIL FROM:<` + testFrom + `>
				< 250 Ok
				> RCPT TO:<alice@example.com>
				< 450 4.2.0 <alice@example.com>: Recipient address rejected: Greylisted
				> QUIT
				< 221 Bye`,
			wantVerdict: Unknown, wantReason: ReasonGreylisted,
		},
		{
			name: "banner 554: no service, QUIT",
			script: `
				< 554 mx.example.com No SMTP service here
				> QUIT
				< 221 Bye`,
			wantVerdict: Unknown, wantReason: ReasonNoService,
		},
		{
			name: "SMTPUTF8 offered: MAIL carries it",
			rcpt: "jörg@example.com",
			script: `
				< 220 mx.example.com ESMTP
				> EHLO ` + testHelo + `
				< 250-mx.example.com
				< 250 SMTPUTF8
				> MAIL FROM:<` + testFrom + `> SMTPUTF8
				< 250 Ok
				> RCPT TO:<jörg@example.com>
				< 553 5.1.3 mailbox name not allowed
				> QUIT
				< 221 Bye`,
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := smtptest.StartScript(t, tt.script)
			// One whole session per probe, QUIT included: no reuse here.
			p := newTestProber(t, fake.Port(), nil, func(c *ProbeConfig) { c.Pool.Disabled = true })
			rcpt := tt.rcpt
			if rcpt == "" {
				rcpt = "alice@example.com"
			}
			got := p.Probe(t.Context(), mxSet(fake.Addr().Addr()), rcpt, rcpt != "alice@example.com")
			if got.Outcome.Verdict != tt.wantVerdict || got.Outcome.Reason != tt.wantReason {
				t.Errorf("outcome %+v (err %v), want %s/%s", got.Outcome, got.Err, tt.wantVerdict, tt.wantReason)
			}
			// The recorded transcript mirrors the script, timestamped, up to
			// the QUIT: its 221 is not awaited.
			var want []string
			for _, l := range strings.Split(tt.script, "\n") {
				if l = strings.TrimSpace(l); l != "" {
					want = append(want, l)
				}
			}
			if n := len(want); n >= 2 && want[n-2] == "> QUIT" && strings.HasPrefix(want[n-1], "< 221") {
				want = want[:n-1]
			}
			var have []string
			for _, l := range got.Transcript {
				if l.At.IsZero() || l.Host != "mx1.example.com" {
					t.Errorf("transcript line %+v lacks time or host", l)
				}
				have = append(have, l.Dir+" "+l.Line)
			}
			if strings.Join(have, "\n") != strings.Join(want, "\n") {
				t.Errorf("transcript:\n%s\nwant:\n%s", strings.Join(have, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// recordingGate admits or refuses, and records what it saw.
type recordingGate struct {
	err      error
	mu       sync.Mutex
	admitted []string
	outcomes []Outcome
}

func (g *recordingGate) Admit(_ context.Context, h MXHost) (Admission, error) {
	if g.err != nil {
		return nil, g.err
	}
	g.mu.Lock()
	g.admitted = append(g.admitted, h.Name)
	g.mu.Unlock()
	return recordingAdmission{g}, nil
}

type recordingAdmission struct{ g *recordingGate }

func (a recordingAdmission) Report(o Outcome) {
	a.g.mu.Lock()
	a.g.outcomes = append(a.g.outcomes, o)
	a.g.mu.Unlock()
}

func (recordingAdmission) Reusable() bool { return true }
func (recordingAdmission) Done()          {}

func TestProbeGate(t *testing.T) {
	t.Parallel()
	t.Run("refusal short-circuits", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.Options{})
		denied := errors.New("rate limited: retry in 12s")
		p := newTestProber(t, srv.Port(), &recordingGate{err: denied}, nil)
		got := p.Probe(t.Context(), mxSet(srv.Addr().Addr(), srv.Addr().Addr()), "alice@example.com", false)
		if !errors.Is(got.Err, denied) || got.Outcome.Verdict != Unknown || !got.Outcome.Retryable {
			t.Errorf("got %+v err %v, want the gate's error, unknown, retryable", got.Outcome, got.Err)
		}
		if srv.Conns() != 0 {
			t.Errorf("%d connections after a refusal, want 0", srv.Conns())
		}
	})
	t.Run("each session admitted and reported", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.Options{RcptDefault: errUnknownUser})
		g := &recordingGate{}
		p := newTestProber(t, srv.Port(), g, nil)
		got := p.Probe(t.Context(), mxSet(loopback2, srv.Addr().Addr()), "alice@example.com", false)
		g.mu.Lock()
		defer g.mu.Unlock()
		if strings.Join(g.admitted, ",") != "mx1.example.com,mx2.example.com" || len(g.outcomes) != 2 {
			t.Fatalf("admitted %q, %d outcomes; want both hosts, 2", g.admitted, len(g.outcomes))
		}
		if g.outcomes[0].Reason != ReasonConnectFailed || g.outcomes[1] != got.Outcome {
			t.Errorf("outcomes %+v, want connect_failed then %+v", g.outcomes, got.Outcome)
		}
	})
}

func TestProbeBadInput(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{})
	p := newTestProber(t, srv.Port(), nil, nil)
	tests := []struct {
		name       string
		mx         MXSet
		rcpt       string
		wantReason Reason
		wantErr    error
	}{
		{name: "CRLF injection in rcpt", mx: mxSet(srv.Addr().Addr()), rcpt: "a@example.com>\r\nDATA", wantReason: ReasonBadSyntax, wantErr: ErrUnsafeCommand},
		{name: "NUL in rcpt", mx: mxSet(srv.Addr().Addr()), rcpt: "a\x00@example.com", wantReason: ReasonBadSyntax, wantErr: ErrUnsafeCommand},
		{name: "no @", mx: mxSet(srv.Addr().Addr()), rcpt: "alice", wantReason: ReasonBadSyntax, wantErr: ErrUnsafeCommand},
		{name: "null MX", mx: MXSet{Domain: "example.com", NullMX: true}, rcpt: "a@example.com", wantReason: ReasonNullMX},
		{name: "no hosts", mx: MXSet{Domain: "example.com"}, rcpt: "a@example.com", wantReason: ReasonNoMX, wantErr: ErrNoMXHosts},
		{name: "host without address", mx: MXSet{Domain: "example.com", Hosts: []MXHost{{Name: "mx.example.com"}}}, rcpt: "a@example.com", wantReason: ReasonNoMX, wantErr: ErrNoMXHosts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Probe(t.Context(), tt.mx, tt.rcpt, false)
			if got.Outcome.Reason != tt.wantReason || !errors.Is(got.Err, tt.wantErr) || got.Outcome.Verdict == Valid {
				t.Errorf("got %+v err %v, want %s, %v", got.Outcome, got.Err, tt.wantReason, tt.wantErr)
			}
		})
	}
	if srv.Conns() != 0 {
		t.Errorf("%d connections for bad input, want 0", srv.Conns())
	}
}

func TestNewProberConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(*ProbeConfig)
		wantErr string
	}{
		{name: "defaults", mutate: func(*ProbeConfig) {}},
		{name: "address literal HELO", mutate: func(c *ProbeConfig) { c.HeloName = "[192.0.2.1]" }},
		{name: "IPv6 literal HELO", mutate: func(c *ProbeConfig) { c.HeloName = "[IPv6:2001:db8::1]" }},
		{name: "null sender allowed", mutate: func(c *ProbeConfig) { c.MailFrom = "" }},
		{name: "socks5 proxy", mutate: func(c *ProbeConfig) { c.ProxyURL = "socks5://user:pass@127.0.0.1:1080" }},
		{name: "missing HELO", mutate: func(c *ProbeConfig) { c.HeloName = "" }, wantErr: "HeloName"},
		{name: "bare host HELO", mutate: func(c *ProbeConfig) { c.HeloName = "localhost" }, wantErr: "not fully qualified"},
		{name: "HELO injection", mutate: func(c *ProbeConfig) { c.HeloName = "a.test\r\nMAIL FROM:<x@y>" }, wantErr: "HeloName"},
		{name: "bad literal", mutate: func(c *ProbeConfig) { c.HeloName = "[300.1.1.1]" }, wantErr: "address literal"},
		{name: "MailFrom injection", mutate: func(c *ProbeConfig) { c.MailFrom = "a@b.test>\r\nRCPT TO:<c@d.test" }, wantErr: "MailFrom"},
		{name: "MailFrom without domain", mutate: func(c *ProbeConfig) { c.MailFrom = "verify@" }, wantErr: "MailFrom"},
		{name: "port", mutate: func(c *ProbeConfig) { c.Port = 70000 }, wantErr: "Port"},
		{name: "negative timeout", mutate: func(c *ProbeConfig) { c.CommandTimeout = -time.Second }, wantErr: "CommandTimeout"},
		{name: "line cap below RFC", mutate: func(c *ProbeConfig) { c.MaxLineLength = 100 }, wantErr: "MaxLineLength"},
		{name: "http proxy", mutate: func(c *ProbeConfig) { c.ProxyURL = "http://127.0.0.1:3128" }, wantErr: "socks5"},
		{name: "proxy without port", mutate: func(c *ProbeConfig) { c.ProxyURL = "socks5://127.0.0.1" }, wantErr: "host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ProbeConfig{HeloName: testHelo, MailFrom: testFrom}
			tt.mutate(&cfg)
			p, err := NewProber(cfg, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewProber: %v", err)
				}
				if p.cfg.Port != 25 || p.cfg.ConnectTimeout != 30*time.Second || p.cfg.CommandTimeout != 60*time.Second || p.cfg.MaxLineLength != 2000 || p.cfg.MaxReplyLines != 100 {
					t.Errorf("defaults not applied: %+v", p.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestCatchAllLocalPart(t *testing.T) {
	t.Parallel()
	day := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	a := CatchAllLocalPart("example.com", testFrom, day)
	if len(a) != 16 || strings.Trim(a, "abcdefghijklmnopqrstuvwxyz0123456789") != "" || a[0] < 'a' || a[0] > 'z' {
		t.Errorf("local part %q: want 16 lower-case alphanumerics starting with a letter", a)
	}
	tests := []struct {
		name     string
		domain   string
		sender   string
		at       time.Time
		wantSame bool
	}{
		{name: "same day later", domain: "example.com", sender: testFrom, at: day.Add(13 * time.Hour), wantSame: true},
		{name: "same UTC day in another zone", domain: "EXAMPLE.com", sender: testFrom, at: day.In(time.FixedZone("x", -9*3600)), wantSame: true},
		{name: "next day", domain: "example.com", sender: testFrom, at: day.Add(24 * time.Hour)},
		{name: "other domain", domain: "example.org", sender: testFrom, at: day},
		{name: "other sender", domain: "example.com", sender: "other@mxprobe.test", at: day},
	}
	for _, tt := range tests {
		if got := CatchAllLocalPart(tt.domain, tt.sender, tt.at); (got == a) != tt.wantSame {
			t.Errorf("%s: %q vs %q, want same = %v", tt.name, got, a, tt.wantSame)
		}
	}
}

func TestProfileFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host, wantName   string
		wantAcceptsAll   bool
		wantSkipCatchAll bool
	}{
		{"mta5.am0.yahoodns.net.", "yahoo", true, true},
		{"MX-AOL.MAIL.GM0.YAHOODNS.NET", "yahoo", true, true},
		{"gmail-smtp-in.l.google.com.", "google", false, true},
		{"aspmx.l.google.com", "google", false, true},
		{"example-com.mail.protection.outlook.com", "microsoft365", false, false},
		{"hotmail-com.olc.protection.outlook.com", "outlook", false, true},
		{"mx.example.com", "", false, false},
		{"notyahoodns.net", "", false, false},
		{"yahoodns.net", "yahoo", true, true},
		{"", "", false, false},
	}
	for _, tt := range tests {
		got := ProfileFor(tt.host)
		if got.Name != tt.wantName || got.AcceptsAllAtRcpt != tt.wantAcceptsAll || got.SkipCatchAll != tt.wantSkipCatchAll {
			t.Errorf("ProfileFor(%q) = %+v", tt.host, got)
		}
	}
}

func BenchmarkProbe(b *testing.B) {
	srv := smtptest.Start(b, smtptest.Options{Rcpt: map[string]*smtp.SMTPError{"alice@example.com": nil}, RcptDefault: errUnknownUser})
	// One fresh session per probe, as when these figures were first taken;
	// session reuse is measured in bench_pool_test.go.
	p, err := NewProber(ProbeConfig{HeloName: testHelo, MailFrom: testFrom, Port: srv.Port(), CatchAllProbe: true, Pool: PoolConfig{Disabled: true}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	mx := mxSet(srv.Addr().Addr())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r := p.Probe(ctx, mx, "alice@example.com", false); r.Outcome.Verdict != Valid {
			b.Fatalf("outcome %+v err %v", r.Outcome, r.Err)
		}
	}
}

func TestProbeDebugWriter(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{RcptDefault: errUnknownUser})
	var buf strings.Builder
	p := newTestProber(t, srv.Port(), nil, func(c *ProbeConfig) {
		c.Debug, c.Transcript, c.Pool.Disabled = &buf, false, true
	})
	got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), "alice@example.com", false)
	if got.Transcript != nil {
		t.Errorf("transcript recorded although not asked for")
	}
	for _, want := range []string{"mx1.example.com > EHLO " + testHelo, "mx1.example.com < 550 5.1.1", "> QUIT"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("debug output lacks %q:\n%s", want, buf.String())
		}
	}
}

// checkHostile asserts what every hostile peer must lead to: the expected
// error kind, and an unknown, retryable outcome at the expected stage.
func checkHostile(t *testing.T, got ProbeResult, wantErr error, wantReason Reason, wantStage Stage) {
	t.Helper()
	switch wantErr {
	case errTimeout:
		if !isTimeout(got.Err) {
			t.Errorf("err = %v, want a timeout", got.Err)
		}
	case errAnyIO:
		if got.Err == nil {
			t.Errorf("err = nil, want an I/O error")
		}
	default:
		if !errors.Is(got.Err, wantErr) {
			t.Errorf("err = %v, want %v", got.Err, wantErr)
		}
	}
	if got.Outcome.Verdict != Unknown || got.Outcome.Reason != wantReason || !got.Outcome.Retryable || got.Stage != wantStage {
		t.Errorf("outcome %+v at %s, want unknown/%s retryable at %s", got.Outcome, got.Stage, wantReason, wantStage)
	}
}
