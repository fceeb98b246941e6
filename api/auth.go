package api

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/tasks"
)

// KeySet holds API keys as SHA-256 digests of their secrets, by key id. A
// key is presented exactly as configured, "id:secret". (RFC 6750's b64token
// grammar has no ':'; we accept it anyway so that the configured line and
// the token are one string an operator can copy.)
//
// A key reads only the validations and batches it created; an admin key
// reads every key's and is the only kind that reaches /monitoring. An entry
// is made admin by the suffix ";admin" ("ops:secret;admin"): secrets cannot
// hold ';', so every entry written before admin keys existed keeps its
// meaning (README, "Tenancy").
type KeySet struct {
	keys   map[string][sha256.Size]byte
	admins map[string]bool
}

// adminSuffix marks an admin entry.
const adminSuffix = ";admin"

// NewKeySet returns an empty KeySet.
func NewKeySet() *KeySet {
	return &KeySet{keys: map[string][sha256.Size]byte{}, admins: map[string]bool{}}
}

// Len is the number of keys.
func (k *KeySet) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// Add adds one "id:secret" entry. Ids are [A-Za-z0-9_-]{1,64} (they appear
// in logs and Redis keys); secrets need at least 16 characters.
func (k *KeySet) Add(entry string) error {
	entry = strings.TrimSpace(entry)
	admin := strings.HasSuffix(entry, adminSuffix)
	entry = strings.TrimSuffix(entry, adminSuffix)
	id, secret, ok := strings.Cut(entry, ":")
	if !ok {
		return errors.New("want id:secret")
	}
	if !validKeyID(id) {
		return fmt.Errorf("key id %q: want 1 to 64 of A-Z a-z 0-9 _ -", id)
	}
	if len(secret) < 16 {
		return fmt.Errorf("key %q: secret shorter than 16 characters", id)
	}
	if strings.ContainsAny(secret, " \t\r\n,;\"\\") {
		return fmt.Errorf("key %q: secret contains white space or , ; \" \\ (the only suffix is %s)", id, adminSuffix)
	}
	if _, dup := k.keys[id]; dup {
		return fmt.Errorf("key id %q given twice", id)
	}
	k.keys[id] = sha256.Sum256([]byte(secret))
	if admin {
		k.admins[id] = true
	}
	return nil
}

// Admin reports whether id is an admin key.
func (k *KeySet) Admin(id string) bool { return k != nil && k.admins[id] }

func validKeyID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Merge adds every key of o; an id present in both is an error.
func (k *KeySet) Merge(o *KeySet) error {
	if o == nil {
		return nil
	}
	for id, d := range o.keys {
		if _, dup := k.keys[id]; dup {
			return fmt.Errorf("API key id %q given twice", id)
		}
		k.keys[id] = d
		if o.admins[id] {
			k.admins[id] = true
		}
	}
	return nil
}

// ParseKeys reads a comma-separated list of id:secret (MXPROBE_API_KEYS).
func ParseKeys(list string) (*KeySet, error) {
	k := NewKeySet()
	for _, e := range strings.Split(list, ",") {
		if strings.TrimSpace(e) == "" {
			continue
		}
		if err := k.Add(e); err != nil {
			return nil, fmt.Errorf("API keys: %w", err)
		}
	}
	return k, nil
}

// ReadKeys reads one id:secret per line; blank lines and lines starting
// with # are skipped.
func ReadKeys(r io.Reader) (*KeySet, error) {
	k := NewKeySet()
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := k.Add(line); err != nil {
			return nil, fmt.Errorf("API keys line %d: %w", n, err)
		}
	}
	return k, sc.Err()
}

// LoadKeysFile reads a key file (see ReadKeys).
func LoadKeysFile(path string) (*KeySet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadKeys(f)
}

// GenerateKey makes a fresh random key and returns it as "id:secret".
func GenerateKey() string {
	var id [4]byte
	var secret [24]byte
	_, _ = rand.Read(id[:])
	_, _ = rand.Read(secret[:])
	return fmt.Sprintf("k%x:%s", id, base64.RawURLEncoding.EncodeToString(secret[:]))
}

// dummyDigest is compared against when the key id is unknown, so that an
// unknown id and a wrong secret cost the same time.
var dummyDigest = sha256.Sum256([]byte("mxprobe: no such key"))

// check returns the key id when token is a configured key.
func (k *KeySet) check(token string) (string, bool) {
	id, secret, ok := strings.Cut(token, ":")
	want, known := k.keys[id]
	if !known {
		want = dummyDigest
	}
	got := sha256.Sum256([]byte(secret))
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	return id, ok && known && match
}

// cookieName holds the key for browsers (set by POST /login).
const cookieName = "mxprobe_key"

