package tasks_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/tasks"
)

func signedHeader(t *testing.T, ts time.Time, body []byte, secrets ...[]byte) http.Header {
	t.Helper()
	var sigs []string
	for _, s := range secrets {
		sigs = append(sigs, tasks.Sign(s, ts, body))
	}
	h := http.Header{}
	h.Set(tasks.HeaderEventID, "evt-1")
	h.Set(tasks.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(tasks.HeaderSignature, strings.Join(sigs, ","))
	return h
}

func TestSignKnownVector(t *testing.T) {
	t.Parallel()
	// Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
	got := tasks.Sign([]byte("secret"), time.Unix(1700000000, 0), []byte(`{"a":1}`))
	want := "v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
	if got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestVerifySignature(t *testing.T) {
	t.Parallel()
	now := time.Unix(1700000000, 0)
	body := []byte(`{"id":"t1","verdict":"valid"}`)
	secret := []byte("current-secret-0123456789abcdef")
	old := []byte("previous-secret-0123456789abcde")
	other := []byte("someone-elses-secret-0123456789")

	tests := []struct {
		name      string
		header    func() http.Header
		body      []byte
		secrets   [][]byte
		tolerance time.Duration
		wantErr   error
	}{
		{
			name:    "valid",
			header:  func() http.Header { return signedHeader(t, now, body, secret) },
			secrets: [][]byte{secret},
		},
		{
			name:    "receiver holds old and new secret, sender still on old",
			header:  func() http.Header { return signedHeader(t, now, body, old) },
			secrets: [][]byte{secret, old},
		},
		{
			name:    "sender signs with new and old, receiver only knows old",
			header:  func() http.Header { return signedHeader(t, now, body, secret, old) },
			secrets: [][]byte{old},
		},
		{
			name:    "wrong secret",
			header:  func() http.Header { return signedHeader(t, now, body, other) },
			secrets: [][]byte{secret},
			wantErr: tasks.ErrSignatureMismatch,
		},
		{
			name:    "tampered body",
			header:  func() http.Header { return signedHeader(t, now, body, secret) },
			body:    bytes.Replace(body, []byte("valid"), []byte("invalid"), 1),
			secrets: [][]byte{secret},
			wantErr: tasks.ErrSignatureMismatch,
		},
		{
			name: "timestamp changed after signing",
			header: func() http.Header {
				h := signedHeader(t, now.Add(-time.Hour), body, secret)
				h.Set(tasks.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
				return h
			},
			secrets: [][]byte{secret},
			wantErr: tasks.ErrSignatureMismatch,
		},
		{
			name:    "old timestamp",
			header:  func() http.Header { return signedHeader(t, now.Add(-6*time.Minute), body, secret) },
			secrets: [][]byte{secret},
			wantErr: tasks.ErrTimestampOutOfRange,
		},
		{
			name:    "future timestamp beyond skew",
			header:  func() http.Header { return signedHeader(t, now.Add(6*time.Minute), body, secret) },
			secrets: [][]byte{secret},
			wantErr: tasks.ErrTimestampOutOfRange,
		},
		{
			name:    "just inside default tolerance",
			header:  func() http.Header { return signedHeader(t, now.Add(-5*time.Minute), body, secret) },
			secrets: [][]byte{secret},
		},
		{
			name:      "custom tolerance",
			header:    func() http.Header { return signedHeader(t, now.Add(-2*time.Second), body, secret) },
			secrets:   [][]byte{secret},
			tolerance: time.Second,
			wantErr:   tasks.ErrTimestampOutOfRange,
		},
		{
			name: "unknown scheme next to v1 is ignored",
			header: func() http.Header {
				h := signedHeader(t, now, body, secret)
				h.Set(tasks.HeaderSignature, "v2=abcdef, "+h.Get(tasks.HeaderSignature))
				return h
			},
			secrets: [][]byte{secret},
		},
		{
			name: "no signature header",
			header: func() http.Header {
				h := signedHeader(t, now, body, secret)
				h.Del(tasks.HeaderSignature)
				return h
			},
			secrets: [][]byte{secret},
			wantErr: tasks.ErrSignatureMissing,
		},
		{
			name: "no timestamp header",
			header: func() http.Header {
				h := signedHeader(t, now, body, secret)
				h.Del(tasks.HeaderTimestamp)
				return h
			},
			secrets: [][]byte{secret},
			wantErr: tasks.ErrSignatureMissing,
		},
		{
			name: "timestamp not a number",
			header: func() http.Header {
				h := signedHeader(t, now, body, secret)
				h.Set(tasks.HeaderTimestamp, "2023-11-14T22:13:20Z")
				return h
			},
			secrets: [][]byte{secret},
			wantErr: tasks.ErrSignatureMissing,
		},
		{
			name: "signature not hex",
			header: func() http.Header {
				h := signedHeader(t, now, body, secret)
				h.Set(tasks.HeaderSignature, "v1=zz")
				return h
			},
			secrets: [][]byte{secret},
			wantErr: tasks.ErrSignatureMissing,
		},
		{
			name: "truncated signature",
			header: func() http.Header {
				h := signedHeader(t, now, body, secret)
				h.Set(tasks.HeaderSignature, h.Get(tasks.HeaderSignature)[:20])
				return h
			},
			secrets: [][]byte{secret},
			wantErr: tasks.ErrSignatureMissing,
		},
		{
			name:    "no secrets",
			header:  func() http.Header { return signedHeader(t, now, body, secret) },
			wantErr: tasks.ErrSignatureMissing,
		},
		{
			name:    "empty secret does not verify an empty-key signature",
			header:  func() http.Header { return signedHeader(t, now, body, []byte{}) },
			secrets: [][]byte{{}},
			wantErr: tasks.ErrSignatureMissing,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := body
			if tt.body != nil {
				b = tt.body
			}
			err := tasks.VerifySignature(tt.secrets, tt.header(), b, now, tt.tolerance)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("VerifySignature: %v, want nil", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("VerifySignature: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestVerifyRequest(t *testing.T) {
	t.Parallel()
	secret := []byte("0123456789abcdef0123456789abcdef")
	body := []byte(`{"id":"t1"}`)

	tests := []struct {
		name     string
		body     []byte
		sign     []byte
		maxBody  int64
		wantErr  error
		wantBody bool
	}{
		{name: "valid", body: body, sign: body, wantBody: true},
		{name: "body at the cap", body: body, sign: body, maxBody: int64(len(body)), wantBody: true},
		{name: "body over the cap", body: body, sign: body, maxBody: int64(len(body)) - 1, wantErr: tasks.ErrBodyTooLarge},
		{name: "body over the default cap", body: make([]byte, tasks.DefaultMaxCallbackBody+1), sign: body, wantErr: tasks.ErrBodyTooLarge},
		{name: "tampered", body: []byte(`{"id":"t2"}`), sign: body, wantErr: tasks.ErrSignatureMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPost, "/callback", bytes.NewReader(tt.body))
			for k, v := range signedHeader(t, time.Now(), tt.sign, secret) {
				r.Header[k] = v
			}
			got, err := tasks.VerifyRequest(r, [][]byte{secret}, tt.maxBody)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("VerifyRequest: %v, want %v", err, tt.wantErr)
				}
				if got != nil {
					t.Fatalf("VerifyRequest returned a body with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("VerifyRequest: %v", err)
			}
			if tt.wantBody && !bytes.Equal(got, tt.body) {
				t.Fatalf("body = %q, want %q", got, tt.body)
			}
		})
	}
}
