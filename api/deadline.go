package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"

	"github.com/mxprobe/mxprobe/tasks"
)

// parseDeadline reads a request's deadline: an RFC 3339 time with its
// offset ("2026-12-02T10:15:00Z", fractions allowed), after now and at most
// tasks.MaxDeadlineAhead ahead. An absolute time rather than a duration, so
// a request retried by the client or queued behind others keeps the moment
// its caller stops caring, the same in the body of POST /v1/validations and
// the query of POST /v1/batches.
func parseDeadline(s string, now time.Time) (time.Time, string) {
	if s == "" {
		return time.Time{}, "deadline: empty; want an RFC 3339 time such as 2026-12-02T10:15:00Z"
	}
	d, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, "deadline: want an RFC 3339 time with a time zone, such as 2026-12-02T10:15:00Z"
	}
	if err := tasks.CheckDeadline(d, now); err != nil {
		return time.Time{}, "deadline: " + err.Error()
	}
	return d, ""
}

// deadlineOption turns a deadline given as raw (a JSON value from a body,
// absent or null meaning none) into an Enqueue option; ok false means a 400
// naming the field has been written.
func deadlineOption(w http.ResponseWriter, raw json.RawMessage, now time.Time) (opt tasks.Option, ok bool) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		writeFieldError(w, http.StatusBadRequest, codeInvalidField, "deadline", "deadline: want an RFC 3339 time as a JSON string, such as \"2026-12-02T10:15:00Z\"")
		return nil, false
	}
	return deadlineQuery(w, s, true, now)
}

// deadlineQuery is deadlineOption for a query parameter; present says the
// parameter was given (an empty value is refused, not ignored).
func deadlineQuery(w http.ResponseWriter, s string, present bool, now time.Time) (tasks.Option, bool) {
	if !present {
		return nil, true
	}
	d, msg := parseDeadline(s, now)
	if msg != "" {
		writeFieldError(w, http.StatusBadRequest, codeInvalidField, "deadline", msg)
		return nil, false
	}
	return tasks.Deadline(d), true
}
