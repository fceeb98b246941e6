package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/redact"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/signup"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

const workerSynopsis = "mxprobe worker [flags]"

// workerFlags are the settings of a queue worker (shared with serve).
type workerFlags struct {
	probe           probeFlags
	concurrency     int
	egress          string
	egressIP        string
	retryFirst      time.Duration
	retryMaxDelay   time.Duration
	retryGiveUp     time.Duration
	cacheValid      time.Duration
	cacheInvalid    time.Duration
	cacheRisky      time.Duration
	cacheUnknown    time.Duration
	callbackSecret  string
	callbackPrivate bool
	callbackAllow   string
	shutdownTimeout time.Duration
	schedInterval   time.Duration
	limitDefault    string
	rejectDispos    bool
	rejectRole      bool
	rejectFree      bool
	limits          string
	logFormat       string
	logLevel        string
	listURL         string
	listCache       string
	listMaxAge      time.Duration
	queueShards     int
}

// queueShardsUsage is the --queue-shards help, shared by every command
// that queues or consumes tasks.
const queueShardsUsage = "split each priority queue into this many shards on hash slots spread over a Redis Cluster's masters (1: unsharded; set it to the number of masters); producers and workers must agree, and workers also drain shards Redis already lists"

func (f *workerFlags) register(fs *flag.FlagSet) {
	f.probe.register(fs)
	fs.IntVar(&f.concurrency, "concurrency", 64, "tasks processed at once (I/O bound: well above the core count)")
	fs.StringVar(&f.egress, "egress", "", "identity of this host's outgoing IP for the shared limits (default: --source, else --proxy, else \"default\"); workers sharing an IP must share it")
	fs.StringVar(&f.egressIP, "egress-ip", "", "public IP address probes leave from, for the start-up self-audit's reverse DNS, SPF and blocklist checks (default: --egress when it is an IP, else --source)")
	fs.DurationVar(&f.retryFirst, "retry-first", worker.DefaultRetryPolicy.FirstDelay, "first retry of a greylisted or temporary outcome (≥ the greylisting delay)")
	fs.DurationVar(&f.retryMaxDelay, "retry-max-delay", worker.DefaultRetryPolicy.MaxDelay, "longest wait between two retries")
	fs.DurationVar(&f.retryGiveUp, "retry-give-up", worker.DefaultRetryPolicy.GiveUpAfter, "after this long a temporary outcome becomes a final unknown")
	fs.DurationVar(&f.cacheValid, "cache-valid", worker.DefaultCacheTTL.Valid, "how long a valid verdict answers later requests")
	fs.DurationVar(&f.cacheInvalid, "cache-invalid", worker.DefaultCacheTTL.Invalid, "how long an invalid verdict answers later requests")
	fs.DurationVar(&f.cacheRisky, "cache-risky", worker.DefaultCacheTTL.Risky, "how long a risky verdict answers later requests")
	fs.DurationVar(&f.cacheUnknown, "cache-unknown", worker.DefaultCacheTTL.Unknown, "how long a final unknown answers later requests")
	fs.StringVar(&f.callbackSecret, "callback-secret", "", "HMAC secret that signs callbacks (required to deliver callbacks)")
	fs.BoolVar(&f.callbackPrivate, "callback-allow-private", false, "allow callbacks to loopback and private addresses (labs and tests only: SSRF)")
	fs.StringVar(&f.callbackAllow, "callback-allow", "", "comma-separated CIDR prefixes callbacks may reach despite the private-address rule")
	fs.DurationVar(&f.schedInterval, "scheduler-interval", time.Second, "how often due retries and rescheduled tasks return to their queue (asynq's default is 5s, which lets rate-limited tasks come back in clumps)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long in-flight probes may finish before they return to the queue")
	fs.StringVar(&f.limitDefault, "limit-default", "10/1m:3:2", "default provider limit RATE/PERIOD:BURST:SESSIONS")
	fs.BoolVar(&f.rejectDispos, "reject-disposable", true, "sign-up decision (every result, /validate): reject disposable addresses")
	fs.BoolVar(&f.rejectRole, "reject-role", false, "sign-up decision: reject role accounts (info@, sales@ …)")
	fs.BoolVar(&f.rejectFree, "reject-free", false, "sign-up decision: reject free consumer providers (for B2B sign-ups)")
	fs.StringVar(&f.limits, "limits", "", "per-provider limits, comma-separated GROUP=RATE/PERIOD:BURST:SESSIONS (e.g. google.com=20/1m:5:3)")
	fs.StringVar(&f.listURL, "disposable-list-url", "", "refresh the disposable-domain list from this URL in the background (default: the embedded copy only)")
	fs.StringVar(&f.listCache, "disposable-list-cache", "", "file that keeps the last downloaded disposable-domain list across restarts")
	fs.DurationVar(&f.listMaxAge, "disposable-list-max-age", validator.DefaultListMaxAge, "download the disposable-domain list again when the local copy is older than this")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.IntVar(&f.queueShards, "queue-shards", 1, queueShardsUsage)
}

