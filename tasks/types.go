package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Task type names, as asynq and asynqmon show them.
const (
	TypeValidate = "email:validate"
	TypeCallback = "email:callback"
)

// Queue names, in priority order. Workers weight them 6:3:1 by default, so
// bulk imports never starve a sign-up form waiting on critical.
const (
	QueueCritical = "critical"
	QueueDefault  = "default"
	QueueBulk     = "bulk"
)

// Queues lists every queue mxprobe uses, highest priority first.
var Queues = []string{QueueCritical, QueueDefault, QueueBulk}

// PayloadVersion is the version of ValidatePayload and CallbackPayload this
// package writes. Workers refuse versions they do not know (SkipRetry with a
// stored error), so a rolling upgrade never misreads a task.
const PayloadVersion = 1

// MaxMetadataBytes bounds the metadata a request may carry; it is echoed in
// every result and callback, so it must stay small.
const MaxMetadataBytes = 8 << 10

// ValidatePayload is the JSON payload of an email:validate task.
type ValidatePayload struct {
	V int `json:"v"`
	// RequestID is the producer's own id, echoed back (optional).
	RequestID string `json:"request_id,omitempty"`
	// Input is the address as the producer gave it; Address its normalised
	// form (the dedupe and cache key).
	Input       string          `json:"input"`
	Address     string          `json:"address"`
	CallbackURL string          `json:"callback_url,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	// RespondBy is when the producer stops caring: a verdict that is not
	// final by then becomes a final unknown (and the callback fires).
	RespondBy time.Time `json:"respond_by,omitzero"`
	// Fresh skips the result cache and the sharing of an in-flight probe.
	Fresh bool `json:"fresh,omitempty"`
	// Transcript asks for the SMTP transcript in the result.
	Transcript bool      `json:"transcript,omitempty"`
	EnqueuedAt time.Time `json:"enqueued_at"`
	// Owner is the id of the API key that asked: only it (and admin keys)
	// may read the result (docs/design.md, README "Tenancy"). Empty for
	// tasks queued without the API.
	Owner string `json:"owner,omitempty"`
	// Batch is the id of the batch this task is a row of (Batch option):
	// its end counts towards the batch's webhook.
	Batch string `json:"batch,omitempty"`
}

// CallbackPayload is the JSON payload of an email:callback task: one signed
// POST of Body to URL.
type CallbackPayload struct {
	V       int             `json:"v"`
	URL     string          `json:"url"`
	EventID string          `json:"event_id"`
	TaskID  string          `json:"task_id"`
	Body    json.RawMessage `json:"body"`
}

// DecodeValidatePayload parses and checks a task payload. Errors are final:
// a payload that does not decode now never will.
func DecodeValidatePayload(b []byte) (ValidatePayload, error) {
	var p ValidatePayload
	if err := decodeStrict(b, &p); err != nil {
		return p, fmt.Errorf("email:validate payload: %w", err)
	}
	if p.V != PayloadVersion {
		return p, fmt.Errorf("email:validate payload: unsupported version %d (this build reads %d)", p.V, PayloadVersion)
	}
	if p.Address == "" {
		return p, errors.New("email:validate payload: no address")
	}
	if len(p.Metadata) > 0 {
		m, err := encodedJSON(p.Metadata)
		if err != nil {
			return p, fmt.Errorf("email:validate payload: metadata: %w", err)
		}
		if len(m) > MaxMetadataBytes {
			return p, fmt.Errorf("email:validate payload: metadata larger than %d bytes", MaxMetadataBytes)
		}
		p.Metadata = m
	}
	return p, nil
}

// encodedJSON returns raw as json.Marshal writes a json.RawMessage: compact
// and HTML-escaped ('<' becomes "\u003c", six octets for one). The metadata
// limit is measured on this form, the one stored in Redis, so that metadata
// Enqueue accepts is never refused by the worker, and a decoded payload
// encodes to the same bytes again (FuzzDecodeValidatePayload).
func encodedJSON(raw json.RawMessage) (json.RawMessage, error) {
	var c bytes.Buffer
	if err := json.Compact(&c, raw); err != nil {
		return nil, err
	}
	var e bytes.Buffer
	json.HTMLEscape(&e, c.Bytes())
	return e.Bytes(), nil
}

// DecodeCallbackPayload parses and checks a callback task payload.
func DecodeCallbackPayload(b []byte) (CallbackPayload, error) {
	var p CallbackPayload
	if err := decodeStrict(b, &p); err != nil {
		return p, fmt.Errorf("email:callback payload: %w", err)
	}
	if p.V != PayloadVersion {
		return p, fmt.Errorf("email:callback payload: unsupported version %d (this build reads %d)", p.V, PayloadVersion)
	}
	if p.URL == "" || p.EventID == "" || len(p.Body) == 0 {
		return p, errors.New("email:callback payload: url, event_id and body are required")
	}
	return p, nil
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// Result is what a validation task produced: stored with the task (asynq's
// ResultWriter), returned by Client.Get and Client.Wait, and POSTed to the
// callback URL. Check's fields are inlined, so the JSON is flat.
type Result struct {
	TaskID    string `json:"task_id"`
	RequestID string `json:"request_id,omitempty"`
	// Final is false while a retry is pending (greylisting, 4xx, rate
	// limits); the verdict is then the latest attempt's.
	Final    bool `json:"final"`
	Attempts int  `json:"attempts"`
	// Cached is true when the verdict came from the result cache without
	// SMTP traffic; SharedWith names the task whose probe answered this one
	// when two requests for one address were in flight together.
	Cached        bool      `json:"cached,omitempty"`
	SharedWith    string    `json:"shared_with,omitempty"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	// The sign-up decision for a final result, under the worker's policy
	// (package signup, docs/signup.md): accept, reject or suggest, why, a
	// message for a form, and the corrected address.
	Decision       string          `json:"decision,omitempty"`
	DecisionReason string          `json:"decision_reason,omitempty"`
	Message        string          `json:"message,omitempty"`
	DidYouMean     string          `json:"did_you_mean,omitempty"`
	Metadata       json.RawMessage `json:"metadata,omitempty"`
	Check
}

