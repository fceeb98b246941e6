package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxprobe/mxprobe/doctor"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// doctorZone is a well set-up sender at 192.0.2.10 (a documentation
// address that only appears in DNS answers), and an MX on loopback.
func doctorZone() dnstest.Zone {
	return dnstest.Zone{
		"10.2.0.192.in-addr.arpa": {&dns.PTR{Hdr: dns.RR_Header{Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 60}, Ptr: "mail.example.test."}},
		"mail.example.test":       {dnstest.A("192.0.2.10")},
		"example.test":            {dnstest.TXT("v=spf1 ip4:192.0.2.10 -all")},
		"mx.test":                 {dnstest.MX("mx1.mx.test", 10)},
		"mx1.mx.test":             {dnstest.A("127.0.0.1")},
		"zen.spamhaus.org":        {},
		"canary.test":             {dnstest.MX("mx.canary.test", 10)},
	}
}

const doctorEcho = `
	< 220 mx1.mx.test ESMTP
	> EHLO mail.example.test
	< 250-mx1.mx.test at your service, [192.0.2.10]
	< 250 8BITMIME
	> QUIT
	< 221 bye
`

func runDoctorCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code = run(ctx, append([]string{"doctor"}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestDoctorCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		zone       dnstest.Zone // replaces names of doctorZone
		args       []string
		smtp       bool
		wantCode   int
		wantOut    []string
		wantErr    string
		wantNotOut string
	}{
		{name: "all good", smtp: true, args: []string{"--domain", "mx.test", "--egress-ip", "192.0.2.10"}, wantCode: exitOK,
			wantOut: []string{"[ ok ] outbound-smtp", "[ ok ] fcrdns", "(forward-confirmed reverse DNS)", "[ ok ] spf", "7 ok, 0 warnings, 0 failures, 0 skipped"}, wantNotOut: "fix:"},
		{name: "egress learnt from the echo", smtp: true, args: []string{"--domain", "mx.test"}, wantCode: exitOK,
			wantOut: []string{"egress IP 192.0.2.10 (as mx1.mx.test sees it)"}},
		{name: "missing PTR fails", zone: dnstest.Zone{"10.2.0.192.in-addr.arpa": nil}, args: []string{"--egress-ip", "192.0.2.10"},
			wantCode: exitInvalid, wantOut: []string{"[FAIL] fcrdns", "has no reverse DNS", "fix: ask whoever owns 192.0.2.10", "[skip] outbound-smtp"}},
		{name: "listed fails", zone: dnstest.Zone{"10.2.0.192.zen.spamhaus.org": {dnstest.A("127.0.0.4")}}, args: []string{"--egress-ip", "192.0.2.10"},
			wantCode: exitInvalid, wantOut: []string{"[FAIL] dnsbl:zen.spamhaus.org", "XBL"}},
		{name: "refused by Spamhaus only warns", zone: dnstest.Zone{"10.2.0.192.zen.spamhaus.org": {dnstest.A("127.255.255.254")}},
			args: []string{"--egress-ip", "192.0.2.10"}, wantCode: exitOK, wantOut: []string{"[warn] dnsbl:zen.spamhaus.org", "not a listing"}},
		{name: "HELO mismatch only warns", zone: dnstest.Zone{"relay.example.test": {dnstest.A("192.0.2.10")}},
			args: []string{"--egress-ip", "192.0.2.10", "--helo", "relay.example.test"}, wantCode: exitOK,
			wantOut: []string{"[warn] helo", "fix: set --helo mail.example.test"}},
		{name: "SPF fail", zone: dnstest.Zone{"example.test": {dnstest.TXT("v=spf1 ip4:203.0.113.0/24 -all")}},
			args: []string{"--egress-ip", "192.0.2.10"}, wantCode: exitInvalid, wantOut: []string{"[FAIL] spf", "fix: add ip4:192.0.2.10"}},
		{name: "port 25 refused", args: []string{"--domain", "mx.test", "--egress-ip", "192.0.2.10"}, wantCode: exitInvalid,
			wantOut: []string{"[FAIL] outbound-smtp", "connection refused"}},
		{name: "no DNSBL zones", args: []string{"--egress-ip", "192.0.2.10", "--dnsbl", "none"}, wantCode: exitOK, wantNotOut: "dnsbl"},
		{name: "bad egress IP", args: []string{"--egress-ip", "nope"}, wantCode: exitUsage, wantErr: "--egress-ip"},
		{name: "unexpected argument", args: []string{"gmail.com"}, wantCode: exitUsage, wantErr: "--domain"},
		{name: "HTTP proxy", args: []string{"--proxy", "http://127.0.0.1:3128"}, wantCode: exitUsage, wantErr: "only socks5"},
		{name: "bad DNSBL zone", args: []string{"--dnsbl", "nodot"}, wantCode: exitUsage, wantErr: "DNSBL zone"},
		{name: "unknown flag", args: []string{"--frobnicate"}, wantCode: exitUsage, wantErr: "frobnicate"},
		{name: "help", args: []string{"-h"}, wantCode: exitOK, wantOut: []string{"--egress-ip", "MXPROBE_DNSBL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			z := doctorZone()
			for k, v := range tt.zone {
				if v == nil {
					delete(z, k)
					continue
				}
				z[k] = v
			}
			srv := dnstest.Start(t, z)
			port := int(smtptest.ClosedPort(t).Port())
			if tt.smtp {
				port = smtptest.StartScript(t, doctorEcho).Port()
			}
			args := []string{"--dns", srv.Addr(), "--smtp-port", strconv.Itoa(port), "--allow-private",
				"--helo", "mail.example.test", "--from", "verify@example.test", "--dnsbl", "zen.spamhaus.org",
				"--connect-timeout", "5s", "--command-timeout", "5s", "--dns-timeout", "2s", "--dns-canary", "canary.test"}
			code, out, errOut := runDoctorCmd(t, append(args, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out, errOut)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if tt.wantNotOut != "" && strings.Contains(out, tt.wantNotOut) {
				t.Errorf("stdout has %q:\n%s", tt.wantNotOut, out)
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, errOut)
			}
		})
	}
}

