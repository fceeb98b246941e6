package tasks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Callback headers. A worker sends all three with every callback POST.
//
// The signature covers the timestamp and the body, not the event ID header:
// the event ID is repeated inside the signed JSON body, and a receiver that
// de-duplicates should use the one from the body it has verified.
const (
	// HeaderEventID identifies one event. It is the same on every redelivery
	// of that event (delivery is at least once: docs/design.md, "Callbacks are delivered at least once"), so a
	// receiver keeps the IDs it has processed and ignores repeats.
	HeaderEventID = "Mxprobe-Event-Id"
	// HeaderTimestamp is the time of signing, in Unix seconds. It is signed,
	// so a captured request can be replayed only within the receiver's
	// tolerance.
	HeaderTimestamp = "Mxprobe-Timestamp"
	// HeaderSignature is one or more comma-separated "v1=<hex>" values, each
	// the HMAC-SHA256 of timestamp + "." + body under one secret. During a
	// secret rotation the sender signs with the new and the old secret, so
	// receivers holding either accept the request.
	HeaderSignature = "Mxprobe-Signature"
)

// DefaultTolerance bounds the age (and clock skew) of a callback's timestamp
// when VerifySignature is given a zero tolerance.
const DefaultTolerance = 5 * time.Minute

// DefaultMaxCallbackBody caps the body VerifyRequest reads when maxBody is 0.
// A callback is a few kilobytes of JSON; the cap stops a forged request
// from making the receiver buffer an unbounded body before it can verify it.
const DefaultMaxCallbackBody = 1 << 20

// signatureScheme prefixes each signature value; a later scheme (v2=...)
// can be added next to it without breaking receivers, which ignore schemes
// they do not know.
const signatureScheme = "v1="

// Errors returned by VerifySignature and VerifyRequest; test with errors.Is.
var (
	// ErrSignatureMissing: a signature or timestamp header is absent or
	// cannot be parsed, or no secret was given to verify with.
	ErrSignatureMissing = errors.New("callback signature missing or malformed")
	// ErrSignatureMismatch: no v1 value matches any of the secrets. The body,
	// the timestamp or the secret differ from what the sender signed.
	ErrSignatureMismatch = errors.New("callback signature mismatch")
	// ErrTimestampOutOfRange: the signature is valid but the timestamp is
	// further from now than the tolerance, in either direction; a replay or a
	// badly skewed clock.
	ErrTimestampOutOfRange = errors.New("callback timestamp outside tolerance")
	// ErrBodyTooLarge: the request body exceeds VerifyRequest's cap.
	ErrBodyTooLarge = errors.New("callback body too large")
)

// Sign returns the HeaderSignature value for body sent at timestamp:
// "v1=" followed by the hex HMAC-SHA256 of the Unix seconds, ".", and body.
// Join several results with "," to sign with more than one secret.
func Sign(secret []byte, timestamp time.Time, body []byte) string {
	return signatureScheme + hex.EncodeToString(mac(secret, timestamp.Unix(), body))
}

func mac(secret []byte, unix int64, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	// The decimal timestamp and the separator are signed with the body so an
	// attacker cannot pair a fresh timestamp with an old signed body.
	m.Write(strconv.AppendInt(nil, unix, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifySignature checks the HeaderTimestamp and HeaderSignature of a
// received callback against body. It accepts the request when any v1 value
// matches any of secrets (so a receiver can hold the old and the new secret
// during a rotation), and the timestamp lies within tolerance of now; a zero
// tolerance means DefaultTolerance. Empty secrets are ignored: an empty HMAC
// key is a configuration mistake, not a key.
//
// The signature is checked before the timestamp, so ErrTimestampOutOfRange
// is only reported for a genuine but stale request. Comparisons are
// constant-time.
func VerifySignature(secrets [][]byte, header http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	tsText := strings.TrimSpace(header.Get(HeaderTimestamp))
	if tsText == "" {
		return fmt.Errorf("%w: no %s header", ErrSignatureMissing, HeaderTimestamp)
	}
	unix, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not Unix seconds", ErrSignatureMissing, HeaderTimestamp, tsText)
	}
	var sigs [][]byte
	for _, v := range header.Values(HeaderSignature) {
		for part := range strings.SplitSeq(v, ",") {
			part = strings.TrimSpace(part)
			hexSig, ok := strings.CutPrefix(part, signatureScheme)
			if !ok {
				continue // another scheme: not ours to judge
			}
			sig, err := hex.DecodeString(hexSig)
			if err != nil || len(sig) != sha256.Size {
				continue
			}
			sigs = append(sigs, sig)
		}
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: no %s value in %s", ErrSignatureMissing, signatureScheme, HeaderSignature)
	}
	keys := 0
	matched := false
	for _, secret := range secrets {
		if len(secret) == 0 {
			continue
		}
		keys++
		want := mac(secret, unix, body)
		for _, sig := range sigs {
			// No early exit: the time taken does not tell which secret or
			// which value matched.
			if hmac.Equal(want, sig) {
				matched = true
			}
		}
	}
	if keys == 0 {
		return fmt.Errorf("%w: no secret to verify with", ErrSignatureMissing)
	}
	if !matched {
		return ErrSignatureMismatch
	}
	age := now.Sub(time.Unix(unix, 0))
	if age > tolerance || age < -tolerance {
		return fmt.Errorf("%w: signed at %s, %s from now", ErrTimestampOutOfRange,
			time.Unix(unix, 0).UTC().Format(time.RFC3339), age.Round(time.Second))
	}
	return nil
}

// VerifyRequest reads r's body, at most maxBody bytes (DefaultMaxCallbackBody
// when 0), and verifies it with VerifySignature against the current time and
// DefaultTolerance. It returns the body only when the signature holds; the
// caller must still de-duplicate on the event ID.
func VerifyRequest(r *http.Request, secrets [][]byte, maxBody int64) ([]byte, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxCallbackBody
	}
	if r.Body == nil {
		return nil, fmt.Errorf("%w: request has no body", ErrSignatureMissing)
	}
	// Read one byte past the cap to tell "exactly maxBody" from "more".
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading callback body: %w", err)
	}
	if int64(len(body)) > maxBody {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, maxBody)
	}
	if err := VerifySignature(secrets, r.Header, body, time.Now(), 0); err != nil {
		return nil, err
	}
	return body, nil
}