// Check mirrors the JSON of validator.Result field by field, so that
// producers need not import the validator (and its SMTP prober). The worker's
// tests prove the two stay in step.
type Check struct {
	Input      string           `json:"input"`
	Address    string           `json:"address,omitempty"`
	Verdict    string           `json:"verdict"`
	Reason     string           `json:"reason"`
	Retryable  bool             `json:"retryable"`
	RetryAfter string           `json:"retry_after,omitempty"`
	Flags      Flags            `json:"flags"`
	MXHost     string           `json:"mx_host,omitempty"`
	MXAddr     string           `json:"mx_addr,omitempty"`
	Provider   string           `json:"provider,omitempty"`
	SMTP       *SMTPReply       `json:"smtp,omitempty"`
	TLS        bool             `json:"tls"`
	CheckedAt  time.Time        `json:"checked_at"`
	Duration   string           `json:"duration"`
	Transcript []TranscriptLine `json:"transcript,omitempty"`
	Error      string           `json:"error,omitempty"`
}

// Flags are facts about an address that do not decide the verdict alone.
type Flags struct {
	Disposable   bool `json:"disposable"`
	CatchAll     bool `json:"catch_all"`
	RoleAccount  bool `json:"role_account"`
	FreeProvider bool `json:"free_provider"`
	SMTPUTF8     bool `json:"smtputf8"`
	Allowlisted  bool `json:"allowlisted,omitempty"`
	Denylisted   bool `json:"denylisted,omitempty"`
	// CatchAllState: "yes", "no", "unknown" (the test proved nothing), or
	// empty when no catch-all test ran.
	CatchAllState string `json:"catch_all_state,omitempty"`
}

// SMTPReply is the reply that decided the verdict.
type SMTPReply struct {
	Stage    string `json:"stage"`
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced_code,omitempty"`
	Text     string `json:"text,omitempty"`
}

// TranscriptLine is one line of the SMTP conversation (">" sent, "<" received).
type TranscriptLine struct {
	At   time.Time `json:"at"`
	Host string    `json:"host,omitempty"`
	Dir  string    `json:"dir"`
	Line string    `json:"line"`
}

// Verdicts, as strings in Check.Verdict.
const (
	VerdictValid   = "valid"
	VerdictInvalid = "invalid"
	VerdictRisky   = "risky"
	VerdictUnknown = "unknown"
)
