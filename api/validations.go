package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/signup"
	"github.com/mxprobe/mxprobe/tasks"
)

// maxJSONBody caps single-request bodies: an address, a callback URL and
// tasks.MaxMetadataBytes of metadata fit with room to spare.
const maxJSONBody = 64 << 10

func writeDecodeError(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, codeBodyTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
	case errors.As(err, &ute):
		writeFieldError(w, http.StatusUnprocessableEntity, codeInvalidField, ute.Field, fmt.Sprintf("%s: want a JSON %s", ute.Field, ute.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		writeFieldError(w, http.StatusBadRequest, codeUnknownField, field, "unknown field "+strconv.Quote(field))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, codeMalformedJSON, "empty body: want a JSON object")
	default:
		writeError(w, http.StatusBadRequest, codeMalformedJSON, "malformed JSON: "+err.Error())
	}
}

// requireJSON refuses bodies that do not say they are JSON: a form post from
// another site cannot then pass for an API call.
func requireJSON(w http.ResponseWriter, r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, codeUnsupportedMedia, "Content-Type must be application/json")
		return false
	}
	return true
}

// validationRequest is the body of POST /v1/validations.
type validationRequest struct {
	Address     string          `json:"address"`
	CallbackURL string          `json:"callback_url,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	RequestID   string          `json:"request_id,omitempty"`
	Queue       string          `json:"queue,omitempty"`
	Transcript  bool            `json:"transcript,omitempty"`
	NoDedupe    bool            `json:"no_dedupe,omitempty"`
	// Deadline is an RFC 3339 time (see parseDeadline), kept raw so that a
	// value of the wrong type is refused as this field's error.
	Deadline json.RawMessage `json:"deadline,omitempty"`
}

func (v validationRequest) options() []tasks.Option {
	var opts []tasks.Option
	if v.Queue != "" {
		opts = append(opts, tasks.Queue(v.Queue))
	}
	if v.Transcript {
		opts = append(opts, tasks.WithTranscript())
	}
	if v.NoDedupe {
		opts = append(opts, tasks.NoDedupe())
	}
	return opts
}

// validationResponse is the answer of POST and GET /v1/validations.
type validationResponse struct {
	ID        string        `json:"id"`
	StatusURL string        `json:"status_url"`
	State     string        `json:"state"`
	Final     bool          `json:"final"`
	Result    *tasks.Result `json:"result,omitempty"`
	// The sign-up decision for the address (decision, decision_reason,
	// message, did_you_mean): docs/signup.md.
	*signup.Answer
	// Callback says whether the result reached the callback URL; state
	// failed means the worker gave up on it (GET only).
	Callback *tasks.CallbackStatus `json:"callback,omitempty"`
}

func statusURL(id string) string { return "/v1/validations/" + id }

// parseWait reads the wait parameter: a Go duration ("10s") or seconds
// ("10", "2.5"), capped at max.
func parseWait(s string, max time.Duration) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(f) {
			return 0, errors.New("want a duration such as 10s, or seconds")
		}
		if f < 0 {
			return 0, errors.New("must not be negative")
		}
		if f >= max.Seconds() {
			return max, nil // also keeps 1e12 seconds from overflowing a Duration
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	return min(d, max), nil
}

// enqueue turns a request into a task or an HTTP answer. ok false means the
// answer has been written.
func (s *Server) enqueue(w http.ResponseWriter, r *http.Request, req tasks.Request, opts ...tasks.Option) (string, bool) {
	id, err := s.client.Enqueue(r.Context(), req, opts...)
	if err != nil {
		var re *tasks.RequestError
		if errors.As(err, &re) {
			writeFieldError(w, http.StatusUnprocessableEntity, codeInvalidField, re.Field, re.Error())
			return "", false
		}
		logger(r.Context()).Warn("enqueue failed", "err", err)
		writeUnavailable(w)
		return "", false
	}
	return id, true
}

func (s *Server) postValidation(w http.ResponseWriter, r *http.Request) {
	wait, err := parseWait(r.URL.Query().Get("wait"), s.cfg.MaxWait)
	if err != nil {
		writeFieldError(w, http.StatusBadRequest, codeInvalidField, "wait", "wait: "+err.Error())
		return
	}
	if !requireJSON(w, r) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxJSONBody)
	var body validationRequest
	if !decodeJSON(w, r, &body) {
		return
	}
	if body.Address == "" {
		writeFieldError(w, http.StatusUnprocessableEntity, codeInvalidField, "address", "address is required")
		return
	}
	opts := body.options()
	deadline, ok := deadlineOption(w, body.Deadline, time.Now())
	if !ok {
		return
	}
	if deadline != nil {
		opts = append(opts, deadline)
	}
	id, ok := s.enqueue(w, r, tasks.Request{Address: body.Address, CallbackURL: body.CallbackURL,
		Metadata: body.Metadata, RequestID: body.RequestID}, append(opts, ownerOption(r))...)
	if !ok {
		return
	}
	logger(r.Context()).Debug("validation enqueued", "task_id", id)
	resp := validationResponse{ID: id, StatusURL: statusURL(id), State: "pending"}
	if wait > 0 {
		st, err := s.wait(r.Context(), id, wait)
		if err == nil || st.ID != "" {
			resp.State, resp.Result, resp.Final = st.State, st.Result, st.Done()
		}
	}
	resp.Answer = s.decide(body.Address, resp.Result, resp.Final)
	w.Header().Set("Location", resp.StatusURL)
	status := http.StatusAccepted
	if resp.Final {
		status = http.StatusOK
	}
	writeJSON(w, status, resp)
}

// wait waits up to d for a final result. The task was accepted, so a Redis
// error here only ends the wait; the client polls the status URL.
func (s *Server) wait(ctx context.Context, id string, d time.Duration) (tasks.Status, error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	st, err := s.client.Wait(wctx, id)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		logger(ctx).Info("wait ended early", "task_id", id, "err", err)
	}
	return st, err
}

func (s *Server) getValidation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, err := s.client.Get(r.Context(), id)
	if err == nil && !s.mayRead(r, st.Owner) {
		// Another key's: answered as if it did not exist, so that ids
		// cannot be probed.
		err = tasks.ErrNotFound
	}
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		writeError(w, http.StatusNotFound, codeNotFound, "no validation with that id (or its retention ended)")
		return
	case err != nil:
		logger(r.Context()).Warn("reading task failed", "task_id", id, "err", err)
		writeUnavailable(w)
		return
	}
	typed := ""
	if st.Result != nil {
		typed = st.Result.Input
	}
	writeJSON(w, http.StatusOK, validationResponse{ID: id, StatusURL: statusURL(id), State: st.State, Final: st.Done(), Result: st.Result, Callback: st.Callback,
		Answer: s.decide(typed, st.Result, st.Done())})
}

// decide is the sign-up decision for an address as typed and its latest
// result (nil while none): the one a final result carries, else decided
// here under the server's policy (a check still running, bad syntax, a
// result stored by a worker older than decisions).
func (s *Server) decide(typed string, r *tasks.Result, final bool) *signup.Answer {
	if r != nil && final && r.Decision != "" {
		// Decided once, by the worker that stored the result (the same
		// policy, given to both): the callback said the same.
		return &signup.Answer{Decision: signup.Decision(r.Decision), Reason: r.DecisionReason, Message: r.Message, DidYouMean: r.DidYouMean}
	}
	var c *tasks.Check
	if r != nil {
		c = &r.Check
		if typed == "" {
			typed = r.Input
		}
	}
	a := signup.Decide(typed, c, final, *s.cfg.SignupPolicy)
	return &a
}

// validateRequest is the sign-up form body of POST /validate.
type validateRequest struct {
	Email string `json:"email"`
}

// validateResponse answers the sign-up form. Decision is what to do
// (accept, reject, suggest; docs/signup.md); Result is false only for
// reject, so a form that tests data.result turns no one away on our
// uncertainty. Final false means the check was still running when the
// time budget ended: the verdict reaches the callback and StatusURL.
type validateResponse struct {
	Result  bool   `json:"result"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	Email   string `json:"email"`
	ID      string `json:"id,omitempty"`
	Final   bool   `json:"final"`
	// StatusURL reads the validation later (with a secret key).
	StatusURL string `json:"status_url,omitempty"`
	signup.Answer
}

