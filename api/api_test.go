package api_test

import (
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// concrete turns a route pattern into a path that reaches it.
func concrete(pattern string) string {
	switch pattern {
	case "/monitoring/":
		return "/monitoring/api/queues"
	}
	return strings.NewReplacer("{id}", "b_000000000000000000000000").Replace(pattern)
}

func TestAuthEnforcedOnEveryRoute(t *testing.T) {
	t.Parallel()
	// Hundreds of refusals from one address: the failure throttle
	// (TestFailedAuthThrottled) would answer 429 to most.
	b := setup(t, opts{cfg: noAuthThrottle})
	aliceSecret := strings.SplitN(keyA, ":", 2)[1]
	bobSecret := strings.SplitN(keyB, ":", 2)[1]
	creds := []struct {
		name, header string
		want401      bool
		wantErr      string // RFC 6750 error in the challenge
	}{
		{"no key", "", true, ""},
		{"wrong secret", "Bearer alice:not-the-secret-at-all", true, "invalid_token"},
		{"malformed header", "Basic YWxpY2U6eA==", true, "invalid_request"},
		{"empty bearer", "Bearer ", true, "invalid_request"},
		{"other key's id", "Bearer bob:" + aliceSecret, true, "invalid_token"},
		{"unknown id", "Bearer mallory:" + aliceSecret, true, "invalid_token"},
		{"good key", "Bearer " + keyA, false, ""},
		// Bypass attempts (docs/reliability.md §5).
		{"scheme only", "Bearer", true, "invalid_request"},
		{"scheme and blanks (trimmed to the scheme)", "Bearer   ", true, "invalid_request"},
		{"Basic carrying a valid key", "Basic " + base64.StdEncoding.EncodeToString([]byte(keyA)), true, "invalid_request"},
		{"valid key as a bare header", keyA, true, "invalid_request"},
		{"other scheme name with a valid key", "Token " + keyA, true, "invalid_request"},
		{"id only", "Bearer alice", true, "invalid_token"},
		{"id and colon", "Bearer alice:", true, "invalid_token"},
		{"secret only", "Bearer " + aliceSecret, true, "invalid_token"},
		{"empty id", "Bearer :" + aliceSecret, true, "invalid_token"},
		{"extra colon after the key", "Bearer " + keyA + ":", true, "invalid_token"},
		{"extra colon before the secret", "Bearer alice::" + aliceSecret, true, "invalid_token"},
		{"space inside the key", "Bearer alice: " + aliceSecret, true, "invalid_request"},
		{"tab inside the key", "Bearer alice:\t" + aliceSecret, true, "invalid_request"},
		{"two keys", "Bearer " + keyA + " " + keyB, true, "invalid_request"},
		{"two keys with a comma", "Bearer " + keyA + "," + keyB, true, "invalid_token"},
		{"secret truncated", "Bearer " + keyA[:len(keyA)-1], true, "invalid_token"},
		{"secret with a suffix", "Bearer " + keyA + "x", true, "invalid_token"},
		{"secret in upper case", "Bearer alice:" + strings.ToUpper(aliceSecret), true, "invalid_token"},
		{"id in upper case", "Bearer ALICE:" + aliceSecret, true, "invalid_token"},
		{"another key's id with a wrong secret", "Bearer bob:not-bobs-secret-at-all", true, "invalid_token"},
		{"A's id with B's secret", "Bearer alice:" + bobSecret, true, "invalid_token"},
		{"64 KiB secret", "Bearer alice:" + strings.Repeat("x", 64<<10), true, "invalid_token"},
		{"64 KiB id", "Bearer " + strings.Repeat("a", 64<<10) + ":" + aliceSecret, true, "invalid_token"},
		// RFC 7235 §2.1: the scheme is case-insensitive, and 1*SP may
		// separate it from the credentials; these are the valid key.
		{"lower-case scheme", "bearer " + keyA, false, ""},
		{"upper-case scheme", "BEARER " + keyA, false, ""},
		{"two spaces after the scheme", "Bearer  " + keyA, false, ""},
	}
	for _, rt := range b.api.Routes() {
		for _, c := range creds {
			name := fmt.Sprintf("%s %s/%s", rt.Method, rt.Pattern, c.name)
			req, _ := http.NewRequest(rt.Method, b.srv.URL+concrete(rt.Pattern), nil)
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			resp, err := b.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got401 := resp.StatusCode == http.StatusUnauthorized
			switch {
			case rt.Auth && c.want401 && !got401:
				t.Errorf("%s: status %d, want 401", name, resp.StatusCode)
			case rt.Auth && c.want401:
				ch := resp.Header.Get("WWW-Authenticate")
				if !strings.HasPrefix(ch, "Bearer ") || (c.wantErr != "" && !strings.Contains(ch, `error="`+c.wantErr+`"`)) {
					t.Errorf("%s: WWW-Authenticate %q, want Bearer with error %q", name, ch, c.wantErr)
				}
			case got401 && (!rt.Auth || !c.want401):
				t.Errorf("%s: 401 on a request that should pass auth", name)
			}
		}
	}
}

func TestNoAuthNeedsExplicitFlag(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	if _, err := api.New(api.Config{Redis: b.rdb}); err == nil {
		t.Fatal("New without keys and without NoAuth succeeded: the API would be open by accident")
	}
	open := setup(t, opts{cfg: func(c *api.Config) { c.Keys, c.NoAuth = nil, true }})
	if resp, _ := open.do(t, "GET", "/v1/providers", "", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("NoAuth: status %d", resp.StatusCode)
	}
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Errorf("openapi %q, want 3.1.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	routed := map[string]bool{}
	for _, rt := range b.api.Routes() {
		if !rt.Doc {
			continue
		}
		k := rt.Method + " " + rt.Pattern
		routed[k] = true
		if !documented[k] {
			t.Errorf("route %s is not in openapi.json", k)
		}
	}
	for k := range documented {
		if !routed[k] {
			t.Errorf("openapi.json documents %s, which the router does not serve", k)
		}
		// And the real handler answers it (not the mux's miss).
		method, path, _ := strings.Cut(k, " ")
		resp, body := b.do(t, method, concrete(path), keyA, "", nil)
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			if strings.Contains(string(body), "route_not_found") || strings.Contains(string(body), "method_not_allowed") {
				t.Errorf("%s: documented but the router misses it (%d)", k, resp.StatusCode)
			}
		}
	}
	// The served document is the embedded one.
	resp, body := b.do(t, "GET", "/v1/openapi.json", "", "", nil)
	if resp.StatusCode != 200 || string(body) != string(api.OpenAPIDoc) {
		t.Errorf("GET /v1/openapi.json: %d", resp.StatusCode)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{cfg: func(c *api.Config) { c.MaxBatchRows = 3 }})
	big := `{"address":"a@example.com","metadata":{"x":"` + strings.Repeat("y", 70<<10) + `"}}`
	tests := []struct {
		name, method, path, ctype string
		body                      string
		wantStatus                int
		wantCode, wantField       string
	}{
		{"malformed JSON", "POST", "/v1/validations", "application/json", `{"address":`, 400, "malformed_json", ""},
		{"empty body", "POST", "/v1/validations", "application/json", ``, 400, "malformed_json", ""},
		{"trailing data", "POST", "/v1/validations", "application/json", `{"address":"a@example.com"} {}`, 400, "malformed_json", ""},
		{"unknown field", "POST", "/v1/validations", "application/json", `{"address":"a@example.com","adress":"x"}`, 400, "unknown_field", "adress"},
		{"wrong type", "POST", "/v1/validations", "application/json", `{"address":7}`, 422, "invalid_field", "address"},
		{"oversized body", "POST", "/v1/validations", "application/json", big, 413, "body_too_large", ""},
		{"wrong content type", "POST", "/v1/validations", "text/plain", `{"address":"a@example.com"}`, 415, "unsupported_media_type", ""},
		{"bad address", "POST", "/v1/validations", "application/json", `{"address":"not an address"}`, 422, "invalid_field", "address"},
		{"missing address", "POST", "/v1/validations", "application/json", `{}`, 422, "invalid_field", "address"},
		{"bad queue", "POST", "/v1/validations", "application/json", `{"address":"a@example.com","queue":"urgent"}`, 422, "invalid_field", "queue"},
		{"bad callback", "POST", "/v1/validations", "application/json", `{"address":"a@example.com","callback_url":"ftp://x"}`, 422, "invalid_field", "callback_url"},
		{"metadata not object", "POST", "/v1/validations", "application/json", `{"address":"a@example.com","metadata":[1]}`, 422, "invalid_field", "metadata"},
		{"bad wait", "POST", "/v1/validations?wait=soon", "application/json", `{"address":"a@example.com"}`, 400, "invalid_field", "wait"},
		{"negative wait", "POST", "/v1/validations?wait=-1s", "application/json", `{"address":"a@example.com"}`, 400, "invalid_field", "wait"},
		{"negative wait in seconds", "POST", "/v1/validations?wait=-2.5", "application/json", `{"address":"a@example.com"}`, 400, "invalid_field", "wait"},
		{"NaN wait", "POST", "/v1/validations?wait=NaN", "application/json", `{"address":"a@example.com"}`, 400, "invalid_field", "wait"},
		{"CSV over row limit", "POST", "/v1/batches", "text/csv", "email\na@x.com\nb@x.com\nc@x.com\nd@x.com\n", 413, "too_many_rows", ""},
		{"JSON batch over row limit", "POST", "/v1/batches", "application/json", `["a@x.com","b@x.com","c@x.com","d@x.com"]`, 413, "too_many_rows", ""},
		{"batch not an array", "POST", "/v1/batches", "application/json", `{"address":"a@x.com"}`, 400, "malformed_json", ""},
		{"empty batch", "POST", "/v1/batches", "text/csv", "email\n", 422, "bad_request", ""},
		{"batch wrong content type", "POST", "/v1/batches", "application/xml", `<a/>`, 415, "unsupported_media_type", ""},
		{"batch bad queue", "POST", "/v1/batches?queue=urgent", "application/json", `["a@x.com"]`, 422, "invalid_field", "queue"},
		{"unknown batch", "GET", "/v1/batches/b_000000000000000000000000", "", "", 404, "not_found", ""},
		{"malformed batch id", "GET", "/v1/batches/..%2f..", "", "", 404, "", ""},
		{"bad results format", "GET", "/v1/batches/b_000000000000000000000000/results?format=xml", "", "", 400, "invalid_field", "format"},
		{"unknown validation", "GET", "/v1/validations/default_nope", "", "", 404, "not_found", ""},
		{"validation id without queue", "GET", "/v1/validations/nope", "", "", 404, "not_found", ""},
		{"validate malformed", "POST", "/validate", "", `{"email":`, 400, "malformed_json", ""},
		{"validate unknown field", "POST", "/validate", "", `{"email":"a@x.com","name":"A"}`, 400, "unknown_field", "name"},
		{"no such endpoint", "GET", "/v2/things", "", "", 404, "route_not_found", ""},
		{"method not allowed", "DELETE", "/v1/validations", "", "", 405, "method_not_allowed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := b.do(t, tt.method, tt.path, keyA, tt.ctype, tt.body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantCode == "" {
				return
			}
			e := decodeError(t, body)
			if e.Error.Code != tt.wantCode || e.Error.Field != tt.wantField {
				t.Errorf("error %+v, want code %q field %q", e.Error, tt.wantCode, tt.wantField)
			}
		})
	}
	// Nothing above may have created a task.
	for _, q := range tasks.Queues {
		if n := b.rdb.Exists(context.Background(), "asynq:{"+q+"}:pending").Val(); n != 0 {
			t.Errorf("queue %s has pending tasks after refused requests", q)
		}
	}
}

