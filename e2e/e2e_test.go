// Package e2e drives the real mxprobe binary — a worker and two enqueue
// commands, through a private redis-server — against real mail software:
// Postfix with five smtpd listeners, each with its own policy, postgrey as
// the greylisting policy service, and an authoritative DNS server (miekg/dns,
// internal/testenv/dnstest) that points each lab domain's MX at its
// listener. See README.md for how to run it and what it needs.
//
// It fails, never skips, when the lab cannot start: CI must not go green
// without having run it.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/e2e/internal/lab"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// The lab's domains, one listener (loopback IP) each, all on one port: the
// prober uses a single SMTP port for every MX host.
var (
	ipMailbox  = netip.MustParseAddr("127.0.0.11")
	ipGrey     = netip.MustParseAddr("127.0.0.12")
	ipCatchAll = netip.MustParseAddr("127.0.0.13")
	ipBlock    = netip.MustParseAddr("127.0.0.14")
	ipRate     = netip.MustParseAddr("127.0.0.15")
)

const (
	// greyDelay is postgrey's --delay; retryFirst, the worker's first retry,
	// is longer so that the automatic retry passes (docs/smtp.md §2 with
	// the 300 s scaled down).
	greyDelay  = 3 * time.Second
	retryFirst = 5 * time.Second

	// anvilUnit and anvilLimit are the rate listener's Postfix limit:
	// more than anvilLimit connections from one client per anvilUnit get
	// "421 4.7.0 … Error: too many connections". rateLimit is the
	// worker's budget for that provider, which must keep it under: at most
	// burst + unit/period = 1 + 10/5 = 3 sessions in any 10 s (plus a
	// reservation redeemed late), against anvil's 5. Without the limiter
	// the worker would open all rateAddrs sessions at once and be refused.
	anvilUnit  = 10 * time.Second
	anvilLimit = 5
	rateLimit  = "rate.test=1/5s:1:1"
	rateAddrs  = 7

	// blockedDeadline is the producer's deadline for the blocked address:
	// the cool-down (15 min) outlasts the suite, so its final verdict and
	// callback come from the deadline.
	blockedDeadline = 20 * time.Second

	// mainDeadline bounds every other address: the slowest, the last of
	// the rate-limited domain, is due after about rateAddrs × 5 s; a task
	// still held back then ends as unknown/rate_limited and fails the
	// verdicts, which keeps a failing run well inside the 5 minutes.
	mainDeadline = 90 * time.Second

	callbackSecret = "e2e-callback-secret"
	suiteTimeout   = 4 * time.Minute
)

// want is the expected final result of one address.
type want struct {
	name        string
	addr        string
	verdict     string
	reason      string
	tls         bool // STARTTLS was used (only the mailbox listener offers it)
	minAttempts int
}

// canaryName is the lab's DNS canary: a name its resolver serves with MX
// records, passed to every worker as --dns-canary.
const canaryName = "canary.lab.test"

func wants() []want {
	ws := []want{
		{name: "existing mailbox over STARTTLS", addr: "alice@mbox.test", verdict: "valid", reason: "mailbox_exists", tls: true, minAttempts: 1},
		{name: "unknown mailbox 550 5.1.1", addr: "nobody@mbox.test", verdict: "invalid", reason: "mailbox_not_found", tls: true, minAttempts: 1},
		{name: "greylisted then valid", addr: "grace@grey.test", verdict: "valid", reason: "mailbox_exists", minAttempts: 2},
		// postgrey's DEFER_IF_PERMIT wins over Postfix's implicit
		// unknown-recipient check on the first attempt (docs/smtp.md §2
		// left this unverified): 450 Greylisted first, 550 5.1.1 on retry.
		{name: "unknown mailbox behind greylisting", addr: "ghost@grey.test", verdict: "invalid", reason: "mailbox_not_found", minAttempts: 2},
		{name: "catch-all domain", addr: "anyone@catchall.test", verdict: "risky", reason: "catch_all", minAttempts: 1},
		{name: "blocked by RBL text", addr: "carol@block.test", verdict: "unknown", reason: "blocked", minAttempts: 1},
		// The lab's resolver serves the canary name, so its NXDOMAIN is
		// trusted (docs/verdicts.md, "DNS answers").
		{name: "domain that does not exist", addr: "someone@nowhere.test", verdict: "invalid", reason: "domain_not_found", minAttempts: 1},
	}
	for i := 1; i <= rateAddrs; i++ {
		ws = append(ws, want{name: fmt.Sprintf("rate-limited domain #%d", i), addr: fmt.Sprintf("user%d@rate.test", i), verdict: "valid", reason: "mailbox_exists", minAttempts: 1})
	}
	return ws
}