func TestDoctorJSON(t *testing.T) {
	t.Parallel()
	z := doctorZone()
	delete(z, "10.2.0.192.in-addr.arpa")
	srv := dnstest.Start(t, z)
	code, out, errOut := runDoctorCmd(t, "--json", "--dns", srv.Addr(), "--egress-ip", "192.0.2.10",
		"--helo", "mail.example.test", "--from", "verify@example.test", "--dnsbl", "zen.spamhaus.org", "--dns-canary", "canary.test")
	if code != exitInvalid {
		t.Fatalf("exit %d, want %d; stderr %s", code, exitInvalid, errOut)
	}
	var rep doctor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if rep.Egress.String() != "192.0.2.10" {
		t.Errorf("egress_ip = %v", rep.Egress)
	}
	got := map[string]doctor.Status{}
	for _, f := range rep.Findings {
		got[f.Check] = f.Status
	}
	want := map[string]doctor.Status{"dns-canary": doctor.OK, "outbound-smtp": doctor.Skip, "egress-ip": doctor.OK, "fcrdns": doctor.Fail,
		"helo": doctor.Warn, "spf": doctor.OK, "dnsbl:zen.spamhaus.org": doctor.OK}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if !strings.Contains(out, `"status": "fail"`) || !strings.Contains(out, `"fix": `) {
		t.Errorf("JSON field names changed:\n%s", out)
	}
}

