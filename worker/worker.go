package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/signup"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
)

// Validator is what the worker needs of *validator.Validator.
type Validator interface {
	Validate(ctx context.Context, input string) (validator.Result, error)
}

var _ Validator = (*validator.Validator)(nil)

// Config configures a Worker. Zero fields take the documented defaults.
type Config struct {
	// Concurrency is how many tasks run at once (default 64: the work waits
	// on remote servers, not on CPU).
	Concurrency int
	// SignupPolicy decides the sign-up decision every final result carries
	// (default signup.DefaultPolicy: reject disposable addresses). Give the
	// API the same.
	SignupPolicy signup.Policy
	// SignupPolicySet says SignupPolicy was given (the zero Policy rejects
	// nothing, which is a valid choice).
	SignupPolicySet bool
	// Queues weights the queues (default critical 6, default 3, bulk 1).
	// Each priority named here is consumed in all its shards, each shard
	// with the priority's weight.
	Queues map[string]int
	// QueueShards is how many shards each priority's queue is split into
	// (tasks.ShardQueues; default 1); producers need the same setting
	// (tasks.WithShards). Besides these, Start consumes every shard of the
	// priorities above that Redis already knows, left by producers with
	// another setting, and the unsharded queue, so a mismatch strands no
	// task.
	QueueShards int
	// Retry is the schedule of temporary outcomes; CallbackRetry that of
	// callback deliveries (default 10 s doubling to 1 h, for a day).
	Retry, CallbackRetry RetryPolicy
	// ShutdownTimeout bounds how long Shutdown lets in-flight probes finish
	// before returning them to the queue (default 30 s).
	ShutdownTimeout time.Duration
	// AttemptTimeout bounds one validation attempt, DNS and SMTP together
	// (default 3 min, `mxprobe worker --timeout`); it is kept below asynq's
	// own task timeout and the producer's deadline. A pooled SMTP session
	// renews its rate-limit lease only once a quarter of the lease's TTL has
	// passed, so the limiter's LeaseTTL should be at least
	// (AttemptTimeout + 30 s) × 4/3, as `mxprobe worker` sets it
	// (LeaseTTLFor): otherwise a slow probe on a reused session can outlive
	// its lease and let another session in beside it.
	AttemptTimeout time.Duration
	// Cache sets how long final results answer later requests.
	Cache CacheTTL
	// Prefix namespaces the worker's own Redis keys (default "mxprobe:").
	Prefix string
	// Callback configures delivery of results to callback URLs.
	Callback CallbackConfig
	// OnResult is called with every final result, for Go programs that embed
	// the worker. It must not block for long.
	OnResult func(context.Context, tasks.Result)
	// OnCallback is told the outcome of every callback attempt:
	// "delivered", "gone" (410, not retried), "refused" (final) or "retry".
	// For metrics; it must not block.
	OnCallback func(ctx context.Context, outcome string)
	// CacheHook sees every lookup of the per-address result cache as cache
	// "result" (a request with tasks.NoDedupe looks up nothing). The same
	// hook is meant for RedisMXCache ("mx") and RedisCatchAllCache
	// ("catch_all"), which cmd/mxprobe builds with it. For metrics; it
	// must not block.
	CacheHook CacheHook
	// Sessions, when set, shares SMTP sessions with the other workers
	// (sessions.go): build it with NewSessions and pass it to the Gate's
	// ShareSessions too. The validator must then be a SessionValidator.
	Sessions *Sessions
	// ProviderFunc names the rate-limit group of an MX host, for the
	// session-sharing metrics; nil uses the host itself.
	ProviderFunc func(mxHost string) string
	Logger       *slog.Logger
	// SchedulerInterval is how often retries and delayed tasks move back to
	// their queue (default 1 s; asynq's own 5 s lets rate-limited tasks
	// return in clumps up to 4 s after their slots); PollInterval how often an idle
	// worker looks for new tasks (default 1 s). Tests shorten both.
	SchedulerInterval, PollInterval time.Duration

	now func() time.Time
}

// CacheTTL is how long a final verdict is reused without SMTP traffic
// (Postfix's address_verify_*_expire_time, docs/smtp.md §4). Zero
// disables caching of that verdict.
type CacheTTL struct {
	Valid, Invalid, Risky, Unknown time.Duration
}

