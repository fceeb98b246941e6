package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// respondBy reads back the deadline a queued task carries.
func respondBy(t *testing.T, insp *asynq.Inspector, queue, id string) time.Time {
	t.Helper()
	info, err := insp.GetTaskInfo(queue, id)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tasks.DecodeValidatePayload(info.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return p.RespondBy
}

// A deadline is an RFC 3339 time in the future, at most
// tasks.MaxDeadlineAhead ahead, in the body of POST /v1/validations and the
// query of POST /v1/batches; anything else is a 400 naming the field, and
// queues nothing. A good one reaches the task.
func TestDeadlineAcceptedAndBadOnesRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	now := time.Now()
	bad := []struct{ name, value string }{
		{"empty", `""`},
		{"words", `"tomorrow"`},
		{"date only", `"2026-12-02"`},
		{"no time zone", `"` + now.Add(time.Hour).Format("2006-01-02T15:04:05") + `"`},
		{"a duration", `"10m"`},
		{"a number", `1767225600`},
		{"an object", `{"at":"2026-12-02T10:15:00Z"}`},
		{"a boolean", `true`},
		{"hour 25", `"2026-12-02T25:00:00Z"`},
		{"in the past", `"` + now.Add(-time.Minute).UTC().Format(time.RFC3339) + `"`},
		{"long ago", `"1970-01-01T00:00:00Z"`},
		{"too far", `"` + now.Add(tasks.MaxDeadlineAhead+time.Hour).UTC().Format(time.RFC3339) + `"`},
		{"year 9999", `"9999-12-31T23:59:59Z"`},
		{"NUL inside", `"2026-12-02T10:15:00Z\u0000"`},
	}
	for _, tt := range bad {
		t.Run("validation/"+tt.name, func(t *testing.T) {
			resp, body := b.do(t, "POST", "/v1/validations", keyA, "application/json",
				`{"address":"a@example.com","deadline":`+tt.value+`}`)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			if e := decodeError(t, body); e.Error.Code != "invalid_field" || e.Error.Field != "deadline" {
				t.Errorf("error %+v, want invalid_field on deadline", e.Error)
			}
		})
		var s string
		if json.Unmarshal([]byte(tt.value), &s) != nil {
			continue // not a string: a query parameter is always one
		}
		t.Run("batch/"+tt.name, func(t *testing.T) {
			resp, body := b.do(t, "POST", "/v1/batches?deadline="+url.QueryEscape(s), keyA, "application/json", `["a@example.com"]`)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			if e := decodeError(t, body); e.Error.Code != "invalid_field" || e.Error.Field != "deadline" {
				t.Errorf("error %+v, want invalid_field on deadline", e.Error)
			}
		})
	}
	for _, q := range tasks.Queues {
		if n := b.rdb.Exists(t.Context(), "asynq:{"+q+"}:pending").Val(); n != 0 {
			t.Fatalf("queue %s has tasks after refused deadlines", q)
		}
	}

	insp := asynq.NewInspectorFromRedisClient(b.rdb)
	want := time.Now().Add(90 * time.Second).Truncate(time.Millisecond)
	for _, tt := range []struct{ name, value string }{
		{"UTC", want.UTC().Format(time.RFC3339Nano)},
		{"offset", want.In(time.FixedZone("", 2*3600)).Format(time.RFC3339Nano)},
	} {
		resp, body := b.do(t, "POST", "/v1/validations", keyA, "application/json",
			`{"address":"a@example.com","deadline":"`+tt.value+`"}`)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%s: status %d: %s", tt.name, resp.StatusCode, body)
		}
		v := mustJSON[struct{ ID string }](t, body)
		if got := respondBy(t, insp, tasks.QueueDefault, v.ID); !got.Equal(want) {
			t.Errorf("%s: task deadline %s, want %s", tt.name, got, want)
		}
	}
	resp, body := b.do(t, "POST", "/v1/validations", keyA, "application/json", `{"address":"a@example.com","deadline":null}`)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("null deadline: status %d: %s", resp.StatusCode, body)
	}
	if got := respondBy(t, insp, tasks.QueueDefault, mustJSON[struct{ ID string }](t, body).ID); !got.IsZero() {
		t.Errorf("null deadline: task deadline %s, want none", got)
	}
	resp, body = b.do(t, "POST", "/v1/batches?deadline="+url.QueryEscape(want.Format(time.RFC3339Nano)), keyA, "application/json", `["b@example.com","c@example.com"]`)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("batch: status %d: %s", resp.StatusCode, body)
	}
	pending, err := insp.ListPendingTasks(tasks.QueueBulk)
	if err != nil || len(pending) != 2 {
		t.Fatalf("bulk queue: %d tasks (%v), want the batch's 2", len(pending), err)
	}
	for _, ti := range pending {
		if got := respondBy(t, insp, tasks.QueueBulk, ti.ID); !got.Equal(want) {
			t.Errorf("batch row %s: task deadline %s, want %s", ti.ID, got, want)
		}
	}
}

// The OpenAPI document describes the deadline where the handlers read it.
func TestOpenAPIDocumentsDeadline(t *testing.T) {
	t.Parallel()
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct{ Name, In string } `json:"parameters"`
		} `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct{ Type, Format string } `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(api.OpenAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	if p := doc.Components.Schemas["ValidationRequest"].Properties["deadline"]; p.Type != "string" || p.Format != "date-time" {
		t.Errorf("ValidationRequest.deadline documented as %+v", p)
	}
	found := false
	for _, p := range doc.Paths["/v1/batches"]["post"].Parameters {
		found = found || (p.Name == "deadline" && p.In == "query")
	}
	if !found {
		t.Error("POST /v1/batches does not document its deadline query parameter")
	}
}

