package worker

// Sessions make the SMTP session, not the task, the unit of politeness
// across the fleet (docs/design.md, "Sessions across workers").
//
// Every address stays its own asynq task: its own result, callback, dedupe
// and retry schedule, and the worker that runs it still owns it. What moves
// is only the SMTP conversation. A worker that holds a session to an MX host
// (admitted by the Gate, in use or parked for reuse) advertises it in Redis;
// a worker whose next address goes to that host hands the address to the
// holder over Redis pub/sub and waits for the probe's result, instead of
// opening a session of its own or being denied one. The holder asks the
// handed addresses on its session one after another, within the session's
// bounds (recipients, refusals, age), and opens the next session through the
// Gate when the bounds end one while addresses still wait.
//
// When a provider's bucket is empty, the first denied task reserves the
// next slot (ratelimit) and marks it for its MX host; later tasks for that
// host reserve nothing and come back just after that slot, when the
// session it opens can take them. A token is so spent only when a session
// is opened.
//
// Why not asynq's task aggregation (Group, GroupAggregator, grace period,
// max size, max delay)? It merges the grouped tasks into one new task and
// deletes the originals: the task ids that producers hold, the per-task
// results, callbacks, deadlines and retry schedules would all have to be
// rebuilt around an aggregate, and a greylisted address inside a batch would
// retry with the batch or be split out again by hand. Its grace period also
// delays every first address of a domain (a sign-up form) by the grace,
// while hand-off costs nothing when no session is open: one MGET, then the
// task probes as before. Grouping needs the MX host, which producers do not
// know; the worker resolves it (cached) before grouping, so an MX change
// mid-flight never sends an address to the wrong host.
//
// Failure: the waiting worker keeps its task. An answer is published and
// also kept in Redis, where the waiter looks every LookEvery; when Redis
// refuses both (its master died), the holder keeps trying to store it for
// a minute, so the waiter has it seconds after a failover. If the holder
// dies, the waiter's attempt times out and the task retries like any
// timed-out probe; nothing is lost, at worst probed twice.
// A holder's advertisement is removed when its last session to the host
// closes and expires with the session lease otherwise; a hand-off to a
// holder that no longer listens reaches no subscriber and the waiter probes
// itself at once.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/validator"
)

// SessionsConfig configures session sharing. Zero values take defaults.
type SessionsConfig struct {
	// Prefix of the Redis keys and channels; default "mxprobe:".
	Prefix string
	// Egress is the identity sessions leave from, as the Gate's: only
	// workers with the same egress share sessions, so a greylisted address
	// retries from the IP it was first asked from, and reservations are
	// the same budget's. Default "default".
	Egress string
	// QueueCap bounds the addresses waiting at one holder for one MX host;
	// more are declined and probe themselves. Default 10 (--session-rcpts).
	QueueCap int
	// HoldTTL bounds an advertisement whose worker died; default 5 min,
	// beyond a session's MaxAge, so a live session's never lapses (each new
	// session sets it again).
	HoldTTL time.Duration
	// AwaitParked bounds how long a handed address waits for the holder's
	// busy session before the holder asks it on a new one; default 15 s.
	AwaitParked time.Duration
	// AckTimeout is how long a waiter waits for a holder in another process
	// to confirm it queued the address; without confirmation the holder is
	// taken for hung, its advertisement withdrawn, and the waiter probes
	// itself. Default 5 s.
	AckTimeout time.Duration
	// MinLeft: a handed address with less time than this before its
	// deadline when its turn comes is declined, and its waiter probes it
	// itself; default 10 s.
	MinLeft time.Duration
	// LookEvery is how often a waiter looks for a kept answer, in case the
	// holder's message was lost (pub/sub is at most once); default 2 s.
	LookEvery time.Duration
	// JoinDelay is how long after a reserved slot the tasks that reserved
	// nothing come back to join the session it opens; default 1 s.
	JoinDelay time.Duration
	// BusyRetry is how soon a task comes back when the host's open session
	// (held elsewhere) is full and no other may open; default 2 s.
	BusyRetry time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// OnWait, when set, is told of each hand-off when its answer comes:
	// the provider group, how long it waited, and whether the holder took
	// it (false: declined, lost or timed out).
	OnWait func(provider string, waited time.Duration, joined bool)
	// OnWaiting, when set, is told of the number of addresses of a provider
	// waiting in this process for another session, each time it changes.
	OnWaiting func(provider string, n int)
}