// DefaultCacheTTL: positives for a month, negatives for three days, risky for
// a day; unknown only briefly so a blocked provider is not asked again at
// once but a fixed host soon gets fresh answers.
var DefaultCacheTTL = CacheTTL{
	Valid:   31 * 24 * time.Hour,
	Invalid: 3 * 24 * time.Hour,
	Risky:   24 * time.Hour,
	Unknown: 2 * time.Minute,
}

// Worker runs validation and callback tasks from the queues.
type Worker struct {
	cfg           Config
	queues        map[string]int // asynq queue → weight, shards expanded
	retry         RetryPolicy
	callbackRetry RetryPolicy
	rdb           redis.UniversalClient
	v             Validator
	store         *resultStore
	deliver       *Deliverer
	client        *asynq.Client
	srv           *asynq.Server
	log           *slog.Logger
	now           func() time.Time
}

// New checks cfg and builds a Worker on rdb. v is the validator, normally
// built with a Gate from NewGate so that every SMTP session passes the shared
// rate limits.
func New(rdb redis.UniversalClient, v Validator, cfg Config) (*Worker, error) {
	w := &Worker{cfg: cfg, rdb: rdb, v: v, log: cfg.Logger, now: cfg.now}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.now == nil {
		w.now = time.Now
	}
	if cfg.Concurrency == 0 {
		w.cfg.Concurrency = 64
	}
	if !cfg.SignupPolicySet {
		w.cfg.SignupPolicy = signup.DefaultPolicy()
	}
	if w.cfg.Concurrency < 0 {
		return nil, errors.New("worker: Concurrency must be positive")
	}
	if cfg.Queues == nil {
		w.cfg.Queues = map[string]int{tasks.QueueCritical: 6, tasks.QueueDefault: 3, tasks.QueueBulk: 1}
	}
	if cfg.QueueShards == 0 {
		w.cfg.QueueShards = 1
	}
	w.queues = map[string]int{}
	for q, weight := range w.cfg.Queues {
		if weight < 1 {
			return nil, fmt.Errorf("worker: queue %q: weight must be at least 1", q)
		}
		if p, ok := tasks.PriorityOf(q); !ok || p != q {
			w.queues[q] = weight // another application's queue, or one shard
			continue
		}
		shards, err := tasks.ShardQueues(q, w.cfg.QueueShards)
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		for _, name := range shards {
			w.queues[name] = weight
		}
		// The unsharded queue too: what producers without the setting,
		// or from before it, put there.
		w.queues[q] = weight
	}
	if cfg.SchedulerInterval == 0 {
		w.cfg.SchedulerInterval = time.Second
	}
	if cfg.Sessions != nil {
		sv, ok := v.(SessionValidator)
		if !ok {
			return nil, errors.New("worker: Sessions needs a validator with MailHosts and AwaitSession (*validator.Validator)")
		}
		cfg.Sessions.attach(sv, cfg.ProviderFunc)
	}
	if cfg.ShutdownTimeout == 0 {
		w.cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.AttemptTimeout == 0 {
		w.cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if w.cfg.AttemptTimeout < 0 || w.cfg.AttemptTimeout > leadTTL-30*time.Second {
		// Longer, and a duplicate request would take the dedupe lead from
		// a probe still running and start its own.
		return nil, fmt.Errorf("worker: AttemptTimeout %s: must be positive and at most %s", cfg.AttemptTimeout, leadTTL-30*time.Second)
	}
	if cfg.Prefix == "" {
		w.cfg.Prefix = "mxprobe:"
	}
	if cfg.Cache == (CacheTTL{}) {
		w.cfg.Cache = DefaultCacheTTL
	}
	w.retry = cfg.Retry.withDefaults()
	if err := w.retry.validate(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	cb := cfg.CallbackRetry
	if cb == (RetryPolicy{}) {
		cb = RetryPolicy{FirstDelay: 10 * time.Second, Multiplier: 2, MaxDelay: time.Hour, GiveUpAfter: 24 * time.Hour, Jitter: 0.2}
	}
	w.callbackRetry = cb.withDefaults()
	if err := w.callbackRetry.validate(); err != nil {
		return nil, fmt.Errorf("worker: callback %w", err)
	}
	if w.cfg.Callback.Logger == nil {
		w.cfg.Callback.Logger = w.log
	}
	d, err := NewDeliverer(w.cfg.Callback)
	if err != nil {
		return nil, fmt.Errorf("worker: callbacks: %w", err)
	}
	w.deliver = d
	w.store = &resultStore{rdb: rdb, prefix: w.cfg.Prefix, ttl: w.cfg.Cache}
	w.client = asynq.NewClientFromRedisClient(rdb)
	return w, nil
}

// Handler returns the mux serving both task types, wrapped in the panic
// recovery middleware; useful to embed the worker in another asynq server.
func (w *Worker) Handler() asynq.Handler {
	mux := asynq.NewServeMux()
	mux.Use(w.recoverPanics)
	mux.HandleFunc(tasks.TypeValidate, w.processValidate)
	mux.HandleFunc(tasks.TypeCallback, w.processCallback)
	return mux
}

// Start begins fetching tasks; it returns at once.
func (w *Worker) Start() error {
	w.srv = asynq.NewServerFromRedisClient(w.rdb, asynq.Config{
		Concurrency:              w.cfg.Concurrency,
		Queues:                   w.consumedQueues(),
		RetryDelayFunc:           w.retryDelay,
		IsFailure:                isFailure,
		ShutdownTimeout:          w.cfg.ShutdownTimeout,
		DelayedTaskCheckInterval: w.cfg.SchedulerInterval,
		TaskCheckInterval:        w.cfg.PollInterval,
		Logger:                   asynqLogger{w.log},
		LogLevel:                 asynq.WarnLevel,
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			id, _ := asynq.GetTaskID(ctx)
			level := slog.LevelInfo
			if isFailure(err) {
				level = slog.LevelWarn
			}
			w.log.Log(ctx, level, "task not done", "task_id", id, "type", t.Type(), "err", err)
		}),
	})
	if w.cfg.Sessions != nil {
		// Listening first: an advertised session must reach a listener.
		if err := w.cfg.Sessions.start(); err != nil {
			return fmt.Errorf("worker: session sharing: %w", err)
		}
	}
	return w.srv.Start(w.Handler())
}

// Shutdown stops fetching new tasks, lets in-flight ones finish within
// ShutdownTimeout and returns the rest to their queues, like
// http.Server.Shutdown.
//
// When no handler runs any more, a Validator that is an io.Closer (the
// validator's session pool) is closed: parked SMTP sessions get their QUIT
// and their rate-limit leases back.
func (w *Worker) Shutdown() {
	if w.srv != nil {
		w.srv.Shutdown()
	}
	if w.cfg.Sessions != nil {
		w.cfg.Sessions.shutdown()
	}
	if c, ok := w.v.(io.Closer); ok {
		if err := c.Close(); err != nil {
			w.log.Warn("closing the validator", "err", err)
		}
	}
}

// recoverPanics turns a panic into a temporary failure with the stack in the
// log, so one bad task can never take the worker down; its retries end in a
// final unknown like any other temporary outcome.
func (w *Worker) recoverPanics(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
		defer func() {
			if r := recover(); r != nil {
				id, _ := asynq.GetTaskID(ctx)
				w.log.Error("panic in task handler", "task_id", id, "type", t.Type(), "panic", r, "stack", string(debug.Stack()))
				err = &TemporaryError{Reason: fmt.Sprintf("internal error: %v", r)}
				if t.Type() == tasks.TypeValidate {
					err = w.afterPanic(ctx, t, err)
				}
			}
		}()
		return next.ProcessTask(ctx, t)
	})
}

