package validator

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"golang.org/x/net/proxy"
)

// Hostile SMTP peers not covered by TestProbeHostile (probe_test.go): replies
// out of sequence, a STARTTLS that never speaks TLS, a real TCP reset, more
// malformed replies. Each ends within its bound with unknown and retryable,
// and the fake fails the test if we send anything after the session went
// bad (no QUIT to a peer whose state we no longer know).
func TestProbeHostilePeers(t *testing.T) {
	t.Parallel()
	const upToMail = `
		< 220 mx.example.com ESMTP
		> EHLO ` + testHelo + `
		< 250 mx.example.com
		> MAIL FROM:<` + testFrom + `>`
	const upToRcpt = upToMail + `
		< 250 2.1.0 Ok
		> RCPT TO:<alice@example.com>`
	tests := []struct {
		name       string
		script     string
		cmdTimeout time.Duration
		ctxTimeout time.Duration
		wantErr    error
		wantReason Reason
		wantStage  Stage
	}{
		// Protocol desync: the client must treat these as botched, never
		// read a verdict into a reply meant for another command.
		{name: "RCPT answered with 354", script: upToRcpt + "\n< 354 End data with <CR><LF>.<CR><LF>",
			wantErr: ErrProtocolDesync, wantReason: ReasonSMTPError, wantStage: StageRcpt},
		{name: "EHLO answered with 334", script: "< 220 mx ESMTP\n> EHLO " + testHelo + "\n< 334 VXNlcm5hbWU6",
			wantErr: ErrProtocolDesync, wantReason: ReasonSMTPError, wantStage: StageEHLO},
		{name: "extra reply after MAIL (would answer RCPT)", script: upToMail + "\n! burst 250 2.1.0 Ok || 250 2.1.5 Ok",
			wantErr: ErrProtocolDesync, wantReason: ReasonSMTPError, wantStage: StageMail},
		{name: "unsolicited line after the banner", script: "! burst 220 mx ESMTP || 250 mx.example.com",
			wantErr: ErrProtocolDesync, wantReason: ReasonSMTPError, wantStage: StageEHLO},
		{name: "two replies to RCPT", script: upToRcpt + "\n! burst 550 5.1.1 No such user || 250 2.1.5 Ok",
			wantErr: ErrProtocolDesync, wantReason: ReasonSMTPError, wantStage: StageRcpt},

		// STARTTLS accepted, then silence: the handshake is bounded by the
		// command timeout, or by the session's ctx when that is shorter.
		{name: "TLS handshake hangs: command timeout", cmdTimeout: 200 * time.Millisecond, script: `
			< 220 mx ESMTP
			> EHLO ` + testHelo + `
			< 250-mx
			< 250 STARTTLS
			> STARTTLS
			< 220 2.0.0 Ready to start TLS
			! hang`, wantErr: ErrTLS, wantReason: ReasonTimeout, wantStage: StageSTARTTLS},
		{name: "TLS handshake hangs: session bound", cmdTimeout: time.Minute, ctxTimeout: 300 * time.Millisecond, script: `
			< 220 mx ESMTP
			> EHLO ` + testHelo + `
			< 250-mx
			< 250 STARTTLS
			> STARTTLS
			< 220 2.0.0 Ready to start TLS
			! hang`, wantErr: ErrTLS, wantReason: ReasonTimeout, wantStage: StageSTARTTLS},

		// A TCP RST (not a FIN) while waiting for the RCPT reply.
		{name: "connection reset during RCPT", script: upToRcpt + "\n! reset",
			wantErr: errAnyIO, wantReason: ReasonSMTPError, wantStage: StageRcpt},

		// Malformed replies beyond TestProbeHostile's "2x0".
		{name: "four-digit code", script: "< 2200 mx ESMTP", wantErr: ErrMalformedReply, wantReason: ReasonSMTPError, wantStage: StageBanner},
		{name: "code out of range", script: "< 999 hi", wantErr: ErrMalformedReply, wantReason: ReasonSMTPError, wantStage: StageBanner},
		{name: "code changes inside a multi-line reply", script: "< 220 mx\n> EHLO " + testHelo + "\n< 250-mx\n< 550 no",
			wantErr: ErrMalformedReply, wantReason: ReasonSMTPError, wantStage: StageEHLO},
		{name: "empty line as reply", script: upToRcpt + "\n< ", wantErr: ErrMalformedReply, wantReason: ReasonSMTPError, wantStage: StageRcpt},
		{name: "bare CR inside RCPT reply", script: upToRcpt + "\n< 250 ok\rRCPT", wantErr: ErrMalformedReply, wantReason: ReasonSMTPError, wantStage: StageRcpt},
		{name: "multi-line reply never ends", script: upToRcpt + "\n< 250-ok\n! hang", cmdTimeout: 200 * time.Millisecond,
			wantErr: errTimeout, wantReason: ReasonTimeout, wantStage: StageRcpt},
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
			bound := 5 * time.Second // newTestProber's command timeout
			if tt.cmdTimeout != 0 {
				bound = tt.cmdTimeout
			}
			if tt.ctxTimeout != 0 {
				bound = min(bound, tt.ctxTimeout)
			}
			start := time.Now()
			got := p.Probe(ctx, mxSet(fake.Addr().Addr()), "alice@example.com", false)
			if took := time.Since(start); took > bound+2*time.Second {
				t.Errorf("took %v, beyond the bound %v", took, bound)
			}
			checkHostile(t, got, tt.wantErr, tt.wantReason, tt.wantStage)
			if fake.Conns() != 1 {
				t.Errorf("%d connections, want 1", fake.Conns())
			}
		})
	}
}

