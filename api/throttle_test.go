package api_test

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/api"
)

// pinned is 20 s into a minute: Retry-After must then say 40.
func pinned() time.Time { return time.Date(2026, 12, 2, 11, 0, 20, 0, time.UTC) }

func noAuthThrottle(c *api.Config) { c.AuthFailuresPerIP, c.AuthFailuresPerKey = -1, -1 }

// TestFailedAuthThrottled: failed authentications (Bearer or /login) are
// counted per client IP and per key id in Redis; over the budget both
// answer 429 with Retry-After, for a correct key too, so that a guesser
// cannot learn when it hit.
func TestFailedAuthThrottled(t *testing.T) {
	t.Parallel()
	t.Run("per IP", func(t *testing.T) {
		t.Parallel()
		b := setup(t, opts{cfg: func(c *api.Config) { c.AuthFailuresPerIP, c.AuthFailuresPerKey = 5, -1 }})
		b.api.SetClock(pinned) // one window throughout
		for i := range 5 {
			if resp, body := b.do(t, "GET", "/v1/providers", "mallory"+strconv.Itoa(i)+":guess-guess-guess-guess", "", nil); resp.StatusCode != 401 {
				t.Fatalf("guess %d: %d %s", i, resp.StatusCode, body)
			}
		}
		for _, key := range []string{"mallory:another-guess-guess", keyB} {
			resp, body := b.do(t, "GET", "/v1/providers", key, "", nil)
			ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			if resp.StatusCode != 429 || ra != 40 || !strings.Contains(string(body), "auth_throttled") {
				t.Errorf("after 5 failures, %s: %d Retry-After %q %s", strings.SplitN(key, ":", 2)[0], resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
		}
		// The login form is throttled by the same counter.
		form := url.Values{"key": {keyA}}
		req, _ := http.NewRequest("POST", b.srv.URL+"/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := b.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
			t.Errorf("login after 5 failures: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		// Routes without auth still answer.
		if resp, _ := b.do(t, "GET", "/healthz", "", "", nil); resp.StatusCode != 200 {
			t.Errorf("/healthz: %d", resp.StatusCode)
		}
	})
	t.Run("per key id, through the login form", func(t *testing.T) {
		t.Parallel()
		b := setup(t, opts{cfg: func(c *api.Config) { c.AuthFailuresPerIP, c.AuthFailuresPerKey = -1, 3 }})
		b.api.SetClock(pinned)
		login := func(key string) *http.Response {
			req, _ := http.NewRequest("POST", b.srv.URL+"/login", strings.NewReader(`{"key":"`+key+`"}`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := b.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		for i := range 3 {
			if resp := login("alice:wrong-secret-" + strconv.Itoa(i) + "-xxxxxxxx"); resp.StatusCode != 401 {
				t.Fatalf("guess %d: %d", i, resp.StatusCode)
			}
		}
		if resp := login(keyA); resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
			t.Errorf("alice's right key after 3 failures for alice: %d, want 429 with Retry-After", resp.StatusCode)
		}
		if resp, _ := b.do(t, "GET", "/v1/providers", keyA, "", nil); resp.StatusCode != 429 {
			t.Errorf("alice's Bearer key after 3 failures for alice: %d, want 429", resp.StatusCode)
		}
		if resp := login(keyB); resp.StatusCode != 204 {
			t.Errorf("bob's key: %d, want 204 (only alice's id is throttled)", resp.StatusCode)
		}
	})
}
