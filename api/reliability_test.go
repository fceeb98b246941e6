package api_test

// docs/reliability.md at the HTTP level: Redis restarted under the API,
// auth bypass attempts, secrets in the request log, and the doctor hint on
// /v1/providers.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// TestProvidersHintDoctorWhenBlocked: a provider paused because it blocks
// this host points at `mxprobe doctor`; other pauses carry no hint.
func TestProvidersHintDoctorWhenBlocked(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	lim, err := newLimiter(b)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, group, reason string
		wantHint            bool
	}{
		{"blocked", "blocker.test", string(validator.ReasonBlocked), true},
		{"blocked by rDNS", "rdns.test", string(validator.ReasonBlockedRDNS), true},
		{"throttled", "throttle.test", "rate_limited", false},
		{"SMTP reply as reason", "greylist.test", "421 4.7.0 Try again later", false},
	}
	for _, tt := range tests {
		if _, err := lim.CoolDown(context.Background(), "egress1", tt.group, tt.reason); err != nil {
			t.Fatal(err)
		}
	}
	p := setup(t, opts{cfg: func(c *api.Config) { c.Redis, c.Limiter = b.rdb, lim }})
	resp, body := p.do(t, "GET", "/v1/providers", keyA, "", nil)
	type pause struct{ Group, Reason, Hint string }
	got := mustJSON[struct {
		CoolDowns []pause `json:"cool_downs"`
		Providers []struct {
			Group  string
			Paused []pause
		}
	}](t, body)
	if resp.StatusCode != 200 || len(got.CoolDowns) != len(tests) {
		t.Fatalf("providers: %d %s", resp.StatusCode, body)
	}
	byGroup := map[string]pause{}
	for _, pr := range got.Providers {
		for _, pa := range pr.Paused {
			byGroup[pr.Group] = pa
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pa, ok := byGroup[tt.group]
			if !ok {
				t.Fatalf("%s not shown paused: %s", tt.group, body)
			}
			if has := strings.Contains(pa.Hint, "mxprobe doctor"); has != tt.wantHint {
				t.Errorf("%s (%s): hint %q, want a doctor hint: %v", tt.group, tt.reason, pa.Hint, tt.wantHint)
			}
		})
	}
	for _, cd := range got.CoolDowns {
		if cd.Hint != byGroup[cd.Group].Hint {
			t.Errorf("cool_downs[%s] hint %q differs from the provider's %q", cd.Group, cd.Hint, byGroup[cd.Group].Hint)
		}
	}
}

