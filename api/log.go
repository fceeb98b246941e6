package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"time"
)

type ctxKey int

const (
	loggerKey ctxKey = iota
	infoKey
)

// reqInfo is filled in as the request goes down the chain (the auth
// middleware sets the key id) and read by the access log on the way out.
type reqInfo struct {
	keyID string
	admin bool
}

// logger returns the request's logger (with its request id), or a discard
// logger outside a request.
func logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// keyID returns the id of the API key that authenticated the request ("" for
// none).
func keyID(ctx context.Context) string {
	if ri, ok := ctx.Value(infoKey).(*reqInfo); ok {
		return ri.keyID
	}
	return ""
}

func setKeyID(ctx context.Context, id string, admin bool) {
	if ri, ok := ctx.Value(infoKey).(*reqInfo); ok {
		ri.keyID, ri.admin = id, admin
	}
}

func isAdmin(ctx context.Context) bool {
	ri, ok := ctx.Value(infoKey).(*reqInfo)
	return ok && ri.admin
}

// saneRequestID accepts a client's X-Request-Id only if it is short and
// printable ASCII: it goes into every log line, so it must not forge lines
// or flood them.
func saneRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusWriter records the status for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer (flushing).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withRequestID gives each request an id, a logger carrying it, and one
// access-log line at the end.
func (s *Server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !saneRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		log := s.log.With(slog.String("request_id", id))
		ctx := context.WithValue(r.Context(), loggerKey, log)
		ctx = context.WithValue(ctx, infoKey, &reqInfo{})
		sw := &statusWriter{ResponseWriter: w}
		start := s.now()
		next.ServeHTTP(sw, r.WithContext(ctx))
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		level := slog.LevelInfo
		if sw.status >= 500 {
			level = slog.LevelWarn
		}
		log.LogAttrs(ctx, level, "http request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", sw.status),
			slog.Int64("bytes", sw.bytes),
			slog.Duration("elapsed", time.Since(start)),
			slog.String("key_id", keyID(ctx)),
		)
	})
}
