package web_test

// STAND-IN. This file is a stand-in for the api package's HTTP server, used
// only until `api` is merged: it implements the contract the page relies on
// (issue 5) with canned answers, so the browser test can exercise the page.
// After the merge, the browser test should run against the real api server
// (real Redis, real worker) and this file should be deleted.

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/web"
)

const (
	standinKey    = "s3cret-test-key"
	standinCookie = "mxprobe_session"
	// The page's CSP as the real server should send it: nothing inline,
	// nothing from another origin. The browser test fails on a violation.
	standinCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

type standinBatch struct {
	results []tasks.Result
	done    int
}

// standin is the stand-in API. Checks: a local part containing "greylist"
// answers 202 and becomes final on the second poll; "nobody" is invalid
// (550 5.1.1); anything else is valid. Batches advance one row per status
// poll, so the page's progress bar moves through intermediate values.
type standin struct {
	mu      sync.Mutex
	seq     int
	checks  map[string]int // id → polls so far
	inputs  map[string]string
	batches map[string]*standinBatch
	// waits records the wait parameter of every POST /v1/validations.
	waits []string
}

func newStandin() *standin {
	return &standin{checks: map[string]int{}, inputs: map[string]string{}, batches: map[string]*standinBatch{}}
}

func (s *standin) handler() http.Handler {
	static, err := fs.Sub(web.FS, "static")
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("POST /login", s.login)
	mux.Handle("POST /v1/validations", s.auth(s.createCheck))
	mux.Handle("GET /v1/validations/{id}", s.auth(s.getCheck))
	mux.Handle("POST /v1/batches", s.auth(s.createBatch))
	mux.Handle("GET /v1/batches/{id}", s.auth(s.getBatch))
	mux.Handle("GET /v1/batches/{id}/results", s.auth(s.batchResults))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", standinCSP)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg, field string) {
	e := map[string]string{"code": code, "message": msg}
	if field != "" {
		e["field"] = field
	}
	writeJSON(w, status, map[string]any{"error": e})
}

func (s *standin) login(w http.ResponseWriter, r *http.Request) {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "login wants a form", "")
		return
	}
	if r.PostFormValue("key") != standinKey {
		writeError(w, http.StatusUnauthorized, "unauthorized", "That API key is not valid.", "key")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: standinCookie, Value: "ok", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

func (s *standin) auth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(standinCookie)
		if err != nil || c.Value != "ok" {
			writeError(w, http.StatusUnauthorized, "unauthorized", "An API key is required.", "")
			return
		}
		h(w, r)
	})
}

// cannedResult is the verdict the stand-in gives an address.
func cannedResult(id, input string, final bool) tasks.Result {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := tasks.Result{TaskID: id, Final: final, Attempts: 1}
	r.Input = input
	r.Address = strings.ToLower(input)
	r.MXHost = "mx1.example.net"
	r.MXAddr = "192.0.2.25"
	r.Provider = "example.net"
	r.TLS = true
	r.CheckedAt = now
	r.Duration = "412ms"
	local, _, _ := strings.Cut(input, "@")
	switch {
	case strings.Contains(local, "greylist") && !final:
		r.Verdict, r.Reason, r.Retryable = tasks.VerdictUnknown, "greylisted", true
		r.SMTP = &tasks.SMTPReply{Stage: "rcpt", Code: 451, Enhanced: "4.7.1", Text: "Greylisted, try again later"}
		r.NextAttemptAt = now.Add(5 * time.Minute)
	case strings.Contains(local, "greylist"):
		r.Attempts = 2
		r.Verdict, r.Reason = tasks.VerdictValid, "mailbox_exists"
		r.SMTP = &tasks.SMTPReply{Stage: "rcpt", Code: 250, Enhanced: "2.1.5", Text: "OK"}
	case strings.Contains(local, "nobody"):
		r.Verdict, r.Reason = tasks.VerdictInvalid, "mailbox_not_found"
		r.SMTP = &tasks.SMTPReply{Stage: "rcpt", Code: 550, Enhanced: "5.1.1", Text: "<" + input + ">: user unknown"}
	default:
		r.Verdict, r.Reason = tasks.VerdictValid, "mailbox_exists"
		r.Flags.FreeProvider = strings.HasSuffix(input, "@example.net")
		r.SMTP = &tasks.SMTPReply{Stage: "rcpt", Code: 250, Enhanced: "2.1.5", Text: "OK <" + input + ">"}
	}
	return r
}

