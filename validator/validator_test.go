package validator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/validator"
)

// world is one test's DNS and SMTP on loopback, and a Validator pointed at
// them, configured as an operator would.
type world struct {
	dns  *dnstest.Server
	smtp *smtptest.Server
	v    *validator.Validator
}

func newWorld(t *testing.T, opts smtptest.Options, mutate func(*validator.Config)) *world {
	t.Helper()
	w := &world{}
	w.smtp = smtptest.Start(t, opts)
	w.dns = dnstest.Start(t, dnstest.Zone{
		"example.test.":    {dnstest.MX("mx.example.test.", 10)},
		"mx.example.test.": {dnstest.A("127.0.0.1")},
		"implicit.test.":   {dnstest.A("127.0.0.1")},
		"nullmx.test.":     {dnstest.NullMX()},
		"mailinator.com.":  {dnstest.MX("mx.example.test.", 10)},
		"servfail.test.":   {dnstest.MX("mx.example.test.", 10)},
	})
	w.dns.Fail("servfail.test.")
	cfg := validator.Config{
		Probe: validator.ProbeConfig{HeloName: "probe.mxprobe.test", MailFrom: "verify@mxprobe.test",
			Port: w.smtp.Port(), ConnectTimeout: 2 * time.Second, CommandTimeout: 5 * time.Second, CatchAllProbe: true},
		DNS:   validator.DNSConfig{Servers: []string{w.dns.Addr()}, AllowPrivate: true, Timeout: time.Second},
		Lists: validator.ListsConfig{DenyDomains: []string{"denied.test"}, AllowAddresses: []string{"boss@allowed.test"}},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	v, err := validator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.v = v
	return w
}

func TestValidatePaths(t *testing.T) {
	t.Parallel()
	w := newWorld(t, smtptest.Options{
		Rcpt: map[string]*smtp.SMTPError{"alice@example.test": nil, "root@implicit.test": nil},
		RcptDefault: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
			Message: "5.1.1 <x>: Recipient address rejected: User unknown"},
	}, nil)
	tests := []struct {
		name        string
		in          string
		wantVerdict validator.Verdict
		wantReason  validator.Reason
		wantErr     error
		wantSMTP    bool
	}{
		{"valid mailbox", "alice@example.test", validator.Valid, validator.ReasonMailboxExists, nil, true},
		{"unknown mailbox", "bob@example.test", validator.Invalid, validator.ReasonMailboxNotFound, validator.ErrMailboxNotFound, true},
		{"implicit MX", "root@implicit.test", validator.Valid, validator.ReasonMailboxExists, nil, true},
		{"bad syntax", "alice@@example.test", validator.Invalid, validator.ReasonBadSyntax, validator.ErrBadSyntax, false},
		{"null MX", "a@nullmx.test", validator.Invalid, validator.ReasonNullMX, validator.ErrNoMailDomain, false},
		{"NXDOMAIN", "a@nowhere.test", validator.Invalid, validator.ReasonDomainNotFound, validator.ErrNoMailDomain, false},
		{"SERVFAIL", "a@servfail.test", validator.Unknown, validator.ReasonDNSError, validator.ErrUnverifiable, false},
		{"disposable", "x@mailinator.com", validator.Risky, validator.ReasonDisposable, validator.ErrDisposable, false},
		{"denied domain", "ceo@sub.denied.test", validator.Invalid, validator.ReasonDenied, validator.ErrDenied, false},
		{"allowed address", "boss@allowed.test", validator.Valid, validator.ReasonAllowed, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := w.v.Validate(context.Background(), tt.in)
			if err != nil {
				t.Fatalf("Validate: operational error %v", err)
			}
			if res.Verdict != tt.wantVerdict || res.Reason != tt.wantReason {
				t.Fatalf("got %s/%s, want %s/%s (error %q)", res.Verdict, res.Reason, tt.wantVerdict, tt.wantReason, res.Error)
			}
			if res.Input != tt.in || res.CheckedAt.IsZero() {
				t.Errorf("input %q checked_at %v", res.Input, res.CheckedAt)
			}
			if gotSMTP := res.SMTP != nil && res.SMTP.Code != 0; gotSMTP != tt.wantSMTP {
				t.Errorf("SMTP detail %+v, want present=%v", res.SMTP, tt.wantSMTP)
			}
			err = w.v.Check(context.Background(), tt.in)
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("Check = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Check = %v, want errors.Is %v", err, tt.wantErr)
			}
			var ce *validator.CheckError
			if !errors.As(err, &ce) || ce.Result.Reason != tt.wantReason {
				t.Errorf("Check error %T does not carry the result", err)
			}
		})
	}
	if n := w.smtp.Commands("DATA"); n != 0 {
		t.Errorf("DATA sent %d times", n)
	}
}