// afterPanic ends a validation whose handler keeps panicking once its retry
// budget is spent, with a final unknown and its callback, instead of letting
// asynq archive it silently.
func (w *Worker) afterPanic(ctx context.Context, t *asynq.Task, err error) error {
	retried, _ := asynq.GetRetryCount(ctx)
	if retried < w.retry.MaxRetries() {
		return err
	}
	p, perr := tasks.DecodeValidatePayload(t.Payload())
	if perr != nil {
		return err
	}
	id, _ := asynq.GetTaskID(ctx)
	res := tasks.Result{TaskID: id, RequestID: p.RequestID, Metadata: p.Metadata, Attempts: retried + 1, Final: true,
		Check: tasks.Check{Input: p.Input, Address: p.Address, Verdict: tasks.VerdictUnknown, Reason: "internal_error",
			Error: err.Error(), CheckedAt: w.now().UTC()}}
	if ferr := w.finish(ctx, t, p, res); ferr != nil {
		return ferr
	}
	return nil
}

// processValidate follows the way of one address (docs/design.md):
// cache → validator (which passes the rate limiter through its Gate) →
// classify into final / retry / rate-limited → store → callback.
func (w *Worker) processValidate(ctx context.Context, t *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	log := w.log.With("task_id", id)

	p, err := tasks.DecodeValidatePayload(t.Payload())
	if err != nil {
		// A payload that does not decode never will: store why, skip retry.
		res := tasks.Result{TaskID: id, Final: true, Attempts: retried + 1,
			Check: tasks.Check{Verdict: tasks.VerdictUnknown, Reason: "bad_payload", Error: err.Error(), CheckedAt: w.now().UTC()}}
		if b, merr := json.Marshal(res); merr == nil && t.ResultWriter() != nil {
			queue, _ := asynq.GetQueueName(ctx)
			_ = storeFinal(ctx, w.rdb, taskResult{key: asynqTaskKey(queue, id), id: id, data: b}) // final: announced too
		}
		log.Error("malformed payload", "err", err)
		return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
	}
	base := tasks.Result{TaskID: id, RequestID: p.RequestID, Metadata: p.Metadata, Attempts: retried + 1}
	// lastAttempt: the retry budget is spent, or the producer's deadline has
	// come; either way this attempt's answer is the final one.
	lastAttempt := retried >= w.retry.MaxRetries() || (!p.RespondBy.IsZero() && !w.now().Before(p.RespondBy))

	if !p.Fresh {
		// One round trip: a recent final result answers at once; else
		// share an in-flight probe of the same address: the first task to
		// get here leads; the others wait (without using retries) and are
		// then answered from the cache the leader fills.
		hit, leader, retryIn, err := w.store.lookup(ctx, p.Address, id)
		if err != nil {
			return w.infra(p, retried, fmt.Errorf("result cache and dedupe: %w", err))
		}
		if w.cfg.CacheHook != nil {
			w.cfg.CacheHook("result", hit != nil)
		}
		if hit != nil {
			res := *hit
			res.SharedWith = hit.TaskID
			res.TaskID, res.RequestID, res.Metadata, res.Attempts = base.TaskID, base.RequestID, base.Metadata, base.Attempts
			res.Input = p.Input
			res.Final, res.Cached = true, true
			res.Transcript = nil
			return w.finish(ctx, t, p, res)
		}
		if leader != id {
			// A leader waiting for its own next attempt (a greylisting
			// retry, a provider's cool-down) that ends after our deadline
			// or give-up cannot answer us in time: probe ourselves now. A
			// leader still probing (a poll of a second or two) soon
			// answers, so we wait for it, up to our deadline.
			leaderWaits := retryIn > 2*followerPoll
			if lastAttempt || (leaderWaits && w.outlives(p, retried, retryIn)) {
				// Never strand a request behind another: probe ourselves.
				log.Info("not waiting for a shared probe", "leader", leader, "leader_retry_in", retryIn, "last_attempt", lastAttempt)
			} else {
				w.writeResult(t, withCheck(base, tasks.Check{Input: p.Input, Address: p.Address, Verdict: tasks.VerdictUnknown, Reason: "pending"}, func(r *tasks.Result) { r.SharedWith = leader }))
				return &RateLimitError{RetryIn: w.capToDeadline(p, retryIn), Reason: "shared probe in flight by " + leader}
			}
		}
	}

	// Bound the attempt below asynq's own timeout (whose expiry asynq
	// handles itself, counting a failure and never letting this handler
	// record a verdict) and by the producer's deadline, so a tarpitting
	// server ends in an answer, not in a silently spent retry budget.
	vctx, cancel := context.WithTimeout(withReservation(ctx, id), w.attemptBound(p))
	if p.Transcript {
		// Recorded only when asked: a line allocation saved per SMTP line.
		vctx = validator.WithTranscript(vctx, true)
	}
	vres, verr := w.validate(vctx, p, id)
	cancel()
	if verr != nil && ctx.Err() == nil && errors.Is(verr, context.DeadlineExceeded) {
		// Our bound, not shutdown: an unknown/timeout like any other slow
		// server, retried on the schedule (final on the last attempt).
		vres.Verdict, vres.Reason, vres.Retryable = validator.Unknown, validator.ReasonTimeout, true
		verr = nil
		lastAttempt = lastAttempt || w.pastDeadline(p)
	}
	if verr != nil {
		if delay, reason, ok := denial(verr); ok {
			// Decided on the hold itself, not on the spread denial adds:
			// a pause that ends before the deadline is waited out.
			var d *ratelimit.DeniedError
			errors.As(verr, &d) // denial's ok says it is one
			if w.outlives(p, retried, d.RetryIn) {
				// Denials do not use retries, so without this a task under
				// a long cool-down would outlive its producer's deadline
				// or the give-up horizon by the whole pause, and its
				// callback would come too late or never.
				return w.finishDenied(ctx, t, p, base, verr)
			}
			delay = w.capToDeadline(p, delay)
			if !p.Fresh {
				_ = w.store.holdLead(ctx, p.Address, id, delay)
			}
			return &RateLimitError{RetryIn: delay, Reason: reason}
		}
		if ctx.Err() != nil {
			// Shutdown: the task goes back to the queue.
			return fmt.Errorf("validation interrupted: %w", ctx.Err())
		}
		if !lastAttempt {
			// The Gate's limiter could not be asked (Redis): our
			// failure, retried within seconds, no retry spent.
			return w.infra(p, retried, verr)
		}
		// An operational failure (the limiter's Redis unreachable, say) on
		// the last attempt still ends in an answer and a callback.
		vres = validator.Result{Input: p.Input, Address: p.Address, Verdict: validator.Unknown,
			Reason: validator.ReasonTempFailure, Retryable: true, CheckedAt: w.now().UTC(), Error: verr.Error()}
	}
	if !p.Transcript {
		vres.Transcript = nil // a validator configured to record every probe
	}
	res := withCheck(base, toCheck(vres), nil)

	if vres.Retryable && !lastAttempt {
		delay := w.capToDeadline(p, w.retry.Delay(retried, vres.RetryAfter.Std()))
		res.NextAttemptAt = w.now().Add(delay).UTC()
		w.writeResult(t, res)
		if !p.Fresh {
			_ = w.store.holdLead(ctx, p.Address, id, delay)
		}
		log.Info("temporary outcome, will retry", "reason", vres.Reason, "retry_in", delay)
		return &TemporaryError{Reason: string(vres.Reason), Delay: delay}
	}
	res.Final = true
	// Cache the verdict and give up the lead in one round trip, before
	// finish: a request that finds the lead free then finds the answer.
	leadHolder := id
	if p.Fresh {
		leadHolder = "" // a fresh request never took the lead
	}
	// One encoding serves the asynq result and the callback body, and the
	// cache too when the request carries no metadata or request id (settle
	// re-encodes without them otherwise).
	w.decide(&res)
	b, err := json.Marshal(res)
	if err != nil {
		return &TemporaryError{Reason: "encoding result: " + err.Error()}
	}
	// The task's asynq result goes in the same round trip.
	var task taskResult
	if t.ResultWriter() != nil {
		queue, _ := asynq.GetQueueName(ctx)
		task = taskResult{key: asynqTaskKey(queue, id), id: id, data: b}
	}
	if err := w.store.settle(ctx, p.Address, leadHolder, res, b, task); err != nil {
		log.Warn("result cache write or lead release failed", "err", err)
		task = taskResult{} // write the task's result again, through asynq
	}
	return w.finishEncoded(ctx, t, p, res, b, task.key != "")
}