// parseLimit reads "RATE/PERIOD:BURST:SESSIONS" (":SESSIONS" optional).
func parseLimit(s string) (ratelimit.Limit, error) {
	var l ratelimit.Limit
	rate, rest, ok := strings.Cut(s, "/")
	if !ok {
		return l, fmt.Errorf("%q: want RATE/PERIOD:BURST[:SESSIONS]", s)
	}
	parts := strings.Split(rest, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return l, fmt.Errorf("%q: want RATE/PERIOD:BURST[:SESSIONS]", s)
	}
	var err error
	if l.Rate, err = strconv.Atoi(rate); err != nil {
		return l, fmt.Errorf("%q: rate: %v", s, err)
	}
	if l.Per, err = time.ParseDuration(parts[0]); err != nil {
		return l, fmt.Errorf("%q: period: %v", s, err)
	}
	if l.Burst, err = strconv.Atoi(parts[1]); err != nil {
		return l, fmt.Errorf("%q: burst: %v", s, err)
	}
	if len(parts) == 3 {
		if l.Sessions, err = strconv.Atoi(parts[2]); err != nil {
			return l, fmt.Errorf("%q: sessions: %v", s, err)
		}
	}
	return l, nil
}

func (f *workerFlags) limiterConfig() (ratelimit.Config, error) {
	return limiterConfig(f.limitDefault, f.limits, f.probe.timeout)
}

// limiterConfig builds the per-provider limits from --limit-default and
// --limits; timeout is --timeout, the longest a probe may hold a session.
func limiterConfig(limitDefault, limits string, timeout time.Duration) (ratelimit.Config, error) {
	cfg := ratelimit.DefaultConfig()
	d, err := parseLimit(limitDefault)
	if err != nil {
		return cfg, usagef("--limit-default %v", err)
	}
	cfg.Default = d
	for _, e := range splitList(limits) {
		group, spec, ok := strings.Cut(e, "=")
		if !ok || group == "" {
			return cfg, usagef("--limits %q: want GROUP=RATE/PERIOD:BURST[:SESSIONS]", e)
		}
		l, err := parseLimit(spec)
		if err != nil {
			return cfg, usagef("--limits %s: %v", group, err)
		}
		cfg.Providers[strings.ToLower(group)] = l
	}
	// A session lease must outlive the longest probe it covers, or a slow
	// server would let a second session in beside it; a reused session
	// renews it only after a quarter of its TTL (worker.LeaseTTLFor).
	cfg.LeaseTTL = max(cfg.LeaseTTL, worker.LeaseTTLFor(timeout))
	if err := cfg.Validate(); err != nil {
		return cfg, usagef("rate limits: %v", err)
	}
	return cfg, nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}

// builtWorker is a worker wired to its validator and limiter.
type builtWorker struct {
	w       *worker.Worker
	limiter *ratelimit.Limiter
	// updater refreshes the disposable list when a URL is configured.
	updater *validator.Updater
	// dns runs the DNS canary: at start and every --dns-canary-interval.
	dns *validator.DNSResolver
}

// run starts the worker and, if configured, the list updater; it returns at
// once. stop undoes both.
func (b *builtWorker) start(ctx context.Context) error {
	if b.updater != nil {
		go b.updater.Run(ctx)
	}
	if b.dns != nil {
		go b.dns.RunCanary(ctx)
	}
	return b.w.Start()
}

