package api

import "time"

// Route is one routing-table entry, for the tests of package api_test.
type Route struct {
	Method, Pattern string
	Auth, Doc       bool
}

// Routes exposes the routing table the mux was built from.
func (s *Server) Routes() []Route {
	var out []Route
	for _, r := range s.routes() {
		out = append(out, Route{r.method, r.pattern, r.auth, r.doc})
	}
	return out
}

// OpenAPIDoc is the embedded document.
var OpenAPIDoc = openAPIDoc

// SetClock pins the Server's clock (quota and failure windows).
func (s *Server) SetClock(now func() time.Time) { s.now = now }

// IPBucket is ipBucket, for tests.
var IPBucket = ipBucket
var CSVCell = csvCell