func TestCheckErrorCarriesSMTPDetails(t *testing.T) {
	t.Parallel()
	w := newWorld(t, smtptest.Options{RcptDefault: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}}, nil)
	err := w.v.Check(context.Background(), "nobody@example.test")
	var ce *validator.CheckError
	if !errors.As(err, &ce) {
		t.Fatalf("Check = %v", err)
	}
	if ce.Result.SMTP.Code != 550 || ce.Result.SMTP.Enhanced != "5.1.1" || ce.Result.MXHost != "mx.example.test" {
		t.Errorf("details %+v, mx %q", ce.Result.SMTP, ce.Result.MXHost)
	}
	if ce.Temporary() {
		t.Error("a 550 5.1.1 is not temporary")
	}
	want := `nobody@example.test: mailbox does not exist (invalid/mailbox_not_found): mx.example.test replied 550 5.1.1 "No such user"`
	if ce.Error() != want {
		t.Errorf("Error() = %q\nwant      %q", ce.Error(), want)
	}
}

func TestGreylistingIsUnknownNeverInvalid(t *testing.T) {
	t.Parallel()
	w := newWorld(t, smtptest.Options{RcptDefault: &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0},
		Message: "<a@example.test>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.test.html"}}, nil)
	res, err := w.v.Validate(context.Background(), "a@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != validator.Unknown || res.Reason != validator.ReasonGreylisted || !res.Retryable {
		t.Fatalf("got %s/%s retryable=%v", res.Verdict, res.Reason, res.Retryable)
	}
	if err := w.v.Check(context.Background(), "a@example.test"); !errors.Is(err, validator.ErrUnverifiable) {
		t.Errorf("Check = %v, want ErrUnverifiable", err)
	}
}

func TestCatchAllIsRisky(t *testing.T) {
	t.Parallel()
	w := newWorld(t, smtptest.Options{}, nil) // accepts every recipient
	res, err := w.v.Validate(context.Background(), "anyone@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != validator.Risky || res.Reason != validator.ReasonCatchAll || !res.Flags.CatchAll {
		t.Fatalf("got %s/%s flags %+v", res.Verdict, res.Reason, res.Flags)
	}
}

func TestNoSMTPStopsAfterDNS(t *testing.T) {
	t.Parallel()
	w := newWorld(t, smtptest.Options{}, func(c *validator.Config) { c.NoSMTP = true })
	res, err := w.v.Validate(context.Background(), "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != validator.Unknown || res.Reason != validator.ReasonSMTPSkipped || res.MXHost != "mx.example.test" {
		t.Fatalf("got %+v", res)
	}
	if n := w.smtp.Conns(); n != 0 {
		t.Errorf("%d SMTP connections with NoSMTP", n)
	}
}

type refusingGate struct{ err error }

func (g refusingGate) Admit(context.Context, validator.MXHost) (validator.Admission, error) {
	return nil, g.err
}

func TestGateRefusalIsAnOperationalError(t *testing.T) {
	t.Parallel()
	denied := errors.New("provider paused")
	w := newWorld(t, smtptest.Options{}, func(c *validator.Config) { c.Gate = refusingGate{denied} })
	_, err := w.v.Validate(context.Background(), "alice@example.test")
	var ge *validator.GateError
	if !errors.As(err, &ge) || !errors.Is(err, denied) {
		t.Fatalf("Validate error = %v, want a *GateError wrapping the gate's error", err)
	}
	if n := w.smtp.Conns(); n != 0 {
		t.Errorf("%d connections despite the gate's refusal", n)
	}
}