// fastFail makes the bundle's Redis client give up at once when Redis is
// gone (go-redis otherwise retries for seconds), to keep the test short.
func fastFail(c *api.Config) {
	c.Redis = redis.NewClient(&redis.Options{Addr: c.Redis.(*redis.Client).Options().Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
}

func TestRedisDownIs503(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{cfg: fastFail})
	b.redis.Kill(t)
	tests := []struct{ name, method, path, ctype, body string }{
		{"validation", "POST", "/v1/validations", "application/json", `{"address":"a@example.com"}`},
		{"validation status", "GET", "/v1/validations/default_x", "", ""},
		{"batch", "POST", "/v1/batches", "application/json", `["a@example.com"]`},
		{"batch status", "GET", "/v1/batches/b_000000000000000000000000", "", ""},
		{"form", "POST", "/validate", "", `{"email":"a@example.com"}`},
		{"readyz", "GET", "/readyz", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := b.do(t, tt.method, tt.path, keyA, tt.ctype, tt.body)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("status %d Retry-After %q, want 503 with Retry-After: %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
			// Unauthenticated routes (/readyz) included: the cause names
			// internal hosts and stays in the log.
			if strings.Contains(string(body), b.redis.Addr()) {
				t.Errorf("the 503 names Redis's address: %s", body)
			}
		})
	}
	if resp, _ := b.do(t, "GET", "/healthz", "", "", nil); resp.StatusCode != 200 {
		t.Errorf("healthz %d while Redis is down; liveness must not depend on Redis", resp.StatusCode)
	}
	// With a quota the key check itself needs Redis: still 503, not 401/500.
	q := setup(t, opts{cfg: func(c *api.Config) { fastFail(c); c.Quota = 5 }})
	q.redis.Kill(t)
	if resp, _ := q.do(t, "GET", "/v1/providers", keyA, "", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("quota check with Redis down: %d, want 503", resp.StatusCode)
	}
}

type validation struct {
	ID        string        `json:"id"`
	StatusURL string        `json:"status_url"`
	State     string        `json:"state"`
	Final     bool          `json:"final"`
	Result    *tasks.Result `json:"result"`
}

func TestWaitReturnsInlineResult(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{worker: true, smtp: smtptest.Options{
		Rcpt: map[string]*smtp.SMTPError{"alice@example.test": nil}, RcptDefault: notFound,
	}})
	tests := []struct{ name, addr, verdict, reason string }{
		{"valid", "alice@example.test", tasks.VerdictValid, "mailbox_exists"},
		{"invalid", "bob@example.test", tasks.VerdictInvalid, "mailbox_not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := b.do(t, "POST", "/v1/validations?wait=20", keyA, "application/json",
				map[string]any{"address": tt.addr, "metadata": map[string]int{"user": 7}, "request_id": "r1"})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", resp.StatusCode, body)
			}
			v := mustJSON[validation](t, body)
			if v.Result == nil || v.Result.Verdict != tt.verdict || v.Result.Reason != tt.reason || !v.Final {
				t.Fatalf("result %s, want %s/%s", body, tt.verdict, tt.reason)
			}
			if v.StatusURL != "/v1/validations/"+v.ID || string(v.Result.Metadata) != `{"user":7}` || v.Result.RequestID != "r1" {
				t.Errorf("status_url/metadata/request_id not carried: %s", body)
			}
			if v.Result.SMTP == nil || v.Result.SMTP.Code == 0 || v.Result.MXHost != "mx.example.test" {
				t.Errorf("SMTP reply missing: %s", body)
			}
			resp, body = b.do(t, "GET", v.StatusURL, keyA, "", nil)
			got := mustJSON[validation](t, body)
			// The verdict is announced once stored, a moment before asynq
			// marks the task completed: final, and active or completed.
			if resp.StatusCode != 200 || got.Result == nil || got.Result.Verdict != tt.verdict || !got.Final ||
				(got.State != "completed" && got.State != "active") {
				t.Errorf("GET %s: %d %s", v.StatusURL, resp.StatusCode, body)
			}
		})
	}
	// Without wait: 202 with the id, at once.
	resp, body := b.do(t, "POST", "/v1/validations", keyA, "application/json", map[string]string{"address": "carol@example.test"})
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Location") == "" || mustJSON[validation](t, body).ID == "" {
		t.Errorf("no wait: %d %s", resp.StatusCode, body)
	}
	if resp, body := b.do(t, "GET", "/readyz", "", "", nil); resp.StatusCode != 200 || !strings.Contains(string(body), `"workers":1`) {
		t.Errorf("readyz with a worker: %d %s", resp.StatusCode, body)
	}
}