// TestRedisRestartedAPIAnswers503ThenRecovers (docs/reliability.md §4): Redis with
// AOF is killed while probes are in flight and tasks wait in the queues.
// Meanwhile every request that needs Redis gets 503 with Retry-After —
// never a 2xx for work that was not queued — and nothing refused becomes a
// task. After Redis restarts on the same port and directory the same API
// process answers 2xx again, and every validation and batch row accepted
// before the crash finishes with a final result, readable through the API.
func TestRedisRestartedAPIAnswers503ThenRecovers(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	arrived := make(chan string, 100)
	b := setup(t, opts{aof: true, worker: true,
		smtp: smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
			arrived <- to
			<-release // probes in flight across the crash
			return nil
		}},
		// Two slots, both held inside a probe across the crash, so no
		// handler ends while Redis is down (see the limit in
		// docs/reliability.md: asynq then leaves the task active until its
		// recoverer runs, up to two minutes later); a command timeout
		// longer than the outage.
		workerCfg: func(w *worker.Config, v *validator.Config) {
			w.Concurrency = 2
			v.Probe.CommandTimeout = time.Minute
		},
		cfg: func(c *api.Config) {
			// Fail fast while Redis is down (go-redis would retry for
			// seconds); the same client must reconnect afterwards.
			c.Redis = fastFailClient(t, c.Redis)
		},
	})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the worker's shutdown

	var accepted []string
	for i := range 6 {
		resp, body := b.do(t, "POST", "/v1/validations", keyA, "application/json",
			map[string]string{"address": fmt.Sprintf("before%d@example.test", i)})
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("accept %d: %d %s", i, resp.StatusCode, body)
		}
		accepted = append(accepted, mustJSON[validation](t, body).ID)
	}
	resp, body := b.do(t, "POST", "/v1/batches", keyA, "text/csv", "email\nrow1@example.test\nrow2@example.test\nrow3@example.test\n")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("batch: %d %s", resp.StatusCode, body)
	}
	batch := mustJSON[batchAccepted](t, body)
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("no probe reached the SMTP server")
		}
	}

	b.redis.Kill(t)
	outage := []struct{ name, method, path, ctype, body string }{
		{"validation", "POST", "/v1/validations", "application/json", `{"address":"during1@example.test"}`},
		{"validation with wait", "POST", "/v1/validations?wait=5", "application/json", `{"address":"during2@example.test"}`},
		{"batch", "POST", "/v1/batches", "text/csv", "during3@example.test\nduring4@example.test\n"},
		{"sign-up form", "POST", "/validate", "", `{"email":"during5@example.test"}`},
		{"validation status", "GET", "/v1/validations/" + accepted[0], "", ""},
		{"batch status", "GET", batch.StatusURL, "", ""},
		{"batch results", "GET", batch.ResultsURL, "", ""},
		{"readyz", "GET", "/readyz", "", ""},
	}
	for _, tt := range outage {
		t.Run("down/"+tt.name, func(t *testing.T) {
			resp, body := b.do(t, tt.method, tt.path, keyA, tt.ctype, tt.body)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Errorf("status %d Retry-After %q while Redis is down, want 503 with Retry-After: %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
		})
	}
	if resp, _ := b.do(t, "GET", "/healthz", "", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("healthz %d while Redis is down", resp.StatusCode)
	}

	b.redis.Restart(t) // same port, same directory: the AOF is replayed
	releaseOnce.Do(func() { close(release) })

	// The same API process recovers: its first requests succeed.
	recovered := []struct {
		name, method, path, ctype, body string
		want                            int
	}{
		{"validation", "POST", "/v1/validations", "application/json", `{"address":"after@example.test"}`, http.StatusAccepted},
		{"batch", "POST", "/v1/batches", "text/csv", "after-row@example.test\n", http.StatusAccepted},
		{"sign-up form", "POST", "/validate", "", `{"email":"after-form@example.test"}`, http.StatusOK},
		{"batch status", "GET", batch.StatusURL, "", "", http.StatusOK},
	}
	for _, tt := range recovered {
		t.Run("up/"+tt.name, func(t *testing.T) {
			if resp, body := b.do(t, tt.method, tt.path, keyA, tt.ctype, tt.body); resp.StatusCode != tt.want {
				t.Errorf("status %d after Redis came back, want %d: %s", resp.StatusCode, tt.want, body)
			}
		})
	}

	// Everything accepted before the crash completes, read through the API.
	_, body = b.do(t, "GET", batch.ResultsURL+"?format=ndjson", keyA, "", nil)
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		if r := mustJSON[resultRow](t, []byte(l)); r.TaskID != "" {
			accepted = append(accepted, r.TaskID)
		}
	}
	if len(accepted) != 6+3 {
		t.Fatalf("%d accepted task ids, want 9 (batch results %s)", len(accepted), body)
	}
	for _, id := range accepted {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := b.client.Wait(ctx, id)
		cancel()
		if err != nil {
			st, gerr := b.client.Get(context.Background(), id)
			t.Fatalf("accepted %s never finished: %v (now %+v, %v)", id, err, st, gerr)
		}
		resp, body := b.do(t, "GET", "/v1/validations/"+id, keyA, "", nil)
		v := mustJSON[validation](t, body)
		if resp.StatusCode != http.StatusOK || !v.Final || v.Result == nil || v.Result.Verdict != tasks.VerdictValid {
			t.Errorf("accepted %s: %d %s, want a final valid result", id, resp.StatusCode, body)
		}
	}
	_, body = b.do(t, "GET", batch.StatusURL, keyA, "", nil)
	if st := mustJSON[struct{ Total, Done int }](t, body); st.Total != 3 || st.Done != 3 {
		t.Errorf("batch after the restart: %s, want 3 of 3 done", body)
	}

	// Nothing refused with 503 was queued after all.
	for _, a := range taskAddresses(t, b) {
		if strings.HasPrefix(a, "during") {
			t.Errorf("%s was refused with 503 but became a task", a)
		}
	}
}

// fastFailClient is a client for c's server that does not retry and dials
// with a short timeout, closed at cleanup.
func fastFailClient(t testing.TB, c redis.UniversalClient) *redis.Client {
	fc := redis.NewClient(&redis.Options{Addr: c.(*redis.Client).Options().Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = fc.Close() })
	return fc
}

