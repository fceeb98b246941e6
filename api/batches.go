package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/termsafe"
	"github.com/mxprobe/mxprobe/signup"
	"github.com/mxprobe/mxprobe/tasks"
)

// batchParallel bounds the Redis round trips one batch request runs at
// once: enough to hide loopback latency, few enough to leave the connection
// pool to other requests.
const batchParallel = 16

// batchRow is one input row: an address with optional per-row fields.
type batchRow struct {
	Address     string          `json:"address"`
	CallbackURL string          `json:"callback_url,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	RequestID   string          `json:"request_id,omitempty"`
}

// rowObject is a JSON row as sent: "email" is accepted for "address", as
// CSV headers and POST /validate accept it.
type rowObject struct {
	batchRow
	Email string `json:"email,omitempty"`
}

// rejectedRow reports a row that was not queued.
type rejectedRow struct {
	Line  int    `json:"line"`
	Input string `json:"input"`
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// storedRow is one row of a batch as kept in Redis, in input order.
type storedRow struct {
	Line   int    `json:"l"`
	Input  string `json:"i"`
	TaskID string `json:"t,omitempty"`
	Error  string `json:"e,omitempty"`
	Field  string `json:"f,omitempty"`
	// Extra holds the row's other CSV columns, returned with its result.
	Extra []string `json:"x,omitempty"`
}

// rowResult is the part of a final result a batch keeps and reports.
type rowResult struct {
	Address      string `json:"address,omitempty"`
	Verdict      string `json:"verdict"`
	Reason       string `json:"reason"`
	MXHost       string `json:"mx_host,omitempty"`
	SMTPCode     int    `json:"smtp_code,omitempty"`
	SMTPEnhanced string `json:"smtp_enhanced_code,omitempty"`
	SMTPText     string `json:"smtp_text,omitempty"`
	Error        string `json:"error,omitempty"`
	// The sign-up decision (docs/signup.md), for final rows.
	Decision   string `json:"decision,omitempty"`
	DidYouMean string `json:"did_you_mean,omitempty"`
	// Flags of the address.
	Disposable   bool `json:"disposable,omitempty"`
	RoleAccount  bool `json:"role_account,omitempty"`
	FreeProvider bool `json:"free_provider,omitempty"`
	CatchAll     bool `json:"catch_all,omitempty"`
}

type parsedRow struct {
	line  int
	input string
	row   batchRow
	err   string // parse problem: the row is rejected
	// A CSV with a header: the names of its other columns (one slice
	// shared by every row) and this row's values of them.
	columns, extra []string
}

type batchResponse struct {
	ID         string        `json:"id"`
	StatusURL  string        `json:"status_url"`
	ResultsURL string        `json:"results_url"`
	Accepted   int           `json:"accepted"`
	Rejected   []rejectedRow `json:"rejected"`
}

func (s *Server) batchKey(id string) string { return s.cfg.Prefix + "batch:{" + id + "}" }

func newBatchID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "b_" + hex.EncodeToString(b[:])
}

func validBatchID(id string) bool {
	if len(id) != 26 || !strings.HasPrefix(id, "b_") {
		return false
	}
	_, err := hex.DecodeString(id[2:])
	return err == nil
}

func (s *Server) postBatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	queue := q.Get("queue")
	if queue == "" {
		queue = s.cfg.BatchQueue
	}
	if !slices.Contains(tasks.Queues, queue) {
		// Checked before any row is queued: it would refuse every row.
		writeFieldError(w, http.StatusUnprocessableEntity, codeInvalidField, "queue",
			fmt.Sprintf("queue %q: want one of %s", queue, strings.Join(tasks.Queues, ", ")))
		return
	}
	opts := []tasks.Option{tasks.Queue(queue), ownerOption(r)}
	if b, _ := strconv.ParseBool(q.Get("no_dedupe")); b {
		opts = append(opts, tasks.NoDedupe())
	}
	deadline, ok := deadlineQuery(w, q.Get("deadline"), q.Has("deadline"), time.Now())
	if !ok {
		return
	}
	within, ok := s.finishWithin(w, q.Get("finish_within"), q.Has("finish_within"))
	if !ok {
		return
	}
	switch {
	case deadline != nil && q.Has("finish_within"):
		writeFieldError(w, http.StatusBadRequest, codeInvalidField, "finish_within", "finish_within: give deadline or finish_within, not both")
		return
	case deadline != nil:
		opts = append(opts, deadline)
	case within > 0:
		// Rows not final by then end as unknown with their last reason,
		// their callbacks fire, and the batch is done: a few greylisted
		// rows do not hold a list for a day.
		opts = append(opts, tasks.Deadline(time.Now().Add(min(within, tasks.MaxDeadlineAhead-time.Minute))))
	}
	// webhook: one signed POST when every row has ended (tasks.BatchStarted),
	// checked like a callback URL, before any row is queued.
	webhook := q.Get("webhook")
	if q.Has("webhook") {
		if err := tasks.CheckRequest(tasks.Request{Address: "check@example.com", CallbackURL: webhook}); err != nil {
			writeFieldError(w, http.StatusUnprocessableEntity, codeInvalidField, "webhook", "webhook: "+strings.TrimPrefix(err.Error(), "tasks: "))
			return
		}
		if s.cfg.CheckCallbackURL != nil {
			if err := s.cfg.CheckCallbackURL(webhook); err != nil {
				writeFieldError(w, http.StatusUnprocessableEntity, codeInvalidField, "webhook", "webhook: "+err.Error())
				return
			}
		}
	}
	id := newBatchID()
	if webhook != "" {
		opts = append(opts, tasks.Batch(id))
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mt = ""
	}
	format, ok := batchFormatOf(mt)
	if !ok {
		writeError(w, http.StatusUnsupportedMediaType, codeUnsupportedMedia, "Content-Type must be application/json (an array), application/x-ndjson or text/csv")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBatchBytes)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeDecodeError(w, err)
		return
	}
	rows, err := parseBatch(format, body, s.cfg.MaxBatchRows)
	if err != nil {
		code := codeMalformedJSON
		if format == formatCSV {
			code = codeBadRequest
		}
		writeError(w, http.StatusBadRequest, code, err.Error())
		return
	}
	if len(rows) == 0 {
		writeError(w, http.StatusUnprocessableEntity, codeBadRequest, "the batch has no rows")
		return
	}
	if len(rows) > s.cfg.MaxBatchRows {
		writeError(w, http.StatusRequestEntityTooLarge, codeTooManyRows, fmt.Sprintf("a batch holds at most %d rows", s.cfg.MaxBatchRows))
		return
	}
	// Refuse up front when Redis is away rather than half-enqueue a batch.
	if err := s.ping(r.Context()); err != nil {
		logger(r.Context()).Warn("redis unavailable", "err", err)
		writeUnavailable(w)
		return
	}
	stored, failed := s.enqueueRows(r.Context(), rows, opts)
	if failed != nil {
		// Redis failed part-way. The rows already queued will run, so the
		// batch is still recorded with them, and every row not queued is
		// reported as rejected with a reason to submit it again: the
		// client learns exactly what was accepted, nothing runs unseen.
		logger(r.Context()).Warn("batch enqueue failed part-way; unqueued rows reported as rejected", "err", failed)
		for i := range stored {
			if stored[i].TaskID == "" && stored[i].Error == "" {
				stored[i].Error = "not queued: the queue became unavailable; submit this row again"
			}
		}
	}
	resp := batchResponse{ID: id, StatusURL: "/v1/batches/" + id, ResultsURL: "/v1/batches/" + id + "/results", Rejected: []rejectedRow{}}
	vals := make([]any, len(stored))
	for i, sr := range stored {
		b, _ := json.Marshal(sr)
		vals[i] = b
		if sr.TaskID != "" {
			resp.Accepted++
		} else {
			resp.Rejected = append(resp.Rejected, rejectedRow{Line: sr.Line, Input: sr.Input, Error: sr.Error, Field: sr.Field})
		}
	}
	key := s.batchKey(id)
	pipe := s.rdb.TxPipeline()
	fields := []any{"created", s.now().UTC().Format(time.RFC3339), "total", resp.Accepted, "rejected", len(resp.Rejected), "queue", queue, "owner", keyID(r.Context())}
	if cols := rows[0].columns; len(cols) > 0 {
		enc, _ := json.Marshal(cols)
		fields = append(fields, "columns", enc)
	}
	pipe.HSet(r.Context(), key, fields...)
	pipe.RPush(r.Context(), key+":rows", vals...)
	pipe.Expire(r.Context(), key, s.cfg.Retention)
	pipe.Expire(r.Context(), key+":rows", s.cfg.Retention)
	var err2 error
	if webhook != "" {
		err2 = s.client.BatchStarted(r.Context(), id, queue, resp.Accepted, webhook)
	}
	if err2 == nil {
		_, err2 = pipe.Exec(r.Context())
	}
	if err := err2; err != nil {
		logger(r.Context()).Warn("storing batch failed", "err", err)
		if webhook != "" {
			s.client.BatchForget(context.WithoutCancel(r.Context()), id, queue) // best effort
		}
		// Without a record the client cannot follow the rows already
		// queued: take them back (best effort, Redis may still be away)
		// so that the 503 is true, and say so when some stay.
		left := 0
		for _, sr := range stored {
			if sr.TaskID == "" {
				continue
			}
			if q, _, ok := strings.Cut(sr.TaskID, "_"); !ok || s.insp.DeleteTask(q, sr.TaskID) != nil {
				left++
				logger(r.Context()).Warn("batch not recorded; its queued row will still run", "task_id", sr.TaskID, "line", sr.Line)
			}
		}
		if left == 0 {
			writeUnavailable(w)
			return
		}
		w.Header().Set("Retry-After", strconv.Itoa(unavailableRetry))
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, fmt.Sprintf(
			"the queue is unavailable; the batch was not recorded, but %d of its rows were queued and will run (their task ids are in the server log)", left))
		return
	}
	logger(r.Context()).Info("batch accepted", "batch_id", id, "accepted", resp.Accepted, "rejected", len(resp.Rejected))
	w.Header().Set("Location", resp.StatusURL)
	writeJSON(w, http.StatusAccepted, resp)
}

// enqueueRows queues every good row, in parallel, keeping input order. A row
// the tasks package refuses (bad address, callback URL…) is recorded as
// rejected; any other error (Redis) stops the feeding and is returned with
// the rows as far as they got (TaskID set for each row queued).
func (s *Server) enqueueRows(ctx context.Context, rows []parsedRow, opts []tasks.Option) ([]storedRow, error) {
	out := make([]storedRow, len(rows))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(batchParallel, len(rows)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				pr := rows[i]
				out[i] = storedRow{Line: pr.line, Input: pr.input, Extra: pr.extra}
				if pr.err != "" {
					out[i].Error = pr.err
					continue
				}
				id, err := s.client.Enqueue(ctx, tasks.Request{Address: pr.row.Address, CallbackURL: pr.row.CallbackURL,
					Metadata: pr.row.Metadata, RequestID: pr.row.RequestID}, opts...)
				var re *tasks.RequestError
				switch {
				case err == nil:
					out[i].TaskID = id
				case errors.As(err, &re):
					out[i].Error, out[i].Field = re.Error(), re.Field
				default:
					cancel(err)
				}
			}
		}()
	}
feed:
	for i := range rows {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	for i := range out {
		if out[i].Line == 0 && out[i].Input == "" { // never reached: fed no worker
			out[i] = storedRow{Line: rows[i].line, Input: rows[i].input, Extra: rows[i].extra}
		}
	}
	return out, context.Cause(ctx)
}

// parseRowValue reads one JSON row: a string (the address) or an object.
func parseRowValue(raw []byte) (batchRow, string, string) {
	raw = bytes.TrimSpace(raw)
	var row batchRow
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return row, string(raw), "malformed JSON string"
		}
		row.Address = s
		return row, s, ""
	case len(raw) > 0 && raw[0] == '{':
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var obj rowObject
		if err := dec.Decode(&obj); err != nil {
			return row, string(raw), "bad row object: " + strings.TrimPrefix(err.Error(), "json: ")
		}
		row = obj.batchRow
		switch {
		case row.Address != "" && obj.Email != "" && row.Address != obj.Email:
			return row, string(raw), "address and email differ: give one"
		case row.Address == "":
			row.Address = obj.Email
		}
		if row.Address == "" {
			return row, string(raw), "address (or email) is required"
		}
		return row, row.Address, ""
	}
	return row, string(raw), "want a string or an object with an address"
}

// batchFormat is the syntax of a batch body.
type batchFormat int

const (
	formatJSON batchFormat = iota
	formatNDJSON
	formatCSV
)

// batchFormatOf maps a Content-Type's media type to its format.
func batchFormatOf(mt string) (batchFormat, bool) {
	switch mt {
	case "application/json":
		return formatJSON, true
	case "application/x-ndjson", "application/jsonl", "application/jsonlines":
		return formatNDJSON, true
	case "text/csv":
		return formatCSV, true
	}
	return 0, false
}

// utf8BOM starts files saved by Excel and Notepad. RFC 8259 §8.1 lets a
// JSON parser ignore it; in CSV without a header it would otherwise stick
// to the first address and get it rejected.
var utf8BOM = []byte("\ufeff")

// parseBatch reads a batch body. It returns at most limit+1 rows: one more
// than allowed is enough for the caller to refuse the batch, and stopping
// there keeps a body of MaxBatchBytes of tiny rows from becoming millions of
// parsed rows first. Line numbers are 1-based and strictly increasing: the
// input line for NDJSON and CSV (a quoted CSV field may span lines: the
// record's first), the array position for JSON.
func parseBatch(f batchFormat, body []byte, limit int) ([]parsedRow, error) {
	body = bytes.TrimPrefix(body, utf8BOM)
	switch f {
	case formatJSON:
		return parseJSONRows(body, limit)
	case formatNDJSON:
		return parseNDJSONRows(body, limit), nil
	case formatCSV:
		return parseCSVRows(body, limit)
	}
	return nil, fmt.Errorf("unknown batch format %d", f)
}

const wantArray = "malformed JSON: want an array of addresses or objects"

// parseJSONRows reads a JSON array one element at a time.
func parseJSONRows(body []byte, limit int) ([]parsedRow, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%s: %v", wantArray, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, errors.New(wantArray)
	}
	var rows []parsedRow
	for dec.More() {
		if len(rows) > limit {
			return rows, nil
		}
		var e json.RawMessage
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("malformed JSON in element %d: %v", len(rows)+1, err)
		}
		row, input, problem := parseRowValue(e)
		rows = append(rows, parsedRow{line: len(rows) + 1, input: input, row: row, err: problem})
	}
	if _, err := dec.Token(); err != nil { // the closing ]
		return nil, fmt.Errorf("%s: %v", wantArray, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New(wantArray + ": data after the array")
	}
	return rows, nil
}

// parseNDJSONRows reads one JSON value per line; blank lines are skipped.
// A line that is not a JSON value is a rejected row, not a failed batch.
func parseNDJSONRows(body []byte, limit int) []parsedRow {
	var rows []parsedRow
	n := 0
	for rest := body; len(rest) > 0 && len(rows) <= limit; {
		n++
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		row, input, problem := parseRowValue(line)
		rows = append(rows, parsedRow{line: n, input: input, row: row, err: problem})
	}
	return rows
}

// parseCSVRows reads CSV with an optional header: a first row with a cell
// named email or address is a header naming the column; a first row with no
// '@' anywhere is a header too, and the first column is used.
func parseCSVRows(body []byte, limit int) ([]parsedRow, error) {
	cr := csv.NewReader(bytes.NewReader(body))
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.TrimLeadingSpace = true
	col := 0
	var rows []parsedRow
	var columns []string
	maxExtra := 0
	first := true
	for len(rows) <= limit {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("malformed CSV: %v", err)
		}
		line, _ := cr.FieldPos(0)
		if first {
			first = false
			header, c := csvHeader(rec)
			if header {
				col = c
				for i, name := range rec {
					if i != c {
						columns = append(columns, strings.TrimSpace(strings.TrimPrefix(name, "\ufeff")))
					}
				}
				continue
			}
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		pr := parsedRow{line: line}
		// Every other field comes back with the row's result, also those
		// past the header (named by position below).
		for i, v := range rec {
			if i != col {
				pr.extra = append(pr.extra, v)
			}
		}
		maxExtra = max(maxExtra, len(pr.extra))
		if col >= len(rec) {
			pr.input = strings.Join(rec, ",")
			pr.err = fmt.Sprintf("no column %d in this row", col+1)
		} else {
			pr.input = strings.TrimSpace(rec[col])
			pr.row.Address = pr.input
		}
		rows = append(rows, pr)
	}
	if len(rows) > 0 && maxExtra > 0 {
		// Fields without a header name are named by their position.
		for j := len(columns); j < maxExtra; j++ {
			pos := j + 1 // 1-based input column of the j-th other field
			if j >= col {
				pos++
			}
			columns = append(columns, fmt.Sprintf("column_%d", pos))
		}
		rows[0].columns = columns
	}
	return rows, nil
}

// displayColumns names the input's other columns in the results: their own
// names, with "input_" before one of ours and a number after a repeat, so
// no two columns share a name and none is lost.
func displayColumns(cols []string) []string {
	taken := map[string]bool{}
	for _, c := range resultColumns {
		taken[c] = true
	}
	out := make([]string, len(cols))
	for i, c := range cols {
		name := c
		if name == "" {
			name = fmt.Sprintf("column_%d", i+2)
		}
		if taken[strings.ToLower(name)] {
			name = "input_" + name
		}
		for n := 2; taken[strings.ToLower(name)]; n++ {
			name = fmt.Sprintf("%s_%d", strings.TrimSuffix(name, fmt.Sprintf("_%d", n-1)), n)
		}
		taken[strings.ToLower(name)] = true
		out[i] = name
	}
	return out
}

func csvHeader(rec []string) (bool, int) {
	for i, c := range rec {
		switch strings.ToLower(strings.TrimSpace(strings.TrimPrefix(c, "\ufeff"))) {
		case "email", "e-mail", "address", "email_address", "email address":
			return true, i
		}
	}
	for _, c := range rec {
		if strings.Contains(c, "@") {
			return false, 0
		}
	}
	// No known name and no address anywhere: a header with other column
	// names ("contact", "name,mail"), addresses then read from the first
	// column. A lone field is taken for a header only if it reads like a
	// column name (letters, spaces, '_' or '-'): "alice.example.com" is a
	// malformed address, reported on its line rather than dropped.
	if len(rec) > 1 {
		return true, 0
	}
	return columnName.MatchString(strings.TrimSpace(strings.TrimPrefix(rec[0], "\ufeff"))), 0
}

var columnName = regexp.MustCompile(`^[A-Za-z][A-Za-z _-]{0,39}$`)

// batchState is a batch with each row's latest known result.
type batchState struct {
	id      string
	columns []string // the input's other CSV columns, by name
	rows    []storedRow
	results map[string]rowResult // by task id, final ones
	states  map[string]string    // by task id, asynq state when not final
}

// loadBatch reads a batch and asks asynq about every row whose final result
// the batch does not hold yet, caching finals in the batch so later polls
// skip them. ok false means the answer has been written.
func (s *Server) loadBatch(w http.ResponseWriter, r *http.Request) (*batchState, bool) {
	ctx := r.Context()
	id := r.PathValue("id")
	if !validBatchID(id) {
		writeError(w, http.StatusNotFound, codeNotFound, "no batch with that id")
		return nil, false
	}
	key := s.batchKey(id)
	pipe := s.rdb.Pipeline()
	exists := pipe.Exists(ctx, key)
	owner := pipe.HGet(ctx, key, "owner")
	columns := pipe.HGet(ctx, key, "columns")
	rawRows := pipe.LRange(ctx, key+":rows", 0, -1)
	cached := pipe.HGetAll(ctx, key+":res")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		logger(ctx).Warn("reading batch failed", "batch_id", id, "err", err)
		writeUnavailable(w)
		return nil, false
	}
	if exists.Val() == 0 || !s.mayRead(r, owner.Val()) {
		// Another key's batch is answered as if it did not exist.
		writeError(w, http.StatusNotFound, codeNotFound, "no batch with that id (or its retention ended)")
		return nil, false
	}
	b := &batchState{id: id, results: map[string]rowResult{}, states: map[string]string{}}
	if c := columns.Val(); c != "" {
		_ = json.Unmarshal([]byte(c), &b.columns)
	}
	for _, raw := range rawRows.Val() {
		var sr storedRow
		if err := json.Unmarshal([]byte(raw), &sr); err != nil {
			continue
		}
		b.rows = append(b.rows, sr)
	}
	for tid, raw := range cached.Val() {
		var rr rowResult
		if json.Unmarshal([]byte(raw), &rr) == nil {
			b.results[tid] = rr
		}
	}
	var todo []string
	for _, sr := range b.rows {
		if sr.TaskID != "" {
			if _, ok := b.results[sr.TaskID]; !ok {
				todo = append(todo, sr.TaskID)
			}
		}
	}
	if err := s.refresh(ctx, key, b, todo); err != nil {
		logger(ctx).Warn("reading batch tasks failed", "batch_id", id, "err", err)
		writeUnavailable(w)
		return nil, false
	}
	return b, true
}

// refresh reads the rows whose final result the batch does not hold yet, in
// one pipelined round trip per 500 tasks (tasks.Client.Peek; asking asynq
// task by task cost two round trips per row, 20,000 for a fresh 10,000-row
// batch on every poll), and keeps the newly final ones in the batch.
func (s *Server) refresh(ctx context.Context, key string, b *batchState, todo []string) error {
	found, missing, err := s.client.Peek(ctx, todo)
	if err != nil {
		return err
	}
	for _, tid := range missing {
		// Retention ended before the batch's: report it as unknown.
		b.results[tid] = rowResult{Verdict: tasks.VerdictUnknown, Reason: "expired"}
	}
	newFinal := map[string]any{}
	for tid, st := range found {
		if !st.Done() {
			b.states[tid] = st.State
			continue
		}
		rr := s.toRowResult(st)
		b.results[tid] = rr
		enc, _ := json.Marshal(rr)
		newFinal[tid] = enc
	}
	if len(newFinal) > 0 {
		pipe := s.rdb.TxPipeline()
		pipe.HSet(ctx, key+":res", newFinal)
		pipe.Expire(ctx, key+":res", s.cfg.Retention)
		// Best effort: the cache only saves work on the next poll.
		_, _ = pipe.Exec(ctx)
	}
	return nil
}

func (s *Server) toRowResult(st tasks.Status) rowResult {
	if st.Result == nil {
		// Archived without a result: a task no worker could read.
		return rowResult{Verdict: tasks.VerdictUnknown, Reason: "failed", Error: st.LastError, Decision: string(signup.Accept)}
	}
	res := st.Result
	a := s.decide(res.Input, res, true)
	rr := rowResult{Address: res.Address, Verdict: res.Verdict, Reason: res.Reason, MXHost: res.MXHost, Error: res.Error,
		Decision: string(a.Decision), DidYouMean: a.DidYouMean,
		Disposable: res.Flags.Disposable, RoleAccount: res.Flags.RoleAccount, FreeProvider: res.Flags.FreeProvider, CatchAll: res.Flags.CatchAll}
	if res.SMTP != nil {
		rr.SMTPCode, rr.SMTPEnhanced, rr.SMTPText = res.SMTP.Code, res.SMTP.Enhanced, res.SMTP.Text
	}
	return rr
}

type batchCounts struct {
	Valid   int `json:"valid"`
	Invalid int `json:"invalid"`
	Risky   int `json:"risky"`
	Unknown int `json:"unknown"`
	Pending int `json:"pending"`
}

type batchStatus struct {
	ID         string      `json:"id"`
	Total      int         `json:"total"`
	Done       int         `json:"done"`
	Rejected   int         `json:"rejected"`
	Counts     batchCounts `json:"counts"`
	State      string      `json:"state"`
	ResultsURL string      `json:"results_url"`
}

func (s *Server) getBatch(w http.ResponseWriter, r *http.Request) {
	b, ok := s.loadBatch(w, r)
	if !ok {
		return
	}
	st := batchStatus{ID: b.id, State: "running", ResultsURL: "/v1/batches/" + b.id + "/results"}
	for _, sr := range b.rows {
		if sr.TaskID == "" {
			st.Rejected++
			continue
		}
		st.Total++
		rr, final := b.results[sr.TaskID]
		if !final {
			st.Counts.Pending++
			continue
		}
		st.Done++
		switch rr.Verdict {
		case tasks.VerdictValid:
			st.Counts.Valid++
		case tasks.VerdictInvalid:
			st.Counts.Invalid++
		case tasks.VerdictRisky:
			st.Counts.Risky++
		default:
			st.Counts.Unknown++
		}
	}
	if st.Done == st.Total {
		st.State = "done"
	}
	writeJSON(w, http.StatusOK, st)
}

// resultLine is one row of GET /v1/batches/{id}/results.
type resultLine struct {
	Line   int    `json:"line"`
	Input  string `json:"input"`
	TaskID string `json:"task_id,omitempty"`
	// State: "done", "rejected", or asynq's state while pending.
	State string `json:"state"`
	rowResult
	// Columns are the row's other CSV columns, by name.
	Columns map[string]string `json:"columns,omitempty"`
}

var resultColumns = []string{"line", "input", "address", "state", "verdict", "reason", "mx_host", "smtp_code", "smtp_enhanced_code", "smtp_text", "task_id", "error", "decision", "did_you_mean",
	"disposable", "role_account", "free_provider", "catch_all"}

// flag is a flag column's cell: true or false once the row is done, empty
// before (not known yet).
func flag(state string, v bool) string {
	if state != "done" {
		return ""
	}
	return strconv.FormatBool(v)
}

func (s *Server) getBatchResults(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format == "" {
		accept := r.Header.Get("Accept")
		switch {
		case strings.Contains(accept, "text/csv"):
			format = "csv"
		default:
			format = "ndjson"
		}
	}
	if format != "csv" && format != "ndjson" {
		writeFieldError(w, http.StatusBadRequest, codeInvalidField, "format", "format: want csv or ndjson")
		return
	}
	b, ok := s.loadBatch(w, r)
	if !ok {
		return
	}
	names := displayColumns(b.columns)
	lines := make([]resultLine, 0, len(b.rows))
	for _, sr := range b.rows {
		rl := resultLine{Line: sr.Line, Input: sr.Input, TaskID: sr.TaskID}
		if len(names) > 0 {
			rl.Columns = make(map[string]string, len(names))
			for i, name := range names {
				if i < len(sr.Extra) {
					rl.Columns[name] = sr.Extra[i]
				}
			}
		}
		switch {
		case sr.TaskID == "":
			rl.State = "rejected"
			rl.Error = sr.Error
			if sr.Field == "address" {
				// The same verdict the validator gives bad syntax.
				rl.Verdict, rl.Reason = tasks.VerdictInvalid, "bad_syntax"
				a := signup.Decide(sr.Input, &tasks.Check{Verdict: rl.Verdict, Reason: rl.Reason}, true, *s.cfg.SignupPolicy)
				rl.Decision, rl.DidYouMean = string(a.Decision), a.DidYouMean
			}
		default:
			if rr, ok := b.results[sr.TaskID]; ok {
				rl.State, rl.rowResult = "done", rr
			} else {
				rl.State = b.states[sr.TaskID]
				if rl.State == "" {
					rl.State = "pending"
				}
			}
		}
		lines = append(lines, rl)
	}
	if format == "ndjson" {
		w.Header().Set("Content-Type", "application/x-ndjson; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, l := range lines {
			_ = enc.Encode(l)
		}
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+b.id+`.csv"`)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	cw := csv.NewWriter(w)
	// The input's other columns follow ours, under their own names (with
	// "input_" before a name that is one of ours), so a spreadsheet of
	// names and user ids comes back whole.
	header := append([]string(nil), resultColumns...)
	for _, c := range names {
		header = append(header, csvCell(c))
	}
	_ = cw.Write(header)
	for i, l := range lines {
		code := ""
		if l.SMTPCode != 0 {
			code = strconv.Itoa(l.SMTPCode)
		}
		rec := []string{strconv.Itoa(l.Line), csvCell(l.Input), csvCell(l.Address), l.State, l.Verdict, l.Reason,
			csvCell(l.MXHost), code, l.SMTPEnhanced, csvCell(l.SMTPText), l.TaskID, csvCell(l.Error), l.Decision, csvCell(l.DidYouMean),
			flag(l.State, l.Disposable), flag(l.State, l.RoleAccount), flag(l.State, l.FreeProvider), flag(l.State, l.CatchAll)}
		for j := range b.columns {
			v := ""
			if j < len(b.rows[i].Extra) {
				v = b.rows[i].Extra[j]
			}
			rec = append(rec, csvCell(v))
		}
		_ = cw.Write(rec)
	}
	cw.Flush()
}

// csvCell defuses spreadsheet formula injection and escapes control
// characters (termsafe.Cell): inputs and server replies are untrusted.
func csvCell(s string) string { return termsafe.Cell(s) }

// finishWithin is the batch's time to finish: the request's finish_within
// (a Go duration, or seconds) or the server's BatchFinishWithin.
func (s *Server) finishWithin(w http.ResponseWriter, raw string, present bool) (time.Duration, bool) {
	if !present || raw == "" {
		return s.cfg.BatchFinishWithin, true
	}
	d, err := time.ParseDuration(raw)
	if err != nil {
		f, ferr := strconv.ParseFloat(raw, 64)
		if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			writeFieldError(w, http.StatusBadRequest, codeInvalidField, "finish_within", "finish_within: want a duration such as 1h, or seconds")
			return 0, false
		}
		d = time.Duration(min(f, tasks.MaxDeadlineAhead.Seconds()+1) * float64(time.Second))
	}
	if most := tasks.MaxDeadlineAhead - time.Minute; d < time.Second || d > most {
		writeFieldError(w, http.StatusBadRequest, codeInvalidField, "finish_within", fmt.Sprintf("finish_within: want 1s to %s", most))
		return 0, false
	}
	return d, true
}