// Sessions shares SMTP sessions between workers; see the file comment.
type Sessions struct {
	rdb redis.UniversalClient
	cfg SessionsConfig
	id  string
	log *slog.Logger

	v     SessionValidator
	group func(string) string

	mu      sync.Mutex
	held    map[string]int               // MX host → sessions this process holds
	queues  map[string][]handoffJob      // MX host → addresses handed to us
	running map[string]bool              // MX host → drain goroutine running
	waits   map[string]chan handoffReply // job id → its waiter
	waiting map[string]int               // provider → waiters in this process
	ps      *redis.PubSub
	life    context.Context // ends at shutdown: bounds the waits of drains
	stop    context.CancelFunc
	bg      sync.WaitGroup
}

// NewSessions returns session sharing on rdb, not yet started: Worker.Start
// subscribes, Worker.Shutdown unsubscribes.
func NewSessions(rdb redis.UniversalClient, cfg SessionsConfig) *Sessions {
	if cfg.Prefix == "" {
		cfg.Prefix = "mxprobe:"
	}
	if cfg.Egress == "" {
		cfg.Egress = "default"
	}
	if cfg.QueueCap <= 0 {
		cfg.QueueCap = 10
	}
	if cfg.HoldTTL <= 0 {
		cfg.HoldTTL = 5 * time.Minute
	}
	if cfg.AwaitParked <= 0 {
		cfg.AwaitParked = 15 * time.Second
	}
	if cfg.MinLeft <= 0 {
		cfg.MinLeft = 10 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.BusyRetry <= 0 {
		cfg.BusyRetry = 2 * time.Second
	}
	if cfg.LookEvery <= 0 {
		cfg.LookEvery = 2 * time.Second
	}
	if cfg.JoinDelay <= 0 {
		cfg.JoinDelay = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Sessions{rdb: rdb, cfg: cfg, id: hex.EncodeToString(b[:]), log: log,
		held: map[string]int{}, queues: map[string][]handoffJob{}, running: map[string]bool{},
		waits: map[string]chan handoffReply{}, waiting: map[string]int{}}
}

// ID names this worker in advertisements and channels.
func (s *Sessions) ID() string { return s.id }

func (s *Sessions) holderKey(host string) string {
	return s.cfg.Prefix + "holder:{" + host + "}:" + s.cfg.Egress
}
func (s *Sessions) nextKey(host string) string {
	return s.cfg.Prefix + "nextsession:{" + host + "}:" + s.cfg.Egress
}
func (s *Sessions) channel(id string) string { return s.cfg.Prefix + "sessions:{" + id + "}" }

// sharded: on Redis Cluster, hand-offs use sharded pub/sub (SPUBLISH,
// Redis 7): a classic PUBLISH counts only the subscribers of the node it
// reached, so its "nobody listens" would be wrong on most nodes, and it is
// broadcast to every node.
func (s *Sessions) sharded() bool {
	_, ok := s.rdb.(*redis.ClusterClient)
	return ok
}

func (s *Sessions) publish(ctx context.Context, channel string, msg []byte) (int64, error) {
	if s.sharded() {
		return s.rdb.SPublish(ctx, channel, msg).Result()
	}
	return s.rdb.Publish(ctx, channel, msg).Result()
}

// handoffJob is one address handed to a holder.
type handoffJob struct {
	ID         string    `json:"id"`
	From       string    `json:"from"` // the waiter's Sessions id
	Host       string    `json:"host"`
	Input      string    `json:"input"`
	TaskID     string    `json:"task_id"` // reservations are kept under it
	Transcript bool      `json:"transcript,omitempty"`
	Deadline   time.Time `json:"deadline"`
	// Urgent (the critical queue: a sign-up form waits) goes ahead of the
	// addresses already queued for the session.
	Urgent bool `json:"urgent,omitempty"`
}

// handoffReply is the holder's answer.
type handoffReply struct {
	ID       string            `json:"id"`
	Accepted bool              `json:"accepted,omitempty"` // queued; the result follows
	Declined bool              `json:"declined,omitempty"`
	Result   *validator.Result `json:"result,omitempty"`
	Denied   *deniedWire       `json:"denied,omitempty"`
	Err      string            `json:"err,omitempty"`
}

// deniedWire carries a limiter denial to the waiter, which reschedules
// its task as if it had been denied itself.
type deniedWire struct {
	Reason      string        `json:"reason"`
	RetryIn     time.Duration `json:"retry_in"`
	Until       time.Time     `json:"until"`
	Reservation string        `json:"reservation,omitempty"`
	Detail      string        `json:"detail,omitempty"`
	Egress      string        `json:"egress,omitempty"`
	Group       string        `json:"group,omitempty"`
	MXHost      string        `json:"mx_host,omitempty"`
	Join        bool          `json:"join,omitempty"`
}

type message struct {
	Job   *handoffJob   `json:"job,omitempty"`
	Reply *handoffReply `json:"reply,omitempty"`
}

// SessionValidator is what session sharing needs of the validator
// (*validator.Validator): where an address's probe would go, and a way to
// wait for the session to that host to be free.
type SessionValidator interface {
	Validator
	MailHosts(ctx context.Context, input string) ([]string, bool)
	AwaitSession(ctx context.Context, host string) bool
}

var _ SessionValidator = (*validator.Validator)(nil)

// attach gives the holder side its validator; Worker.New calls it.
func (s *Sessions) attach(v SessionValidator, group func(string) string) {
	s.v, s.group = v, group
}

// start subscribes to this worker's channel; the subscription is confirmed
// before it returns, so advertisements never name a deaf worker.
func (s *Sessions) start() error {
	ctx, cancel := context.WithCancel(context.Background())
	var ps *redis.PubSub
	if s.sharded() {
		ps = s.rdb.SSubscribe(ctx, s.channel(s.id))
	} else {
		ps = s.rdb.Subscribe(ctx, s.channel(s.id))
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := ps.Receive(rctx)
	rcancel()
	if err != nil {
		cancel()
		ps.Close()
		return err
	}
	s.mu.Lock()
	s.ps, s.stop, s.life = ps, cancel, ctx
	s.mu.Unlock()
	ch := ps.Channel(redis.WithChannelSize(1024))
	s.bg.Go(func() {
		for m := range ch {
			var msg message
			if err := json.Unmarshal([]byte(m.Payload), &msg); err != nil {
				s.log.Warn("ignoring an unreadable session hand-off message", "err", err)
				continue
			}
			switch {
			case msg.Job != nil:
				s.enqueue(ctx, *msg.Job)
			case msg.Reply != nil:
				s.deliver(*msg.Reply)
			}
		}
	})
	return nil
}

// shutdown stops listening; addresses still queued here are declined so
// their waiters probe themselves, and the drains finish what they run.
func (s *Sessions) shutdown() {
	s.mu.Lock()
	ps, stop := s.ps, s.stop
	s.ps = nil
	queued := s.queues
	s.queues = map[string][]handoffJob{}
	s.mu.Unlock()
	for _, jobs := range queued {
		for _, j := range jobs {
			s.reply(context.Background(), j, handoffReply{ID: j.ID, Declined: true})
		}
	}
	if ps != nil {
		ps.Close()
		stop()
	}
	s.bg.Wait()
}

// hold records a session to host admitted in this process and advertises
// it (Gate.Admit).
func (s *Sessions) hold(ctx context.Context, host string) {
	s.mu.Lock()
	s.held[host]++
	listening := s.ps != nil
	s.mu.Unlock()
	if !listening {
		return
	}
	if err := s.rdb.Set(ctx, s.holderKey(host), s.id, s.cfg.HoldTTL).Err(); err != nil {
		s.log.Warn("advertising an SMTP session", "mx_host", host, "err", err)
	}
}

// delIfMine deletes KEYS[1] when it holds ARGV[1].
var delIfMine = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// release records the end of a session to host (admission.Done); the last
// one withdraws the advertisement.
func (s *Sessions) release(ctx context.Context, host string) {
	s.mu.Lock()
	s.held[host]--
	last := s.held[host] <= 0
	if last {
		delete(s.held, host)
	}
	s.mu.Unlock()
	if !last {
		return
	}
	if err := delIfMine.Run(ctx, s.rdb, []string{s.holderKey(host)}, s.id).Err(); err != nil {
		s.log.Debug("withdrawing an SMTP session's advertisement", "mx_host", host, "err", err)
	}
}

func (s *Sessions) holds(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[host] > 0
}

// handoff hands the address to a worker holding a session to one of hosts
// (this one included) and waits for its result. handled is false when no
// session is open, or the holder declined: the caller then probes itself.
func (s *Sessions) handoff(ctx context.Context, hosts []string, job handoffJob) (res validator.Result, err error, handled bool) {
	holder, host := "", ""
	for _, h := range hosts {
		if s.holds(h) {
			holder, host = s.id, h
			break
		}
	}
	if holder != "" && job.TaskID != "" {
		// Held here, but a task holding a reserved slot redeems it (its
		// token is spent) rather than join: one GET.
		if n, err := s.rdb.Exists(ctx, s.reservedKey(job.TaskID)).Result(); err != nil || n > 0 {
			return res, nil, false
		}
	}
	if holder == "" {
		// One round trip: the hosts' advertisements and their reserved
		// slots. A task whose own reservation is due redeems it (the
		// token is spent) instead of joining.
		keys := make([]string, 0, 2*len(hosts))
		for _, h := range hosts {
			keys = append(keys, s.holderKey(h))
		}
		for _, h := range hosts {
			keys = append(keys, s.nextKey(h))
		}
		if job.TaskID != "" {
			keys = append(keys, s.reservedKey(job.TaskID))
		}
		// A pipeline of GETs, not MGET: on Redis Cluster the hosts'
		// keys live in different slots, and go-redis splits a pipeline
		// by node.
		cmds := make([]*redis.StringCmd, len(keys))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.Get(ctx, k)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return res, nil, false // no sharing without Redis: probe as before
		}
		vals := make([]any, len(cmds))
		for i, c := range cmds {
			if v, err := c.Result(); err == nil {
				vals[i] = v
			}
		}
		if job.TaskID != "" && vals[len(vals)-1] != nil {
			return res, nil, false // we hold a reserved slot: redeem it
		}
		for i, v := range vals[:len(hosts)] {
			if id, ok := v.(string); ok && id != "" {
				holder, host = id, hosts[i]
				break
			}
		}
	}
	if holder == "" {
		return res, nil, false
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	job.ID, job.From, job.Host = hex.EncodeToString(b[:]), s.id, host
	if dl, ok := ctx.Deadline(); ok {
		job.Deadline = dl
	}
	ch := make(chan handoffReply, 2)
	provider := host
	if s.group != nil {
		provider = s.group(host)
	}
	s.mu.Lock()
	s.waits[job.ID] = ch
	s.waiting[provider]++
	n := s.waiting[provider]
	s.mu.Unlock()
	if s.cfg.OnWaiting != nil {
		s.cfg.OnWaiting(provider, n)
	}
	start := time.Now()
	defer func() {
		s.mu.Lock()
		delete(s.waits, job.ID)
		s.waiting[provider]--
		n := s.waiting[provider]
		if n <= 0 {
			delete(s.waiting, provider)
		}
		s.mu.Unlock()
		if s.cfg.OnWaiting != nil {
			s.cfg.OnWaiting(provider, n)
		}
		if s.cfg.OnWait != nil {
			s.cfg.OnWait(provider, time.Since(start), handled)
		}
	}()
	if holder == s.id {
		s.enqueue(s.lifetime(), job)
	} else {
		msg, _ := json.Marshal(message{Job: &job})
		n, err := s.publish(ctx, s.channel(holder), msg)
		if err != nil || n == 0 {
			// The holder is gone (or Redis is): its advertisement is
			// stale. Withdraw it for everyone and probe ourselves.
			if err == nil {
				_ = delIfMine.Run(ctx, s.rdb, []string{s.holderKey(host)}, holder).Err()
			}
			return res, nil, false
		}
	}
	var ack, look <-chan time.Time
	if holder != s.id {
		t := time.NewTimer(s.cfg.AckTimeout)
		defer t.Stop()
		ack = t.C
		// After the acknowledgement, look for a kept answer now and then
		// in case its message was lost.
		tick := time.NewTicker(s.cfg.LookEvery)
		defer tick.Stop()
		look = tick.C
	}
	for {
		var r handoffReply
		select {
		case r = <-ch:
		case <-look:
			kept, ok := s.lookReply(ctx, job.ID)
			if !ok {
				continue
			}
			r = kept
		case <-ack:
			// Subscribed but silent: hung. Nobody should wait on it.
			s.log.Warn("session holder did not answer a hand-off; probing without it", "holder", holder, "mx_host", host)
			_ = delIfMine.Run(context.WithoutCancel(ctx), s.rdb, []string{s.holderKey(host)}, holder).Err()
			return res, nil, false
		case <-ctx.Done():
			// Our attempt's bound: as for a probe that timed out. A
			// holder that answers later is not listened to; the task
			// retries.
			return res, ctx.Err(), true
		}
		if r.Accepted {
			ack = nil
			continue
		}
		switch {
		case r.Declined:
			return res, nil, false
		case r.Denied != nil:
			d := &ratelimit.DeniedError{Reason: r.Denied.Reason, RetryIn: r.Denied.RetryIn, Until: r.Denied.Until,
				Reservation: r.Denied.Reservation, Detail: r.Denied.Detail, Egress: r.Denied.Egress,
				Group: r.Denied.Group, MXHost: r.Denied.MXHost}
			var gerr error = d
			if r.Denied.Join {
				gerr = &joinDenial{DeniedError: d}
			}
			if r.Result != nil {
				res = *r.Result
			}
			return res, &validator.GateError{Err: gerr}, true
		case r.Err != "":
			if r.Result != nil {
				res = *r.Result
			}
			return res, errors.New(r.Err), true
		case r.Result != nil:
			return *r.Result, nil, true
		}
		return res, nil, false
	}
}

// deliver hands a reply to its waiter, if it still waits.
func (s *Sessions) deliver(r handoffReply) {
	s.mu.Lock()
	ch := s.waits[r.ID]
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- r:
		default:
		}
	}
}

// reply answers a job, in process or over Redis.
func (s *Sessions) reply(ctx context.Context, j handoffJob, r handoffReply) {
	if j.From == s.id {
		s.deliver(r)
		return
	}
	msg, _ := json.Marshal(message{Reply: &r})
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if !r.Accepted {
		// Pub/sub delivers at most once and loses what is sent while a
		// subscriber reconnects (a failover): the answer is also kept,
		// briefly, where the waiter looks when it has waited a while.
		if err := s.rdb.Set(ctx, s.replyKey(r.ID), msg, time.Minute).Err(); err != nil {
			// Redis is away (a master died): the message below is lost
			// too, and without the kept answer the waiter would wait out
			// its whole attempt and retry as if the server had timed
			// out. Keep trying while the waiter still looks.
			s.log.Debug("keeping a hand-off answer; will retry", "mx_host", j.Host, "err", err)
			s.bg.Go(func() { s.keepReply(j, r.ID, msg) })
		}
	}
	if _, err := s.publish(ctx, s.channel(j.From), msg); err != nil {
		s.log.Warn("answering a handed-off address", "mx_host", j.Host, "err", err)
	}
}

// keepReplyFor bounds how long a holder keeps trying to store an answer
// Redis refused: about as long as the answer is kept once stored.
const keepReplyFor = time.Minute

// keepReply retries storing a hand-off answer (exponential from 100 ms to
// 2 s, jittered) until it is stored, keepReplyFor has passed or the
// process shuts down, then publishes it once more for a waiter that is
// still subscribed.
func (s *Sessions) keepReply(j handoffJob, id string, msg []byte) {
	ctx := s.lifetime()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.RandomizationFactor = 100*time.Millisecond, 2*time.Second, 0.5
	b.MaxElapsedTime = keepReplyFor
	err := backoff.Retry(func() error {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return s.rdb.Set(sctx, s.replyKey(id), msg, time.Minute).Err()
	}, backoff.WithContext(b, ctx))
	if err != nil {
		s.log.Warn("hand-off answer not kept; its waiter retries when its attempt ends", "mx_host", j.Host, "err", err)
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, _ = s.publish(pctx, s.channel(j.From), msg)
}

func (s *Sessions) replyKey(id string) string { return s.cfg.Prefix + "handoff:" + id }

// lookReply reads an answer kept by reply, for a waiter whose message may
// have been lost.
func (s *Sessions) lookReply(ctx context.Context, id string) (handoffReply, bool) {
	b, err := s.rdb.Get(ctx, s.replyKey(id)).Bytes()
	if err != nil {
		return handoffReply{}, false
	}
	var m message
	if json.Unmarshal(b, &m) != nil || m.Reply == nil || m.Reply.ID != id {
		return handoffReply{}, false
	}
	return *m.Reply, true
}

// lifetime is the context that ends at shutdown (Background before start).
func (s *Sessions) lifetime() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life == nil {
		return context.Background()
	}
	return s.life
}

// replySoon answers without holding up the caller (the pub/sub reader,
// which must keep reading this process's own replies).
func (s *Sessions) replySoon(ctx context.Context, j handoffJob, r handoffReply) {
	if j.From == s.id {
		s.deliver(r)
		return
	}
	s.bg.Go(func() { s.reply(ctx, j, r) })
}

// enqueue queues a handed address for its host's session, or declines it
// when the queue is full or no session is held here any more.
func (s *Sessions) enqueue(ctx context.Context, j handoffJob) {
	s.mu.Lock()
	if s.held[j.Host] <= 0 && !s.running[j.Host] || len(s.queues[j.Host]) >= s.cfg.QueueCap || s.v == nil {
		s.mu.Unlock()
		s.replySoon(ctx, j, handoffReply{ID: j.ID, Declined: true})
		return
	}
	if j.Urgent {
		s.queues[j.Host] = append([]handoffJob{j}, s.queues[j.Host]...)
	} else {
		s.queues[j.Host] = append(s.queues[j.Host], j)
	}
	start := !s.running[j.Host]
	s.running[j.Host] = true
	s.mu.Unlock()
	if j.From != s.id {
		s.replySoon(ctx, j, handoffReply{ID: j.ID, Accepted: true})
	}
	if start {
		s.bg.Go(func() { s.drain(ctx, j.Host) })
	}
}

// drain asks the addresses handed for host on this process's session to
// it, one after another, until none is left.
func (s *Sessions) drain(ctx context.Context, host string) {
	for {
		s.mu.Lock()
		q := s.queues[host]
		if len(q) == 0 {
			delete(s.queues, host)
			delete(s.running, host)
			s.mu.Unlock()
			return
		}
		j := q[0]
		s.queues[host] = q[1:]
		s.mu.Unlock()
		s.run(ctx, j)
	}
}

// run asks one handed address, on the parked session when the held one is
// busy for a moment, and answers its waiter.
func (s *Sessions) run(ctx context.Context, j handoffJob) {
	jctx := context.WithoutCancel(ctx)
	var cancel context.CancelFunc
	if !j.Deadline.IsZero() {
		jctx, cancel = context.WithDeadline(jctx, j.Deadline)
	} else {
		jctx, cancel = context.WithTimeout(jctx, DefaultAttemptTimeout)
	}
	defer cancel()
	if left := time.Until(j.Deadline); !j.Deadline.IsZero() && left < s.cfg.MinLeft {
		// Too little time left to be worth asking here after the queue:
		// the waiter probes itself, with what it has left.
		s.reply(ctx, j, handoffReply{ID: j.ID, Declined: true})
		return
	}
	// Wait for the held session to be free, but never long: at most
	// AwaitParked or a third of the job's time, and not past the moment
	// the session closes instead of being parked.
	wait := s.cfg.AwaitParked
	if !j.Deadline.IsZero() {
		wait = min(wait, time.Until(j.Deadline)/3)
	}
	actx, acancel := context.WithTimeout(ctx, wait) // ctx: ends at shutdown
	for s.holds(j.Host) && actx.Err() == nil && !s.v.AwaitSession(actx, j.Host) {
	}
	acancel()
	vctx := withReservation(jctx, j.TaskID)
	if j.Transcript {
		vctx = validator.WithTranscript(vctx, true)
	}
	res, err := s.v.Validate(vctx, j.Input)
	r := handoffReply{ID: j.ID, Result: &res}
	if err != nil {
		var d *ratelimit.DeniedError
		if errors.As(err, &d) {
			var jd *joinDenial
			r.Denied = &deniedWire{Reason: d.Reason, RetryIn: d.RetryIn, Until: d.Until, Reservation: d.Reservation,
				Detail: d.Detail, Egress: d.Egress, Group: d.Group, MXHost: d.MXHost, Join: errors.As(err, &jd)}
		} else {
			r.Err = err.Error()
		}
	}
	s.reply(ctx, j, r)
}

// joinDenial is the Gate's "not now" for a task whose MX host already has a
// session reserved for a slot: it reserves nothing (a token is spent only
// when a session opens) and comes back just after that slot to join the
// session then open.
type joinDenial struct{ *ratelimit.DeniedError }

func (e *joinDenial) Unwrap() error { return e.DeniedError }

// nextSession returns the reserved slot marked for host and its owner (the
// reservation id), if any; mine says res holds a reserved slot of its own.
func (s *Sessions) nextSession(ctx context.Context, host, res string) (slot time.Time, owner string, ok, mine bool) {
	var next, own *redis.StringCmd
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		next = p.Get(ctx, s.nextKey(host))
		if res != "" {
			own = p.Get(ctx, s.reservedKey(res))
		}
		return nil
	})
	mine = own != nil && own.Err() == nil
	v, err := next.Result()
	if err != nil {
		return time.Time{}, "", false, mine
	}
	owner, ms, found := strings.Cut(v, "|")
	n, perr := strconv.ParseInt(ms, 10, 64)
	if !found || perr != nil || owner == "" {
		return time.Time{}, "", false, mine
	}
	return time.UnixMilli(n), owner, true, mine
}

