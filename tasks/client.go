package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/redact"
	"github.com/mxprobe/mxprobe/validator/address"
)

// MaxRetryCeiling is the asynq MaxRetry every validation task carries. The
// worker's own retry policy decides when a verdict is final and must stay
// below it: asynq archives a task whose retries are used up on ANY error,
// even a rate-limit denial that IsFailure calls harmless, so the spare room
// keeps denials on a last attempt from archiving the task.
const MaxRetryCeiling = 100

// Per-attempt execution bounds asynq enforces (its default is 30 minutes).
const (
	ValidateTimeout = 10 * time.Minute
	CallbackTimeout = 2 * time.Minute
)

// RequestError is returned by Enqueue for a request that can never succeed;
// no task was created.
type RequestError struct {
	Field  string // "address", "callback_url", "metadata", "queue", "request_id"
	Reason string
	Err    error
}

// Error reads "field: reason", except that a reason which already names the
// field — address.ParseError's `address "x": missing '@'` — is not prefixed
// a second time ("address: address \"x\": …" read badly in the API and the
// web page).
func (e *RequestError) Error() string {
	if strings.HasPrefix(e.Reason, e.Field+" ") || strings.HasPrefix(e.Reason, e.Field+":") {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}
func (e *RequestError) Unwrap() error { return e.Err }

// ErrBadRequest matches every *RequestError with errors.Is.
var ErrBadRequest = errors.New("bad validation request")

func (e *RequestError) Is(target error) bool { return target == ErrBadRequest }

// ErrNotFound: no task with that id exists (never did, or its retention
// ended).
var ErrNotFound = errors.New("validation not found")

// Request is one address to validate.
type Request struct {
	Address string
	// CallbackURL receives the signed result when it is final (optional).
	CallbackURL string
	// Metadata is any JSON object, echoed in the result and the callback.
	Metadata json.RawMessage
	// RequestID is the producer's own id, echoed back (optional).
	RequestID string
}

// Client is the producer side: enqueue validations, read their results. It is
// safe for concurrent use.
type Client struct {
	rdb       redis.UniversalClient
	ac        *asynq.Client
	insp      *asynq.Inspector
	retention time.Duration
	queue     string
	// checkCallback is the delivery side's address policy (nil: syntax
	// only).
	checkCallback func(string) error

	// The DoneChannel subscription that wakes Waits (nil: polling only).
	subMu       sync.Mutex
	sub         *redis.PubSub
	subscribing bool      // a Wait is opening it; the others poll meanwhile
	subFailed   time.Time // the last failed attempt; the next waits subRetry
	closed      bool
	waiters     map[string]map[chan struct{}]struct{} // task id → its Waits
	// safetyNet is Wait's first and longest poll interval while subscribed.
	safetyNet [2]time.Duration

	// shards per priority queue (WithShards; 0 means 1) and their names.
	shards     int
	shardMu    sync.Mutex
	shardCache map[string][]string
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithRetention keeps completed results readable for d (default 24 h).
func WithRetention(d time.Duration) ClientOption { return func(c *Client) { c.retention = d } }

// WithCallbackCheck makes Enqueue refuse a callback URL that check
// refuses: give it the worker's address policy (worker.CheckURL with the
// workers' configuration), so that a URL the workers would never deliver
// to is refused now, not archived a day later.
func WithCallbackCheck(check func(rawURL string) error) ClientOption {
	return func(c *Client) { c.checkCallback = check }
}

// WithDefaultQueue sets the queue used when Enqueue names none.
func WithDefaultQueue(q string) ClientOption { return func(c *Client) { c.queue = q } }

// NewClient returns a Client on rdb; Close does not close rdb.
func NewClient(rdb redis.UniversalClient, opts ...ClientOption) *Client {
	c := &Client{
		rdb:       rdb,
		ac:        asynq.NewClientFromRedisClient(rdb),
		insp:      asynq.NewInspectorFromRedisClient(rdb),
		retention: 24 * time.Hour,
		queue:     QueueDefault,
		safetyNet: [2]time.Duration{safetyNetFirst, safetyNetMax},
		waiters:   map[string]map[chan struct{}]struct{}{},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Close releases the client's resources (not the Redis client): the
// DoneChannel subscription, if a Wait opened one. Waits still running then
// poll.
func (c *Client) Close() error {
	c.subMu.Lock()
	c.closed = true // a Wait after Close does not subscribe
	ps := c.sub
	c.sub = nil
	c.subMu.Unlock()
	if ps != nil {
		return ps.Close()
	}
	return nil
}

// Option adjusts one Enqueue call.
type Option func(*enqueueOptions)

type enqueueOptions struct {
	queue      string
	respondBy  time.Time
	fresh      bool
	transcript bool
	delay      time.Duration
	owner      string
	batch      string
}

// Queue puts the task in QueueCritical, QueueDefault or QueueBulk.
func Queue(name string) Option { return func(o *enqueueOptions) { o.queue = name } }

// Deadline is when the producer stops caring: a verdict that is not final by
// then (a greylisted address still waiting for its retry, say) becomes a
// final unknown and the callback fires. A task the rate limiter holds back
// (a provider's cool-down, a rate slot) past the deadline does not wait for
// it: it ends at once as a final unknown naming the hold's reason
// (docs/reliability.md). CheckDeadline tells a deadline worth setting.
func Deadline(t time.Time) Option { return func(o *enqueueOptions) { o.respondBy = t } }

// MaxDeadlineAhead is the furthest in the future CheckDeadline accepts a
// deadline. The worker's own give-up (a day by default, `mxprobe worker
// --retry-give-up`) ends every validation long before; a deadline further
// than a week is a unit or clock mistake worth refusing, not a request.
const MaxDeadlineAhead = 7 * 24 * time.Hour

// CheckDeadline refuses a deadline that is not after now or is more than
// MaxDeadlineAhead after it: the rules the HTTP API applies to its
// "deadline" field. Enqueue itself takes any deadline (one already past
// asks for an answer from the cache or none).
func CheckDeadline(deadline, now time.Time) error {
	switch {
	case !deadline.After(now):
		return fmt.Errorf("%s is not in the future (server time %s)", deadline.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case deadline.Sub(now) > MaxDeadlineAhead:
		return fmt.Errorf("%s is more than %s ahead (server time %s)", deadline.Format(time.RFC3339), MaxDeadlineAhead, now.UTC().Format(time.RFC3339))
	}
	return nil
}

// NoDedupe makes this request probe on its own: it neither reads the result
// cache nor shares a probe already in flight for the same address.
func NoDedupe() Option { return func(o *enqueueOptions) { o.fresh = true } }

// WithTranscript asks for the timestamped SMTP conversation in the result.
func WithTranscript() Option { return func(o *enqueueOptions) { o.transcript = true } }

// Owner records the API key id the validation belongs to (Status.Owner).
func Owner(keyID string) Option { return func(o *enqueueOptions) { o.owner = keyID } }

// ProcessIn delays the first attempt.
func ProcessIn(d time.Duration) Option { return func(o *enqueueOptions) { o.delay = d } }

// Enqueue validates req, then queues it. A request that can never succeed —
// a syntactically bad address, a malformed callback URL or metadata — is
// refused with a *RequestError and creates no task. The returned ID is the
// task id (stable across retries, carried in results and callbacks).
func (c *Client) Enqueue(ctx context.Context, req Request, opts ...Option) (string, error) {
	o := enqueueOptions{queue: c.queue}
	for _, opt := range opts {
		opt(&o)
	}
	p, err := buildPayload(req, o)
	if err != nil {
		return "", err
	}
	if p.CallbackURL != "" && c.checkCallback != nil {
		if err := c.checkCallback(p.CallbackURL); err != nil {
			return "", &RequestError{Field: "callback_url", Reason: err.Error(), Err: err}
		}
	}
	body, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("encoding payload: %w", err)
	}
	queue, err := c.shardFor(o.queue)
	if err != nil {
		return "", err
	}
	id := queue + "_" + uuid.NewString()
	aopts := []asynq.Option{
		asynq.Queue(queue),
		asynq.TaskID(id),
		asynq.MaxRetry(MaxRetryCeiling),
		asynq.Timeout(ValidateTimeout),
		asynq.Retention(c.retention),
	}
	if o.delay > 0 {
		aopts = append(aopts, asynq.ProcessIn(o.delay))
	}
	if _, err := c.ac.EnqueueContext(ctx, asynq.NewTask(TypeValidate, body), aopts...); err != nil {
		return "", fmt.Errorf("enqueue: %w", err)
	}
	return id, nil
}

// CheckRequest applies Enqueue's checks to req and opts without queueing
// anything: a *RequestError names the field a request would be refused for.
// A producer queueing many addresses with the same callback, metadata and
// queue can check those once, before its first Enqueue.
func CheckRequest(req Request, opts ...Option) error {
	o := enqueueOptions{queue: QueueDefault}
	for _, opt := range opts {
		opt(&o)
	}
	_, err := buildPayload(req, o)
	return err
}

func buildPayload(req Request, o enqueueOptions) (ValidatePayload, error) {
	p := ValidatePayload{V: PayloadVersion, RequestID: req.RequestID, Input: req.Address,
		RespondBy: o.respondBy, Fresh: o.fresh, Transcript: o.transcript, EnqueuedAt: time.Now().UTC(),
		Owner: o.owner, Batch: o.batch}
	if !isPriority(o.queue) {
		return p, &RequestError{Field: "queue", Reason: fmt.Sprintf("unknown queue %q (want critical, default or bulk)", o.queue)}
	}
	a, err := address.Parse(req.Address)
	if err != nil {
		return p, &RequestError{Field: "address", Reason: err.Error(), Err: err}
	}
	p.Address = a.String()
	if req.CallbackURL != "" {
		if err := CheckCallbackURL(req.CallbackURL); err != nil {
			return p, &RequestError{Field: "callback_url", Reason: err.Error(), Err: err}
		}
		p.CallbackURL = req.CallbackURL
	}
	if len(req.Metadata) > 0 {
		if len(req.Metadata) > MaxMetadataBytes {
			return p, &RequestError{Field: "metadata", Reason: fmt.Sprintf("larger than %d bytes", MaxMetadataBytes)}
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(req.Metadata, &obj); err != nil || obj == nil { // null decodes to a nil map
			return p, &RequestError{Field: "metadata", Reason: "must be a JSON object", Err: err}
		}
		m, err := encodedJSON(req.Metadata)
		if err != nil {
			return p, &RequestError{Field: "metadata", Reason: "must be a JSON object", Err: err}
		}
		if len(m) > MaxMetadataBytes {
			return p, &RequestError{Field: "metadata", Reason: fmt.Sprintf("larger than %d bytes once encoded as JSON (<, > and & take six)", MaxMetadataBytes)}
		}
		p.Metadata = m
	}
	if len(req.RequestID) > 200 || strings.ContainsAny(req.RequestID, "\r\n\x00") {
		return p, &RequestError{Field: "request_id", Reason: "at most 200 characters, no control characters"}
	}
	return p, nil
}

// validQueue reports whether q is one of mxprobe's asynq queues: a
// priority or one of its shards.
func validQueue(q string) bool {
	_, ok := PriorityOf(q)
	return ok
}

// CheckCallbackURL checks the form of a callback URL: absolute http or https,
// a host, no credentials, bounded length. Whether the host may be reached (no
// loopback, private or link-local addresses) is decided by the worker when it
// dials, after DNS, where it cannot be fooled by a name that resolves late.
func CheckCallbackURL(raw string) error {
	_, err := ParseCallbackURL(raw)
	return err
}

// MaxCallbackURLLength caps a callback URL; it is stored in every task.
const MaxCallbackURLLength = 2048

// refusedPorts are ports no HTTP receiver listens on and where a POST could
// talk to something else (mail submission, Redis, memcached).
var refusedPorts = map[int]bool{25: true, 465: true, 587: true, 6379: true, 11211: true}

// ParseCallbackURL applies the syntax rules of a callback URL, the same at
// enqueue and at delivery (so a URL accepted here is never refused later
// for its form): http or https, at most MaxCallbackURLLength bytes, no
// spaces, controls or raw non-ASCII (A-label hosts), no credentials or
// fragment, a host that is an IP address or a DNS name (not a numeric IPv4
// form such as "2130706433"), and a port in range that is not a mail or
// database port. Which addresses may be reached (loopback, private) is the
// worker's policy, checked again when it dials.
func ParseCallbackURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("empty")
	}
	if len(raw) > MaxCallbackURLLength {
		return nil, fmt.Errorf("longer than %d bytes", MaxCallbackURLLength)
	}
	for i := 0; i < len(raw); i++ {
		// Spaces and controls must be percent-encoded; raw non-ASCII hosts
		// must be given in their A-label (xn--) form.
		if c := raw[i]; c <= ' ' || c >= 0x7f {
			return nil, fmt.Errorf("byte %#02x at %d: percent-encode it (or use the xn-- form of the host)", c, i)
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("not a URL: %v", redact.URLError(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("scheme %q: only http and https are allowed", u.Scheme)
	}
	if u.Opaque != "" {
		return nil, errors.New("not a hierarchical URL")
	}
	if u.User != nil {
		// Credentials would be logged with the URL, and "https://good@evil"
		// is a classic way to mislead a reader.
		return nil, errors.New("credentials in the URL are not allowed; use the signature to authenticate")
	}
	if u.Fragment != "" {
		return nil, errors.New("fragments are not sent to servers")
	}
	host := u.Hostname()
	if host == "" {
		return nil, errors.New("no host")
	}
	if port := u.Port(); port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("port %q", port)
		}
		if refusedPorts[n] {
			return nil, fmt.Errorf("port %d is not an HTTP port", n)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, errors.New("empty port")
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if err := checkHostName(host); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// checkHostName accepts DNS host names (letters, digits, '-', '_' in labels
// of 1–63 bytes, at most 253 bytes). It refuses names whose last label is
// numeric or hex: "2130706433", "127.1" and "0x7f.1" are not names but IPv4
// addresses in forms some resolvers (inet_aton) accept.
func checkHostName(host string) error {
	name := strings.TrimSuffix(host, ".")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("host name %q: bad length", host)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("host name %q: empty or over-long label", host)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host name %q: character %q", host, c)
			}
		}
	}
	last := strings.ToLower(labels[len(labels)-1])
	if _, err := strconv.ParseUint(last, 0, 64); err == nil || strings.HasPrefix(last, "0x") {
		return fmt.Errorf("host %q: looks like a numeric IPv4 form", host)
	}
	return nil
}

// Status is what Get knows of a validation.
type Status struct {
	ID    string `json:"id"`
	Queue string `json:"queue"`
	// State is asynq's: pending, scheduled, active, retry, completed,
	// archived (the last only for a task a worker could not even decode).
	// A final result is stored and announced before asynq marks its task
	// completed, so Done, not State, says whether the verdict is the last
	// word: it may read active for a moment.
	State         string    `json:"state"`
	Retried       int       `json:"retried"`
	LastError     string    `json:"last_error,omitempty"`
	NextProcessAt time.Time `json:"next_process_at,omitzero"`
	// Owner is the API key id the validation belongs to (Get only; empty
	// for one queued without tasks.Owner).
	Owner string `json:"owner,omitempty"`
	// Callback is the delivery of the result to the callback URL (Get
	// only; nil without a callback URL).
	Callback *CallbackStatus `json:"callback,omitempty"`
	// Result is the latest result, nil before the first attempt ends.
	Result *Result `json:"result,omitempty"`
}

// Done reports whether the validation has ended for good.
func (s Status) Done() bool {
	return (s.Result != nil && s.Result.Final) || s.State == "archived"
}

// Get returns the state and latest result of a validation, ErrNotFound for an
// id that does not exist.
func (c *Client) Get(ctx context.Context, id string) (Status, error) {
	queue, ok := queueOf(id)
	if !ok {
		return Status{}, ErrNotFound
	}
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	info, err := c.insp.GetTaskInfo(queue, id)
	if err != nil {
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
			return Status{}, ErrNotFound
		}
		if lostTask(err) {
			return Status{}, fmt.Errorf("%w: %s has no task record in Redis (lost with Redis's data?)", ErrNotFound, id)
		}
		return Status{}, err
	}
	st := Status{ID: id, Queue: queue, State: info.State.String(), Retried: info.Retried,
		LastError: info.LastErr, NextProcessAt: info.NextProcessAt}
	var own struct {
		Owner       string `json:"owner"`
		CallbackURL string `json:"callback_url"`
	}
	if json.Unmarshal(info.Payload, &own) == nil {
		st.Owner = own.Owner
		if own.CallbackURL != "" {
			if st.Callback, err = c.callbackStatus(queue, id); err != nil {
				return st, err
			}
		}
	}
	if len(info.Result) > 0 {
		var r Result
		if err := json.Unmarshal(info.Result, &r); err != nil {
			return st, fmt.Errorf("stored result of %s: %w", id, err)
		}
		st.Result = &r
	}
	return st, nil
}

// CallbackStatus is where the delivery of a result to its callback URL
// stands.
type CallbackStatus struct {
	// State is pending (no final result yet, or the callback task not
	// queued yet), retrying, delivered, or failed: the worker gave up
	// (a refused URL or address, a 4xx answer, or the retry budget spent);
	// the result is still here to read.
	State     string `json:"state"`
	Attempts  int    `json:"attempts,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// callbackStatus reads the callback task the worker queues for a final
// result: id "cb_" + the validation's, in its queue (worker.go).
func (c *Client) callbackStatus(queue, id string) (*CallbackStatus, error) {
	info, err := c.insp.GetTaskInfo(queue, "cb_"+id)
	if err != nil {
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) || lostTask(err) {
			return &CallbackStatus{State: "pending"}, nil
		}
		return nil, err
	}
	cs := &CallbackStatus{Attempts: info.Retried, LastError: info.LastErr}
	switch info.State {
	case asynq.TaskStateCompleted:
		cs.State, cs.LastError = "delivered", ""
		cs.Attempts++
	case asynq.TaskStateArchived:
		cs.State = "failed"
		cs.Attempts++
	case asynq.TaskStateRetry:
		cs.State = "retrying"
	default:
		cs.State = "pending"
	}
	return cs, nil
}

// peekChunk is how many tasks one Peek round trip reads.
const peekChunk = 500

// Peek returns the state and latest result of many validations at once, for
// progress reports over thousands of tasks (a batch): one pipelined round
// trip per 500 tasks, where Get costs two round trips each (asynq's
// Inspector checks the queue, then runs a script). Each Status has ID,
// Queue, State and Result; Retried, LastError and NextProcessAt are left
// out, except for archived tasks without a final result, which are read
// with Get. Ids with no task are returned in missing.
//
// It reads asynq's task hash directly (asynq v0.26: "state" and "result"
// fields of asynq:{queue}:t:<id>, what the Inspector's script reads);
// TestPeekAgreesWithGet compares the two in every state, so a change of
// asynq's layout fails there.
func (c *Client) Peek(ctx context.Context, ids []string) (found map[string]Status, missing []string, err error) {
	found = make(map[string]Status, len(ids))
	type pending struct {
		id, queue string
		cmd       *redis.SliceCmd
	}
	var reread []string
	for start := 0; start < len(ids); start += peekChunk {
		chunk := ids[start:min(start+peekChunk, len(ids))]
		pipe := c.rdb.Pipeline()
		var cmds []pending
		for _, id := range chunk {
			q, ok := queueOf(id)
			if !ok {
				missing = append(missing, id)
				continue
			}
			cmds = append(cmds, pending{id, q, pipe.HMGet(ctx, "asynq:{"+q+"}:t:"+id, "state", "result")})
		}
		if len(cmds) == 0 {
			continue
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, nil, err
		}
		for _, p := range cmds {
			vals := p.cmd.Val()
			state, _ := vals[0].(string)
			raw, _ := vals[1].(string)
			if state == "" {
				// No task, or a hash without its state (lost with Redis's
				// data, see Get): Get tells which, in plain words.
				reread = append(reread, p.id)
				continue
			}
			st := Status{ID: p.id, Queue: p.queue, State: state}
			if raw != "" {
				var r Result
				if err := json.Unmarshal([]byte(raw), &r); err != nil {
					return nil, nil, fmt.Errorf("stored result of %s: %w", p.id, err)
				}
				st.Result = &r
			}
			if state == "archived" && (st.Result == nil || !st.Result.Final) {
				reread = append(reread, p.id) // its LastError says why
				continue
			}
			found[p.id] = st
		}
	}
	for _, id := range reread {
		st, err := c.Get(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			missing = append(missing, id)
		case err != nil:
			return nil, nil, err
		default:
			found[id] = st
		}
	}
	return found, missing, nil
}

// DoneChannel is the Redis pub/sub channel on which the worker announces
// each final result it stores; the message is the task id. Wait listens to
// it so that a synchronous sign-up answers the moment the verdict exists,
// not at its next poll.
const DoneChannel = "mxprobe:done"

// Wait's polling. With the DoneChannel subscription up, polling is only a
// safety net for an announcement lost (pub/sub delivers at most once, and
// not across a reconnect), so it starts slower.
const (
	pollFirst      = 20 * time.Millisecond
	pollMax        = 500 * time.Millisecond
	safetyNetFirst = 250 * time.Millisecond
	safetyNetMax   = 2 * time.Second
)

// Wait blocks until the validation's result is final or ctx ends, for
// synchronous sign-up flows ("check before creating the account, but answer
// within 10 seconds"). On ctx's end it returns the latest Status with
// ctx.Err(), so the caller can still show a provisional verdict.
//
// It wakes on the worker's announcement on DoneChannel (one subscription
// per Client, opened by the first Wait) and polls besides; where the
// subscription cannot be opened it polls alone, quickly at first.
func (c *Client) Wait(ctx context.Context, id string) (Status, error) {
	woken := c.watch(ctx, id)
	defer c.unwatch(id, woken)
	delay, most := pollFirst, pollMax
	if woken != nil {
		delay, most = c.safetyNet[0], c.safetyNet[1]
	}
	t := time.NewTimer(0)
	defer t.Stop()
	var last Status
	for {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-t.C:
		case <-woken:
		}
		st, err := c.Get(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			return st, err
		}
		last = st
		if st.Done() {
			return st, nil
		}
		// Back off so idle waiters cost little Redis. (Reset also drops a
		// tick not yet read, since Go 1.23.)
		t.Reset(delay)
		delay = min(delay*3/2, most)
	}
}

// subRetry is how long after a failed subscription the next Wait tries
// again (Redis down, or SUBSCRIBE refused).
const subRetry = 30 * time.Second

// watch registers a waiter for id's announcement, opening the Client's
// subscription if none is open (bounded by ctx). It returns nil when there
// is no subscription: Wait then polls alone.
func (c *Client) watch(ctx context.Context, id string) chan struct{} {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.sub == nil && !c.subscribing && !c.closed && time.Since(c.subFailed) >= subRetry {
		c.subscribing = true
		c.subMu.Unlock()
		ps := c.subscribe(ctx)
		c.subMu.Lock()
		c.subscribing = false
		switch {
		case ps == nil:
			c.subFailed = time.Now()
		case c.closed:
			ps.Close()
		default:
			c.sub = ps
		}
	}
	if c.sub == nil {
		return nil
	}
	ch := make(chan struct{}, 1)
	if c.waiters[id] == nil {
		c.waiters[id] = map[chan struct{}]struct{}{}
	}
	c.waiters[id][ch] = struct{}{}
	return ch
}

func (c *Client) unwatch(id string, ch chan struct{}) {
	if ch == nil {
		return
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	delete(c.waiters[id], ch)
	if len(c.waiters[id]) == 0 {
		delete(c.waiters, id)
	}
}

// subscribe opens the DoneChannel subscription and waits (at most 2 s, and
// not past ctx) for Redis to confirm it, so no announcement after the Wait's
// first Get can be missed for want of a subscriber. It starts the goroutine
// that wakes waiters; nil means it failed. go-redis re-subscribes by itself
// after a dropped connection; announcements in between are lost, which the
// polling safety net covers.
func (c *Client) subscribe(ctx context.Context) *redis.PubSub {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ps := c.rdb.Subscribe(ctx, DoneChannel)
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil
	}
	ch := ps.Channel()
	go func() {
		for m := range ch {
			c.subMu.Lock()
			for w := range c.waiters[m.Payload] {
				select {
				case w <- struct{}{}:
				default: // already woken
				}
			}
			c.subMu.Unlock()
		}
	}()
	return ps
}

// lostTask recognises asynq's answer for a task hash without a state: what
// is left when Redis lost the task (restarted without persistence, or a
// failover to a stale replica) and a worker still finishing it wrote its
// result, which recreates the hash with only that field. asynq reports it as
// `FAILED_PRECONDITION: "" is not supported task state` with no exported
// error to match, so the text is the only handle; callers get ErrNotFound,
// which is what the task has become.
func lostTask(err error) bool {
	return strings.Contains(err.Error(), `"" is not supported task state`)
}

// queueOf recovers the queue from a task id ("default_<uuid>"), so Get costs
// one lookup instead of one per queue.
func queueOf(id string) (string, bool) {
	q, rest, ok := strings.Cut(id, "_")
	if !ok || rest == "" || !validQueue(q) {
		return "", false
	}
	return q, true
}
