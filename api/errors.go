package api

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// errorBody is the one error shape of every endpoint.
type errorBody struct {
	Error apiError `json:"error"`
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// Line is the input line of a batch row, when one is to blame.
	Line int `json:"line,omitempty"`
}

// Error codes, stable for clients to switch on.
const (
	codeBadRequest       = "bad_request"
	codeMalformedJSON    = "malformed_json"
	codeUnknownField     = "unknown_field"
	codeInvalidField     = "invalid_field"
	codeBodyTooLarge     = "body_too_large"
	codeTooManyRows      = "too_many_rows"
	codeUnsupportedMedia = "unsupported_media_type"
	codeUnauthorized     = "unauthorized"
	codeForbidden        = "forbidden"
	codeQuotaExceeded    = "quota_exceeded"
	codeAuthThrottled    = "auth_throttled"
	codeNotFound         = "not_found"
	codeRouteNotFound    = "route_not_found"
	codeMethodNotAllowed = "method_not_allowed"
	codeUnavailable      = "service_unavailable"
	codeInternal         = "internal_error"
)

// unavailableRetry is the Retry-After of a 503: long enough for a Redis
// failover, short enough that a sign-up form retrying once still answers.
const unavailableRetry = 5

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{apiError{Code: code, Message: msg}})
}

func writeFieldError(w http.ResponseWriter, status int, code, field, msg string) {
	writeJSON(w, status, errorBody{apiError{Code: code, Message: msg, Field: field}})
}

// writeUnavailable refuses a request Redis cannot take. The caller logs why;
// the client only learns to come back.
func writeUnavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(unavailableRetry))
	writeError(w, http.StatusServiceUnavailable, codeUnavailable, "the queue is unavailable; nothing was accepted, try again later")
}