// buildWorker wires validator → gate → limiter → worker on rdb. adjust, if
// given, may change the limiter's and the worker's configuration (serve
// wires metrics there) before they are built.
// callbackPolicy is the callback address policy of --callback-allow-private
// and --callback-allow: the worker delivers under it, and the API refuses
// at enqueue what it refuses (worker.CheckURL), so both read it from here.
func (f *workerFlags) callbackPolicy() (worker.CallbackConfig, error) {
	cbcfg := worker.CallbackConfig{AllowPrivate: f.callbackPrivate}
	for _, p := range splitList(f.callbackAllow) {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			return cbcfg, usagef("--callback-allow %q: %v", p, err)
		}
		cbcfg.Allowlist = append(cbcfg.Allowlist, pfx)
	}
	return cbcfg, nil
}

// buildConfigs are the configurations a buildHook may change before the
// parts are built (metrics are wired there).
type buildConfigs struct {
	limiter   *ratelimit.Config
	worker    *worker.Config
	validator *validator.Config
	sessions  *worker.SessionsConfig
}

type buildHook func(buildConfigs)

func (f *workerFlags) build(rdb redis.UniversalClient, log *slog.Logger, adjust ...buildHook) (*builtWorker, error) {
	vcfg, err := f.probe.config(func(msg string) { log.Warn(msg) })
	if err != nil {
		return nil, err
	}
	if _, err := f.auditEgressIP(); err != nil {
		return nil, err
	}
	lcfg, err := f.limiterConfig()
	if err != nil {
		return nil, err
	}
	if _, err := tasks.ShardQueues(tasks.QueueDefault, f.queueShards); err != nil {
		return nil, usagef("--queue-shards: %v", err)
	}
	wcfg := worker.Config{QueueShards: f.queueShards}
	// Session sharing across workers rides on session reuse
	// (--no-session-reuse turns both off): worker/sessions.go.
	scfg := worker.SessionsConfig{Prefix: "mxprobe:", QueueCap: f.probe.sessionRcpts, Logger: log}
	for _, a := range adjust {
		a(buildConfigs{limiter: &lcfg, worker: &wcfg, validator: &vcfg, sessions: &scfg})
	}
	limiter, err := ratelimit.New(rdb, lcfg)
	if err != nil {
		return nil, usagef("rate limits: %v", err)
	}
	egress := f.egress
	switch {
	case egress != "":
	case f.probe.source != "":
		egress = f.probe.source
	case f.probe.proxy != "":
		egress = "proxy:" + redact.URL(f.probe.proxy)
	default:
		egress = "default"
	}
	var updater *validator.Updater
	if f.listURL != "" {
		list := validator.EmbeddedDisposableList()
		updater = &validator.Updater{URL: f.listURL, CachePath: f.listCache, MaxAge: f.listMaxAge, List: list, Logger: log}
		if err := updater.LoadCache(); err != nil {
			log.Warn("disposable list cache unusable; starting from the embedded list", "path", f.listCache, "err", err)
		}
		vcfg.Disposable = list
	} else if f.listCache != "" {
		return nil, usagef("--disposable-list-cache needs --disposable-list-url")
	}
	// DNS answers and catch-all status are shared by every worker through
	// Redis; the adjust hook's CacheHook (serve: metrics) counts
	// their hits and misses.
	vcfg.DNS.Cache = worker.NewRedisMXCache(rdb, "mxprobe:", 10000, wcfg.CacheHook, log)
	vcfg.Probe.CatchAllCache = worker.NewRedisCatchAllCache(rdb, "mxprobe:", worker.DefaultCatchAllTTL, 10000, wcfg.CacheHook, log)
	vcfg.Probe.RejectBudgets = worker.NewRedisRejectBudgets(rdb, "mxprobe:", log)
	vcfg.DNS.Canary.Store = worker.NewRedisCanaryStore(rdb, "mxprobe:", log)
	gate := worker.NewGate(limiter, egress, log)
	if !f.probe.noReuse {
		scfg.Egress = egress
		wcfg.Sessions = worker.NewSessions(rdb, scfg)
		wcfg.ProviderFunc = limiter.Group
		gate.ShareSessions(wcfg.Sessions)
	}
	vcfg.Gate = gate
	vcfg.ProviderFunc = limiter.Group
	vcfg.Logger = log
	// Transcripts are recorded only for requests that ask
	// (tasks.WithTranscript): the worker passes validator.WithTranscript.
	v, err := validator.New(vcfg)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	cbcfg, err := f.callbackPolicy()
	if err != nil {
		return nil, err
	}
	cbcfg.Secret, cbcfg.Logger = []byte(f.callbackSecret), log
	if f.callbackSecret == "" {
		return nil, usagef("--callback-secret (or MXPROBE_CALLBACK_SECRET) is required: callbacks are signed with it")
	}
	wcfg.Concurrency = f.concurrency
	wcfg.SignupPolicy = signup.Policy{RejectDisposable: f.rejectDispos, RejectRole: f.rejectRole, RejectFree: f.rejectFree}
	wcfg.SignupPolicySet = true
	wcfg.Retry = worker.RetryPolicy{FirstDelay: f.retryFirst, MaxDelay: f.retryMaxDelay, GiveUpAfter: f.retryGiveUp}
	wcfg.ShutdownTimeout = f.shutdownTimeout
	wcfg.AttemptTimeout = f.probe.timeout // --timeout: the whole check of one address
	wcfg.SchedulerInterval = f.schedInterval
	wcfg.Cache = worker.CacheTTL{Valid: f.cacheValid, Invalid: f.cacheInvalid, Risky: f.cacheRisky, Unknown: f.cacheUnknown}
	wcfg.Callback = cbcfg
	wcfg.Logger = log
	w, err := worker.New(rdb, v, wcfg)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return &builtWorker{w: w, limiter: limiter, updater: updater, dns: v.DNS()}, nil
}

