package ratelimit

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// What the limiter promises across a Redis failover (docs/reliability.md,
// "Redis failover and the session cap"):
//
// A Sentinel or Cluster failover can lose the last writes the old master
// took: with asynchronous replication a crash loses what had not reached
// the replica, and during a graceful failover the old master keeps taking
// writes until it is demoted, and drops them then. Session leases are such
// writes; a lost lease makes the new master undercount an MX host's open
// sessions and admit one too many.
//
// Two mechanisms together keep the cap:
//
//   - Every limiter script reads the pair's fence (fenceLua). When the
//     master's replication id differs from the one recorded there, the
//     keys are on a new master, and for Config.FailoverSettle no session is
//     admitted for the pair (ReasonFailover).
//   - Each Limiter's keeper puts the leases its process still holds back
//     every Config.LeaseKeepEvery where they are missing, with the expiry
//     the holder knows (keepScript).
//
// The settle time is at least twice the keep interval, so a holder whose
// client reaches the new master within the settle time has put its leases
// back before anyone is admitted. The cap can still be exceeded by a holder
// cut off from the new master for longer than that; the rate bucket, also
// lost in a failover, can let up to Burst sessions more through once the
// settle time ends. Both are documented rather than prevented: preventing
// them would mean waiting out a whole lease TTL (minutes) after each
// failover.

// hold registers a granted lease with the keeper and starts it if needed.
func (l *Limiter) hold(le *Lease) {
	l.liveMu.Lock()
	defer l.liveMu.Unlock()
	if l.live == nil {
		l.live = map[*Lease]struct{}{}
	}
	l.live[le] = struct{}{}
	if !l.keeping {
		l.keeping = true
		go l.keep()
	}
}

// forget stops the keeper putting le back. It returns once no keeper pass
// that may still write le is running, so the caller's ZREM comes after it.
func (l *Limiter) forget(le *Lease) {
	le.released.Store(true)
	l.liveMu.Lock()
	delete(l.live, le)
	l.liveMu.Unlock()
	l.passMu.RLock()
	//lint:ignore SA2001 an empty critical section: waiting for a running pass is the point
	l.passMu.RUnlock()
}

// keep runs while the process holds leases: one pass per LeaseKeepEvery.
func (l *Limiter) keep() {
	t := time.NewTicker(l.cfg.LeaseKeepEvery)
	defer t.Stop()
	for range t.C {
		if !l.keepPass() {
			return
		}
	}
}

// keepPass makes one pass: one script per MX host with live leases, in one
// pipeline (go-redis splits it per Cluster node). It reports whether the
// keeper should go on.
func (l *Limiter) keepPass() bool {
	l.passMu.Lock()
	defer l.passMu.Unlock()
	type hostLeases struct {
		ses, fence string
		args       []any
	}
	byKey := map[string]*hostLeases{}
	l.liveMu.Lock()
	if len(l.live) == 0 {
		l.keeping = false
		l.liveMu.Unlock()
		return false
	}
	for le := range l.live {
		if le.released.Load() {
			continue
		}
		if now := time.Now().UnixMicro() + l.offset.Load(); now > le.exp.Load()+l.cfg.LeaseTTL.Microseconds() {
			// Expired a TTL ago (by this host's clock, which may differ
			// from Redis's by less than that) without Release: its holder
			// gave up on it. Nothing to keep.
			delete(l.live, le)
			continue
		}
		h := byKey[le.key]
		if h == nil {
			h = &hostLeases{ses: le.key, fence: le.fence, args: []any{l.offset.Load(), l.cfg.FailoverSettle.Microseconds()}}
			byKey[le.key] = h
		}
		h.args = append(h.args, le.ID, le.exp.Load())
	}
	l.liveMu.Unlock()
	if len(byKey) == 0 {
		return true
	}

	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.LeaseKeepEvery)
	defer cancel()
	run := func(p redis.Pipeliner, eval bool) []*redis.Cmd {
		cmds := make([]*redis.Cmd, 0, len(byKey))
		for _, h := range byKey {
			keys := []string{h.ses, h.fence}
			if eval {
				cmds = append(cmds, keepScript.Eval(ctx, p, keys, h.args...))
			} else {
				cmds = append(cmds, keepScript.EvalSha(ctx, p, keys, h.args...))
			}
		}
		return cmds
	}
	var cmds []*redis.Cmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { cmds = run(p, false); return nil })
	if err != nil && strings.Contains(err.Error(), "NOSCRIPT") {
		// A new master (or a restarted one) has no scripts cached.
		_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { cmds = run(p, true); return nil })
	}
	back := 0
	for _, c := range cmds {
		if n, cerr := c.Int(); cerr == nil {
			back += n
		}
	}
	if back > 0 {
		l.cfg.Metrics.LeasesRestored(back)
	}
	if l.onKeep != nil {
		l.onKeep(back, err)
	}
	return true
}