// validate probes the address, on a session another worker (or this one)
// holds to its MX host when there is one (sessions.go), else as usual. A
// task denied a session because one is open elsewhere joins that one.
func (w *Worker) validate(ctx context.Context, p tasks.ValidatePayload, id string) (validator.Result, error) {
	s := w.cfg.Sessions
	if s == nil {
		return w.v.Validate(ctx, p.Input)
	}
	hosts, ok := s.v.MailHosts(ctx, p.Input)
	if !ok {
		return w.v.Validate(ctx, p.Input)
	}
	queue, _ := asynq.GetQueueName(ctx)
	job := handoffJob{Input: p.Input, TaskID: id, Transcript: p.Transcript, Urgent: isCritical(queue)}
	if res, err, handled := s.handoff(ctx, hosts, job); handled {
		return res, err
	}
	res, err := w.v.Validate(ctx, p.Input)
	var d *ratelimit.DeniedError
	var jd *joinDenial
	if err != nil && errors.As(err, &d) && !errors.As(err, &jd) &&
		(d.Reason == ratelimit.ReasonSessions || d.Reason == ratelimit.ReasonRate && d.Reservation == "") {
		// Denied because another worker has just opened the host's
		// session (or no slot could be reserved): join it rather than
		// come back alone. A reserved slot is redeemed instead: its
		// token is spent.
		if res2, err2, handled := s.handoff(ctx, hosts, job); handled {
			return res2, err2
		}
		if d.Reason == ratelimit.ReasonSessions {
			// The open session is full. It ends within its bounds (ten
			// recipients take seconds), and the next one is reserved
			// then: come back soon to join that, not when the limiter
			// expects a lease to expire (minutes).
			busy := *d
			busy.RetryIn = min(d.RetryIn, s.cfg.BusyRetry)
			return res, &validator.GateError{Err: &joinDenial{DeniedError: &busy}}
		}
	}
	return res, err
}

