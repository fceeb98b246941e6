package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// TestTenancy: a validation and a batch belong to the key that created
// them; another key gets 404 as for an id that does not exist; an admin key
// reads all, and only it reaches /monitoring.
func TestTenancy(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	resp, body := b.do(t, "POST", "/v1/validations", keyA, "application/json", map[string]string{"address": "tenant@example.com"})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("enqueue: %d %s", resp.StatusCode, body)
	}
	v := mustJSON[struct {
		StatusURL string `json:"status_url"`
	}](t, body)
	resp, body = b.do(t, "POST", "/v1/batches", keyA, "text/csv", "email\nrow@example.com\n")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("batch: %d %s", resp.StatusCode, body)
	}
	bt := mustJSON[batchAccepted](t, body)
	paths := []string{v.StatusURL, bt.StatusURL, bt.ResultsURL}
	for _, p := range paths {
		for _, c := range []struct {
			name, key string
			want      int
		}{{"owner", keyA, 200}, {"other key", keyB, 404}, {"admin", keyOps, 200}} {
			resp, body := b.do(t, "GET", p, c.key, "", nil)
			if resp.StatusCode != c.want {
				t.Errorf("GET %s as %s: %d %s; want %d", p, c.name, resp.StatusCode, body, c.want)
			}
			if c.want == 404 && strings.Contains(string(body), "tenant@example.com") {
				t.Errorf("GET %s as %s leaks the address: %s", p, c.name, body)
			}
		}
	}
	// The other key's 404 is the one an unknown id gets.
	_, other := b.do(t, "GET", v.StatusURL, keyB, "", nil)
	_, unknown := b.do(t, "GET", "/v1/validations/default_00000000-0000-0000-0000-000000000000", keyB, "", nil)
	if string(other) != string(unknown) {
		t.Errorf("another key's validation answers %s, an unknown id %s", other, unknown)
	}
	for key, want := range map[string]int{keyA: 403, keyB: 403, keyOps: 200} {
		resp, body := b.do(t, "GET", "/monitoring/api/queues/default/pending_tasks", key, "", nil)
		if resp.StatusCode != want {
			t.Errorf("asynqmon as %s: %d; want %d", strings.SplitN(key, ":", 2)[0], resp.StatusCode, want)
		}
		if want == 403 && strings.Contains(string(body), "tenant@example.com") {
			t.Errorf("asynqmon as a plain key leaks payloads: %s", body)
		}
	}
}

func TestAdminKeySyntax(t *testing.T) {
	t.Parallel()
	k, err := api.ParseKeys("alice:alice-secret-0123456789, ops:ops-secret-0123456789abcd;admin")
	if err != nil {
		t.Fatal(err)
	}
	if k.Admin("alice") || !k.Admin("ops") || k.Len() != 2 {
		t.Errorf("admin alice %v, ops %v, %d keys", k.Admin("alice"), k.Admin("ops"), k.Len())
	}
	for _, bad := range []string{"ops:ops-secret-0123456789abcd;admin;admin", "ops:ops-secret-0123456789abcd;root", ";admin", "ops;admin"} {
		if _, err := api.ParseKeys(bad); err == nil {
			t.Errorf("ParseKeys(%q) accepted", bad)
		}
	}
	f, err := api.ReadKeys(strings.NewReader("# ops\nops:ops-secret-0123456789abcd;admin\n"))
	if err != nil || !f.Admin("ops") {
		t.Errorf("key file admin entry: %v, admin %v", err, f.Admin("ops"))
	}
}

// TestTenantsShareProbesNotMetadata: two keys asking about one address
// share the probe (in flight or cached) but each result carries only its
// own key's metadata and request id.
func TestTenantsShareProbesNotMetadata(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{worker: true, smtp: smtptest.Options{Rcpt: map[string]*smtp.SMTPError{"shared@example.test": nil}}})
	type res struct {
		Final  bool `json:"final"`
		Result struct {
			RequestID string          `json:"request_id"`
			Metadata  json.RawMessage `json:"metadata"`
			Verdict   string          `json:"verdict"`
		} `json:"result"`
	}
	for _, k := range []struct{ key, tag string }{{keyA, "alice"}, {keyB, "bob"}} {
		resp, body := b.do(t, "POST", "/v1/validations?wait=20s", k.key, "application/json",
			map[string]any{"address": "shared@example.test", "request_id": k.tag, "metadata": map[string]string{"who": k.tag}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", k.tag, resp.StatusCode, body)
		}
		r := mustJSON[res](t, body)
		if r.Result.RequestID != k.tag || string(r.Result.Metadata) != `{"who":"`+k.tag+`"}` {
			t.Errorf("%s's result carries request_id %q, metadata %s", k.tag, r.Result.RequestID, r.Result.Metadata)
		}
	}
}
