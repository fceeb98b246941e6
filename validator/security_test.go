package validator_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/validator"
)

// TestCraftedAddressesNeverInjectCommands drives crafted inputs through the
// whole pipeline against a real go-smtp server: none may put a second
// command on the wire (SMTP command injection), none may
// come out valid.
func TestCraftedAddressesNeverInjectCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        string
		wantProbe bool // a legitimate address: exactly one RCPT is sent
	}{
		{name: "CRLF after the address", in: "alice@example.test\r\nDATA"},
		{name: "CRLF closing the path", in: "alice@example.test>\r\nRCPT TO:<bob@example.test"},
		{name: "bare LF", in: "alice@example.test\nRSET"},
		{name: "bare CR", in: "alice@example.test\rQUIT"},
		{name: "CRLF in a quoted local part", in: "\"a\r\nDATA\r\n\"@example.test"},
		{name: "escaped CR in a quoted local part", in: "\"a\\\r\\\nDATA\"@example.test"},
		{name: "NUL", in: "alice\x00@example.test"},
		{name: "CRLF in the domain", in: "alice@example.test\r\n.test"},
		{name: "Unicode line separator", in: "alice\u2028DATA@example.test"},
		{name: "angle brackets in a quoted local part", in: "\"a>RCPT TO:<b\"@example.test"},
		{name: "percent-encoded CRLF stays literal", in: "alice%0d%0aDATA@example.test", wantProbe: true},
		{name: "quoted local part with spaces", in: "\"alice RCPT TO\"@example.test", wantProbe: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, smtptest.Options{}, func(c *validator.Config) {
				c.Probe.CatchAllProbe = false
				c.Probe.Transcript = true
			})
			res, err := w.v.Validate(context.Background(), tt.in)
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if res.Verdict == validator.Valid && !tt.wantProbe {
				t.Errorf("crafted input came out valid: %+v", res)
			}
			wantRcpts := 0
			if tt.wantProbe {
				wantRcpts = 1
			}
			if n := w.smtp.Commands("RCPT"); n != wantRcpts {
				t.Errorf("server saw %d RCPT commands %q, want %d", n, w.smtp.Rcpts(), wantRcpts)
			}
			if n := w.smtp.Commands("DATA"); n != 0 {
				t.Errorf("DATA reached the server %d times", n)
			}
			if n := w.smtp.Commands("MAIL"); n > 1 {
				t.Errorf("MAIL reached the server %d times", n)
			}
			for _, l := range res.Transcript {
				if l.Dir == ">" && strings.ContainsAny(l.Line, "\r\n\x00") {
					t.Errorf("sent a line with CR, LF or NUL: %q", l.Line)
				}
			}
			for _, r := range w.smtp.Rcpts() {
				if strings.ContainsAny(r, "\r\n\x00") {
					t.Errorf("server got recipient %q", r)
				}
			}
		})
	}
}

// TestNewProberRefusesUnsafeIdentity: the HELO name and MAIL FROM go on the
// wire verbatim, so NewProber refuses anything that could end the command
// or change its meaning (CR, LF, NUL, spaces, <, >), beyond the CRLF cases of
// TestNewProberConfig.
func TestNewProberRefusesUnsafeIdentity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		helo     string
		mailFrom string
		wantErr  string
	}{
		{name: "HELO with LF", helo: "probe.test\nRSET", mailFrom: "v@probe.test", wantErr: "HeloName"},
		{name: "HELO with CR", helo: "probe.test\rRSET", mailFrom: "v@probe.test", wantErr: "HeloName"},
		{name: "HELO with NUL", helo: "probe.test\x00", mailFrom: "v@probe.test", wantErr: "HeloName"},
		{name: "HELO with space", helo: "probe.test MAIL", mailFrom: "v@probe.test", wantErr: "HeloName"},
		{name: "HELO with tab", helo: "probe.test\tx", mailFrom: "v@probe.test", wantErr: "HeloName"},
		{name: "HELO with angle brackets", helo: "<probe.test>", mailFrom: "v@probe.test", wantErr: "HeloName"},
		{name: "HELO literal with trailing command", helo: "[192.0.2.1] x", mailFrom: "v@probe.test", wantErr: "HeloName"},
		{name: "MAIL FROM closing the path", helo: "probe.test", mailFrom: "v@probe.test> SIZE=1", wantErr: "MailFrom"},
		{name: "MAIL FROM with space", helo: "probe.test", mailFrom: "v w@probe.test", wantErr: "MailFrom"},
		{name: "MAIL FROM with LF", helo: "probe.test", mailFrom: "v@probe.test\nRCPT TO:<x@y.test>", wantErr: "MailFrom"},
		{name: "MAIL FROM with CR", helo: "probe.test", mailFrom: "v@probe.test\r", wantErr: "MailFrom"},
		{name: "MAIL FROM with NUL", helo: "probe.test", mailFrom: "v\x00@probe.test", wantErr: "MailFrom"},
		{name: "MAIL FROM with opening bracket", helo: "probe.test", mailFrom: "<v@probe.test", wantErr: "MailFrom"},
		{name: "MAIL FROM non-ASCII", helo: "probe.test", mailFrom: "vé@probe.test", wantErr: "MailFrom"},
		{name: "MAIL FROM with a bad domain", helo: "probe.test", mailFrom: "v@probe .test", wantErr: "MailFrom"},
		{name: "safe identity", helo: "probe.test", mailFrom: "v+tag@probe.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := validator.NewProber(validator.ProbeConfig{HeloName: tt.helo, MailFrom: tt.mailFrom}, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewProber: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want a refusal naming %s", err, tt.wantErr)
			}
		})
	}
}

// TestProxyURLErrorsHideThePassword: a mistyped proxy URL is reported at
// start-up, on the operator's terminal and in logs, without its password.
func TestProxyURLErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	const pw = "pr0xy-s3cret"
	for _, raw := range []string{
		"socks5://user:" + pw + "@127.0.0.1:port",
		"socks5://user:" + pw + "@127.0.0.1:10%80",
		"http://user:" + pw + "@127.0.0.1:3128",
		"socks5://user:" + pw + "@127.0.0.1",
	} {
		_, err := validator.NewProber(validator.ProbeConfig{HeloName: "probe.test", ProxyURL: raw}, nil)
		if err == nil {
			t.Errorf("%s: accepted", raw)
			continue
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("error shows the proxy password: %v", err)
		}
	}
}