// infra returns err as an InfraError (short schedule, no retry spent) while
// the task may still wait, and as a plain failure once it is past the
// producer's deadline or the give-up horizon, so an outage that never ends
// still ends the task through the retry budget.
func (w *Worker) infra(p tasks.ValidatePayload, retried int, err error) error {
	if w.outlives(p, retried, InfraRetryMax) {
		return &TemporaryError{Reason: err.Error()}
	}
	return &InfraError{Err: err}
}

// DefaultAttemptTimeout is Config.AttemptTimeout's default.
const DefaultAttemptTimeout = 3 * time.Minute

// LeaseTTLFor is the rate-limit lease TTL that covers a probe of up to
// attempt on a reused session: the lease is renewed only once a quarter of
// its TTL has passed (ratelimit.Lease.ExtendIfDue), so three quarters of it
// must outlast the probe, with 30 s to spare.
func LeaseTTLFor(attempt time.Duration) time.Duration {
	return (attempt + 30*time.Second) * 4 / 3
}

// attemptBound is how long one validation attempt may take: AttemptTimeout,
// a margin below asynq's per-task timeout, and, when the producer set a
// deadline, not much past it.
func (w *Worker) attemptBound(p tasks.ValidatePayload) time.Duration {
	bound := min(w.cfg.AttemptTimeout, tasks.ValidateTimeout-30*time.Second)
	if !p.RespondBy.IsZero() {
		bound = min(bound, max(p.RespondBy.Sub(w.now()), 5*time.Second))
	}
	return bound
}