// markNext records that owner reserved the slot at until for host, unless
// another reservation is already marked (replace: unless the mark is
// owner's own, renewed by a task asking on its behalf).
//
// It also notes, under the reservation's own name, that owner holds a
// reserved slot: when that task comes back it redeems the slot (its token
// is spent) rather than joining a session then open, even where another
// worker's reservation won the mark (workers race for it).
func (s *Sessions) markNext(ctx context.Context, host, owner string, until time.Time, ttl time.Duration, replace bool) {
	v := owner + "|" + strconv.FormatInt(until.UnixMilli(), 10)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if replace {
			p.Set(ctx, s.nextKey(host), v, ttl)
		} else {
			p.SetNX(ctx, s.nextKey(host), v, ttl)
		}
		p.Set(ctx, s.reservedKey(owner), v, ttl)
		return nil
	})
	if err != nil {
		s.log.Debug("marking a reserved session slot", "mx_host", host, "err", err)
	}
}

// clearNext removes owner's mark and note once its reservation opened the
// session.
func (s *Sessions) clearNext(ctx context.Context, host, owner string) {
	_ = clearNextScript.Run(ctx, s.rdb, []string{s.nextKey(host)}, owner+"|").Err()
	_ = s.rdb.Del(ctx, s.reservedKey(owner)).Err()
}

func (s *Sessions) reservedKey(owner string) string { return s.cfg.Prefix + "reserved:" + owner }

func (s *Sessions) lockKey(host string) string {
	return s.cfg.Prefix + "admitlock:{" + host + "}:" + s.cfg.Egress
}

// lockHost takes the fleet-wide lock on asking the limiter for host (held
// for at most 3 s, the time of a few round trips with room to spare).
// ok is false when another worker holds it. Without Redis, no lock is
// needed: the limiter cannot be asked either.
func (s *Sessions) lockHost(ctx context.Context, host string) (unlock func(), ok bool) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	got, err := s.rdb.SetNX(ctx, s.lockKey(host), token, 3*time.Second).Result()
	if err != nil {
		return func() {}, true
	}
	if !got {
		return nil, false
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = delIfMine.Run(ctx, s.rdb, []string{s.lockKey(host)}, token).Err()
	}, true
}

var clearNextScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)