// requireKey admits requests carrying a configured key and counts them
// against the key's quota.
func (s *Server) requireKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, fromCookie, problem := credentials(r)
		if problem == "" {
			if s.authThrottled(w, r, token) {
				return
			}
			if id, ok := s.cfg.Keys.check(token); ok {
				if fromCookie && !sameOrigin(r) {
					// SameSite=Strict already keeps the cookie off
					// cross-site requests; this covers old browsers.
					writeError(w, http.StatusForbidden, codeForbidden, "cross-origin request with a session cookie")
					return
				}
				setKeyID(r.Context(), id, s.cfg.Keys.Admin(id))
				if !s.allow(w, r, id) {
					return
				}
				next.ServeHTTP(w, r)
				return
			}
			problem = "invalid_token"
			s.authFailed(r, token)
		}
		if r.Method == http.MethodGet && wantsHTML(r) {
			// A browser without a (valid) session goes to the login form.
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		// RFC 6750 §3: the challenge names the scheme and, for a bad
		// token, the error.
		challenge := `Bearer realm="mxprobe"`
		if problem == "invalid_token" || problem == "invalid_request" {
			challenge += `, error="` + problem + `"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		msg := map[string]string{
			"missing":         "an API key is required: Authorization: Bearer <id>:<secret>",
			"invalid_request": "malformed Authorization header: want Bearer <id>:<secret>",
			"invalid_token":   "unknown or wrong API key",
		}[problem]
		writeError(w, http.StatusUnauthorized, codeUnauthorized, msg)
	})
}

// credentials finds the key: the Authorization header wins over the cookie.
// problem is "missing", "invalid_request" or "".
func credentials(r *http.Request) (token string, fromCookie bool, problem string) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		tok = strings.TrimSpace(tok)
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || strings.ContainsAny(tok, " \t") {
			return "", false, "invalid_request"
		}
		return tok, false, ""
	}
	if c, err := r.Cookie(cookieName); err == nil && c.Value != "" {
		return c.Value, true, ""
	}
	return "", false, "missing"
}

func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// sameOrigin rejects requests whose Origin (sent by browsers on POST and on
// cross-origin fetches) names another host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// allow counts the request against the key's quota: a fixed one-minute
// window in Redis (INCR + EXPIRE), shared by every API process. A burst
// across a window edge may reach twice the quota; that is the price of one
// round trip per request. Redis down: 503, as for everything else.
func (s *Server) allow(w http.ResponseWriter, r *http.Request, id string) bool {
	if s.cfg.Quota <= 0 {
		return true
	}
	return s.countInWindow(w, r, "quota:"+id, s.cfg.Quota, fmt.Sprintf("quota of %d requests per minute used up", s.cfg.Quota),
		func(n int64) {
			w.Header().Set("X-RateLimit-Limit", strconv.Itoa(s.cfg.Quota))
			w.Header().Set("X-RateLimit-Remaining", strconv.FormatInt(max(int64(s.cfg.Quota)-n, 0), 10))
		})
}

// countInWindow counts the request in a fixed one-minute window in Redis
// (INCR + EXPIRE in one round trip, shared by every API process) under
// name, and answers 429 with Retry-After and msg past limit, 503 when
// Redis does not answer; headers (may be nil) sees the count before any
// answer is written. It reports whether to go on.
func (s *Server) countInWindow(w http.ResponseWriter, r *http.Request, name string, limit int, msg string, headers func(n int64)) bool {
	now := s.now()
	key := s.cfg.Prefix + name + ":" + strconv.FormatInt(now.Unix()/60, 10)
	pipe := s.rdb.TxPipeline()
	incr := pipe.Incr(r.Context(), key)
	pipe.Expire(r.Context(), key, 2*time.Minute)
	if _, err := pipe.Exec(r.Context()); err != nil {
		logger(r.Context()).Warn("quota counter unavailable", "err", err)
		writeUnavailable(w)
		return false
	}
	if headers != nil {
		headers(incr.Val())
	}
	if incr.Val() > int64(limit) {
		w.Header().Set("Retry-After", strconv.FormatInt(60-now.Unix()%60, 10))
		writeError(w, http.StatusTooManyRequests, codeQuotaExceeded, msg)
		return false
	}
	return true
}

// mayRead reports whether the request's key may see what owner created:
// its own things, or everything for an admin key or an API without auth.
// Things with no owner (queued without the API) are admin-only.
func (s *Server) mayRead(r *http.Request, owner string) bool {
	if s.cfg.NoAuth || isAdmin(r.Context()) {
		return true
	}
	id := keyID(r.Context())
	return id != "" && id == owner
}

// ownerOption tags a task with the request's key.
func ownerOption(r *http.Request) tasks.Option { return tasks.Owner(keyID(r.Context())) }

// adminOnly admits admin keys (and an API without auth).
func (s *Server) adminOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.cfg.NoAuth && !isAdmin(r.Context()) {
			writeError(w, http.StatusForbidden, codeForbidden, "this needs an admin API key")
			return
		}
		next(w, r)
	}
}
