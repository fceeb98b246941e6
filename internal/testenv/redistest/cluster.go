package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a private multi-node Redis Cluster: Masters[i] owns an equal
// share of the slots and Replicas[i] replicates it.
type Cluster struct {
	Masters, Replicas []*Server
	buses             map[*Server]int
}

// StartClusterN starts masters masters, each with one replica, joined into
// one cluster (CLUSTER MEET with the cluster-bus ports, ADDSLOTSRANGE,
// CLUSTER REPLICATE: no redis-cli needed), and waits until every node
// reports the cluster ok. nodeTimeout is cluster-node-timeout: how long a
// master may be unreachable before its replica is promoted. Every node is
// stopped at cleanup.
func StartClusterN(t testing.TB, masters int, nodeTimeout time.Duration) *Cluster {
	t.Helper()
	c := &Cluster{buses: map[*Server]int{}}
	var all []*Server
	for i := range 2 * masters {
		bus, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s, err := start(0, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10))
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		t.Cleanup(s.stop)
		c.buses[s] = bus
		all = append(all, s)
		if i < masters {
			c.Masters = append(c.Masters, s)
		} else {
			c.Replicas = append(c.Replicas, s)
		}
	}
	ctx := context.Background()
	oks := make([]<-chan struct{}, len(all))
	for i, s := range all {
		oks[i] = s.waitLog("cluster state changed: ok")
	}
	first := redis.NewClient(&redis.Options{Addr: all[0].Addr()})
	defer first.Close()
	for _, s := range all[1:] {
		if err := first.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", s.port, c.buses[s]).Err(); err != nil {
			t.Fatalf("redistest: CLUSTER MEET: %v", err)
		}
	}
	per := 16384 / masters
	for i, m := range c.Masters {
		lo, hi := i*per, (i+1)*per-1
		if i == masters-1 {
			hi = 16383
		}
		mc := redis.NewClient(&redis.Options{Addr: m.Addr()})
		err := mc.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err()
		mc.Close()
		if err != nil {
			t.Fatalf("redistest: ADDSLOTSRANGE: %v", err)
		}
	}
	for i, r := range c.Replicas {
		id := c.nodeID(t, c.Masters[i])
		rc := redis.NewClient(&redis.Options{Addr: r.Addr()})
		var err error
		for deadline := time.Now().Add(startTimeout); ; {
			// The replica must first learn of its master through gossip.
			if err = rc.Do(ctx, "CLUSTER", "REPLICATE", id).Err(); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		rc.Close()
		if err != nil {
			t.Fatalf("redistest: CLUSTER REPLICATE: %v", err)
		}
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	for i, ok := range oks {
		select {
		case <-ok:
		case <-timer.C:
			t.Fatalf("redistest: node %s: cluster state did not become ok", all[i].Addr())
		}
	}
	for _, r := range c.Replicas {
		c.waitReplicaSynced(t, r)
	}
	return c
}

func (c *Cluster) nodeID(t testing.TB, s *Server) string {
	t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer cl.Close()
	id, err := cl.Do(context.Background(), "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatalf("redistest: CLUSTER MYID: %v", err)
	}
	return id
}

// waitReplicaSynced waits until r reports its link to the master up.
func (c *Cluster) waitReplicaSynced(t testing.TB, r *Server) {
	t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer cl.Close()
	for deadline := time.Now().Add(startTimeout); ; {
		info, err := cl.Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: replica %s never synced: %v\n%s", r.Addr(), err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addrs lists every node's address.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, s := range append(append([]*Server(nil), c.Masters...), c.Replicas...) {
		out = append(out, s.Addr())
	}
	return out
}

// PromotedAfter returns a channel closed when replica i logs that it won
// its failover election (it is now a master); register before the kill.
func (c *Cluster) PromotedAfter(i int) <-chan struct{} {
	return c.Replicas[i].waitLog("failover election won")
}

func (c *Cluster) String() string { return fmt.Sprintf("cluster %v", c.Addrs()) }