// Address literals pass the same filter as MX addresses: every range that
// is not public unicast is refused before any connection (NoSMTP keeps a
// regression from dialling off loopback: it would show as smtp_skipped).
func TestAddressLiteralSpecialRanges(t *testing.T) {
	t.Parallel()
	v, err := validator.New(validator.Config{NoSMTP: true, DNS: validator.DNSConfig{Servers: []string{"127.0.0.1:9"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"a@[10.0.0.1]", "a@[100.64.0.1]", "a@[198.18.0.1]", "a@[240.0.0.1]", "a@[0.1.2.3]",
		"a@[169.254.1.1]", "a@[IPv6:64:ff9b::a00:1]", "a@[IPv6:fec0::1]", "a@[IPv6:fd00::1]", "a@[IPv6:::1]"} {
		res, err := v.Validate(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if res.Verdict != validator.Invalid || res.Reason != validator.ReasonNoMX {
			t.Errorf("%s: %s/%s (%s), want invalid/no_mx: not a public address", in, res.Verdict, res.Reason, res.Error)
		}
	}
}

func TestAddressLiteralPolicy(t *testing.T) {
	t.Parallel()
	strict := newWorld(t, smtptest.Options{}, func(c *validator.Config) { c.DNS.AllowPrivate = false })
	res, err := strict.v.Validate(context.Background(), "a@[127.0.0.1]")
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != validator.Invalid || res.Reason != validator.ReasonNoMX {
		t.Errorf("loopback literal: %s/%s, want invalid/no_mx", res.Verdict, res.Reason)
	}
	if n := strict.smtp.Conns(); n != 0 {
		t.Errorf("connected to a loopback literal %d times", n)
	}
	lab := newWorld(t, smtptest.Options{Rcpt: map[string]*smtp.SMTPError{"a@[127.0.0.1]": nil},
		RcptDefault: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "unknown"}}, nil)
	res, err = lab.v.Validate(context.Background(), "a@[127.0.0.1]")
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != validator.Valid {
		t.Errorf("literal in a lab: %s/%s (%s)", res.Verdict, res.Reason, res.Error)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  validator.Config
	}{
		{"bad deny entry", validator.Config{NoSMTP: true, Lists: validator.ListsConfig{DenyDomains: []string{"not a domain"}}}},
		{"bad DNS server", validator.Config{NoSMTP: true, DNS: validator.DNSConfig{Servers: []string{"nonsense"}}}},
		{"no HELO", validator.Config{Probe: validator.ProbeConfig{MailFrom: "a@b.example"}, DNS: validator.DNSConfig{Servers: []string{"127.0.0.1:53"}}}},
	} {
		if _, err := validator.New(tt.cfg); err == nil {
			t.Errorf("%s: New accepted it", tt.name)
		}
	}
}

func TestResultJSONIsStable(t *testing.T) {
	t.Parallel()
	r := validator.Result{Input: "a@b.example", Address: "a@b.example", Verdict: validator.Unknown,
		Reason: validator.ReasonGreylisted, Retryable: true, RetryAfter: validator.Duration(5 * time.Minute),
		SMTP:      &validator.SMTPDetail{Stage: validator.StageRcpt, Code: 450, Enhanced: "4.2.0", Text: "Greylisted"},
		CheckedAt: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC), Duration: validator.Duration(1500 * time.Millisecond)}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"input":"a@b.example","address":"a@b.example","verdict":"unknown","reason":"greylisted","retryable":true,"retry_after":"5m0s","flags":{"disposable":false,"catch_all":false,"role_account":false,"free_provider":false,"smtputf8":false},"smtp":{"stage":"rcpt","code":450,"enhanced_code":"4.2.0","text":"Greylisted"},"tls":false,"checked_at":"2026-11-22T12:00:00Z","duration":"1.5s"}`
	if string(b) != want {
		t.Errorf("JSON changed:\n got %s\nwant %s", b, want)
	}
	var back validator.Result
	if err := json.Unmarshal(b, &back); err != nil || back.RetryAfter != r.RetryAfter || back.Duration != r.Duration {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

func ExampleValidator_Check() {
	v, err := validator.New(validator.Config{NoSMTP: true, DNS: validator.DNSConfig{Servers: []string{netip.MustParseAddrPort("127.0.0.1:53").String()}}})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Syntax is decided before any network traffic.
	err = v.Check(context.Background(), "alice@@example.com")
	fmt.Println(errors.Is(err, validator.ErrBadSyntax))
	// Output: true
}