// A huge wait in seconds is capped at MaxWait, not overflowed into a
// negative duration and refused.
func TestHugeWaitIsCapped(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{cfg: func(c *api.Config) { c.MaxWait = 100 * time.Millisecond }})
	resp, body := b.do(t, "POST", "/v1/validations?wait=1e12", keyA, "application/json", map[string]string{"address": "a@example.com"})
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("wait=1e12: status %d %s, want 202 after MaxWait", resp.StatusCode, body)
	}
}

func TestWaitTimesOutWith202(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{}) // no worker: nothing will finish
	resp, body := b.do(t, "POST", "/v1/validations?wait=100ms", keyA, "application/json", map[string]string{"address": "a@example.com"})
	v := mustJSON[validation](t, body)
	if resp.StatusCode != http.StatusAccepted || v.Final || v.State != "pending" {
		t.Errorf("status %d %s, want 202 pending", resp.StatusCode, body)
	}
	if resp, body := b.do(t, "GET", "/readyz", "", "", nil); resp.StatusCode != 200 {
		t.Errorf("readyz with SkipWorkerCheck: %d %s", resp.StatusCode, body)
	}
	strict := setup(t, opts{cfg: func(c *api.Config) { c.SkipWorkerCheck = false }})
	if resp, body := strict.do(t, "GET", "/readyz", "", "", nil); resp.StatusCode != 503 || !strings.Contains(string(body), "no worker") {
		t.Errorf("readyz without a worker: %d %s, want 503", resp.StatusCode, body)
	}
}