// giveUpGrace is how long a wait may still be past the give-up horizon:
// the policy's last retry lands after the horizon by design (its delays sum
// to at least GiveUpAfter, plus jitter), and a rate slot or a busy session
// seconds away is worth waiting for, since the verdict it brings is what
// that retry is for. A cool-down is minutes to hours (15 min by default)
// and is not waited out. The producer's deadline has no such grace.
const giveUpGrace = time.Minute

// outlives reports whether a task held back for wait (a limiter denial, or
// a shared probe's lead) would come back too late to be worth it: after
// the producer's deadline, or (by more than giveUpGrace) after the retry
// policy's give-up horizon, counted from the request's enqueue time
// (docs/reliability.md, "Cool-down past the deadline or give-up"). Such a
// task ends at once as a final unknown instead of waiting.
func (w *Worker) outlives(p tasks.ValidatePayload, retried int, wait time.Duration) bool {
	back := w.now().Add(wait)
	if !p.RespondBy.IsZero() && back.After(p.RespondBy) {
		return true
	}
	if wait <= giveUpGrace {
		return false
	}
	if retried >= w.retry.MaxRetries() {
		return true // the give-up has come, whatever the clocks say
	}
	return !p.EnqueuedAt.IsZero() && back.After(p.EnqueuedAt.Add(w.retry.GiveUpAfter))
}

// pastDeadline reports whether the producer's deadline (RespondBy) has come.
func (w *Worker) pastDeadline(p tasks.ValidatePayload) bool {
	return !p.RespondBy.IsZero() && !w.now().Before(p.RespondBy)
}