// taskAddresses lists the address of every validation task in Redis, in
// any state.
func taskAddresses(t *testing.T, b *bundle) []string {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(b.rdb)
	var out []string
	for _, q := range tasks.Queues {
		for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
			insp.ListPendingTasks, insp.ListActiveTasks, insp.ListScheduledTasks, insp.ListRetryTasks,
			insp.ListArchivedTasks, insp.ListCompletedTasks,
		} {
			infos, err := list(q, asynq.PageSize(1000))
			if errors.Is(err, asynq.ErrQueueNotFound) {
				break
			}
			if err != nil {
				t.Fatalf("listing %s: %v", q, err)
			}
			for _, ti := range infos {
				if ti.Type != tasks.TypeValidate {
					continue
				}
				p, err := tasks.DecodeValidatePayload(ti.Payload)
				if err != nil {
					t.Fatalf("task %s: %v", ti.ID, err)
				}
				out = append(out, p.Address)
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no tasks listed: the check below would prove nothing")
	}
	return out
}

// TestAuthBypassBeyondTheHeader: attempts the per-route table of
// TestAuthEnforcedOnEveryRoute cannot express — bytes an HTTP client refuses
// to send, headers over the server's limit, a key in the URL, and header and
// cookie played against each other.
func TestAuthBypassBeyondTheHeader(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	const path = "/v1/providers"
	goodCookie := &http.Cookie{Name: "mxprobe_key", Value: keyA}
	tests := []struct {
		name string
		// raw is sent as is on a new connection when set.
		raw     string
		header  http.Header
		cookie  *http.Cookie
		query   string
		want    int
		wantAny []int // instead of want, when the server may answer either
	}{
		{name: "NUL after a valid key", raw: "Authorization: Bearer " + keyA + "\x00\r\n", wantAny: []int{400, 401}},
		{name: "NUL inside the secret", raw: "Authorization: Bearer alice:\x00" + keyA[6:] + "\r\n", wantAny: []int{400, 401}},
		{name: "CR inside the header", raw: "Authorization: Bearer " + keyA + "\rX-Evil: 1\r\n", wantAny: []int{400, 401}},
		// RFC 9112 §5.2 lets a server replace obs-fold with SP, as Go
		// does: this is the valid key, folded, not a way around it.
		{name: "obsolete line folding of a valid key", raw: "Authorization: Bearer\r\n " + keyA + "\r\n", want: 200},
		{name: "obsolete line folding inside the secret", raw: "Authorization: Bearer alice:\r\n " + keyA[6:] + "\r\n", want: 401},
		{name: "header over the server's 1 MiB limit", header: http.Header{"Authorization": {"Bearer alice:" + strings.Repeat("x", 2<<20)}}, want: http.StatusRequestHeaderFieldsTooLarge},
		{name: "first of two Authorization headers is wrong", header: http.Header{"Authorization": {"Bearer alice:wrong-wrong-wrong-wrong", "Bearer " + keyA}}, want: 401},
		{name: "key in the query string", query: "?api_key=" + keyA + "&access_token=" + keyA, want: 401},
		{name: "bad header beats a good cookie", header: http.Header{"Authorization": {"Bearer alice:wrong-wrong-wrong-wrong"}}, cookie: goodCookie, want: 401},
		{name: "malformed header beats a good cookie", header: http.Header{"Authorization": {"Basic x"}}, cookie: goodCookie, want: 401},
		{name: "cookie with a wrong secret", cookie: &http.Cookie{Name: "mxprobe_key", Value: "alice:wrong-wrong-wrong-wrong"}, want: 401},
		{name: "cookie under another name", cookie: &http.Cookie{Name: "mxprobe_key2", Value: keyA}, want: 401},
		{name: "cookie from another origin", cookie: goodCookie, header: http.Header{"Origin": {"https://evil.example"}}, want: 403},
		{name: "cookie from another port of this host", cookie: goodCookie, header: http.Header{"Origin": {"http://127.0.0.1:1"}}, want: 403},
		{name: "cookie with Origin null (sandboxed frame)", cookie: goodCookie, header: http.Header{"Origin": {"null"}}, want: 403},
		{name: "cookie with an unparsable Origin", cookie: goodCookie, header: http.Header{"Origin": {"http://%zz"}}, want: 403},
		{name: "cookie, same origin", cookie: goodCookie, header: http.Header{"Origin": {b.srv.URL}}, want: 200},
		{name: "header key from another origin (not a browser session)", header: http.Header{"Authorization": {"Bearer " + keyA}, "Origin": {"https://evil.example"}}, want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var status int
			if tt.raw != "" {
				status = rawRequest(t, b, "GET "+path+" HTTP/1.1\r\nHost: "+strings.TrimPrefix(b.srv.URL, "http://")+"\r\n"+tt.raw+"Connection: close\r\n\r\n")
			} else {
				req, _ := http.NewRequest("GET", b.srv.URL+path+tt.query, nil)
				for k, vs := range tt.header {
					for _, v := range vs {
						req.Header.Add(k, v)
					}
				}
				if tt.cookie != nil {
					req.AddCookie(tt.cookie)
				}
				resp, err := b.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				status = resp.StatusCode
			}
			switch {
			case tt.wantAny != nil && !slices.Contains(tt.wantAny, status):
				t.Errorf("status %d, want one of %v", status, tt.wantAny)
			case tt.wantAny == nil && status != tt.want:
				t.Errorf("status %d, want %d", status, tt.want)
			}
		})
	}
}

