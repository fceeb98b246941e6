package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// Publishable keys let a browser call POST /validate straight from a
// sign-up page. Such a key is no secret (it sits in the page): it is an id
// that may call /validate only, only from the origins on its allow-list
// (the browser's Origin header, which a page cannot forge), under its own
// per-minute quota and one per client IP. A script elsewhere can send any
// Origin, so the IP quota is what bounds abuse from one host; the verdicts
// it buys are what the page could learn anyway. docs/signup.md.

// Publishable maps a publishable key id to the origins it may be used from.
type Publishable map[string][]string

// ParsePublishable reads "id=origin[,origin…][;id=…]" (MXPROBE_PUBLISHABLE_KEYS),
// e.g. "pk_shop=https://shop.example,https://www.shop.example". An origin
// is scheme://host[:port] with scheme http or https and nothing after it.
func ParsePublishable(s string) (Publishable, error) {
	out := Publishable{}
	for _, e := range strings.Split(s, ";") {
		if strings.TrimSpace(e) == "" {
			continue
		}
		id, list, ok := strings.Cut(strings.TrimSpace(e), "=")
		if !ok || !validKeyID(id) {
			return nil, fmt.Errorf("publishable keys: %q: want id=origin[,origin…] with an id of 1 to 64 of A-Z a-z 0-9 _ -", e)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("publishable keys: id %q given twice", id)
		}
		var origins []string
		for _, o := range strings.Split(list, ",") {
			norm, err := normaliseOrigin(strings.TrimSpace(o))
			if err != nil {
				return nil, fmt.Errorf("publishable key %q: %w", id, err)
			}
			origins = append(origins, norm)
		}
		out[id] = origins
	}
	return out, nil
}

func normaliseOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.Contains(u.Host, "*") {
		return "", fmt.Errorf("origin %q: want http(s)://host[:port], nothing after it", o)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// DefaultPublishableIPQuota is the requests per minute one client IP may
// make with publishable keys: a person filling in a form needs a few.
const DefaultPublishableIPQuota = 30

// publishableKey returns the publishable key a request carries, if any.
func (s *Server) publishableKey(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.Contains(tok, ":") {
		return "", false
	}
	_, known := s.cfg.Publishable[strings.TrimSpace(tok)]
	return strings.TrimSpace(tok), known
}

// originAllowed reports whether origin may use key id, or any key when id
// is "" (a preflight does not carry the key).
func (s *Server) originAllowed(id, origin string) bool {
	o, err := normaliseOrigin(origin)
	if err != nil {
		return false
	}
	if id != "" {
		return slices.Contains(s.cfg.Publishable[id], o)
	}
	for _, list := range s.cfg.Publishable {
		if slices.Contains(list, o) {
			return true
		}
	}
	return false
}

// setCORS answers a cross-origin caller from an allowed origin (Fetch
// standard, CORS protocol): the origin itself, never "*", and Vary so
// caches keep answers per origin apart.
func setCORS(w http.ResponseWriter, origin string) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
}

// preflightValidate answers the browser's OPTIONS before a cross-origin
// POST /validate with an Authorization header.
func (s *Server) preflightValidate(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" || !s.originAllowed("", origin) {
		writeError(w, http.StatusForbidden, codeForbidden, "this origin is on no publishable key's allow-list")
		return
	}
	setCORS(w, origin)
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "POST")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// signupAuth admits POST /validate with a secret key (as every route) or
// with a publishable key from one of its origins, under its quotas.
func (s *Server) signupAuth(next http.Handler) http.Handler {
	secret := s.requireKey(next)
	if s.cfg.NoAuth {
		secret = next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.publishableKey(r)
		if !ok {
			secret.ServeHTTP(w, r)
			return
		}
		origin := r.Header.Get("Origin")
		if origin == "" || !s.originAllowed(id, origin) {
			writeError(w, http.StatusForbidden, codeForbidden, "publishable key "+id+" may not be used from this origin (it is for browsers on its allow-list)")
			return
		}
		setCORS(w, origin)
		setKeyID(r.Context(), id, false)
		// The IP's quota first: what it refuses must not use up the key's,
		// or one host could switch the checks off for every visitor.
		if !s.allowIP(w, r) {
			return
		}
		if !s.allow(w, r, id) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// allowIP is the per-client-IP quota of publishable keys (countInWindow).
func (s *Server) allowIP(w http.ResponseWriter, r *http.Request) bool {
	limit := s.cfg.PublishableIPQuota
	if limit <= 0 {
		return true
	}
	return s.countInWindow(w, r, "pkquota:ip:"+ipBucket(remoteIP(r)), limit,
		fmt.Sprintf("quota of %d sign-up checks per minute from this address used up", limit), nil)
}

// checkPublishable refuses publishable ids that are also secret key ids:
// the two would share a quota and an owner.
func checkPublishable(p Publishable, k *KeySet) error {
	for id := range p {
		if k != nil {
			if _, clash := k.keys[id]; clash {
				return errors.New("api: publishable key id " + id + " is also a secret key id")
			}
		}
	}
	return nil
}

// ipBucket is the client a per-IP quota counts: the address for IPv4, its
// /64 for IPv6, where one host is usually given a whole /64 and could
// otherwise change its address for each request.
func ipBucket(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Is4() || a.Is4In6() {
		return ip
	}
	p, err := a.Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}
