package api

import (
	"encoding/json"
	"html/template"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// sessionMaxAge bounds how long a browser keeps the key cookie.
const sessionMaxAge = 12 * time.Hour

// loginStyle is the login page's only style, admitted by its CSP hash.
const loginStyle = `body{font:16px/1.5 system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}
label,input,button{display:block;width:100%;box-sizing:border-box;font:inherit}
input{padding:.5rem;margin:.25rem 0 1rem}button{padding:.5rem}.err{color:#a00}`

var loginCSP = strings.Replace(pageCSP, "style-src 'self'", "style-src 'self' "+cspHash(loginStyle), 1)

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mxprobe — sign in</title>
<style>{{.Style}}</style>
</head><body><main>
<h1>mxprobe</h1>
{{if .Error}}<p class="err" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="/login">
<label for="key">API key (id:secret)</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{{.Next}}">
<button type="submit">Sign in</button>
</form></main></body></html>
`))

func (s *Server) getLogin(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, http.StatusOK, localPath(r.URL.Query().Get("next")), "")
}

func (s *Server) renderLogin(w http.ResponseWriter, status int, next, msg string) {
	setPageHeaders(w.Header())
	w.Header().Set("Content-Security-Policy", loginCSP)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = loginPage.Execute(w, struct {
		Next, Error string
		Style       template.CSS
	}{next, msg, template.CSS(loginStyle)})
}

// postLogin takes the key from a form (field "key", "next") or a JSON body
// {"key": …}, and on success sets the session cookie: HttpOnly so scripts
// cannot read it, SameSite=Strict so no other site's request carries it,
// Secure when the request came over TLS.
func (s *Server) postLogin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		// Login CSRF: another site must not sign a browser into its key.
		writeError(w, http.StatusForbidden, codeForbidden, "cross-origin login refused")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var key, next string
	isJSON := mt == "application/json"
	switch {
	case isJSON:
		var body struct {
			Key string `json:"key"`
		}
		if !decodeJSON(w, r, &body) {
			return
		}
		key = body.Key
	case mt == "application/x-www-form-urlencoded" || mt == "multipart/form-data":
		if err := r.ParseForm(); err != nil {
			writeError(w, http.StatusBadRequest, codeBadRequest, "unreadable form")
			return
		}
		key, next = r.PostForm.Get("key"), localPath(r.PostForm.Get("next"))
	default:
		writeError(w, http.StatusUnsupportedMediaType, codeUnsupportedMedia, "send a form or application/json")
		return
	}
	key = strings.TrimSpace(key)
	if !s.cfg.NoAuth {
		if s.authThrottled(w, r, key) {
			return
		}
		if _, ok := s.cfg.Keys.check(key); !ok {
			s.authFailed(r, key)
			logger(r.Context()).Info("login refused")
			if isJSON {
				writeFieldError(w, http.StatusUnauthorized, codeUnauthorized, "key", "unknown or wrong API key")
				return
			}
			s.renderLogin(w, http.StatusUnauthorized, next, "Unknown or wrong API key.")
			return
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: key, Path: "/",
		MaxAge: int(sessionMaxAge.Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https",
	})
	if isJSON {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if next == "" {
		next = "/"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) postLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	if wantsHTML(r) {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// localPath keeps a post-login redirect on this site: an absolute path of
// printable ASCII, never "//host", a scheme or a backslash (open redirect).
// Browsers drop tab, CR and LF inside URLs and read '\\' as '/' (WHATWG
// URL), so "/\t/host" and "/\\host" would leave the site; anything else
// outside printable ASCII is refused rather than reasoned about.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return ""
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return ""
		}
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || strings.HasPrefix(u.Path, "//") {
		return ""
	}
	return p
}

// decodeJSON reads one JSON object strictly: size-capped by the caller's
// MaxBytesReader, unknown fields refused, nothing after it.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		writeError(w, http.StatusBadRequest, codeMalformedJSON, "trailing data after the JSON object")
		return false
	}
	if err != nil {
		writeDecodeError(w, err)
		return false
	}
	return true
}
