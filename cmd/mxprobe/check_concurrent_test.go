package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// checkListLab is 39 live domains on one SMTP server and dead.test, whose
// MX host accepts connections and never greets. It returns check's lab
// flags, the 200 addresses (5 per domain, dead.test's in the middle) and
// the count of connections the dead host took.
func checkListLab(t *testing.T) ([]string, []string, *atomic.Int32) {
	t.Helper()
	s := smtptest.Start(t, smtptest.Options{})
	dead, err := net.Listen("tcp", net.JoinHostPort("127.0.0.9", strconv.Itoa(s.Port())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dead.Close() })
	var dials atomic.Int32
	go func() {
		for {
			c, err := dead.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			t.Cleanup(func() { c.Close() }) // held open, silent
		}
	}()
	zone := dnstest.Zone{
		"mx.example.test.": {dnstest.A("127.0.0.1")},
		"example.test.":    {dnstest.MX("mx.example.test.", 10)},
		"dead.test.":       {dnstest.MX("mx.dead.test.", 10)},
		"mx.dead.test.":    {dnstest.A("127.0.0.9")},
	}
	var addrs []string
	for d := range 40 {
		domain := fmt.Sprintf("d%d.test", d)
		if d == 20 {
			domain = "dead.test"
		} else {
			zone[dns.Fqdn(domain)] = []dns.RR{dnstest.MX("mx.example.test.", 10)}
		}
		for u := range 5 {
			addrs = append(addrs, fmt.Sprintf("u%d@%s", u, domain))
		}
	}
	d := dnstest.Start(t, zone)
	flags := []string{"--dns", d.Addr(), "--dns-canary", "example.test", "--smtp-port", strconv.Itoa(s.Port()), "--allow-private",
		"--helo", "probe.mxprobe.test", "--from", "verify@mxprobe.test", "--no-catch-all",
		"--command-timeout", "1s", "--timeout", "10s",
		// Every live domain here shares one MX host: limits out of the way
		// (TestCheckKeepsProviderLimits has them on).
		"--limit-default", "10000/1s:1000:16"}
	return flags, addrs, &dials
}

// TestCheckKeepsProviderLimits: a list at four domains served by one MX
// host, under a limit of one session at a time there, is checked on
// sessions reused for up to ten addresses, never two at once, every
// address answered.
func TestCheckKeepsProviderLimits(t *testing.T) {
	t.Parallel()
	s := smtptest.Start(t, smtptest.Options{})
	zone := dnstest.Zone{"mx.example.test.": {dnstest.A("127.0.0.1")}, "example.test.": {dnstest.MX("mx.example.test.", 10)}}
	var addrs []string
	for d := range 4 {
		zone[dns.Fqdn(fmt.Sprintf("p%d.test", d))] = []dns.RR{dnstest.MX("mx.example.test.", 10)}
		for u := range 5 {
			addrs = append(addrs, fmt.Sprintf("u%d@p%d.test", u, d))
		}
	}
	d := dnstest.Start(t, zone)
	code, out, errOut := runCmd(t, strings.Join(addrs, "\n"), "check", "--dns", d.Addr(), "--dns-canary", "example.test",
		"--smtp-port", strconv.Itoa(s.Port()), "--allow-private", "--helo", "probe.mxprobe.test", "--from", "verify@mxprobe.test",
		"--no-catch-all", "--limit-default", "60/1m:2:1", "--json", "-")
	if code != exitOK {
		t.Errorf("exit %d\n%s\n%s", code, out, errOut)
	}
	if n := strings.Count(out, `"verdict":"valid"`); n != len(addrs) {
		t.Errorf("%d valid of %d", n, len(addrs))
	}
	if n := s.MaxLiveConns(); n > 1 {
		t.Errorf("%d sessions at once at a host limited to 1", n)
	}
	if n := s.Conns(); n > 2 {
		t.Errorf("%d sessions for 20 addresses at one host, want 2 (ten per session)", n)
	}
}

// TestCheckListConcurrently: 200 addresses at 40 domains, one of them
// unreachable. Results stream as they complete (the first is not held
// behind the dead domain), the dead host is dialled once for its five
// addresses, every other address is valid, and --output writes them all.
func TestCheckListConcurrently(t *testing.T) {
	t.Parallel()
	flags, addrs, dials := checkListLab(t)
	csvPath := filepath.Join(t.TempDir(), "out.csv")
	pr, pw := io.Pipe()
	ended := make(chan int, 1)
	var errOut strings.Builder
	go func() {
		args := append(append([]string{"check", "--output", csvPath}, flags...), "-")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		ended <- run(ctx, args, strings.NewReader(strings.Join(addrs, "\n")), pw, &errOut)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var rows [][]string
	firstBeforeEnd := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(rows) == 1 && len(ended) == 0 {
			firstBeforeEnd = true // the first result, read while check still ran
		}
		rows = append(rows, f)
	}
	code := <-ended
	if code != exitUnsure {
		t.Errorf("exit %d, want %d (five unknown)\n%s", code, exitUnsure, errOut.String())
	}
	if len(rows) != 201 || rows[0][0] != "ADDRESS" {
		t.Fatalf("%d lines, want a header and 200 results; first %v; stderr %s", len(rows), rows, errOut.String())
	}
	if !firstBeforeEnd || strings.HasSuffix(rows[1][0], "@dead.test") {
		t.Errorf("first result %v (read before the end: %v): want a live domain's, printed as it completed", rows[1], firstBeforeEnd)
	}
	byVerdict := map[string]int{}
	for _, r := range rows[1:] {
		byVerdict[r[1]]++
		if strings.HasSuffix(r[0], "@dead.test") != (r[1] == "unknown") {
			t.Errorf("row %v", r)
		}
	}
	if byVerdict["valid"] != 195 || byVerdict["unknown"] != 5 {
		t.Errorf("verdicts %v, want 195 valid and 5 unknown", byVerdict)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the dead host was dialled %d times for five addresses, want once", n)
	}
	f, err := os.Open(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil || len(recs) != 201 || recs[0][0] != "input" || recs[0][2] != "verdict" {
		t.Errorf("--output CSV: %d records, header %v, %v", len(recs), recs[0], err)
	}
}

// TestCheckOrdered: --ordered prints in input order, whatever completes
// first.
func TestCheckOrdered(t *testing.T) {
	t.Parallel()
	flags, addrs, _ := checkListLab(t)
	code, out, errOut := runCmd(t, strings.Join(addrs, "\n"), append(append([]string{"check", "--ordered", "--json"}, flags...), "-")...)
	if code != exitUnsure {
		t.Errorf("exit %d\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(addrs) {
		t.Fatalf("%d lines, want %d", len(lines), len(addrs))
	}
	for i, l := range lines {
		if !strings.Contains(l, `"input":"`+addrs[i]+`"`) {
			t.Fatalf("line %d is not %s: %.120s", i, addrs[i], l)
		}
	}
}

func TestCheckListFlags(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "--concurrency", "0", "a@example.test"}, "--concurrency 0"},
		{[]string{"check", "--output", "results.xlsx", "a@example.test"}, "want a file ending in .csv"},
		{[]string{"check", "--output", "/nonexistent-dir/x.csv", "--dns", "127.0.0.1:1", "a@example.test"}, "--output"},
	} {
		code, _, errOut := runCmd(t, "", tt.args...)
		if code != exitUsage || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", tt.args, code, errOut, exitUsage, tt.want)
		}
	}
}
