package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/worker"
)

// TestCallbackURLRefusedAtEnqueue: a callback URL the workers' address
// policy refuses gets 422 at enqueue (single and batch rows), under the same
// policy function the worker delivers with; an allowlisted prefix passes.
func TestCallbackURLRefusedAtEnqueue(t *testing.T) {
	t.Parallel()
	policy := worker.CallbackConfig{Allowlist: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
	b := setup(t, opts{cfg: func(c *api.Config) {
		c.CheckCallbackURL = func(u string) error { return worker.CheckURL(u, policy) }
	}})
	for _, u := range []string{
		"http://127.0.0.1:9/hook", "http://[::1]/hook", "http://localhost/hook", "http://a.localhost./hook",
		"http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/hook", "http://10.0.0.1/hook",
		"http://192.168.1.1/hook", "http://100.64.0.1/hook", "http://0.0.0.0/hook", "http://[::ffff:127.0.0.1]/hook",
	} {
		resp, body := b.do(t, "POST", "/v1/validations", keyA, "application/json", map[string]string{"address": "a@example.com", "callback_url": u})
		if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), `"field":"callback_url"`) {
			t.Errorf("callback %s: %d %s; want 422 on callback_url", u, resp.StatusCode, body)
		}
	}
	for _, u := range []string{"https://hooks.example.com/mx", "http://127.0.0.2:8080/hook"} {
		if resp, body := b.do(t, "POST", "/v1/validations", keyA, "application/json", map[string]string{"address": "a@example.com", "callback_url": u}); resp.StatusCode != http.StatusAccepted {
			t.Errorf("callback %s: %d %s; want 202", u, resp.StatusCode, body)
		}
	}
	resp, body := b.do(t, "POST", "/v1/batches", keyA, "application/x-ndjson",
		`{"address":"a@example.com","callback_url":"http://169.254.169.254/"}`+"\n"+`{"address":"b@example.com","callback_url":"https://hooks.example.com/"}`+"\n")
	a := mustJSON[batchAccepted](t, body)
	if resp.StatusCode != http.StatusAccepted || a.Accepted != 1 || len(a.Rejected) != 1 || a.Rejected[0].Line != 1 {
		t.Errorf("batch: %d %s; want row 1 rejected, row 2 accepted", resp.StatusCode, body)
	}
}

// TestCallbackGivenUpShowsInStatus: when the worker gives up a delivery
// (here the receiver answers 404, which no retry changes), GET
// /v1/validations/{id} says so in callback.state.
func TestCallbackGivenUpShowsInStatus(t *testing.T) {
	t.Parallel()
	hit := make(chan struct{}, 1)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hit <- struct{}{}:
		default:
		}
		http.Error(w, "no such hook", http.StatusNotFound)
	}))
	t.Cleanup(recv.Close)
	b := setup(t, opts{worker: true, smtp: smtptest.Options{Rcpt: map[string]*smtp.SMTPError{"alice@example.test": nil}}})
	resp, body := b.do(t, "POST", "/v1/validations?wait=20s", keyA, "application/json",
		map[string]string{"address": "alice@example.test", "callback_url": recv.URL + "/hook"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("enqueue: %d %s", resp.StatusCode, body)
	}
	id := mustJSON[struct {
		ID string `json:"id"`
	}](t, body).ID
	select {
	case <-hit:
	case <-time.After(20 * time.Second):
		t.Fatal("the callback never reached the receiver")
	}
	type status struct {
		Callback *struct {
			State     string `json:"state"`
			Attempts  int    `json:"attempts"`
			LastError string `json:"last_error"`
		} `json:"callback"`
	}
	// The worker archives the task right after the attempt; read until it
	// has (bounded).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var st status
	for {
		_, body = b.do(t, "GET", "/v1/validations/"+id, keyA, "", nil)
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatal(err)
		}
		if st.Callback != nil && st.Callback.State == "failed" || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	if st.Callback == nil || st.Callback.State != "failed" || st.Callback.Attempts != 1 || !strings.Contains(st.Callback.LastError, "404") {
		t.Errorf("status after a refused delivery: %s", body)
	}
	// Without a callback URL there is no callback field.
	_, body = b.do(t, "POST", "/v1/validations?wait=20s", keyA, "application/json", map[string]string{"address": "alice@example.test"})
	if strings.Contains(string(body), `"callback"`) {
		t.Errorf("no callback URL, yet: %s", body)
	}
}