// hookReceiver is a real HTTP callback receiver that checks signatures and
// records each delivery by task id.
type hookReceiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  map[string]int
	bad  int
	seen chan tasks.Result
}

func newHookReceiver(t *testing.T, secret []byte) *hookReceiver {
	h := &hookReceiver{got: map[string]int{}, seen: make(chan tasks.Result, 16)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := tasks.VerifyRequest(r, [][]byte{secret}, 1<<20)
		var res tasks.Result
		if err == nil {
			err = json.Unmarshal(body, &res)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if err != nil {
			h.bad++
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		h.got[res.TaskID]++
		h.seen <- res
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) next(t *testing.T) tasks.Result {
	t.Helper()
	select {
	case r := <-h.seen:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no callback within 30 s")
	}
	return tasks.Result{}
}

// A provider paused for an hour and requests whose deadline (a minute
// away) comes first: the synchronous answer is the final unknown/blocked,
// each callback arrives once and signed, and the batch's rows are final —
// all long before the deadline.
func TestDeadlineEndsCoolDownHeldRequestsAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{worker: true, workerCfg: func(wc *worker.Config, _ *validator.Config) {
		wc.Retry = worker.RetryPolicy{FirstDelay: time.Second, Multiplier: 2, MaxDelay: time.Hour, GiveUpAfter: 24 * time.Hour}
	}})
	lcfg := ratelimit.DefaultConfig() // the worker's limiter keys
	lcfg.CoolDown = ratelimit.CoolDownConfig{Initial: time.Hour, Multiplier: 1, Max: time.Hour, ResetAfter: time.Hour}
	lim, err := ratelimit.New(b.rdb, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lim.CoolDown(t.Context(), "test", lim.Group("mx.example.test"), "blocked"); err != nil {
		t.Fatal(err)
	}
	hooks := newHookReceiver(t, []byte("s"))
	deadline := time.Now().Add(time.Minute).UTC()
	dl := deadline.Format(time.RFC3339Nano)

	resp, body := b.do(t, "POST", "/v1/validations?wait=30s", keyA, "application/json",
		fmt.Sprintf(`{"address":"ann@example.test","callback_url":%q,"deadline":%q}`, hooks.srv.URL+"/hook", dl))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 with the final result: %s", resp.StatusCode, body)
	}
	v := mustJSON[struct {
		ID     string
		Final  bool
		Result tasks.Result
	}](t, body)
	if !v.Final || v.Result.Verdict != tasks.VerdictUnknown || v.Result.Reason != "blocked" || !v.Result.CheckedAt.Before(deadline) {
		t.Fatalf("answer %s, want a final unknown/blocked before the deadline", body)
	}
	if cb := hooks.next(t); cb.TaskID != v.ID || cb.Reason != "blocked" || !cb.Final {
		t.Errorf("callback %+v", cb)
	}

	resp, body = b.do(t, "POST", "/v1/batches?deadline="+url.QueryEscape(dl), keyA, "application/x-ndjson",
		fmt.Sprintf("{\"address\":\"ben@example.test\",\"callback_url\":%q}\n{\"address\":\"cat@example.test\",\"callback_url\":%q}\n", hooks.srv.URL+"/hook", hooks.srv.URL+"/hook"))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("batch: status %d: %s", resp.StatusCode, body)
	}
	a := mustJSON[batchAccepted](t, body)
	_, body = b.do(t, "GET", a.ResultsURL, keyA, "", nil)
	ids := []string{v.ID}
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		r := mustJSON[resultRow](t, []byte(l))
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		st, err := b.client.Wait(ctx, r.TaskID)
		cancel()
		if err != nil || st.Result.Reason != "blocked" || !st.Result.CheckedAt.Before(deadline) {
			t.Fatalf("row %d: %+v (%v), want a final unknown/blocked before the deadline", r.Line, st.Result, err)
		}
		ids = append(ids, r.TaskID)
	}
	hooks.next(t)
	hooks.next(t)
	_, body = b.do(t, "GET", a.StatusURL, keyA, "", nil)
	st := mustJSON[struct {
		Total, Done int
		State       string
		Counts      map[string]int
	}](t, body)
	if st.Total != 2 || st.Done != 2 || st.State != "done" || st.Counts["unknown"] != 2 || st.Counts["pending"] != 0 {
		t.Errorf("batch status %s, want 2 of 2 done, both unknown", body)
	}
	_, body = b.do(t, "GET", a.ResultsURL, keyA, "", nil)
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		if r := mustJSON[resultRow](t, []byte(l)); r.State != "done" || r.Verdict != tasks.VerdictUnknown || r.Reason != "blocked" {
			t.Errorf("batch row %s, want done unknown/blocked", l)
		}
	}

	// Every callback task is completed, and each was delivered exactly once.
	insp := asynq.NewInspectorFromRedisClient(b.rdb)
	for _, id := range ids {
		queue, _, _ := strings.Cut(id, "_")
		for limit := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			info, err := insp.GetTaskInfo(queue, "cb_"+id)
			if err == nil && info.State == asynq.TaskStateCompleted {
				break
			}
			if time.Now().After(limit) {
				t.Fatalf("callback of %s not completed: %+v (%v)", id, info, err)
			}
		}
	}
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	for _, id := range ids {
		if hooks.got[id] != 1 {
			t.Errorf("%s: %d callbacks, want 1", id, hooks.got[id])
		}
	}
	if hooks.bad != 0 {
		t.Errorf("%d callbacks badly signed", hooks.bad)
	}
}