// capToDeadline shortens a wait that would end after the producer's
// deadline, so the task comes back in time to give its final answer then.
// asynq schedules retries in whole seconds, rounding down, so the wait aims
// one second past the deadline: the task never comes back just before it.
func (w *Worker) capToDeadline(p tasks.ValidatePayload, d time.Duration) time.Duration {
	if p.RespondBy.IsZero() {
		return d
	}
	if left := max(p.RespondBy.Sub(w.now()), 0) + time.Second; left < d {
		return left
	}
	return d
}

// finishDenied ends a task the limiter holds back past its deadline or
// give-up (outlives): a final unknown saying why (the provider's cool-down
// reason, e.g. "blocked", else rate_limited), stored, announced and called
// back like any final result. It is not cached: no server was asked, and
// the next request (with its own deadline) may find the pause over.
func (w *Worker) finishDenied(ctx context.Context, t *asynq.Task, p tasks.ValidatePayload, base tasks.Result, verr error) error {
	reason := string(validator.ReasonRateLimited)
	var d *ratelimit.DeniedError
	if errors.As(verr, &d) && d.Reason == ratelimit.ReasonCoolDown && d.Detail != "" {
		reason = d.Detail
	}
	res := withCheck(base, tasks.Check{Input: p.Input, Address: p.Address, Verdict: tasks.VerdictUnknown,
		Reason: reason, Error: verr.Error(), CheckedAt: w.now().UTC()}, nil)
	res.Final = true
	err := w.finish(ctx, t, p, res)
	if !p.Fresh {
		_ = w.store.release(ctx, p.Address, base.TaskID)
	}
	return err
}

// finish stores a final result, tells OnResult and enqueues the callback.
// If the worker dies between these steps the task runs again and does them
// again; the callback's event id (the task id) lets receivers de-duplicate.
func (w *Worker) finish(ctx context.Context, t *asynq.Task, p tasks.ValidatePayload, res tasks.Result) error {
	w.decide(&res)
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encoding result: %w", err)
	}
	return w.finishEncoded(ctx, t, p, res, b, false)
}

// finishEncoded is finish with res already encoded as b (json.Marshal(res)).
// stored says settle has already written b as the task's result (and
// announced it); otherwise storeFinal does both here.
func (w *Worker) finishEncoded(ctx context.Context, t *asynq.Task, p tasks.ValidatePayload, res tasks.Result, b []byte, stored bool) error {
	if !stored && t.ResultWriter() != nil {
		queue, _ := asynq.GetQueueName(ctx)
		id, _ := asynq.GetTaskID(ctx)
		if err := storeFinalRetrying(ctx, w.rdb, taskResult{key: asynqTaskKey(queue, id), id: id, data: b}); err != nil {
			// The verdict is decided; only storing it waits for Redis.
			return &InfraError{Err: fmt.Errorf("storing result: %w", err)}
		}
	}
	w.notify(ctx, res)
	if p.Batch != "" {
		// The row counts towards its batch's webhook (tasks.BatchStarted).
		queue, _ := asynq.GetQueueName(ctx)
		if err := tasks.BatchRowEnded(ctx, w.rdb, w.client, queue, p.Batch, res.TaskID); err != nil {
			return &InfraError{Err: fmt.Errorf("counting the batch row: %w", err)}
		}
	}
	if p.CallbackURL == "" {
		return nil
	}
	cp, err := json.Marshal(tasks.CallbackPayload{V: tasks.PayloadVersion, URL: p.CallbackURL, EventID: res.TaskID, TaskID: res.TaskID, Body: b})
	if err != nil {
		return err
	}
	queue, _ := asynq.GetQueueName(ctx)
	_, err = w.client.EnqueueContext(ctx, asynq.NewTask(tasks.TypeCallback, cp),
		asynq.Queue(queue),
		asynq.TaskID("cb_"+res.TaskID), // one callback task per validation, even if this runs twice
		asynq.MaxRetry(w.callbackRetry.MaxRetries()),
		asynq.Timeout(tasks.CallbackTimeout),
		asynq.Retention(24*time.Hour))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return &InfraError{Err: fmt.Errorf("enqueueing callback: %w", err)}
	}
	return nil
}

// notify hands a final result to OnResult. A hook that panics is logged and
// ignored: it must not stop the callback, nor make the task retry forever.
func (w *Worker) notify(ctx context.Context, res tasks.Result) {
	if w.cfg.OnResult == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("OnResult panicked", "task_id", res.TaskID, "panic", r)
		}
	}()
	w.cfg.OnResult(ctx, res)
}