// postValidate serves the common sign-up pattern
// fetch('/validate', {method:'POST', body: JSON.stringify({email})}) → data.result.
// Such code often sends no Content-Type (fetch then says text/plain), so
// any type is read as JSON here. A syntactically bad address is an answer
// (reject, bad_syntax), not an error: the form shows it. ?wait= sets the
// time budget, up to Config.ValidateMaxWait.
func (s *Server) postValidate(w http.ResponseWriter, r *http.Request) {
	budget := s.cfg.ValidateWait
	if q := r.URL.Query().Get("wait"); q != "" {
		var err error
		if budget, err = parseWait(q, s.cfg.ValidateMaxWait); err != nil {
			writeFieldError(w, http.StatusBadRequest, codeInvalidField, "wait", "wait: "+err.Error())
			return
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	var body validateRequest
	if !decodeJSON(w, r, &body) {
		return
	}
	resp := validateResponse{Email: body.Email, Verdict: tasks.VerdictUnknown, Reason: "pending"}
	id, err := s.client.Enqueue(r.Context(), tasks.Request{Address: body.Email}, tasks.Queue(tasks.QueueCritical), ownerOption(r))
	if err != nil {
		var re *tasks.RequestError
		if errors.As(err, &re) && re.Field == "address" {
			resp.Verdict, resp.Reason, resp.Final = tasks.VerdictInvalid, "bad_syntax", true
			resp.Answer = signup.Decide(body.Email, &tasks.Check{Verdict: resp.Verdict, Reason: resp.Reason}, true, *s.cfg.SignupPolicy)
			resp.Result = resp.Decision != signup.Reject
			writeJSON(w, http.StatusOK, resp)
			return
		}
		logger(r.Context()).Warn("enqueue failed", "err", err)
		writeUnavailable(w)
		return
	}
	resp.ID, resp.StatusURL = id, statusURL(id)
	var st tasks.Status
	if budget > 0 {
		st, _ = s.wait(r.Context(), id, budget)
	}
	if st.Result != nil {
		resp.Verdict, resp.Reason, resp.Final = st.Result.Verdict, st.Result.Reason, st.Done()
		if st.Result.Address != "" {
			resp.Email = st.Result.Address
		}
	}
	resp.Answer = *s.decide(body.Email, st.Result, resp.Final)
	resp.Result = resp.Decision != signup.Reject
	writeJSON(w, http.StatusOK, resp)
}
