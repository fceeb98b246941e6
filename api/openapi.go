package api

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is written by hand; TestOpenAPIMatchesRoutes keeps it and the
// routing table in step.
//
//go:embed openapi.json
var openAPIDoc []byte

func (s *Server) getOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(openAPIDoc)
}
