package api_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/api"
)

// TestBodyDeadlineDoesNotCutWaits: the body read deadline bounds reading
// the body only. A request that has sent its body (or has none) and then
// waits longer than the deadline (?wait, a slow download) keeps its
// context: net/http's background read on the connection must not time out
// and cancel it.
func TestBodyDeadlineDoesNotCutWaits(t *testing.T) {
	t.Parallel()
	const bodyTimeout = 300 * time.Millisecond
	b := setup(t, opts{cfg: func(c *api.Config) { c.BodyTimeout = bodyTimeout }}) // no worker: nothing finishes
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: b.api.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	const wait = 2 * time.Second
	req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/v1/validations?wait=2s", strings.NewReader(`{"address":"a@example.com"}`))
	req.Header.Set("Authorization", "Bearer "+keyA)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The wait ends at its own end, never earlier (a cancelled context
	// would end it at the body deadline).
	if took := time.Since(start); resp.StatusCode != http.StatusAccepted || took < wait {
		t.Errorf("wait=2s with a %v body deadline: %d after %v; want 202 after at least %v", bodyTimeout, resp.StatusCode, took, wait)
	}
}
