package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/validator"
)

// lab is a DNS and SMTP server on loopback and the flags that point the
// command at them.
func lab(t *testing.T) []string {
	t.Helper()
	s := smtptest.Start(t, smtptest.Options{
		Rcpt:        map[string]*smtp.SMTPError{"alice@example.test": nil},
		RcptDefault: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"},
	})
	d := dnstest.Start(t, dnstest.Zone{
		"example.test.":    {dnstest.MX("mx.example.test.", 10)},
		"mx.example.test.": {dnstest.A("127.0.0.1")},
		"grey.test.":       {dnstest.MX("mx.example.test.", 10)},
	})
	return []string{"--dns", d.Addr(), "--dns-canary", "example.test", "--smtp-port", strconv.Itoa(s.Port()), "--allow-private",
		"--helo", "probe.mxprobe.test", "--from", "verify@mxprobe.test", "--timeout", "20s", "--no-catch-all"}
}

func runCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckExitStatus(t *testing.T) {
	t.Parallel()
	flags := lab(t)
	tests := []struct {
		name     string
		addrs    []string
		wantCode int
		wantOut  []string
	}{
		{"all valid", []string{"alice@example.test"}, exitOK, []string{"alice@example.test", "valid", "mailbox_exists", "mx.example.test"}},
		{"one invalid", []string{"alice@example.test", "bob@example.test"}, exitInvalid, []string{"invalid", "550 5.1.1 No such user"}},
		{"bad syntax is invalid, not a usage error", []string{"not-an-address"}, exitInvalid, []string{`"not-an-address"`, "bad_syntax"}},
		{"nxdomain", []string{"a@nowhere.test"}, exitInvalid, []string{"domain_not_found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runCmd(t, "", append(append([]string{"check"}, flags...), tt.addrs...)...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out, errOut)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// A resolver that denies the canary names (here: the lab's, which knows
// nothing of gmail.com and the other defaults) makes no address invalid;
// --dns-canary none restores trust, and a name it serves passes.
func TestCheckLyingResolver(t *testing.T) {
	t.Parallel()
	flags := lab(t)
	withCanary := func(c string) []string {
		out := slices.Clone(flags)
		i := slices.Index(out, "--dns-canary")
		if c == "" {
			return slices.Delete(out, i, i+2) // the default names
		}
		out[i+1] = c
		return out
	}
	for _, tt := range []struct {
		canary   string
		wantCode int
		want     string
	}{
		{"", exitUnsure, "dns_error"},
		{"none", exitInvalid, "domain_not_found"},
		{"example.test", exitInvalid, "domain_not_found"},
	} {
		code, out, errOut := runCmd(t, "", append(append([]string{"check", "--json"}, withCanary(tt.canary)...), "a@nowhere.test")...)
		if code != tt.wantCode || !strings.Contains(out, tt.want) {
			t.Errorf("--dns-canary %q: exit %d, want %d with %s\nstdout: %s\nstderr: %s", tt.canary, code, tt.wantCode, tt.want, out, errOut)
		}
		if tt.canary == "" && !strings.Contains(out, "canary") {
			t.Errorf("the dns_error does not say the canary failed: %s", out)
		}
	}
}

func TestCheckJSONFromStdin(t *testing.T) {
	t.Parallel()
	flags := lab(t)
	code, out, errOut := runCmd(t, "# a comment\nalice@example.test\n\nbob@example.test\n",
		append(append([]string{"check", "--json", "--transcript"}, flags...), "-")...)
	if code != exitInvalid {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 JSON lines, got %d:\n%s", len(lines), out)
	}
	var r validator.Result
	if err := json.Unmarshal([]byte(lines[0]), &r); err != nil {
		t.Fatal(err)
	}
	if r.Verdict != validator.Valid || len(r.Transcript) == 0 {
		t.Errorf("first result %+v", r)
	}
}

func TestCheckDebugPrintsConversation(t *testing.T) {
	t.Parallel()
	flags := lab(t)
	_, _, errOut := runCmd(t, "", append(append([]string{"check", "--debug"}, flags...), "alice@example.test")...)
	for _, w := range []string{"EHLO probe.mxprobe.test", "MAIL FROM:<verify@mxprobe.test>", "RCPT TO:<alice@example.test>"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("--debug output lacks %q:\n%s", w, errOut)
		}
	}
}

func TestCheckUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "Usage"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"no address", []string{"check"}, "no address given"},
		{"unknown flag", []string{"check", "--bogus", "a@b.c"}, "flag provided but not defined: -bogus"},
		{"bad port", []string{"check", "--smtp-port", "70000", "a@b.c"}, "not a TCP port"},
		{"both families", []string{"check", "--ipv4", "--ipv6", "a@b.c"}, "exclude each other"},
		{"bad dns", []string{"check", "--dns", "dns.google", "a@b.c"}, "not an IP address"},
		{"bad timeout", []string{"check", "--timeout", "soon", "a@b.c"}, "invalid value"},
		{"bad source", []string{"check", "--source", "nowhere", "a@b.c"}, "--source"},
		{"bad helo", []string{"check", "--helo", "bad name!", "--from", "a@b.example", "a@b.c"}, "HeloName"},
		{"bad deny entry", []string{"check", "--deny", "no spaces allowed.com", "a@b.c"}, "deny"},
		{"empty stdin", []string{"check", "-"}, "no address on stdin"},
		{"empty canary", []string{"check", "--dns-canary=", "a@b.c"}, "--dns-canary is empty"},
		{"canary none with names", []string{"check", "--dns-canary", "none,gmail.com", "a@b.c"}, "none cannot be combined"},
		{"canary not a domain", []string{"check", "--dns-canary", "me@gmail.com", "a@b.c"}, "not a domain name"},
		{"canary single label", []string{"check", "--dns-canary", "localhost", "a@b.c"}, "not a domain name"},
		{"canary interval zero", []string{"check", "--dns-canary-interval", "0s", "a@b.c"}, "--dns-canary-interval must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args
			if len(args) > 1 && args[1] != "--dns" {
				// Guard: should a usage error go unnoticed, DNS still stays
				// on loopback (a closed port), never the host's resolver.
				args = append([]string{args[0], "--dns", "127.0.0.1:9"}, args[1:]...)
			}
			code, out, errOut := runCmd(t, "", args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d (usage)\nstderr: %s", code, exitUsage, errOut)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("stderr lacks %q:\n%s%s", tt.want, errOut, out)
			}
			if strings.Contains(errOut, "goroutine ") || strings.Contains(errOut, "panic") {
				t.Errorf("stack trace on bad input:\n%s", errOut)
			}
		})
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	t.Parallel()
	env := map[string]string{"MXPROBE_SMTP_PORT": "2525", "MXPROBE_HELO": "env.example", "MXPROBE_NO_SMTP": "true"}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var p probeFlags
	p.register(fs)
	if err := parseFlags(fs, []string{"--helo", "flag.example"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if p.smtpPort != 2525 || !p.noSMTP {
		t.Errorf("environment not applied: port %d no-smtp %v", p.smtpPort, p.noSMTP)
	}
	if p.helo != "flag.example" {
		t.Errorf("helo %q: the command line must win over the environment", p.helo)
	}
	bad := map[string]string{"MXPROBE_SMTP_PORT": "many"}
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	p.register(fs)
	err := parseFlags(fs, nil, func(k string) string { return bad[k] })
	if err == nil || !strings.Contains(err.Error(), "MXPROBE_SMTP_PORT") {
		t.Errorf("bad environment value: %v, want an error naming MXPROBE_SMTP_PORT", err)
	}
}

func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	code, out, _ := runCmd(t, "", "check", "-h")
	if code != exitOK || !strings.Contains(out, "MXPROBE_SMTP_PORT") {
		t.Errorf("check -h: exit %d\n%s", code, out)
	}
}

// check and enqueue read stdin the same way: nothing on it is a usage
// error; neither probes nor queues anything.
func TestStdinInputErrors(t *testing.T) {
	t.Parallel()
	for _, cmd := range [][]string{{"check", "--dns", "127.0.0.1:9"}, {"enqueue", "--redis-url", "redis://127.0.0.1:9/0"}} {
		for _, tt := range []struct {
			name, stdin, want string
			code              int
		}{
			{"empty", "# only a comment\n\n", "no address on stdin", exitUsage},
		} {
			code, _, errOut := runCmd(t, tt.stdin, append(append([]string{}, cmd...), "-")...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("%s, %s: exit %d, stderr %q; want %d and %q", cmd[0], tt.name, code, errOut, tt.code, tt.want)
			}
		}
	}
}

// TestCheckStdinOverlongLineIsABadRow: a line over 64 KiB is reported as a
// bad row, and the lines around it are still checked (exactly 64 KiB and
// longer, with and without a final newline, and one that ends the input).
func TestCheckStdinOverlongLineIsABadRow(t *testing.T) {
	t.Parallel()
	flags := lab(t)
	long := strings.Repeat("a", 70*1024) + "@example.test"
	for _, tt := range []struct{ name, stdin string }{
		{"in the middle", "alice@example.test\n" + long + "\nbob@example.test\n"},
		{"last, no newline", "alice@example.test\nbob@example.test\n" + long},
		{"1 MiB", "alice@example.test\n" + strings.Repeat("x", 1<<20) + "\nbob@example.test"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runCmd(t, tt.stdin, append(append([]string{"check", "--json"}, flags...), "-")...)
			if code != exitInvalid {
				t.Errorf("exit %d, want %d; stderr %s", code, exitInvalid, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 3 {
				t.Fatalf("want 3 results, got %d:\n%.2000s", len(lines), out)
			}
			byVerdict := map[string]int{}
			var bad validator.Result
			for _, l := range lines {
				var r validator.Result
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatal(err)
				}
				byVerdict[string(r.Verdict)+"/"+string(r.Reason)]++
				if strings.Contains(r.Input, "longer than 64 KiB") {
					bad = r
				}
			}
			if bad.Verdict != validator.Invalid || bad.Reason != "bad_syntax" || len(bad.Input) > 200 {
				t.Errorf("over-long line reported as %s/%s, input %.300q", bad.Verdict, bad.Reason, bad.Input)
			}
			if byVerdict["valid/mailbox_exists"] != 1 || byVerdict["invalid/mailbox_not_found"] != 1 {
				t.Errorf("the other rows: %v\n%.2000s", byVerdict, out)
			}
		})
	}
	// enqueue refuses the row the same way and queues the rest; Redis at
	// port 9 answers nothing, so the refusal must come first.
	_, _, errOut := runCmd(t, long+"\n", "enqueue", "--redis-url", "redis://127.0.0.1:9/0", "-")
	if strings.Contains(errOut, "token too long") {
		t.Errorf("enqueue still fails the whole list: %s", errOut)
	}
}

// TestCheckOutputIsTerminalSafe: a server's ESC, NUL, BEL and C1 bytes in
// its replies are escaped in the table and the --debug transcript; --json
// keeps the raw text (JSON escapes it).
func TestCheckOutputIsTerminalSafe(t *testing.T) {
	t.Parallel()
	hostile := "No such user \x1b]0;owned\x07\x1b[2J\x00 \u009b31m"
	s := smtptest.Start(t, smtptest.Options{
		RcptDefault: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: hostile},
	})
	d := dnstest.Start(t, dnstest.Zone{
		"example.test.":    {dnstest.MX("mx.example.test.", 10)},
		"mx.example.test.": {dnstest.A("127.0.0.1")},
	})
	flags := []string{"--dns", d.Addr(), "--smtp-port", strconv.Itoa(s.Port()), "--allow-private",
		"--helo", "probe.mxprobe.test", "--from", "verify@mxprobe.test", "--timeout", "20s", "--no-catch-all"}
	clean := func(what, out string) {
		t.Helper()
		for _, r := range out {
			if r < 0x20 && r != '\n' && r != '\t' || r >= 0x7f && r <= 0x9f {
				t.Errorf("%s carries %U:\n%q", what, r, out)
				return
			}
		}
	}
	code, out, errOut := runCmd(t, "", append(append([]string{"check", "--debug"}, flags...), "bob@example.test")...)
	if code != exitInvalid || !strings.Contains(out, `No such user \x1b]0;owned\x07`) {
		t.Errorf("exit %d, table:\n%s", code, out)
	}
	clean("table", out)
	if !strings.Contains(errOut, `\x1b[2J\x00`) {
		t.Errorf("--debug transcript lacks the escaped reply:\n%s", errOut)
	}
	clean("--debug transcript", errOut)
	_, out, _ = runCmd(t, "", append(append([]string{"check", "--json"}, flags...), "bob@example.test")...)
	var r validator.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.SMTP == nil || !strings.Contains(r.SMTP.Text, "\x1b]0;owned\x07") {
		t.Errorf("--json should keep the raw reply text, got %+v", r.SMTP)
	}
}