func TestSignUpFormPattern(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{worker: true, smtp: smtptest.Options{
		Rcpt: map[string]*smtp.SMTPError{"alice@example.test": nil}, RcptDefault: notFound,
	}, cfg: func(c *api.Config) { c.ValidateWait = 20 * time.Second }})
	type form struct {
		Result  bool   `json:"result"`
		Verdict string `json:"verdict"`
		Reason  string `json:"reason"`
		Email   string `json:"email"`
		ID      string `json:"id"`
	}
	tests := []struct {
		name, email, ctype string
		want               bool
		wantVerdict        string
	}{
		// fetch() with a string body and no headers sends text/plain.
		{"valid, fetch default type", "alice@example.test", "text/plain;charset=UTF-8", true, "valid"},
		{"unknown mailbox", "bob@example.test", "application/json", false, "invalid"},
		{"bad syntax", "bob@@example.test", "", false, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := b.do(t, "POST", "/validate", keyA, tt.ctype, `{"email":`+strconvQuote(tt.email)+`}`)
			f := mustJSON[form](t, body)
			if resp.StatusCode != 200 || f.Result != tt.want || f.Verdict != tt.wantVerdict || f.Email == "" {
				t.Errorf("got %d %s, want result %v verdict %s", resp.StatusCode, body, tt.want, tt.wantVerdict)
			}
		})
	}
}

// TestSignUpDecisions: /validate answers a decision a form can follow
// without turning anyone away on our uncertainty (docs/signup.md).
func TestSignUpDecisions(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{worker: true, smtp: smtptest.Options{
		Rcpt: map[string]*smtp.SMTPError{"alice@example.test": nil}, RcptDefault: notFound,
	}, cfg: func(c *api.Config) { c.ValidateWait = 20 * time.Second; c.ValidateMaxWait = 30 * time.Second }})
	idle := setup(t, opts{}) // no worker: every check is still running when the budget ends
	type form struct {
		Result         bool   `json:"result"`
		Verdict        string `json:"verdict"`
		Final          bool   `json:"final"`
		StatusURL      string `json:"status_url"`
		Decision       string `json:"decision"`
		DecisionReason string `json:"decision_reason"`
		Message        string `json:"message"`
		DidYouMean     string `json:"did_you_mean"`
	}
	tests := []struct {
		name         string
		b            *bundle
		path, email  string
		want         string
		wantResult   bool
		wantFinal    bool
		wantReason   string
		wantSuggests string
	}{
		{"valid", b, "/validate", "alice@example.test", "accept", true, true, "mailbox_exists", ""},
		{"unknown mailbox", b, "/validate", "bob@example.test", "reject", false, true, "mailbox_not_found", ""},
		{"bad syntax", b, "/validate", "bob@@example.test", "reject", false, true, "bad_syntax", ""},
		{"typo without a dot", b, "/validate", "bob@gmailcom", "suggest", true, true, "domain_not_found", "bob@gmail.com"},
		{"typo, check still running", idle, "/validate?wait=0.2", "bob@gmial.com", "suggest", true, false, "typo", "bob@gmail.com"},
		{"budget ends first", idle, "/validate?wait=200ms", "carol@example.test", "accept", true, false, "pending", ""},
		{"no budget answers at once", idle, "/validate?wait=0", "dave@example.test", "accept", true, false, "pending", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body := tt.b.do(t, "POST", tt.path, keyA, "", `{"email":`+strconvQuote(tt.email)+`}`)
			f := mustJSON[form](t, body)
			if resp.StatusCode != 200 || f.Decision != tt.want || f.Result != tt.wantResult || f.Final != tt.wantFinal ||
				f.DecisionReason != tt.wantReason || f.DidYouMean != tt.wantSuggests {
				t.Errorf("got %d %s, want %s (%s) result %v final %v did_you_mean %q", resp.StatusCode, body, tt.want, tt.wantReason, tt.wantResult, tt.wantFinal, tt.wantSuggests)
			}
			if (f.Decision != "accept") != (f.Message != "") {
				t.Errorf("message %q with decision %s", f.Message, f.Decision)
			}
			if !f.Final && tt.wantReason != "bad_syntax" && f.StatusURL == "" {
				t.Errorf("no status_url for a check still running: %s", body)
			}
		})
	}
	t.Run("bad wait", func(t *testing.T) {
		t.Parallel()
		resp, body := idle.do(t, "POST", "/validate?wait=soon", keyA, "", `{"email":"a@example.test"}`)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "wait") {
			t.Errorf("wait=soon: %d %s, want 400 naming wait", resp.StatusCode, body)
		}
	})
	t.Run("the status URL carries the decision too", func(t *testing.T) {
		t.Parallel()
		_, body := b.do(t, "POST", "/validate", keyA, "", `{"email":"bob@example.test"}`)
		f := mustJSON[form](t, body)
		_, body = b.do(t, "GET", f.StatusURL, keyA, "", nil)
		type status struct {
			Decision       string `json:"decision"`
			DecisionReason string `json:"decision_reason"`
			Message        string `json:"message"`
		}
		if g := mustJSON[status](t, body); g.Decision != "reject" || g.DecisionReason != "mailbox_not_found" || g.Message == "" {
			t.Errorf("GET %s: %s, want the reject decision", f.StatusURL, body)
		}
	})
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

