package api

import (
	"crypto/sha256"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// pageCSP allows only this origin: no CDN, no inline script, no framing.
// The web page's files are all embedded, so nothing else is ever needed.
const pageCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

func setPageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// same-origin, not no-referrer: under no-referrer browsers send
	// "Origin: null" on the page's own POSTs (the Fetch standard's origin
	// serialization follows the referrer policy), and sameOrigin then
	// refuses the sign-in form and every cookie-authenticated API call.
	// same-origin still sends nothing to other sites.
	h.Set("Referrer-Policy", "same-origin")
}

// cspHash is the CSP source that admits exactly one inline block.
func cspHash(block string) string {
	sum := sha256.Sum256([]byte(block))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// serveStatic serves the embedded web page: "/" is index.html; directories
// are never listed; a missing file is a 404 in the error shape.
func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Static == nil {
		writeError(w, http.StatusNotFound, codeRouteNotFound, "no web page in this build; see /v1/openapi.json")
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" {
		name = "index.html"
	}
	st, err := fs.Stat(s.cfg.Static, name)
	if err != nil || st.IsDir() {
		writeError(w, http.StatusNotFound, codeRouteNotFound, "no such page")
		return
	}
	setPageHeaders(w.Header())
	// The page changes with the binary; revalidate rather than cache stale
	// script against a new API.
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeFileFS(w, r, s.cfg.Static, name)
}
