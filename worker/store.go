package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
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

// lookupScript answers an address from the result cache or, on a miss,
// takes the lead on it (or reports who has it and for how much longer): the
// cache read and the lead in one round trip, the two commonest Redis calls
// of a validation (docs/benchmarks.md, "Queue throughput"). Both keys carry
// the {address} hash tag, so the script holds in Redis Cluster too.
// ARGV[3] = '0' skips the cache (after a corrupt entry was dropped).
var lookupScript = redis.NewScript(`
if ARGV[3] == '1' then
  local hit = redis.call('GET', KEYS[1])
  if hit then
    return {'hit', hit}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'lead', ARGV[1], 0}
end
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
  return {'lead', holder, 0}
end
return {'lead', holder or '', redis.call('PTTL', KEYS[2])}
`)

// lookup returns a recent final result for addr if there is one. Otherwise
// it makes id the prober of addr if nobody is, and returns the leader and,
// when that is another task, when to look again.
func (s *resultStore) lookup(ctx context.Context, addr, id string) (hit *tasks.Result, leader string, retryIn time.Duration, err error) {
	useCache := 1
	for {
		v, err := lookupScript.Run(ctx, s.rdb, []string{s.resultKey(addr), s.leadKey(addr)}, id, leadTTL.Milliseconds(), useCache).Slice()
		if err != nil {
			return nil, "", 0, err
		}
		if len(v) == 2 && v[0] == "hit" {
			b, _ := v[1].(string)
			var r tasks.Result
			if err := json.Unmarshal([]byte(b), &r); err == nil {
				return &r, "", 0, nil
			}
			// A corrupt entry is a miss, and is dropped.
			s.rdb.Del(ctx, s.resultKey(addr))
			useCache = 0
			continue
		}
		if len(v) != 3 {
			return nil, "", 0, fmt.Errorf("lookup script: unexpected reply %v", v)
		}
		holder, _ := v[1].(string)
		pttl, _ := v[2].(int64)
		leader, retryIn := s.leadOutcome(id, holder, pttl)
		return nil, leader, retryIn, nil
	}
}

// leadOutcome turns the lead's holder and remaining time into who leads and
// when a follower looks again.
func (s *resultStore) leadOutcome(id, holder string, pttl int64) (string, time.Duration) {
	if holder == "" {
		// Released between SET and GET: look again almost at once.
		return "", 50 * time.Millisecond
	}
	if holder == id {
		return id, 0
	}
	// While the leader waits for its own retry the lead outlives leadTTL;
	// come back when that retry is due, else poll.
	wait := time.Duration(pttl)*time.Millisecond - leadTTL
	if wait < 0 {
		wait = 0
	}
	return holder, wait + followerPoll + time.Duration(rand.Int64N(int64(followerPoll)))
}

// ttlFor is how long a final result with r's verdict is cached. A
// retryable one (greylisted, timed out…) is not cached at all: it became
// final only because its own request ran out of time or retries, and a
// later request with its own budget must ask again, not inherit that.
func (s *resultStore) ttlFor(r tasks.Result) time.Duration {
	if r.Retryable {
		return 0
	}
	if r.Flags.CatchAllState == string(validator.CatchAllUnknown) {
		// The catch-all test proved nothing: a "valid" that may be a
		// catch-all domain's is kept only as long as an unknown, so the
		// next request soon tests again (docs/reliability.md).
		return s.ttl.Unknown
	}
	switch r.Verdict {
	case tasks.VerdictValid:
		return s.ttl.Valid
	case tasks.VerdictInvalid:
		return s.ttl.Invalid
	case tasks.VerdictRisky:
		return s.ttl.Risky
	default:
		return s.ttl.Unknown
	}
}

// settleScript caches a final result (ARGV[2] = TTL in ms, '0' = do not)
// and gives up the lead if ARGV[3] still holds it (empty: holds none), in one
// round trip. The cache is written first, so a request that finds the lead
// free finds the answer too.
var settleScript = redis.NewScript(`
if ARGV[2] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 0
`)