type batchAccepted struct {
	ID         string `json:"id"`
	StatusURL  string `json:"status_url"`
	ResultsURL string `json:"results_url"`
	Accepted   int    `json:"accepted"`
	Rejected   []struct {
		Line  int    `json:"line"`
		Input string `json:"input"`
		Error string `json:"error"`
	} `json:"rejected"`
}

type resultRow struct {
	Line    int    `json:"line"`
	Input   string `json:"input"`
	TaskID  string `json:"task_id"`
	State   string `json:"state"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	MXHost  string `json:"mx_host"`
	Code    int    `json:"smtp_code"`
}

func TestBatchFormatsAndBadRows(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	tests := []struct {
		name, ctype, body string
		wantAccepted      int
		wantRejectedLines []int
		wantInputs        []string
	}{
		{"JSON strings and objects", "application/json",
			`["a@example.com", {"address":"b@example.com","request_id":"x"}, "not-an-address", 7, {"address":"c@example.com","bogus":1}]`,
			2, []int{3, 4, 5}, []string{"a@example.com", "b@example.com", "not-an-address", "7", `{"address":"c@example.com","bogus":1}`}},
		{"NDJSON", "application/x-ndjson", "\"a@example.com\"\n\n{\"address\":\"b@@x\"}\n{\"address\":\"c@example.com\"}\nnot json\n",
			2, []int{3, 5}, []string{"a@example.com", "b@@x", "c@example.com", "not json"}},
		{"NDJSON with email for address", "application/x-ndjson",
			"{\"email\":\"a@example.com\"}\n{\"address\":\"b@example.com\",\"email\":\"b@example.com\"}\n{\"address\":\"c@example.com\",\"email\":\"d@example.com\"}\n{\"request_id\":\"x\"}\n",
			2, []int{3, 4}, []string{"a@example.com", "b@example.com", `{"address":"c@example.com","email":"d@example.com"}`, `{"request_id":"x"}`}},
		{"CSV with email header not first", "text/csv", "name,email\nAnn,a@example.com\nBob,bob@@example.com\nCy\n",
			1, []int{3, 4}, []string{"a@example.com", "bob@@example.com", "Cy"}},
		{"CSV without header", "text/csv; charset=utf-8", "a@example.com\nb@example.com,extra\n",
			2, nil, []string{"a@example.com", "b@example.com"}},
		{"CSV with other header", "text/csv", "contact\na@example.com\n",
			1, nil, []string{"a@example.com"}},
		// A first row that is a malformed address, not a column name, is
		// reported on line 1, not swallowed as a header.
		{"CSV starting with a malformed address", "text/csv", "alice.example.com\nb@example.com\n",
			1, []int{1}, []string{"alice.example.com", "b@example.com"}},
		// Excel's "CSV UTF-8" starts with a byte order mark.
		{"CSV with a BOM and no header", "text/csv", "\ufeffa@example.com\nb@example.com\n",
			2, nil, []string{"a@example.com", "b@example.com"}},
		{"JSON with a BOM", "application/json", "\ufeff[\"a@example.com\"]",
			1, nil, []string{"a@example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := b.do(t, "POST", "/v1/batches", keyA, tt.ctype, tt.body)
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			a := mustJSON[batchAccepted](t, body)
			var lines []int
			for _, r := range a.Rejected {
				lines = append(lines, r.Line)
				if r.Error == "" {
					t.Errorf("rejected row %d without a reason", r.Line)
				}
			}
			if a.Accepted != tt.wantAccepted || !slices.Equal(lines, tt.wantRejectedLines) {
				t.Errorf("accepted %d rejected lines %v, want %d %v: %s", a.Accepted, lines, tt.wantAccepted, tt.wantRejectedLines, body)
			}
			_, body = b.do(t, "GET", a.ResultsURL+"?format=ndjson", keyA, "", nil)
			var inputs []string
			for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
				inputs = append(inputs, mustJSON[resultRow](t, []byte(l)).Input)
			}
			if !slices.Equal(inputs, tt.wantInputs) {
				t.Errorf("results inputs %q, want %q", inputs, tt.wantInputs)
			}
		})
	}
}

func TestBatchProgressAndResults(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{worker: true, smtp: smtptest.Options{
		Rcpt: map[string]*smtp.SMTPError{"alice@example.test": nil, "carol@example.test": nil}, RcptDefault: notFound,
	}})
	csvBody := "email,name,State\nalice@example.test,Alice,CA\nbob@example.test,Bob,=1+1\n=cmd|' /C calc'!A0,Mallory,NY\ncarol@example.test,Carol\n"
	resp, body := b.do(t, "POST", "/v1/batches", keyA, "text/csv", csvBody)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	a := mustJSON[batchAccepted](t, body)
	if a.Accepted != 3 || len(a.Rejected) != 1 || a.Rejected[0].Line != 4 {
		t.Fatalf("accepted %s", body)
	}
	// Wait for every task through the producer API (signals, not sleeps).
	_, body = b.do(t, "GET", a.ResultsURL, keyA, "", nil)
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		r := mustJSON[resultRow](t, []byte(l))
		if r.TaskID == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if _, err := b.client.Wait(ctx, r.TaskID); err != nil {
			t.Fatalf("waiting for %s: %v", r.TaskID, err)
		}
		cancel()
	}
	type status struct {
		Total, Done, Rejected int
		State                 string
		Counts                map[string]int
	}
	_, body = b.do(t, "GET", a.StatusURL, keyA, "", nil)
	st := mustJSON[status](t, body)
	want := map[string]int{"valid": 2, "invalid": 1, "risky": 0, "unknown": 0, "pending": 0}
	if st.Total != 3 || st.Done != 3 || st.Rejected != 1 || st.State != "done" || fmt.Sprint(st.Counts) != fmt.Sprint(want) {
		t.Errorf("progress %s, want 3/3 done with counts %v", body, want)
	}
	// A second read comes from the batch's cache of final rows: same answer.
	if _, again := b.do(t, "GET", a.StatusURL, keyA, "", nil); string(again) != string(body) {
		t.Errorf("second read %s differs from %s", again, body)
	}

	req, _ := http.NewRequest("GET", b.srv.URL+a.ResultsURL, nil)
	req.Header.Set("Authorization", "Bearer "+keyA)
	req.Header.Set("Accept", "text/csv")
	r, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var sb strings.Builder
	if _, err := fmt.Fprint(&sb, mustRead(t, r)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(sb.String()), "\n")
	wantPrefixes := []string{
		"line,input,address,state,verdict,reason,mx_host,smtp_code,smtp_enhanced_code,smtp_text,task_id,error,decision,did_you_mean,disposable,role_account,free_provider,catch_all,name,input_State",
		"2,alice@example.test,alice@example.test,done,valid,mailbox_exists,mx.example.test,250,",
		"3,bob@example.test,bob@example.test,done,invalid,mailbox_not_found,mx.example.test,550,5.1.1,No such user here,",
		// Formula injection defused, row kept in place.
		`4,'=cmd|' /C calc'!A0,,rejected,invalid,bad_syntax,`,
		"5,carol@example.test,carol@example.test,done,valid,mailbox_exists,",
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "text/csv") || len(lines) != len(wantPrefixes) {
		t.Fatalf("CSV %q:\n%s", r.Header.Get("Content-Type"), sb.String())
	}
	for i, p := range wantPrefixes {
		if !strings.HasPrefix(lines[i], p) {
			t.Errorf("CSV line %d: %q, want prefix %q", i+1, lines[i], p)
		}
	}
	// The sign-up decision, the flags, then the input's other columns,
	// defused like every cell (docs/signup.md).
	recs, err := csv.NewReader(strings.NewReader(sb.String())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]string{
		{"accept", "", "false", "false", "false", "false", "Alice", "CA"},
		{"reject", "", "false", "false", "false", "false", "Bob", "'=1+1"},
		{"reject", "", "", "", "", "", "Mallory", "NY"},
		{"accept", "", "false", "false", "false", "false", "Carol", ""},
	} {
		if got := recs[i+1][12:]; !slices.Equal(got, want) {
			t.Errorf("CSV row %d from decision on: %q, want %q", i+2, got, want)
		}
	}
	_, body = b.do(t, "GET", a.ResultsURL+"?format=ndjson", keyA, "", nil)
	first := mustJSON[struct {
		Columns  map[string]string `json:"columns"`
		Decision string            `json:"decision"`
	}](t, []byte(strings.SplitN(string(body), "\n", 2)[0]))
	if first.Columns["name"] != "Alice" || first.Columns["input_State"] != "CA" || first.Decision != "accept" {
		t.Errorf("NDJSON row 1: %+v, want its columns and decision", first)
	}
}