func TestStartupAuditLogsWarnings(t *testing.T) {
	t.Parallel()
	z := doctorZone()
	srv := dnstest.Start(t, z)
	tests := []struct {
		name     string
		egress   string
		args     []string
		wantLogs []string
		wantNone bool
	}{
		// A resolver that denies the canary names is reported, even by a
		// worker that sends no SMTP (its DNS verdicts depend on it alone).
		{name: "resolver denies the canary", egress: "192.0.2.10", args: []string{"--dns-canary", "gone.test,canary.test"},
			wantLogs: []string{"self-audit: the resolver denies names that exist (gone.test: NXDOMAIN)", "check=dns-canary", "status=fail"}},
		{name: "no-smtp worker, resolver denies the canary", egress: "192.0.2.10", args: []string{"--dns-canary", "gone.test", "--no-smtp"},
			wantLogs: []string{"self-audit: the resolver denies names that exist (gone.test: NXDOMAIN)"}},
		{name: "no PTR for the egress", egress: "192.0.2.11", wantLogs: []string{"self-audit: 192.0.2.11 has no reverse DNS", "check=fcrdns", "run mxprobe doctor"}},
		{name: "egress not an IP", egress: "pool-a", wantLogs: []string{"egress IP not configured"}},
		{name: "all good", egress: "192.0.2.10", wantNone: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			// Every setting at its real default, as the command would have it.
			var f workerFlags
			fs := flag.NewFlagSet("worker", flag.ContinueOnError)
			f.register(fs)
			if err := parseFlags(fs, append([]string{"--helo", "mail.example.test", "--from", "verify@example.test",
				"--dns", srv.Addr(), "--dns-timeout", "2s", "--connect-timeout", "1s", "--egress", tt.egress, "--dns-canary", "canary.test"}, tt.args...), func(string) string { return "" }); err != nil {
				t.Fatal(err)
			}
			startupAudit(context.Background(), &f, log)
			logs := buf.String()
			for _, w := range tt.wantLogs {
				if !strings.Contains(logs, w) {
					t.Errorf("logs lack %q:\n%s", w, logs)
				}
			}
			// The default zones include bl.spamcop.net, absent here: NXDOMAIN
			// from the test server, so not listed.
			if tt.wantNone && logs != "" {
				t.Errorf("logged warnings for a good host:\n%s", logs)
			}
		})
	}
}

// TestStartupAuditAdvisesFlagsTheCommandAccepts: every flag the self-audit
// tells a worker or serve operator to set is one those commands accept, and
// --egress-ip (the audit's main advice) is used by the audit.
func TestStartupAuditAdvisesFlagsTheCommandAccepts(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, doctorZone())
	audit := func(args ...string) string {
		var buf bytes.Buffer
		var f workerFlags
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		f.register(fs)
		base := []string{"--helo", "mail.example.test", "--from", "verify@example.test", "--dns", srv.Addr(), "--dns-timeout", "2s", "--connect-timeout", "1s", "--dns-canary", "canary.test"}
		if err := parseFlags(fs, append(base, args...), func(string) string { return "" }); err != nil {
			t.Fatal(err)
		}
		startupAudit(context.Background(), &f, slog.New(slog.NewTextHandler(&buf, nil)))
		return buf.String()
	}
	logs := audit()
	if !strings.Contains(logs, "--egress-ip") {
		t.Fatalf("audit without an egress IP does not advise --egress-ip:\n%s", logs)
	}
	flagRE := regexp.MustCompile(`--[a-z][a-z0-9-]+`)
	for _, cmd := range []struct {
		name     string
		register func(*flag.FlagSet)
	}{
		{"worker", func(fs *flag.FlagSet) { var f workerFlags; f.register(fs) }},
		{"serve", func(fs *flag.FlagSet) { var f serveFlags; f.register(fs) }},
	} {
		fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
		cmd.register(fs)
		// Advice to run mxprobe doctor names doctor's flags, not this command's.
		own := regexp.MustCompile(`mxprobe doctor( --[a-z-]+( [^-\s",]\S*)?)*`).ReplaceAllString(logs, "")
		for _, m := range flagRE.FindAllString(own, -1) {
			if fs.Lookup(strings.TrimPrefix(m, "--")) == nil {
				t.Errorf("the self-audit advises %s, which mxprobe %s rejects", m, cmd.name)
			}
		}
	}
	if logs := audit("--egress-ip", "192.0.2.11"); !strings.Contains(logs, "192.0.2.11 has no reverse DNS") {
		t.Errorf("--egress-ip 192.0.2.11 not audited:\n%s", logs)
	}
	if logs := audit("--egress-ip", "192.0.2.10"); logs != "" {
		t.Errorf("--egress-ip of a good host still warns:\n%s", logs)
	}
}
