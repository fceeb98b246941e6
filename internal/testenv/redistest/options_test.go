package redistest

import (
	"context"
	"testing"
)

func TestAOFSurvivesKill(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		start    func(testing.TB) *Server
		wantKept bool
	}{
		{name: "append-only file on", start: StartServerAOF, wantKept: true},
		{name: "persistence off (default)", start: StartServer, wantKept: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := tt.start(t)
			ctx := context.Background()
			c := s.Client(t)
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			s.Kill(t)
			s.Restart(t)
			got, err := s.Client(t).Get(ctx, "k").Result()
			if kept := err == nil && got == "v"; kept != tt.wantKept {
				t.Errorf("after kill and restart: %q, %v; want kept = %v", got, err, tt.wantKept)
			}
		})
	}
}

func TestStartServerArgsPassword(t *testing.T) {
	t.Parallel()
	s := StartServerArgs(t, "--requirepass", "pw")
	if err := s.Client(t).Ping(context.Background()).Err(); err == nil {
		t.Error("PING without the password succeeded")
	}
}