func mustRead(t *testing.T, r *http.Response) string {
	t.Helper()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String()
}

func TestMetricsExposeQueueGauges(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	for range 2 {
		if resp, body := b.do(t, "POST", "/v1/validations", keyA, "application/json", map[string]string{"address": "a@example.com", "queue": "critical"}); resp.StatusCode != 202 {
			t.Fatalf("enqueue: %d %s", resp.StatusCode, body)
		}
	}
	resp, body := b.do(t, "GET", "/metrics", keyA, "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
	for _, want := range []string{
		`mxprobe_queue_tasks{queue="critical",state="pending"} 2`,
		`mxprobe_queue_tasks{queue="bulk",state="pending"} 0`,
		`mxprobe_queue_latency_seconds{queue="critical"}`,
		`mxprobe_workers 0`,
		`mxprobe_queue_scrape_ok 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestQuotaPerKey(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{cfg: func(c *api.Config) { c.Quota = 2 }})
	for i := range 2 {
		if resp, _ := b.do(t, "GET", "/v1/providers", keyA, "", nil); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i+1, resp.StatusCode)
		}
	}
	resp, body := b.do(t, "GET", "/v1/providers", keyA, "", nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || decodeError(t, body).Error.Code != "quota_exceeded" {
		t.Errorf("third request: %d %s, want 429 quota_exceeded with Retry-After", resp.StatusCode, body)
	}
	if resp.Header.Get("X-RateLimit-Limit") != "2" || resp.Header.Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("429 headers %v, want X-RateLimit-Limit 2 and Remaining 0", resp.Header)
	}
	// The quota is per key: bob is unaffected.
	if resp, _ := b.do(t, "GET", "/v1/providers", keyB, "", nil); resp.StatusCode != 200 {
		t.Errorf("other key: %d", resp.StatusCode)
	}
}

func TestBrowserLoginCookie(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	noRedirect := *b.srv.Client()
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	// A browser without a session is sent to the login form.
	req, _ := http.NewRequest("GET", b.srv.URL+"/", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("GET / without session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}

	login := func(key, origin, next string) *http.Response {
		form := url.Values{"key": {key}, "next": {next}}
		req, _ := http.NewRequest("POST", b.srv.URL+"/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := login("alice:wrong-secret-xxxxxxxx", "", "/"); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Errorf("wrong key: %d cookies %v", resp.StatusCode, resp.Cookies())
	}
	if resp := login(keyA, "https://evil.example", "/"); resp.StatusCode != 403 {
		t.Errorf("cross-origin login: %d, want 403", resp.StatusCode)
	}
	resp = login(keyA, b.srv.URL, "//evil.example/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Errorf("login: %d to %q (an open redirect must fall back to /)", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "mxprobe_key" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie %+v, want HttpOnly SameSite=Strict", cookie)
	}
	get := func(path, origin string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", b.srv.URL+path, nil)
		req.AddCookie(cookie)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp, mustRead(t, resp)
	}
	resp, body := get("/", "")
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !strings.Contains(body, "<title>t</title>") || !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Errorf("GET / with cookie: %d CSP %q", resp.StatusCode, csp)
	}
	// Under no-referrer, browsers send "Origin: null" on the page's own
	// POSTs, which sameOrigin must refuse: the page would lock itself out.
	if rp := resp.Header.Get("Referrer-Policy"); rp != "same-origin" {
		t.Errorf("GET / Referrer-Policy = %q, want same-origin", rp)
	}
	if resp, _ := get("/app.js", ""); !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Errorf("app.js content type %q", resp.Header.Get("Content-Type"))
	}
	// asynqmon is for admin keys (TestTenancy); this session is a plain key's.
	if resp, _ := get("/monitoring/", ""); resp.StatusCode != 403 {
		t.Errorf("asynqmon with a plain key's cookie: %d, want 403", resp.StatusCode)
	}
	if resp, _ := get("/v1/providers", "https://evil.example"); resp.StatusCode != 403 {
		t.Errorf("cookie on a cross-origin request: %d, want 403", resp.StatusCode)
	}
	if resp, _ := get("/nope.html", ""); resp.StatusCode != 404 {
		t.Errorf("missing file: %d", resp.StatusCode)
	}
}

func TestMonitoringReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	if resp, body := b.do(t, "POST", "/v1/validations", keyA, "application/json", map[string]string{"address": "a@example.com"}); resp.StatusCode != 202 {
		t.Fatalf("enqueue: %d %s", resp.StatusCode, body)
	}
	resp, body := b.do(t, "GET", "/monitoring/api/queues/default/pending_tasks", keyOps, "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `\"address\": \"a@example.com\"`) {
		t.Errorf("asynqmon pending tasks: %d %s (want a pretty-printed payload)", resp.StatusCode, body)
	}
	if resp, _ := b.do(t, "POST", "/monitoring/api/queues/default:pause", keyOps, "", nil); resp.StatusCode < 400 {
		t.Errorf("asynqmon write while read-only: %d", resp.StatusCode)
	}
	if resp, _ := b.do(t, "GET", "/monitoring/api/queues/default", "", "", nil); resp.StatusCode != 401 {
		t.Errorf("asynqmon without key: %d", resp.StatusCode)
	}
}

func TestRequestIDEchoed(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	tests := []struct{ name, sent, want string }{
		{"honoured", "abc-123", "abc-123"},
		{"forged log line refused", "x\ty", ""},
		{"absent", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", b.srv.URL+"/healthz", nil)
			if tt.sent != "" {
				req.Header.Set("X-Request-Id", tt.sent)
			}
			resp, err := b.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := resp.Header.Get("X-Request-Id")
			if (tt.want != "" && got != tt.want) || (tt.want == "" && (got == "" || got == tt.sent)) {
				t.Errorf("X-Request-Id %q, want %q (or a fresh one)", got, tt.want)
			}
		})
	}
}