// rawRequest writes req on a new connection and returns the status code.
func rawRequest(t *testing.T, b *bundle, req string) int {
	t.Helper()
	conn, err := net.Dial("tcp", b.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// lockedBuffer collects log output written from the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRequestLogsKeepSecrets (docs/reliability.md §5): at debug level, in JSON and
// in text, the API's logs name the key id but never a secret, an
// Authorization header, a cookie or a key sent in the URL — whether the key
// was right, wrong or malformed.
func TestRequestLogsKeepSecrets(t *testing.T) {
	t.Parallel()
	aliceSecret := strings.SplitN(keyA, ":", 2)[1]
	const wrongSecret = "wrong-secret-do-not-log-9876"
	const querySecret = "query-secret-do-not-log-5432"
	handlers := []struct {
		name string
		new  func(io.Writer) slog.Handler
	}{
		{"json", func(w io.Writer) slog.Handler {
			return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
		}},
		{"text", func(w io.Writer) slog.Handler {
			return slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
		}},
	}
	for _, h := range handlers {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			var logs lockedBuffer
			b := setup(t, opts{cfg: func(c *api.Config) { c.Logger = slog.New(h.new(&logs)) }})
			type req struct {
				method, path, auth, cookie, ctype, body string
			}
			reqs := []req{
				{"GET", "/v1/providers", "Bearer " + keyA, "", "", ""},
				{"POST", "/v1/validations", "Bearer " + keyA, "", "application/json", `{"address":"a@example.com"}`},
				{"POST", "/v1/validations", "Bearer " + keyA, "", "application/json", `{"address":"not-an-address"}`},
				{"POST", "/v1/batches", "Bearer " + keyA, "", "text/csv", "a@example.com\nbad\n"},
				{"GET", "/v1/providers", "Bearer alice:" + wrongSecret, "", "", ""},
				{"GET", "/v1/providers", "Bearer alice: " + wrongSecret, "", "", ""},
				{"GET", "/v1/providers", "Basic " + wrongSecret, "", "", ""},
				{"GET", "/v1/providers?api_key=" + querySecret, "", "", "", ""},
				{"GET", "/nope?token=" + querySecret, "Bearer " + keyA, "", "", ""},
				{"GET", "/v1/providers", "", "mxprobe_key=" + keyA, "", ""},
				{"GET", "/v1/providers", "", "mxprobe_key=alice:" + wrongSecret, "", ""},
				{"POST", "/login", "", "", "application/x-www-form-urlencoded", "key=" + keyA + "&next=/"},
				{"POST", "/login", "", "", "application/x-www-form-urlencoded", "key=alice:" + wrongSecret},
				{"POST", "/login", "", "", "application/json", `{"key":"alice:` + wrongSecret + `"}`},
				{"POST", "/validate", "Bearer " + keyA, "", "", `{"email":"a@example.com"}`},
			}
			for _, r := range reqs {
				hr, _ := http.NewRequest(r.method, b.srv.URL+r.path, strings.NewReader(r.body))
				if r.auth != "" {
					hr.Header.Set("Authorization", r.auth)
				}
				if r.cookie != "" {
					hr.Header.Set("Cookie", r.cookie)
				}
				if r.ctype != "" {
					hr.Header.Set("Content-Type", r.ctype)
				}
				noRedirect := *b.srv.Client()
				noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
				resp, err := noRedirect.Do(hr)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			out := logs.String()
			// The capture works: one access line per request, key ids named.
			if n := strings.Count(out, "http request"); n != len(reqs) {
				t.Fatalf("%d access log lines for %d requests:\n%s", n, len(reqs), out)
			}
			if !strings.Contains(out, "alice") {
				t.Fatalf("no key id in the log; the capture proves nothing:\n%s", out)
			}
			for _, secret := range []string{aliceSecret, wrongSecret, querySecret, "Bearer", "Basic", "mxprobe_key", "api_key", "Authorization", "Cookie"} {
				if strings.Contains(out, secret) {
					t.Errorf("log contains %q:\n%s", secret, out)
				}
			}
		})
	}
}
