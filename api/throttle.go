package api

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Default failed-authentication budgets per minute. A secret has at least
// 16 characters, so guessing is hopeless either way; the budgets keep a
// guesser from costing every API process a hash per request and from
// filling the logs. The per-key budget also holds a correct secret back
// while it is used up (otherwise the guesser would still learn when it
// hit), so a stranger who knows a key id can make that key wait out the
// minute: the price of throttling guesses at one key from many addresses.
const (
	DefaultAuthFailuresPerIP  = 20
	DefaultAuthFailuresPerKey = 20
)

// authWindow is the fixed window the failure counters count in.
const authWindow = time.Minute

// failureKeys names the counters for this window: one per client IP, one
// per key id (only ids that could be configured: others are not worth a
// Redis key each).
func (s *Server) failureKeys(r *http.Request, token string) (ipKey, idKey string, window int64) {
	window = s.now().Unix() / int64(authWindow.Seconds())
	w := ":" + strconv.FormatInt(window, 10)
	ipKey = s.cfg.Prefix + "authfail:ip:" + remoteIP(r) + w
	if id, _, ok := strings.Cut(token, ":"); ok && validKeyID(id) {
		idKey = s.cfg.Prefix + "authfail:id:" + id + w
	}
	return ipKey, idKey, window
}

// remoteIP is the connection's peer. X-Forwarded-For is not read: anyone
// can send it, and a guesser would simply vary it.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// authThrottled answers 429 with Retry-After when the client IP or the key
// id has used up its failures for this window. The counters live in Redis,
// shared by every API process; when Redis does not answer, authentication
// goes on unthrottled (the keys are checked in memory) rather than lock
// everyone out.
func (s *Server) authThrottled(w http.ResponseWriter, r *http.Request, token string) bool {
	if s.cfg.AuthFailuresPerIP < 0 && s.cfg.AuthFailuresPerKey < 0 {
		return false
	}
	ipKey, idKey, window := s.failureKeys(r, token)
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	pipe := s.rdb.Pipeline()
	ipN := pipe.Get(ctx, ipKey)
	var idN *redis.StringCmd
	if idKey != "" {
		idN = pipe.Get(ctx, idKey)
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		logger(r.Context()).Warn("auth failure counters unavailable", "err", err)
		return false
	}
	over := func(c *redis.StringCmd, limit int) bool {
		if c == nil || limit < 0 {
			return false
		}
		n, _ := c.Int()
		return n >= limit
	}
	if !over(ipN, s.cfg.AuthFailuresPerIP) && !over(idN, s.cfg.AuthFailuresPerKey) {
		return false
	}
	end := (window + 1) * int64(authWindow.Seconds())
	w.Header().Set("Retry-After", strconv.FormatInt(max(1, end-s.now().Unix()), 10))
	logger(r.Context()).Info("authentication throttled", "remote_ip", remoteIP(r))
	writeError(w, http.StatusTooManyRequests, codeAuthThrottled,
		"too many failed authentications from this address or for this key; retry after the time in Retry-After")
	return true
}

// authFailed counts one failed authentication.
func (s *Server) authFailed(r *http.Request, token string) {
	if s.cfg.AuthFailuresPerIP < 0 && s.cfg.AuthFailuresPerKey < 0 {
		return
	}
	ipKey, idKey, _ := s.failureKeys(r, token)
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	pipe := s.rdb.Pipeline()
	for _, k := range []string{ipKey, idKey} {
		if k != "" {
			pipe.Incr(ctx, k)
			pipe.Expire(ctx, k, 2*authWindow)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		logger(r.Context()).Warn("auth failure counters unavailable", "err", err)
	}
}