func TestProvidersShowCoolDowns(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	lim, err := newLimiter(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lim.CoolDown(context.Background(), "egress1", "google.com", "blocked"); err != nil {
		t.Fatal(err)
	}
	p := setup(t, opts{cfg: func(c *api.Config) { c.Redis, c.Limiter = b.rdb, lim }})
	resp, body := p.do(t, "GET", "/v1/providers", keyA, "", nil)
	var got struct {
		CoolDowns []struct{ Group, Reason, Egress string } `json:"cool_downs"`
		Providers []struct {
			Group  string
			Paused []any
		}
	}
	got = mustJSON[struct {
		CoolDowns []struct{ Group, Reason, Egress string } `json:"cool_downs"`
		Providers []struct {
			Group  string
			Paused []any
		}
	}](t, body)
	if resp.StatusCode != 200 || len(got.CoolDowns) != 1 || got.CoolDowns[0].Group != "google.com" || got.CoolDowns[0].Reason != "blocked" {
		t.Fatalf("providers: %d %s", resp.StatusCode, body)
	}
	for _, pr := range got.Providers {
		if pr.Group == "google.com" && len(pr.Paused) != 1 {
			t.Errorf("google.com not shown paused: %s", body)
		}
	}
}

// TestBatchFinishesWithin: a batch whose rows are greylisted (first retry
// an hour away here) is done once its finish_within has passed: those rows
// end as final unknown/greylisted, the accepted one stays valid.
func TestBatchFinishesWithin(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{worker: true, smtp: smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
		if strings.HasPrefix(to, "grey") {
			return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try again later"}
		}
		return nil
	}}, workerCfg: func(w *worker.Config, _ *validator.Config) {
		w.Retry = worker.RetryPolicy{FirstDelay: time.Hour, MaxDelay: time.Hour, GiveUpAfter: 24 * time.Hour}
	}})
	both := "1h&deadline=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for _, bad := range []string{"soon", "0", "-1s", "200h", both} {
		resp, body := b.do(t, "POST", "/v1/batches?finish_within="+bad, keyA, "text/csv", "a@example.test\n")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "finish_within") {
			t.Errorf("finish_within=%s: %d %s, want 400 naming finish_within", bad, resp.StatusCode, body)
		}
	}
	resp, body := b.do(t, "POST", "/v1/batches?finish_within=2s", keyA, "text/csv", "email\ngrey1@example.test\nok@example.test\ngrey2@example.test\n")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	a := mustJSON[batchAccepted](t, body)
	_, body = b.do(t, "GET", a.ResultsURL+"?format=ndjson", keyA, "", nil)
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		r := mustJSON[resultRow](t, []byte(l))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := b.client.Wait(ctx, r.TaskID)
		cancel()
		if err != nil || st.Result == nil {
			t.Fatalf("%s (%s) not final: %v %+v", r.TaskID, r.Input, err, st)
		}
		want := "unknown/greylisted"
		if r.Input == "ok@example.test" {
			want = "valid/mailbox_exists"
		}
		if got := st.Result.Verdict + "/" + st.Result.Reason; got != want {
			t.Errorf("%s: %s, want %s", r.Input, got, want)
		}
	}
	_, body = b.do(t, "GET", a.StatusURL, keyA, "", nil)
	if st := mustJSON[struct {
		Total, Done int
		State       string
	}](t, body); st.Total != 3 || st.Done != 3 {
		t.Errorf("batch after finish_within: %s, want 3 of 3 done", body)
	}
}

