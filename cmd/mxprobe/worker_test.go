package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/tasks"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// TestWorkerAndEnqueueCommands drives the two queue commands as an operator
// would: a worker in the background, enqueue --wait in the foreground.
func TestWorkerAndEnqueueCommands(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	flags := lab(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var workerCode int
	var workerErr strings.Builder
	metricsAddr := freeLoopbackAddr(t)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var out strings.Builder
		workerCode = run(ctx, append([]string{"worker", "--redis-url", srv.URL(), "--callback-secret", "s3cret",
			"--log-level", "warn", "--metrics-listen", metricsAddr}, flags...), strings.NewReader(""), &out, &workerErr)
	}()

	code, out, errOut := runCmd(t, "", "enqueue", "--redis-url", srv.URL(), "--wait", "--wait-timeout", "30s",
		"--metadata", `{"k":"v"}`, "alice@example.test", "bob@example.test", "not an address")
	if code != exitInvalid {
		t.Errorf("enqueue exit %d, want %d (one invalid)\nstdout %s\nstderr %s", code, exitInvalid, out, errOut)
	}
	if !strings.Contains(errOut, `"not an address": refused`) {
		t.Errorf("bad address not refused clearly:\n%s", errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 results, got:\n%s", out)
	}
	var got []tasks.Result
	for _, l := range lines {
		var r tasks.Result
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	// Printed as they become final: in either order.
	slices.SortFunc(got, func(a, b tasks.Result) int { return strings.Compare(a.Input, b.Input) })
	if got[0].Input != "alice@example.test" || got[0].Verdict != "valid" || got[1].Verdict != "invalid" || string(got[0].Metadata) != `{"k":"v"}` {
		t.Errorf("results %+v", got)
	}

	// The worker counts what only it sees: verdicts and cache lookups. A
	// verdict is counted just after its result is stored, so the scrape
	// may come a moment early: look again until a deadline.
	wants := []string{
		`mxprobe_verdicts_total{cached="false",reason="mailbox_exists",verdict="valid"} 1`,
		`mxprobe_verdicts_total{cached="false",reason="mailbox_not_found",verdict="invalid"} 1`,
		`mxprobe_cache_lookups_total{cache="result",result="miss"} 2`,
		// The lab's resolver serves the canary name (--dns-canary
		// example.test): checked at start, healthy.
		`mxprobe_dns_canary_healthy 1`,
	}
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatalf("worker metrics: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		if !slices.ContainsFunc(wants, func(w string) bool { return !strings.Contains(body, w) }) || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range wants {
		if !strings.Contains(body, want) {
			t.Errorf("worker /metrics lacks %s:\n%s", want, grepLines(body, "mxprobe_"))
		}
	}

	if keys := srv.Client(t).Keys(context.Background(), "mxprobe:dnscanary:*").Val(); len(keys) != 1 {
		t.Errorf("shared DNS canary results in Redis: %v, want one", keys)
	}

	cancel() // SIGTERM stands in: the worker drains and exits 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		t.Fatal("worker did not stop after its context ended")
	}
	if workerCode != exitOK {
		t.Errorf("worker exit %d, stderr:\n%s", workerCode, workerErr.String())
	}
}

func TestWorkerUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no redis", []string{"worker", "--callback-secret", "x"}, "--redis-url"},
		{"bad redis scheme", []string{"worker", "--redis-url", "http://x", "--callback-secret", "x"}, "scheme"},
		{"bad limit", []string{"worker", "--redis-url", "redis://127.0.0.1:1", "--limit-default", "ten", "--callback-secret", "x"}, "--limit-default"},
		{"no secret", []string{"worker", "--redis-url", "redis://127.0.0.1:1"}, "--callback-secret"},
		{"enqueue without redis", []string{"enqueue", "a@b.example"}, "--redis-url"},
		{"enqueue bad metadata", []string{"enqueue", "--redis-url", "redis://127.0.0.1:1", "--metadata", "{", "a@b.example"}, "metadata"},
		// Shared flags are usage errors before Redis is reached (port 1
		// answers nothing), not one refusal per address.
		{"enqueue metadata not an object", []string{"enqueue", "--redis-url", "redis://127.0.0.1:1", "--metadata", "[1]", "a@b.example", "c@d.example"}, "--metadata: must be a JSON object"},
		{"enqueue unknown queue", []string{"enqueue", "--redis-url", "redis://127.0.0.1:1", "--queue", "urgent", "a@b.example"}, "--queue: unknown queue"},
		{"enqueue ftp callback", []string{"enqueue", "--redis-url", "redis://127.0.0.1:1", "--callback", "ftp://x.example/", "a@b.example"}, "--callback: scheme"},
		{"enqueue negative deadline", []string{"enqueue", "--redis-url", "redis://127.0.0.1:1", "--deadline", "-1s", "a@b.example"}, "--deadline must not be negative"},
		{"bad egress IP", []string{"worker", "--redis-url", "redis://127.0.0.1:1", "--callback-secret", "x", "--egress-ip", "nope"}, "--egress-ip"},
		{"bad log format", []string{"worker", "--redis-url", "redis://127.0.0.1:1", "--log-format", "xml"}, "log-format"},
		{"zero queue shards", []string{"worker", "--redis-url", "redis://127.0.0.1:1", "--callback-secret", "x", "--queue-shards", "0"}, "--queue-shards: tasks: queue shards 0: want 1 to 64"},
		{"enqueue too many queue shards", []string{"enqueue", "--redis-url", "redis://127.0.0.1:1", "--queue-shards", "65", "a@b.example"}, "--queue-shards: tasks: queue shards 65"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := runCmd(t, "", tt.args...)
			if code != exitUsage && code != exitFailure {
				t.Errorf("exit %d\n%s", code, errOut)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, errOut)
			}
		})
	}
}