func runWorker(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var f workerFlags
	f.register(fs)
	redisURL := fs.String("redis-url", "", "Redis holding the queues and shared limits (required)")
	metricsListen := fs.String("metrics-listen", "", "serve /metrics and /healthz (no auth) on this address, e.g. :9090: verdicts, probe durations, rate-limit decisions, callbacks and cache hits are counted only where the worker runs")
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printFlagHelp(stdout, fs, workerSynopsis)
			return exitOK, nil
		}
		return exitUsage, err
	}
	if fs.NArg() > 0 {
		return exitUsage, usagef("unexpected arguments %q", fs.Args())
	}
	if *redisURL == "" {
		return exitUsage, usagef("--redis-url (or MXPROBE_REDIS_URL) is required")
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return exitUsage, err
	}
	// Bad settings fail before any connection is made.
	lcfg, err := f.limiterConfig()
	if err != nil {
		return exitUsage, err
	}
	if _, err := f.auditEgressIP(); err != nil {
		return exitUsage, err
	}
	if _, err := tasks.ShardQueues(tasks.QueueDefault, f.queueShards); err != nil {
		return exitUsage, usagef("--queue-shards: %v", err)
	}
	if f.callbackSecret == "" {
		return exitUsage, usagef("--callback-secret (or MXPROBE_CALLBACK_SECRET) is required: callbacks are signed with it")
	}
	rdb, err := openRedis(ctx, *redisURL)
	if err != nil {
		return exitFailure, err
	}
	defer rdb.Close()
	var adjust []buildHook
	var msrv *http.Server
	var mln net.Listener
	if *metricsListen != "" {
		reg, m, err := newMetrics(lcfg)
		if err != nil {
			return exitFailure, err
		}
		adjust = append(adjust, wireMetrics(m))
		if msrv, mln, err = listenMetrics(*metricsListen, reg); err != nil {
			return exitFailure, err
		}
		defer mln.Close()
	}
	bw, err := f.build(rdb, log, adjust...)
	if err != nil {
		return exitUsage, err
	}
	if err := bw.start(ctx); err != nil {
		return exitFailure, fmt.Errorf("starting worker: %w", err)
	}
	log.Info("worker started", "redis", redact.URL(*redisURL), "concurrency", f.concurrency)
	serveErr := make(chan error, 1)
	if msrv != nil {
		go func() { serveErr <- msrv.Serve(mln) }()
		log.Info("metrics listening", "url", "http://"+mln.Addr().String()+"/metrics")
	}
	go startupAudit(ctx, &f, log)
	code, runErr := exitOK, error(nil)
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		code, runErr = exitFailure, fmt.Errorf("metrics server: %w", err)
	}
	log.Info("shutting down: no new tasks; in-flight probes may finish", "timeout", f.shutdownTimeout)
	bw.w.Shutdown()
	if msrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		msrv.Shutdown(sctx) // after the drain: the last verdicts stay scrapeable until then
		cancel()
	}
	log.Info("worker stopped")
	return code, runErr
}
