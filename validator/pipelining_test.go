package validator

import (
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// The scripts list what the client must send before the fake answers: a
// lock-step client would wait for the MAIL reply the fake never sends first,
// and fail on CommandTimeout.
func TestPipelining(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		pool       PoolConfig
		script     string
		rcpts      []string
		wantVerd   []Verdict
		wantRTTs   int64
		closeAfter bool
	}{
		{
			name: "MAIL, RCPT and QUIT in one group when the session ends",
			pool: PoolConfig{Disabled: true},
			script: `
				< 220 mx.example.com ESMTP
				> EHLO probe.mxprobe.test
				< 250-mx.example.com
				< 250 PIPELINING
				> MAIL FROM:<verify@mxprobe.test>
				> RCPT TO:<alice@example.com>
				> QUIT
				< 250 2.1.0 Ok
				< 550 5.1.1 <alice@example.com>: Recipient address rejected
				< 221 2.0.0 Bye`,
			rcpts:    []string{"alice@example.com"},
			wantVerd: []Verdict{Invalid},
			wantRTTs: 3, // connect, EHLO, MAIL+RCPT+QUIT
		},
		{
			name: "pooled: RSET, MAIL and RCPT in one group for another domain",
			script: `
				< 220 mx.example.com ESMTP
				> EHLO probe.mxprobe.test
				< 250-mx.example.com
				< 250 PIPELINING
				> MAIL FROM:<verify@mxprobe.test>
				> RCPT TO:<alice@a.example>
				< 250 2.1.0 Ok
				< 250 2.1.5 Ok
				> RCPT TO:<bob@a.example>
				> NOOP
				< 250 2.1.5 Ok
				< 250 2.0.0 Ok
				> RSET
				> MAIL FROM:<verify@mxprobe.test>
				> RCPT TO:<carol@b.example>
				> NOOP
				< 250 2.0.0 Ok
				< 250 2.1.0 Ok
				< 550 5.1.1 No such user
				< 250 2.0.0 Ok
				> QUIT
				< 221 2.0.0 Bye`,
			rcpts:      []string{"alice@a.example", "bob@a.example", "carol@b.example"},
			wantVerd:   []Verdict{Valid, Valid, Invalid},
			wantRTTs:   5, // connect, EHLO, MAIL+RCPT, RCPT+NOOP, RSET+MAIL+RCPT+NOOP; QUIT awaits no reply
			closeAfter: true,
		},
		{
			name: "every reply is checked: a refused MAIL decides",
			pool: PoolConfig{Disabled: true},
			script: `
				< 220 mx.example.com ESMTP
				> EHLO probe.mxprobe.test
				< 250-mx.example.com
				< 250 PIPELINING
				> MAIL FROM:<verify@mxprobe.test>
				> RCPT TO:<alice@example.com>
				> QUIT
				< 553 5.7.1 Sender address rejected: not owned by user
				< 503 5.5.1 Error: need MAIL command
				< 221 2.0.0 Bye`,
			rcpts:    []string{"alice@example.com"},
			wantVerd: []Verdict{Unknown},
			wantRTTs: 3,
		},
		{
			name: "not advertised: lock-step",
			pool: PoolConfig{Disabled: true},
			script: `
				< 220 mx.example.com ESMTP
				> EHLO probe.mxprobe.test
				< 250-mx.example.com
				< 250 8BITMIME
				> MAIL FROM:<verify@mxprobe.test>
				< 250 2.1.0 Ok
				> RCPT TO:<alice@example.com>
				< 250 2.1.5 Ok
				> QUIT
				< 221 2.0.0 Bye`,
			rcpts:    []string{"alice@example.com"},
			wantVerd: []Verdict{Valid},
			wantRTTs: 4, // connect, EHLO, MAIL, RCPT (QUIT awaits no reply)
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := smtptest.StartScript(t, tt.script)
			p := poolProber(t, fake.Port(), nil, func(c *ProbeConfig) {
				c.Pipelining, c.Pool = true, tt.pool
			})
			for i, r := range tt.rcpts {
				got := p.Probe(t.Context(), mxSet(fake.Addr().Addr()), r, false)
				if got.Outcome.Verdict != tt.wantVerd[i] {
					t.Errorf("%s: outcome %+v err %v, want %s", r, got.Outcome, got.Err, tt.wantVerd[i])
				}
			}
			if tt.closeAfter {
				p.Close()
			}
			if got := p.rtts.Load(); got != tt.wantRTTs {
				t.Errorf("round trips = %d, want %d", got, tt.wantRTTs)
			}
			if n := fake.Conns(); n != 1 {
				t.Errorf("connections = %d, want 1", n)
			}
		})
	}
}

// go-smtp's server advertises PIPELINING and reads a group like any other
// input: a real peer agrees with the scripts.
func TestPipeliningAgainstGoSMTP(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{Rcpt: mapRcpt("bob@example.com", errUnknownUser)})
	p := poolProber(t, srv.Port(), nil, func(c *ProbeConfig) { c.Pipelining = true })
	want := map[string]Verdict{"alice@example.com": Valid, "bob@example.com": Invalid, "carol@other.example": Valid}
	for _, r := range []string{"alice@example.com", "bob@example.com", "carol@other.example"} {
		if got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), r, false); got.Outcome.Verdict != want[r] {
			t.Errorf("%s: outcome %+v err %v, want %s", r, got.Outcome, got.Err, want[r])
		}
	}
	p.Close()
	if srv.Conns() != 1 || srv.Sent("RSET") != 1 || strings.Join(srv.Rcpts(), ",") != "alice@example.com,bob@example.com,carol@other.example" {
		t.Errorf("connections %d, RSETs %d, RCPTs %q", srv.Conns(), srv.Sent("RSET"), srv.Rcpts())
	}
}

func mapRcpt(to string, e *smtp.SMTPError) map[string]*smtp.SMTPError {
	return map[string]*smtp.SMTPError{to: e}
}
