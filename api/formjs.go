package api

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
)

// The sign-up helper script and its demo page, served without a key: the
// script is public by design, and the demo calls /validate with the
// publishable key given as ?key= (or none, for an API run with --no-auth).

//go:embed form/form.js form/demo.html form/demo.css
var formFiles embed.FS

var demoPage = template.Must(template.ParseFS(formFiles, "form/demo.html"))

func (s *Server) getFormJS(w http.ResponseWriter, r *http.Request) {
	b, _ := formFiles.ReadFile("form/form.js")
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("X-Content-Type-Options", "nosniff")
	// Any page may load the script; it sends nothing but what its page asks.
	h.Set("Access-Control-Allow-Origin", "*")
	_, _ = w.Write(b)
}

func (s *Server) getSignupDemo(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if key != "" && !validKeyID(key) {
		writeFieldError(w, http.StatusBadRequest, codeInvalidField, "key", "key: want a publishable key id")
		return
	}
	var buf bytes.Buffer
	if err := demoPage.Execute(&buf, struct{ Key string }{key}); err != nil {
		writeError(w, http.StatusInternalServerError, codeInternal, "demo page")
		return
	}
	setPageHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) getFormDemoCSS(w http.ResponseWriter, r *http.Request) {
	b, _ := formFiles.ReadFile("form/demo.css")
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	_, _ = w.Write(b)
}