func mailboxes() []byte {
	var b strings.Builder
	for _, a := range []string{"alice@mbox.test", "grace@grey.test", "carol@block.test"} {
		fmt.Fprintf(&b, "%s x/\n", a)
	}
	for i := 1; i <= rateAddrs; i++ {
		fmt.Fprintf(&b, "user%d@rate.test x/\n", i)
	}
	// The catch-all: every local part of the domain has a mailbox.
	b.WriteString("@catchall.test x/\n")
	return []byte(b.String())
}

func TestEndToEnd(t *testing.T) {
	t.Parallel()
	if err := lab.Require(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Not deferred: the parallel subtests below run after this function
	// returns, and still need the context.
	ctx, cancel := context.WithTimeout(context.Background(), suiteTimeout)
	t.Cleanup(cancel)
	dir := lab.Dir(t)

	bin := buildMxprobe(t, dir)
	t.Logf("built mxprobe in %s", time.Since(start).Round(time.Millisecond))

	// DNS: each domain's MX points at its listener's loopback address.
	zone := dnstest.Zone{}
	for _, d := range []struct {
		domain string
		ip     netip.Addr
	}{{"mbox.test", ipMailbox}, {"grey.test", ipGrey}, {"catchall.test", ipCatchAll}, {"block.test", ipBlock}, {"rate.test", ipRate}} {
		zone[d.domain] = []dns.RR{dnstest.MX("mx."+d.domain, 10)}
		zone["mx."+d.domain] = []dns.RR{dnstest.A(d.ip.String())}
	}
	zone[canaryName] = []dns.RR{dnstest.MX("mx."+canaryName, 10)}
	dns := dnstest.Start(t, zone)

	grey := lab.StartPostgrey(t, dir, greyDelay)

	port, err := lab.FreePort(ipMailbox, ipGrey, ipCatchAll, ipBlock, ipRate)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := lab.SelfSignedCert(t, dir, "mx.mbox.test")
	pf := lab.StartPostfix(t, dir, lab.PostfixConfig{
		Port: port,
		Main: []string{
			"virtual_mailbox_domains = mbox.test grey.test catchall.test block.test rate.test",
			"virtual_mailbox_maps = texthash:$config_directory/mailboxes",
			"anvil_rate_time_unit = " + fmt.Sprintf("%ds", int(anvilUnit/time.Second)),
		},
		Files: map[string][]byte{
			"mailboxes": mailboxes(),
			// The text Postfix's reject_rbl_client sends, from an access
			// map: Postfix's own resolver reads /etc/resolv.conf, so a
			// real DNSBL lookup would leave the lab's loopback DNS.
			"rbl.cidr": []byte("127.0.0.1/32 554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using rbl.lab.test; see https://rbl.lab.test/lookup\n"),
		},
		Listeners: []lab.Listener{
			{Name: "mbox", IP: ipMailbox, Options: []string{
				"smtpd_tls_security_level=may",
				"smtpd_tls_cert_file=" + certFile,
				"smtpd_tls_key_file=" + keyFile,
			}},
			{Name: "grey", IP: ipGrey, Options: []string{
				"smtpd_recipient_restrictions=reject_unauth_destination,check_policy_service,inet:" + grey.Addr,
			}},
			{Name: "catchall", IP: ipCatchAll},
			{Name: "block", IP: ipBlock, Options: []string{
				"smtpd_client_restrictions=check_client_access,cidr:$config_directory/rbl.cidr",
			}},
			{Name: "rate", IP: ipRate, Options: []string{
				fmt.Sprintf("smtpd_client_connection_rate_limit=%d", anvilLimit),
			}},
		},
	})
	t.Logf("lab up in %s: Postfix %s, postgrey %s, DNS %s, SMTP port %d", time.Since(start).Round(time.Millisecond), pf.ConfDir, grey.Addr, dns.Addr(), port)

	// A Redis server of its own for each run: asynq's queues, the limiter's
	// keys and the result cache have fixed names, and a second run (-count=2)
	// must not be answered from the first one's cache.
	redisURL := redistest.StartServer(t).URL()

	cb := newReceiver(t)

	worker := lab.Start(t, dir, "mxprobe-worker", []string{bin, "worker",
		"--redis-url", redisURL,
		"--dns", dns.Addr(),
		"--dns-canary", canaryName,
		"--smtp-port", fmt.Sprint(port),
		"--allow-private",
		"--helo", "probe.lab.test",
		"--from", "probe@lab.test",
		"--callback-secret", callbackSecret,
		"--callback-allow", "127.0.0.1/32",
		"--retry-first", retryFirst.String(),
		"--retry-max-delay", "10s",
		"--retry-give-up", "2m",
		"--limit-default", "100/1s:50:10",
		"--limits", rateLimit,
		"--concurrency", "16",
		"--connect-timeout", "5s",
		"--command-timeout", "20s",
		"--timeout", "60s",
		"--log-level", "debug",
	})
	worker.WaitFor(t, "worker started", 30*time.Second)

	var all, blocked []string
	for _, w := range wants() {
		if strings.HasSuffix(w.addr, "@block.test") {
			blocked = append(blocked, w.addr)
		} else {
			all = append(all, w.addr)
		}
	}
	// Two producers at once: one waits for everything but the blocked
	// address; the other gives the blocked address a deadline, as a
	// sign-up form would.
	type run struct {
		code    int
		results []tasks.Result
		stderr  string
	}
	enqueue := func(deadline time.Duration, addrs []string, out *run, wg *sync.WaitGroup) {
		defer wg.Done()
		args := []string{"enqueue", "--redis-url", redisURL, "--wait", "--wait-timeout", "2m",
			"--callback", cb.url, "--metadata", `{"suite":"e2e"}`, "--deadline", deadline.String()}
		cmd := exec.CommandContext(ctx, bin, append(args, addrs...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		out.code = cmd.ProcessState.ExitCode()
		out.stderr = stderr.String()
		if err != nil && out.code < 0 {
			out.stderr += "\n" + err.Error()
		}
		dec := json.NewDecoder(&stdout)
		for dec.More() {
			var r tasks.Result
			if err := dec.Decode(&r); err != nil {
				out.stderr += "\ndecoding results: " + err.Error()
				break
			}
			out.results = append(out.results, r)
		}
	}
	var mainRun, blockRun run
	var wg sync.WaitGroup
	wg.Add(2)
	go enqueue(mainDeadline, all, &mainRun, &wg)
	go enqueue(blockedDeadline, blocked, &blockRun, &wg)
	wg.Wait()
	t.Logf("producers done after %s", time.Since(start).Round(time.Millisecond))

	// mxprobe enqueue's exit status: 1 when any address is invalid, 3 when
	// none is but some are unknown or risky (cmd/mxprobe/main.go).
	if mainRun.code != 1 {
		t.Errorf("enqueue (main) exit status %d, want 1 (some invalid); stderr:\n%s", mainRun.code, mainRun.stderr)
	}
	if blockRun.code != 3 {
		t.Errorf("enqueue (blocked) exit status %d, want 3 (unknown); stderr:\n%s", blockRun.code, blockRun.stderr)
	}
	results := map[string]tasks.Result{}
	for _, r := range append(mainRun.results, blockRun.results...) {
		results[r.Input] = r
	}

	t.Run("verdicts", func(t *testing.T) {
		t.Parallel()
		for _, w := range wants() {
			r, ok := results[w.addr]
			if !ok {
				t.Errorf("%s: %s: no result printed by enqueue --wait", w.name, w.addr)
				continue
			}
			if !r.Final || r.Verdict != w.verdict || r.Reason != w.reason {
				t.Errorf("%s: %s: got final=%v %s/%s (smtp %+v, error %q), want final %s/%s", w.name, w.addr, r.Final, r.Verdict, r.Reason, r.SMTP, r.Error, w.verdict, w.reason)
			}
			if r.Attempts < w.minAttempts {
				t.Errorf("%s: %s: %d attempts, want at least %d", w.name, w.addr, r.Attempts, w.minAttempts)
			}
			if w.tls && !r.TLS {
				t.Errorf("%s: %s: probe did not use STARTTLS", w.name, w.addr)
			}
			if string(r.Metadata) != `{"suite":"e2e"}` {
				t.Errorf("%s: %s: metadata %s not echoed", w.name, w.addr, r.Metadata)
			}
		}
	})

	logb, err := os.ReadFile(pf.MailLog)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := lab.ParseMailLog(logb)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("greylisting happened and was passed", func(t *testing.T) {
		t.Parallel()
		// The greylisted address must have met postgrey's 450 first; else
		// the test would pass without greylisting ever happening.
		var greylisted bool
		for _, e := range entries {
			if e.Tag == "postfix-grey/smtpd" && strings.Contains(e.Msg, "450 4.2.0 <grace@grey.test>") && strings.Contains(e.Msg, "Greylisted") {
				greylisted = true
			}
		}
		if !greylisted {
			t.Errorf("Postfix's log has no 450 4.2.0 Greylisted for grace@grey.test:\n%s", tagged(entries, "postfix-grey/"))
		}
	})

	t.Run("rate limit never exceeded", func(t *testing.T) {
		t.Parallel()
		var connects []time.Time
		for _, e := range entries {
			if e.Tag != "postfix-rate/smtpd" {
				continue
			}
			if strings.HasPrefix(e.Msg, "connect from ") {
				connects = append(connects, e.Time)
			}
			if strings.Contains(e.Msg, "rate limit exceeded") || strings.Contains(e.Msg, "too many connections") {
				t.Errorf("Postfix refused the prober: %s", e.Msg)
			}
		}
		// Sessions are reused (several addresses per connection), so there
		// are between one and rateAddrs connections; none means the log
		// was not read and the window check below would pass vacuously.
		if len(connects) == 0 || len(connects) > rateAddrs {
			t.Fatalf("Postfix logged %d connections to the rate-limited listener, want 1 to %d for %d addresses:\n%s", len(connects), rateAddrs, rateAddrs, tagged(entries, "postfix-rate/"))
		}
		if n := lab.MaxInWindow(connects, anvilUnit); n > anvilLimit {
			t.Errorf("%d connections within %s, over Postfix's limit of %d:\n%s", n, anvilUnit, anvilLimit, tagged(entries, "postfix-rate/"))
		} else {
			t.Logf("%d connections to the rate-limited listener, at most %d in any %s (Postfix allows %d)", len(connects), n, anvilUnit, anvilLimit)
		}
	})

	t.Run("blocked opens a cool-down", func(t *testing.T) {
		t.Parallel()
		rdb := redisClient(t, redisURL)
		lim, err := ratelimit.New(rdb, ratelimit.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		pauses, err := lim.Paused(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, p := range pauses {
			switch p.Group {
			case "block.test":
				found = true
				if p.Reason != "blocked" || !p.Until.After(time.Now().Add(5*time.Minute)) {
					t.Errorf("block.test pause: reason %q until %s, want blocked for minutes", p.Reason, p.Until)
				}
			default:
				t.Errorf("unexpected cool-down of %s (%s): only block.test refused the prober", p.Group, p.Reason)
			}
		}
		if !found {
			t.Errorf("no cool-down for block.test; pauses: %+v", pauses)
		}
		var logged bool
		for _, l := range worker.Lines() {
			if strings.Contains(l, "every worker pauses it") && strings.Contains(l, "provider=block.test") {
				logged = true
			}
		}
		if !logged {
			t.Errorf("the worker did not log the block.test cool-down")
		}
	})

	t.Run("every callback arrives", func(t *testing.T) {
		t.Parallel()
		ids := map[string]string{}
		for addr, r := range results {
			ids[r.TaskID] = addr
		}
		got := cb.waitAll(t, ids, 60*time.Second)
		for id, addr := range ids {
			body := got[id]
			if body.Verdict != results[addr].Verdict || body.Reason != results[addr].Reason || !body.Final {
				t.Errorf("%s: callback says final=%v %s/%s, result says %s/%s", addr, body.Final, body.Verdict, body.Reason, results[addr].Verdict, results[addr].Reason)
			}
		}
		if n := cb.rejected(); n > 0 {
			t.Errorf("%d callbacks failed signature verification", n)
		}
	})
}

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// buildMu makes the suite's parallel tests build one after the other: the
// first build fills Go's build cache and the others only link, where
// concurrent builds would each compile everything on CI's few cores.
var buildMu sync.Mutex

// buildMxprobe builds the command under test into dir.
func buildMxprobe(t *testing.T, dir string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	bin := filepath.Join(dir, "mxprobe")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/mxprobe")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/mxprobe: %v\n%s", err, out)
	}
	return bin
}

func tagged(entries []lab.LogEntry, prefix string) string {
	var b strings.Builder
	for _, e := range entries {
		if strings.HasPrefix(e.Tag, prefix) {
			fmt.Fprintf(&b, "%s %s[%d]: %s\n", e.Time.Format(time.TimeOnly), e.Tag, e.PID, e.Msg)
		}
	}
	return b.String()
}

// receiver is the callback endpoint a producer would run: it verifies each
// signature and keeps the latest body per event.
type receiver struct {
	url string

	mu     sync.Mutex
	got    map[string]tasks.Result
	bad    int
	notify chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{got: map[string]tasks.Result{}, notify: make(chan struct{}, 1)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := tasks.VerifyRequest(req, [][]byte{[]byte(callbackSecret)}, 0)
		if err != nil {
			r.mu.Lock()
			r.bad++
			r.mu.Unlock()
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var res tasks.Result
		if err := json.Unmarshal(body, &res); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if ev := req.Header.Get(tasks.HeaderEventID); ev != res.TaskID {
			http.Error(w, "event id header and body disagree", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.got[res.TaskID] = res
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/hook"
	return r
}

// waitAll waits until a callback for every id has arrived.
func (r *receiver) waitAll(t *testing.T, ids map[string]string, timeout time.Duration) map[string]tasks.Result {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		var missing []string
		for id, addr := range ids {
			if _, ok := r.got[id]; !ok {
				missing = append(missing, addr)
			}
		}
		got := make(map[string]tasks.Result, len(r.got))
		for k, v := range r.got {
			got[k] = v
		}
		r.mu.Unlock()
		if len(missing) == 0 {
			return got
		}
		select {
		case <-r.notify:
		case <-timer.C:
			slices.Sort(missing)
			t.Fatalf("callbacks lost: none arrived within %s for %s", timeout, strings.Join(missing, ", "))
		}
	}
}

func (r *receiver) rejected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bad
}
