package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// lineWriter hands each line written to it to a channel, so a test can wait
// for a log line instead of sleeping.
type lineWriter struct {
	pw *io.PipeWriter
}

func newLineWriter(t *testing.T) (*lineWriter, <-chan string) {
	pr, pw := io.Pipe()
	ch := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case ch <- sc.Text():
			default: // nobody is reading that far; drop
			}
		}
		close(ch)
	}()
	t.Cleanup(func() { pw.Close() })
	return &lineWriter{pw}, ch
}

func (w *lineWriter) Write(b []byte) (int, error) { return w.pw.Write(b) }

var (
	keyLine    = regexp.MustCompile(`API key: (\S+)`)
	listenLine = regexp.MustCompile(`msg=listening url=(http://\S+)`)
)

// TestServeEmbedded runs `mxprobe serve` with no Redis URL: the embedded
// miniredis must carry asynq's scripts, the rate limiter's (TIME, EVALSHA)
// and the worker's dedupe and cache scripts through a real validation.
func TestServeEmbedded(t *testing.T) {
	t.Parallel()
	smtpSrv := smtptest.Start(t, smtptest.Options{
		Rcpt:        map[string]*smtp.SMTPError{"alice@example.test": nil},
		RcptDefault: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"},
	})
	dns := dnstest.Start(t, dnstest.Zone{
		"example.test.":    {dnstest.MX("mx.example.test.", 10)},
		"mx.example.test.": {dnstest.A("127.0.0.1")},
	})
	stderr, lines := newLineWriter(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--helo", "probe.mxprobe.test", "--from", "verify@mxprobe.test",
			"--dns", dns.Addr(), "--dns-canary", "example.test", "--smtp-port", strconv.Itoa(smtpSrv.Port()), "--allow-private", "--no-catch-all",
			"--limit-default", "1000/1s:100:20", "--shutdown-timeout", "5s"}, strings.NewReader(""), io.Discard, stderr)
	}()
	var key, base string
	timeout := time.After(30 * time.Second)
	var seen []string
	for base == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("serve ended before listening:\n%s", strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			if m := keyLine.FindStringSubmatch(l); m != nil {
				key = m[1]
			}
			if m := listenLine.FindStringSubmatch(l); m != nil {
				base = m[1]
			}
		case code := <-done:
			t.Fatalf("serve exited %d:\n%s", code, strings.Join(seen, "\n"))
		case <-timeout:
			t.Fatalf("serve did not start:\n%s", strings.Join(seen, "\n"))
		}
	}
	if key == "" || !strings.Contains(strings.Join(seen, "\n"), "EMBEDDED REDIS") {
		t.Fatalf("no generated key or no embedded-Redis warning:\n%s", strings.Join(seen, "\n"))
	}
	post := func(path, auth, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", base+strings.TrimPrefix(path, "/"), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	if code, _ := post("/v1/validations", "", `{"address":"alice@example.test"}`); code != 401 {
		t.Errorf("without the generated key: %d, want 401", code)
	}
	code, v := post("/v1/validations?wait=20s", key, `{"address":"alice@example.test"}`)
	res, _ := v["result"].(map[string]any)
	if code != 200 || res == nil || res["verdict"] != "valid" {
		t.Fatalf("embedded validation: %d %v", code, v)
	}
	if code, v := post("/validate", key, `{"email":"bob@example.test"}`); code != 200 || v["result"] != false || v["verdict"] != "invalid" {
		t.Errorf("/validate: %d %v", code, v)
	}
	// serve hands the API its own callback policy: loopback is refused at
	// enqueue (the worker would refuse it at delivery).
	if code, v := post("/v1/validations", key, `{"address":"alice@example.test","callback_url":"http://127.0.0.1:9/hook"}`); code != 422 {
		t.Errorf("loopback callback: %d %v, want 422", code, v)
	}
	// The same address again is answered from the result cache; /metrics
	// counts the lookups of the caches serve wires to the worker.
	if code, v := post("/v1/validations?wait=20s", key, `{"address":"alice@example.test"}`); code != 200 {
		t.Fatalf("second validation: %d %v", code, v)
	}
	mreq, _ := http.NewRequest("GET", base+"metrics", nil)
	mreq.Header.Set("Authorization", "Bearer "+key)
	mresp, err := http.DefaultClient.Do(mreq)
	if err != nil {
		t.Fatal(err)
	}
	mbody, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, series := range []string{`cache="result",result="hit"`, `cache="result",result="miss"`, `cache="mx",result="miss"`} {
		m := regexp.MustCompile(`(?m)^mxprobe_cache_lookups_total\{` + regexp.QuoteMeta(series) + `\} (\d+)$`).FindStringSubmatch(string(mbody))
		if m == nil || m[1] == "0" {
			t.Errorf("/metrics: mxprobe_cache_lookups_total{%s} = %v, want at least 1", series, m)
		}
	}
	req, _ := http.NewRequest("GET", base+"readyz", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("readyz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("serve exited %d after cancel, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not shut down")
	}
}

func TestServeUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"api role needs a shared redis", []string{"serve", "--role", "api"}, "needs --redis-url"},
		{"bad role", []string{"serve", "--role", "both"}, "want api, worker or all"},
		{"metrics listener beside the API", []string{"serve", "--metrics-listen", "127.0.0.1:0"}, "--metrics-listen is for --role worker"},
		{"bad key", []string{"serve", "--api-keys", "alice:short"}, "shorter than 16"},
		{"zero body timeout", []string{"serve", "--body-timeout", "0s"}, "must be positive"},
		{"zero auth failures", []string{"serve", "--auth-failures-per-ip", "0"}, "want a positive count, or -1"},
		{"negative connection cap", []string{"serve", "--max-conns-per-ip", "-1"}, "must not be negative"},
		{"sign-up budget above its cap", []string{"serve", "--validate-wait", "20s", "--validate-max-wait", "10s"}, "must be between 0 and --validate-max-wait"},
		{"negative sign-up budget", []string{"serve", "--validate-wait", "-1s"}, "must be between 0 and --validate-max-wait"},
		{"bad policy flag", []string{"serve", "--reject-role=maybe"}, "reject-role"},
		{"bad publishable origin", []string{"serve", "--publishable-keys", "pk_shop=shop.example"}, "--publishable-keys: publishable key \"pk_shop\": origin"},
		{"zero publishable IP quota", []string{"serve", "--publishable-ip-quota", "0"}, "--publishable-ip-quota"},
		{"bad egress IP", []string{"serve", "--egress-ip", "nope"}, "--egress-ip"},
		{"no-auth with keys", []string{"serve", "--no-auth", "--api-keys", "alice:0123456789abcdef"}, "choose one"},
		{"negative queue shards", []string{"serve", "--queue-shards", "-2"}, "--queue-shards: tasks: queue shards -2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			code := run(context.Background(), tt.args, strings.NewReader(""), io.Discard, &out)
			if code != exitUsage || !strings.Contains(out.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, out.String(), exitUsage, tt.want)
			}
		})
	}
}

// serve --role worker runs the whole worker, the disposable-list updater
// included (it used to start only the queue worker, so
// --disposable-list-url was accepted and never fetched), and serves its
// metrics on --metrics-listen.
func TestServeWorkerRoleRunsTheListUpdater(t *testing.T) {
	t.Parallel()
	fetched := make(chan struct{}, 1)
	list := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "throwaway.test")
		select {
		case fetched <- struct{}{}:
		default:
		}
	}))
	defer list.Close()
	srv := redistest.StartServer(t)
	metricsAddr := freeLoopbackAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errOut strings.Builder
	go func() {
		var out strings.Builder
		done <- run(ctx, append([]string{"serve", "--role", "worker", "--redis-url", srv.URL(), "--log-level", "warn",
			"--metrics-listen", metricsAddr, "--disposable-list-url", list.URL + "/list"}, lab(t)...), strings.NewReader(""), &out, &errOut)
	}()
	select {
	case <-fetched:
	case code := <-done:
		t.Fatalf("serve exited %d before fetching the list:\n%s", code, errOut.String())
	case <-time.After(20 * time.Second):
		t.Fatal("serve --role worker never fetched --disposable-list-url")
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("--metrics-listen: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `mxprobe_cache_lookups_total{cache="result",result="miss"}`) {
		t.Errorf("worker metrics lack the cache series:\n%s", body)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("serve exit %d:\n%s", code, errOut.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("serve did not stop")
	}
}
