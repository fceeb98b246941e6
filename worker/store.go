package worker

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/tasks"
)

// leadTTL bounds how long one attempt may hold the lead on an address: past
// it, a waiting request probes itself (a politeness cost, never a lost
// answer). It covers the slowest probe attempt (tarpits, several MX hosts).
const leadTTL = 5 * time.Minute

// followerPoll is how often a request sharing another's probe looks again
// while that probe is running.
const followerPoll = time.Second

// resultStore keeps the address cache and the "who is probing this address"
// leads in Redis, shared by every worker.
type resultStore struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    CacheTTL
}

func (s *resultStore) resultKey(addr string) string { return s.prefix + "result:{" + addr + "}" }
func (s *resultStore) leadKey(addr string) string   { return s.prefix + "lead:{" + addr + "}" }

// cached returns a recent final result for addr.
func (s *resultStore) cached(ctx context.Context, addr string) (tasks.Result, bool, error) {
	b, err := s.rdb.Get(ctx, s.resultKey(addr)).Bytes()
	if errors.Is(err, redis.Nil) {
		return tasks.Result{}, false, nil
	}
	if err != nil {
		return tasks.Result{}, false, err
	}
	var r tasks.Result
	if err := json.Unmarshal(b, &r); err != nil {
		// A corrupt entry is a miss, and is dropped.
		s.rdb.Del(ctx, s.resultKey(addr))
		return tasks.Result{}, false, nil
	}
	return r, true, nil
}

// remember caches a final result for the TTL of its verdict.
func (s *resultStore) remember(ctx context.Context, addr string, r tasks.Result) error {
	var ttl time.Duration
	switch r.Verdict {
	case tasks.VerdictValid:
		ttl = s.ttl.Valid
	case tasks.VerdictInvalid:
		ttl = s.ttl.Invalid
	case tasks.VerdictRisky:
		ttl = s.ttl.Risky
	default:
		ttl = s.ttl.Unknown
	}
	if ttl <= 0 {
		return nil
	}
	r.Metadata, r.RequestID, r.Transcript = nil, "", nil // another requester's data stays theirs
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.rdb.Set(ctx, s.resultKey(addr), b, ttl).Err()
}

// leadScript takes the lead on an address, or reports who has it and for how
// much longer, in one round trip.
var leadScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {ARGV[1], 0}
end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  return {holder, 0}
end
return {holder or '', redis.call('PTTL', KEYS[1])}
`)

// lead makes id the prober of addr if nobody is; otherwise it returns the
// leader and when to look again.
func (s *resultStore) lead(ctx context.Context, addr, id string) (string, time.Duration, error) {
	v, err := leadScript.Run(ctx, s.rdb, []string{s.leadKey(addr)}, id, leadTTL.Milliseconds()).Slice()
	if err != nil {
		return "", 0, err
	}
	holder, _ := v[0].(string)
	pttl, _ := v[1].(int64)
	if holder == "" {
		// Released between SET and GET: look again almost at once.
		return "", 50 * time.Millisecond, nil
	}
	if holder == id {
		return id, 0, nil
	}
	// While the leader waits for its own retry the lead outlives leadTTL;
	// come back when that retry is due, else poll.
	wait := time.Duration(pttl)*time.Millisecond - leadTTL
	if wait < 0 {
		wait = 0
	}
	return holder, wait + followerPoll + time.Duration(rand.Int64N(int64(followerPoll))), nil
}

var holdScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// holdLead keeps id's lead while it waits delay for its next attempt.
func (s *resultStore) holdLead(ctx context.Context, addr, id string, delay time.Duration) error {
	return holdScript.Run(ctx, s.rdb, []string{s.leadKey(addr)}, id, (delay + leadTTL).Milliseconds()).Err()
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// release gives up id's lead, waking the requests that wait on it.
func (s *resultStore) release(ctx context.Context, addr, id string) error {
	return releaseScript.Run(ctx, s.rdb, []string{s.leadKey(addr)}, id).Err()
}