// countingDialer wraps the prober's dialer and counts the octets the client
// read from the peer: what the reply reader could have buffered at most.
type countingDialer struct {
	inner proxy.ContextDialer
	n     atomic.Int64
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.inner.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &d.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestProbeHostileBoundedRead: against peers that never stop talking, the
// client reads about one line cap or one reply's worth of lines, then gives
// up, however much the peer has queued (docs/reliability.md §1).
func TestProbeHostileBoundedRead(t *testing.T) {
	t.Parallel()
	const bufSize = 4096 // the client's bufio.Reader
	tests := []struct {
		name      string
		script    string
		wantErr   error
		wantStage Stage
		maxRead   int64
	}{
		{name: "endless banner line", script: "! endless 220-", wantErr: ErrLineTooLong, wantStage: StageBanner,
			maxRead: defaultMaxLineLength + 2 + 2*bufSize},
		{name: "endless EHLO line", script: "< 220 hi\n> EHLO " + testHelo + "\n! endless 250 ", wantErr: ErrLineTooLong, wantStage: StageEHLO,
			maxRead: 10 + defaultMaxLineLength + 2 + 2*bufSize},
		{name: "10,000-line EHLO reply", script: "< 220 hi\n> EHLO " + testHelo + "\n! repeat 10000 250-SIZE 10240000", wantErr: ErrReplyTooLong, wantStage: StageEHLO,
			maxRead: int64(10 + defaultMaxReplyLines*len("250-SIZE 10240000\r\n") + 2*bufSize)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := smtptest.StartScript(t, tt.script)
			p := newTestProber(t, fake.Port(), nil, nil)
			cd := &countingDialer{inner: p.dialer}
			p.dialer = cd
			got := p.Probe(t.Context(), mxSet(fake.Addr().Addr()), "alice@example.com", false)
			if !errors.Is(got.Err, tt.wantErr) || got.Stage != tt.wantStage || got.Outcome.Verdict != Unknown || !got.Outcome.Retryable {
				t.Fatalf("got %+v at %s, err %v; want unknown retryable, %v at %s", got.Outcome, got.Stage, got.Err, tt.wantErr, tt.wantStage)
			}
			if n := cd.n.Load(); n > tt.maxRead {
				t.Errorf("read %d octets from the peer, want at most %d", n, tt.maxRead)
			}
		})
	}
}
