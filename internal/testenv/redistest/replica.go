package redistest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartReplica starts a private redis-server replicating master and waits
// until its first sync has finished, so that everything master held before
// the call is on the replica. Stopped at cleanup.
func StartReplica(t testing.TB, master *Server) *Server {
	t.Helper()
	host, port, err := net.SplitHostPort(master.Addr())
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	// The master waits 5 s by default for more replicas before a
	// diskless sync; there is only this one.
	mc := redis.NewClient(&redis.Options{Addr: master.Addr()})
	defer mc.Close()
	if err := mc.ConfigSet(context.Background(), "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s, err := start(0, "--replicaof", host, port)
	if err != nil {
		t.Fatalf("redistest: replica: %v", err)
	}
	t.Cleanup(s.stop)
	(&Cluster{}).waitReplicaSynced(t, s)
	return s
}

// Promote makes a replica a master (REPLICAOF NO ONE), as Sentinel does
// in a failover. The old master goes on taking writes until it is demoted
// or stopped, as it does during a graceful failover: writes it takes after
// the promotion never reach the new master.
func (s *Server) Promote(t testing.TB) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatalf("redistest: promote %s: %v", s.Addr(), err)
	}
}