// settle caches a final result for the TTL of its verdict and, when leader
// is not empty, releases leader's lead on addr, waking the requests that
// wait on it. encoded, if not nil, is json.Marshal(r): reused when r holds
// nothing of its requester's, to spare a second encoding per validation.
//
// When task is not zero, the task's own result (task.data) is written to
// asynq in the same round trip (a pipeline: the keys live in different
// hash slots, so not in the script), instead of a separate ResultWriter
// call: one Redis round trip fewer per validation.
func (s *resultStore) settle(ctx context.Context, addr, leader string, r tasks.Result, encoded []byte, task taskResult) error {
	ttl := s.ttlFor(r)
	if ttl < time.Millisecond {
		ttl = 0
	}
	if ttl == 0 && leader == "" {
		if task.key == "" {
			return nil
		}
		return storeFinal(ctx, s.rdb, task)
	}
	b := encoded
	if b == nil || len(r.Metadata) > 0 || r.RequestID != "" || len(r.Transcript) > 0 {
		// Another requester's data stays theirs. (All three are omitempty,
		// so without them the encoding is the same.)
		r.Metadata, r.RequestID, r.Transcript = nil, "", nil
		var err error
		if b, err = json.Marshal(r); err != nil {
			return err
		}
	}
	keys := []string{s.resultKey(addr), s.leadKey(addr)}
	if task.key == "" {
		return settleScript.Run(ctx, s.rdb, keys, b, ttl.Milliseconds(), leader).Err()
	}
	// EVAL, not EVALSHA: after a NOSCRIPT (a fresh or restarted Redis) the
	// script would run after the HSET and the announcement, and a woken
	// Wait could find the lead still held. The body is a few hundred bytes.
	pipe := s.rdb.Pipeline()
	settled := settleScript.Eval(ctx, pipe, keys, b, ttl.Milliseconds(), leader)
	written := pipe.HSet(ctx, task.key, "result", task.data)
	execAndAnnounce(ctx, s.rdb, pipe, task.id)
	if err := written.Err(); err != nil {
		return fmt.Errorf("writing the task result: %w", err)
	}
	return settled.Err()
}

// taskResult is an asynq task's final result, to be written by settle.
type taskResult struct {
	key  string // the task's hash; "" = none to write
	id   string // the task id, announced on tasks.DoneChannel
	data []byte
}

// storeFinal writes a task's final result where asynq keeps it and
// announces it on tasks.DoneChannel, in one round trip, so a producer's
// Wait answers at once instead of at its next poll.
func storeFinal(ctx context.Context, rdb redis.UniversalClient, task taskResult) error {
	pipe := rdb.Pipeline()
	written := pipe.HSet(ctx, task.key, "result", task.data)
	execAndAnnounce(ctx, rdb, pipe, task.id)
	if err := written.Err(); err != nil {
		return fmt.Errorf("writing the task result: %w", err)
	}
	return nil
}

// storeFinalFor bounds how long a decided verdict waits for Redis to take
// it: well inside asynq's task lease (30 s), which the heartbeater stops
// extending while Redis is away.
const storeFinalFor = 15 * time.Second

// storeFinalRetrying is storeFinal retried (exponential from 100 ms to 2 s,
// jittered) for storeFinalFor or until ctx ends. A handler that ends during
// or just after a Redis outage would otherwise return an error asynq cannot
// record either: its own retry of that write runs under a context already
// cancelled, so the task would stay active until the recoverer finds its
// lease expired, a minute or two later. Just after Redis comes back, the
// client also answers with the last dial error for up to a second.
func storeFinalRetrying(ctx context.Context, rdb redis.UniversalClient, task taskResult) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.RandomizationFactor = 100*time.Millisecond, 2*time.Second, 0.5
	b.MaxElapsedTime = storeFinalFor
	return backoff.Retry(func() error {
		err := storeFinal(ctx, rdb, task)
		if h := onStoreFinal.Load(); h != nil {
			(*h)(task.id, err)
		}
		return err
	}, backoff.WithContext(b, ctx))
}

// onStoreFinal, when set (by tests), sees each attempt of storeFinalRetrying.
var onStoreFinal atomic.Pointer[func(taskID string, err error)]

// execAndAnnounce runs pipe and publishes id on tasks.DoneChannel after its
// writes, so a woken Wait finds the result. On one Redis the PUBLISH ends
// the pipeline (commands run in order: no extra round trip). On a Cluster,
// go-redis runs each node's share of a pipeline concurrently and the
// keyless PUBLISH may reach its node first, so it follows the pipeline.
// A lost announcement only leaves a waiter to its next poll.
func execAndAnnounce(ctx context.Context, rdb redis.UniversalClient, pipe redis.Pipeliner, id string) {
	if _, cluster := rdb.(*redis.ClusterClient); cluster {
		_, _ = pipe.Exec(ctx)
		rdb.Publish(ctx, tasks.DoneChannel, id)
		return
	}
	pipe.Publish(ctx, tasks.DoneChannel, id)
	_, _ = pipe.Exec(ctx)
}

// asynqTaskKey is the hash where asynq keeps a task, whose "result" field
// holds what a ResultWriter wrote (asynq v0.26: internal/base.TaskKey and
// rdb.WriteResult, an HSET of that field). Writing it ourselves lets settle
// pipeline it with the result cache; TestSettleWritesTheAsynqResult reads it
// back through asynq's Inspector, so a change of asynq's layout fails there.
func asynqTaskKey(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

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

// release gives up id's lead on addr without caching anything, waking the
// requests that wait on it (used when no server was asked).
func (s *resultStore) release(ctx context.Context, addr, id string) error {
	return releaseScript.Run(ctx, s.rdb, []string{s.leadKey(addr)}, id).Err()
}
