package redistest

import "testing"

// StartServerArgs starts a private redis-server for this test with extra
// redis-server arguments (they override the defaults, e.g. "--requirepass",
// "pw"), stopped at cleanup. Restart after Kill keeps the arguments.
func StartServerArgs(t testing.TB, args ...string) *Server {
	t.Helper()
	s, err := start(0, args...)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

// StartServerAOF starts a private redis-server with the append-only file on
// and fsynced on every write, so that Kill followed by Restart loses nothing
// Redis acknowledged: the set-up docs/design.md ("Accepted tasks survive a
// Redis restart") asks of production.
func StartServerAOF(t testing.TB) *Server {
	t.Helper()
	return StartServerArgs(t, "--appendonly", "yes", "--appendfsync", "always")
}