func TestParseLimit(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		ok   bool
		rate int
	}{
		{"10/1m:3:2", true, 10}, {"20/1m:5", true, 20}, {"10/1m", false, 0}, {"x/1m:3", false, 0},
		{"10/soon:3", false, 0}, {"10/1m:3:2:1", false, 0}, {"", false, 0},
	} {
		l, err := parseLimit(tt.in)
		if (err == nil) != tt.ok || (tt.ok && l.Rate != tt.rate) {
			t.Errorf("parseLimit(%q) = %+v, %v", tt.in, l, err)
		}
	}
}

// freeLoopbackAddr returns 127.0.0.1:port with a port free a moment ago,
// drawn below Linux's ephemeral range, so that no outgoing connection of a
// parallel test can take it before the command binds it (as one from
// Listen(":0") could).
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	for range 50 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000)))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The limiter's lease covers the longest probe on a reused session: it is
// renewed only after a quarter of its TTL, so three quarters must outlast
// --timeout (and the worker bounds each attempt by --timeout).
func TestLeaseTTLCoversTimeout(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		timeout string
		want    time.Duration
	}{
		{"3m", 280 * time.Second}, // (180 s + 30 s) × 4/3
		{"30s", 2 * time.Minute},  // the limiter's default is longer
		{"10m", 840 * time.Second},
	} {
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		var f workerFlags
		f.register(fs)
		if err := fs.Parse([]string{"--timeout", tt.timeout}); err != nil {
			t.Fatal(err)
		}
		cfg, err := f.limiterConfig()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.LeaseTTL != tt.want {
			t.Errorf("--timeout %s: LeaseTTL %s, want %s", tt.timeout, cfg.LeaseTTL, tt.want)
		}
		if left := cfg.LeaseTTL * 3 / 4; left < f.probe.timeout {
			t.Errorf("--timeout %s: a lease three quarters used has %s left, less than a probe may take", tt.timeout, left)
		}
	}
}