func (w *Worker) writeResult(t *asynq.Task, res tasks.Result) error {
	if t.ResultWriter() == nil {
		return nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return w.writeEncoded(t, b)
}

// writeEncoded stores an encoded result as the task's asynq result.
func (w *Worker) writeEncoded(t *asynq.Task, b []byte) error {
	if t.ResultWriter() == nil {
		return nil
	}
	_, err := t.ResultWriter().Write(b)
	return err
}

// processCallback delivers one signed result. 2xx: done. 410: the receiver
// asked us to stop. Other refusals are final; network errors, 5xx and 429
// retry on the callback schedule.
func (w *Worker) processCallback(ctx context.Context, t *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	p, err := tasks.DecodeCallbackPayload(t.Payload())
	if err != nil {
		w.log.Error("malformed callback payload", "task_id", id, "err", err)
		return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
	}
	err = w.deliver.Deliver(ctx, p.URL, p.EventID, p.Body)
	outcome := func(o string) {
		if w.cfg.OnCallback != nil {
			w.cfg.OnCallback(ctx, o)
		}
	}
	switch {
	case err == nil:
		outcome("delivered")
		return nil
	case errors.Is(err, ErrCallbackGone):
		outcome("gone")
		w.log.Info("callback receiver answered 410 Gone; not retrying", "task_id", id)
		return nil
	}
	var ce *CallbackError
	if errors.As(err, &ce) && !ce.Retryable {
		outcome("refused")
		return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
	}
	outcome("retry")
	return err
}

func withCheck(base tasks.Result, c tasks.Check, f func(*tasks.Result)) tasks.Result {
	base.Check = c
	if f != nil {
		f(&base)
	}
	return base
}

// toCheck converts the validator's Result into the wire type producers see.
// The JSON form of validator.Result is the contract between them; a field
// copy gives the same JSON without a marshal/unmarshal round trip per
// validation (≈ 5 % of the worker's CPU, docs/benchmarks.md), and
// TestCheckMirrorsValidatorResult proves the two stay in step.
func toCheck(r validator.Result) tasks.Check {
	c := tasks.Check{
		Input: r.Input, Address: r.Address, Verdict: string(r.Verdict), Reason: string(r.Reason),
		Retryable: r.Retryable,
		Flags: tasks.Flags{Disposable: r.Flags.Disposable, CatchAll: r.Flags.CatchAll, RoleAccount: r.Flags.RoleAccount,
			FreeProvider: r.Flags.FreeProvider, SMTPUTF8: r.Flags.SMTPUTF8, Allowlisted: r.Flags.Allowlisted, Denylisted: r.Flags.Denylisted,
			CatchAllState: string(r.Flags.CatchAllState)},
		MXHost: r.MXHost, MXAddr: r.MXAddr, Provider: r.Provider, TLS: r.TLS,
		CheckedAt: r.CheckedAt, Duration: r.Duration.Std().String(), Error: r.Error,
	}
	if r.RetryAfter != 0 { // omitempty on the validator side
		c.RetryAfter = r.RetryAfter.Std().String()
	}
	if r.SMTP != nil {
		c.SMTP = &tasks.SMTPReply{Stage: string(r.SMTP.Stage), Code: r.SMTP.Code, Enhanced: r.SMTP.Enhanced, Text: r.SMTP.Text}
	}
	if len(r.Transcript) > 0 {
		c.Transcript = make([]tasks.TranscriptLine, len(r.Transcript))
		for i, l := range r.Transcript {
			c.Transcript[i] = tasks.TranscriptLine{At: l.At, Host: l.Host, Dir: l.Dir, Line: l.Line}
		}
	}
	return c
}

// asynqLogger routes asynq's own logging into slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
}

// decide adds the sign-up decision to a final result (docs/signup.md), so
// that callbacks and readers of the result carry it too.
func (w *Worker) decide(res *tasks.Result) {
	if !res.Final {
		return
	}
	a := signup.Decide(res.Input, &res.Check, true, w.cfg.SignupPolicy)
	res.Decision, res.DecisionReason, res.Message, res.DidYouMean = string(a.Decision), a.Reason, a.Message, a.DidYouMean
}