// TestBatchWebhook: a batch with ?webhook= gets one signed POST when its
// last row has ended, naming the batch; a webhook the callback rules refuse
// is refused at upload, before any row is queued.
func TestBatchWebhook(t *testing.T) {
	t.Parallel()
	secret := []byte("s") // the test worker's callback secret (helpers_test.go)
	got := make(chan tasks.BatchDone, 4)
	bad := make(chan error, 4)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := tasks.VerifyRequest(r, [][]byte{secret}, 1<<20)
		if err != nil {
			bad <- err
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var d tasks.BatchDone
		if err := json.Unmarshal(body, &d); err != nil {
			bad <- err
		}
		got <- d
	}))
	t.Cleanup(rcv.Close)
	// The rows end after the upload has been answered, so the worker, not
	// the upload, sees the last one end.
	uploaded := make(chan struct{})
	b := setup(t, opts{worker: true, smtp: smtptest.Options{RcptFunc: func(string) *smtp.SMTPError {
		<-uploaded
		return nil
	}}})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(uploaded) }) })
	if resp, body := b.do(t, "POST", "/v1/batches?webhook=ftp://x", keyA, "text/csv", "a@example.test\n"); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), "webhook") {
		t.Errorf("ftp webhook: %d %s, want 422 naming webhook", resp.StatusCode, body)
	}
	resp, body := b.do(t, "POST", "/v1/batches?webhook="+url.QueryEscape(rcv.URL+"/hook"), keyA, "text/csv", "email\na@example.test\nb@example.test\nnot an address\n")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	a := mustJSON[batchAccepted](t, body)
	select {
	case d := <-got:
		t.Fatalf("webhook before any row ended: %+v", d)
	default:
	}
	once.Do(func() { close(uploaded) })
	select {
	case d := <-got:
		if d.Event != "batch.done" || d.BatchID != a.ID || d.Total != 2 || d.ResultsURL != a.ResultsURL {
			t.Errorf("webhook body %+v, want batch.done for %s with 2 rows", d, a.ID)
		}
	case err := <-bad:
		t.Fatalf("webhook failed verification: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook")
	}
	_, body = b.do(t, "GET", a.StatusURL, keyA, "", nil)
	if st := mustJSON[struct{ Total, Done int }](t, body); st.Done != st.Total {
		t.Errorf("webhook before the batch was done: %s", body)
	}
	// One webhook only: tasks TestBatchWebhookQueuedOnceAndRepaired.
}

// TestBatchExtraColumns: repeated and clashing column names all come back,
// under distinct names, and so do fields past the header; a formula behind
// a space is defused too (the CSV reader trims it; a spreadsheet would).
func TestBatchExtraColumns(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	resp, body := b.do(t, "POST", "/v1/batches", keyA, "text/csv", "email,name,name,line\na@example.test,A1,A2,L,EXTRA, =HYPERLINK(1)\n")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	a := mustJSON[batchAccepted](t, body)
	_, body = b.do(t, "GET", a.ResultsURL+"?format=csv", keyA, "", nil)
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil || len(recs) != 2 {
		t.Fatalf("%v %q", err, body)
	}
	n := len(recs[0])
	if got := recs[0][n-5:]; !slices.Equal(got, []string{"name", "input_name", "input_line", "column_5", "column_6"}) {
		t.Errorf("extra column names %q", got)
	}
	if got := recs[1][n-5:]; !slices.Equal(got, []string{"A1", "A2", "L", "EXTRA", "'=HYPERLINK(1)"}) {
		t.Errorf("extra values %q", got)
	}
	_, body = b.do(t, "GET", a.ResultsURL+"?format=ndjson", keyA, "", nil)
	row := mustJSON[struct {
		Columns map[string]string `json:"columns"`
	}](t, body)
	if row.Columns["name"] != "A1" || row.Columns["input_name"] != "A2" || row.Columns["column_5"] != "EXTRA" || len(row.Columns) != 5 {
		t.Errorf("NDJSON columns %v", row.Columns)
	}
}