func (s *standin) createCheck(w http.ResponseWriter, r *http.Request) {
	wait := r.URL.Query().Get("wait")
	if _, err := time.ParseDuration(wait); wait != "" && err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "wait: "+err.Error(), "wait")
		return
	}
	var req struct {
		Address string `json:"address"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_json", "request body: "+err.Error(), "")
		return
	}
	if !strings.Contains(req.Address, "@") {
		writeError(w, http.StatusBadRequest, "bad_address", fmt.Sprintf("%q is not an email address", req.Address), "address")
		return
	}
	s.mu.Lock()
	s.waits = append(s.waits, wait)
	s.seq++
	id := fmt.Sprintf("v%d", s.seq)
	s.checks[id] = 0
	s.inputs[id] = req.Address
	s.mu.Unlock()
	if strings.Contains(req.Address, "greylist") {
		res := cannedResult(id, req.Address, false)
		writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "status_url": "/v1/validations/" + id, "state": "retry", "result": res})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "status_url": "/v1/validations/" + id, "state": "completed", "result": cannedResult(id, req.Address, true)})
}

func (s *standin) getCheck(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	polls, ok := s.checks[id]
	s.checks[id] = polls + 1
	input := s.inputs[id]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such validation", "")
		return
	}
	final := polls >= 1 || !strings.Contains(input, "greylist")
	state := "retry"
	if final {
		state = "completed"
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "status_url": "/v1/validations/" + id, "state": state, "result": cannedResult(id, input, final)})
}

type rejectedRow struct {
	Line  int    `json:"line"`
	Input string `json:"input"`
	Error string `json:"error"`
}

func (s *standin) createBatch(w http.ResponseWriter, r *http.Request) {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "text/csv" {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "the stand-in reads text/csv only", "")
		return
	}
	cr := csv.NewReader(http.MaxBytesReader(w, r.Body, 1<<20))
	cr.FieldsPerRecord = -1
	b := &standinBatch{}
	var rejected []rejectedRow
	s.mu.Lock()
	s.seq++
	id := fmt.Sprintf("b%d", s.seq)
	s.mu.Unlock()
	for first := true; ; first = false {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_csv", err.Error(), "")
			return
		}
		in := strings.TrimSpace(rec[0])
		if first && strings.EqualFold(in, "email") {
			continue
		}
		if !strings.Contains(in, "@") {
			rejected = append(rejected, rejectedRow{Line: line, Input: in, Error: "not an email address"})
			continue
		}
		b.results = append(b.results, cannedResult(fmt.Sprintf("%s-%d", id, line), in, true))
	}
	s.mu.Lock()
	s.batches[id] = b
	s.mu.Unlock()
	writeJSON(w, http.StatusAccepted, map[string]any{
		"id": id, "status_url": "/v1/batches/" + id, "results_url": "/v1/batches/" + id + "/results",
		"accepted": len(b.results), "rejected": rejected,
	})
}

func (s *standin) getBatch(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.batches[id]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such batch", "")
		return
	}
	if b.done < len(b.results) {
		b.done++
	}
	counts := map[string]int{"valid": 0, "invalid": 0, "risky": 0, "unknown": 0, "pending": len(b.results) - b.done}
	for _, res := range b.results[:b.done] {
		counts[res.Verdict]++
	}
	state := "running"
	if b.done == len(b.results) {
		state = "done"
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "total": len(b.results), "done": b.done, "counts": counts, "state": state})
}

func (s *standin) batchResults(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	b, ok := s.batches[id]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such batch", "")
		return
	}
	switch r.URL.Query().Get("format") {
	case "ndjson":
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, res := range b.results {
			enc.Encode(res)
		}
	case "csv":
		w.Header().Set("Content-Type", "text/csv")
		cw := csv.NewWriter(w)
		cw.Write([]string{"input", "verdict", "reason"})
		for _, res := range b.results {
			cw.Write([]string{res.Input, res.Verdict, res.Reason})
		}
		cw.Flush()
	default:
		writeError(w, http.StatusBadRequest, "bad_request", "format must be csv or ndjson", "format")
	}
}
