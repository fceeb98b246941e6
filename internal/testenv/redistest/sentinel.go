package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the master name the Sentinel harness monitors.
const SentinelMaster = "mxprobe"

// Sentinel is a private Sentinel deployment: a master, one replica and
// three sentinels with quorum 2, as the smallest production layout.
type Sentinel struct {
	Master, Replica *Server
	Sentinels       []*Server
}

// StartSentinel starts the deployment and waits until every sentinel knows
// the replica and the two other sentinels, so that both a forced failover
// (Failover) and one after a kill (down-after 1 s) can happen at once.
// Everything is stopped at cleanup.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	d := &Sentinel{Master: StartServer(t)}
	d.Replica = StartReplica(t, d.Master)
	_, masterPort, _ := strings.Cut(d.Master.Addr(), ":")
	var known []<-chan struct{}
	for range 3 {
		dir, err := os.MkdirTemp("", "redistest-sentinel-")
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]s 2\n"+
			"sentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 10000\n"+
			"sentinel parallel-syncs %[1]s 1\n", SentinelMaster, masterPort)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s := &Server{port: port, dir: dir, sentinelConf: conf}
		// Registered before launch: the replica is found within a second.
		known = append(known, s.waitLog("+slave slave"))
		if err := s.launch(); err != nil {
			_ = os.RemoveAll(dir)
			t.Fatalf("redistest: sentinel: %v", err)
		}
		t.Cleanup(s.stop)
		d.Sentinels = append(d.Sentinels, s)
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	for i, ch := range known {
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("redistest: sentinel %d never found the replica", i)
		}
	}
	// Sentinels find each other through hello messages on the master
	// (every 2 s); a failover after a kill needs the quorum.
	for deadline := time.Now().Add(startTimeout); ; time.Sleep(100 * time.Millisecond) {
		ok := true
		for _, s := range d.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
			others, err := c.Sentinels(context.Background(), SentinelMaster).Result()
			_ = c.Close()
			if err != nil || len(others) < 2 {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("redistest: the sentinels never found each other")
		}
	}
	return d
}

// Addrs lists the sentinels' addresses.
func (d *Sentinel) Addrs() []string {
	var out []string
	for _, s := range d.Sentinels {
		out = append(out, s.Addr())
	}
	return out
}

// Switched returns a channel closed when the first sentinel announces a
// new master (+switch-master); register before causing the failover.
func (d *Sentinel) Switched() <-chan struct{} {
	return d.Sentinels[0].waitLog("+switch-master")
}

// Failover asks a sentinel for a graceful failover (SENTINEL FAILOVER):
// the replica is promoted and the old master demoted, without a kill.
func (d *Sentinel) Failover(t testing.TB) {
	t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: d.Sentinels[0].Addr()})
	defer c.Close()
	if err := c.Failover(context.Background(), SentinelMaster).Err(); err != nil {
		t.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}
}

// FailoverClient returns a Sentinel-aware client of the deployment, closed
// at cleanup.
func (d *Sentinel) FailoverClient(t testing.TB, opt *redis.FailoverOptions) *redis.Client {
	t.Helper()
	o := redis.FailoverOptions{}
	if opt != nil {
		o = *opt
	}
	o.MasterName, o.SentinelAddrs = SentinelMaster, d.Addrs()
	c := redis.NewFailoverClient(&o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}
