package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/internal/redact"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/signup"
	"github.com/mxprobe/mxprobe/web"
	"github.com/mxprobe/mxprobe/worker"
)

const serveSynopsis = "mxprobe serve [flags]   (API + web page + worker; embedded Redis when no --redis-url)"

// serveFlags are the settings of serve on top of the worker's.
type serveFlags struct {
	worker          workerFlags
	role            string
	redisURL        string
	listen          string
	metricsListen   string
	apiKeys         string
	apiKeysFile     string
	noAuth          bool
	quota           int
	maxWait         time.Duration
	validateWait    time.Duration
	validateMaxWait time.Duration
	publishable     string
	pkIPQuota       int
	batchMaxRows    int
	batchFinish     time.Duration
	retention       time.Duration
	monitoringWrite bool
	bodyTimeout     time.Duration
	batchBodyTime   time.Duration
	maxConns        int
	maxConnsPerIP   int
	authFailIP      int
	authFailKey     int
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	f.worker.register(fs)
	fs.StringVar(&f.role, "role", "all", "what this process runs: api, worker or all")
	fs.StringVar(&f.redisURL, "redis-url", "", "Redis (redis://, rediss://, redis-sentinel://, redis-cluster://); empty: an embedded in-process Redis that keeps nothing")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "HTTP address of the API (roles api and all)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "role worker only: serve /metrics and /healthz (no auth) on this address")
	fs.StringVar(&f.apiKeys, "api-keys", "", "comma-separated API keys id:secret (prefer MXPROBE_API_KEYS or --api-keys-file over the command line)")
	fs.StringVar(&f.apiKeysFile, "api-keys-file", "", "file with one API key id:secret per line")
	fs.BoolVar(&f.noAuth, "no-auth", false, "serve the API without keys (local demos only: anyone who can reach the port can use it)")
	fs.IntVar(&f.quota, "quota", 600, "requests per minute per API key (0: unlimited)")
	fs.DurationVar(&f.maxWait, "max-wait", 30*time.Second, "cap of the wait parameter of POST /v1/validations")
	fs.DurationVar(&f.validateWait, "validate-wait", 3*time.Second, "sign-up form's time budget: how long POST /validate waits for a verdict before it answers accept, final false")
	fs.DurationVar(&f.validateMaxWait, "validate-max-wait", 10*time.Second, "cap of the wait parameter of POST /validate")
	fs.StringVar(&f.publishable, "publishable-keys", "", "keys a browser may use for POST /validate, with their origins: id=https://shop.example[,origin…][;id=…]")
	fs.IntVar(&f.pkIPQuota, "publishable-ip-quota", api.DefaultPublishableIPQuota, "requests per minute per client IP with publishable keys (-1: no limit)")
	fs.IntVar(&f.batchMaxRows, "batch-max-rows", 10_000, "most rows in one batch")
	fs.DurationVar(&f.batchFinish, "batch-finish-within", time.Hour, "a batch row not final this long after upload ends as unknown with its last reason, unless the request sets finish_within or deadline (0: no bound)")
	fs.DurationVar(&f.retention, "retention", 24*time.Hour, "how long results and batches stay readable")
	fs.DurationVar(&f.bodyTimeout, "body-timeout", api.DefaultBodyTimeout, "time a client has to send a request body (JSON routes)")
	fs.DurationVar(&f.batchBodyTime, "batch-body-timeout", api.DefaultBatchBodyTimeout, "time a client has to send a batch upload (POST /v1/batches)")
	fs.IntVar(&f.maxConns, "max-conns", 4096, "most open API connections; more are closed at once (0: no cap; keep well below ulimit -n)")
	fs.IntVar(&f.maxConnsPerIP, "max-conns-per-ip", 256, "most open API connections from one client IP; more are closed at once (0: no cap; raise behind a proxy)")
	fs.IntVar(&f.authFailIP, "auth-failures-per-ip", api.DefaultAuthFailuresPerIP, "failed authentications per minute from one client IP before 429 (-1: no limit)")
	fs.IntVar(&f.authFailKey, "auth-failures-per-key", api.DefaultAuthFailuresPerKey, "failed authentications per minute for one key id before 429, even with the right secret (-1: no limit)")
	fs.BoolVar(&f.monitoringWrite, "monitoring-write", false, "let /monitoring (asynqmon) pause, delete and run tasks (read-only otherwise)")
}

func runServe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	fset := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	f.register(fset)
	if err := parseFlags(fset, args, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printFlagHelp(stdout, fset, serveSynopsis)
			return exitOK, nil
		}
		return exitUsage, err
	}
	if fset.NArg() > 0 {
		return exitUsage, usagef("unexpected arguments %q", fset.Args())
	}
	if f.bodyTimeout <= 0 || f.batchBodyTime <= 0 {
		return exitUsage, usagef("--body-timeout and --batch-body-timeout must be positive")
	}
	if f.authFailIP == 0 || f.authFailKey == 0 || f.authFailIP < -1 || f.authFailKey < -1 {
		return exitUsage, usagef("--auth-failures-per-ip and --auth-failures-per-key: want a positive count, or -1 for no limit")
	}
	if f.validateWait < 0 || f.validateMaxWait <= 0 || f.validateWait > f.validateMaxWait {
		return exitUsage, usagef("--validate-wait %s must be between 0 and --validate-max-wait %s (positive)", f.validateWait, f.validateMaxWait)
	}
	pubKeys, err := api.ParsePublishable(f.publishable)
	if err != nil {
		return exitUsage, usagef("--publishable-keys: %v", err)
	}
	if f.pkIPQuota == 0 || f.pkIPQuota < -1 {
		return exitUsage, usagef("--publishable-ip-quota: want a positive count, or -1 for no limit")
	}
	if f.maxConns < 0 || f.maxConnsPerIP < 0 {
		return exitUsage, usagef("--max-conns and --max-conns-per-ip must not be negative")
	}
	if _, err := f.worker.auditEgressIP(); err != nil {
		return exitUsage, err
	}
	runAPI, runWorker := f.role == "api" || f.role == "all", f.role == "worker" || f.role == "all"
	if !runAPI && !runWorker {
		return exitUsage, usagef("--role %q: want api, worker or all", f.role)
	}
	if f.metricsListen != "" && runAPI {
		// The API serves /metrics itself; silently ignoring the flag would
		// leave a scraper pointed at nothing.
		return exitUsage, usagef("--metrics-listen is for --role worker; with --role %s the API serves /metrics on --listen", f.role)
	}
	log, err := newLogger(stderr, f.worker.logFormat, f.worker.logLevel)
	if err != nil {
		return exitUsage, err
	}
	var keys *api.KeySet
	if runAPI {
		if keys, err = f.loadKeys(); err != nil {
			return exitUsage, err
		}
		if f.noAuth {
			log.Warn("--no-auth: THE API IS OPEN. Anyone who can reach " + f.listen + " can queue probes from your IP address and read every result. For local demos only.")
		} else if keys.Len() == 0 {
			key := api.GenerateKey()
			// The only key of this run: admin, so that it reaches
			// /monitoring too.
			if err := keys.Add(key + ";admin"); err != nil {
				return exitFailure, err
			}
			// Printed once, to stderr only, and never logged again.
			fmt.Fprintf(stderr, "\nNo API key configured (MXPROBE_API_KEYS or --api-keys-file): generated one (an admin key) for this run.\n"+
				"  API key: %s\n  Use it as: Authorization: Bearer %s\n  It is gone when this process stops.\n\n", key, key)
		}
	}

	// Redis: the given one, or an embedded one for a first look.
	var rdb redis.UniversalClient
	if f.redisURL == "" {
		if f.role != "all" {
			return exitUsage, usagef("--role %s needs --redis-url (MXPROBE_REDIS_URL): the embedded Redis cannot be shared with another process", f.role)
		}
		mr, stopClock, err := startEmbeddedRedis()
		if err != nil {
			return exitFailure, err
		}
		defer mr.Close()
		defer stopClock()
		log.Warn("EMBEDDED REDIS: no --redis-url (MXPROBE_REDIS_URL) given, so queues, results and rate limits live in this process only. " +
			"Nothing persists across restarts and no other worker or API process can join. Use a real Redis for anything but a trial.")
		rdb = redis.NewClient(&redis.Options{Addr: mr.Addr()})
	} else {
		if rdb, err = openRedis(ctx, f.redisURL); err != nil {
			return exitFailure, err
		}
		log.Info("using redis", "url", redact.URL(f.redisURL))
	}
	defer rdb.Close()

	lcfg, err := f.worker.limiterConfig()
	if err != nil {
		return exitUsage, err
	}
	reg, metrics, err := newMetrics(lcfg)
	if err != nil {
		return exitFailure, err
	}

	var bw *builtWorker
	if runWorker {
		if f.worker.callbackSecret == "" {
			f.worker.callbackSecret = randomSecret()
			log.Warn("no --callback-secret (MXPROBE_CALLBACK_SECRET): callbacks are signed with a random secret for this run only; receivers cannot verify them across restarts")
		}
		if bw, err = f.worker.build(rdb, log, wireMetrics(metrics)); err != nil {
			return exitUsage, err
		}
	}

	var srv *http.Server
	var ln net.Listener
	switch {
	case runAPI:
		limiter, err := ratelimit.New(rdb, lcfg)
		if err != nil {
			return exitUsage, usagef("rate limits: %v", err)
		}
		static, err := fs.Sub(web.FS, "static")
		if err != nil {
			return exitFailure, err
		}
		// The API refuses callback URLs the workers would refuse: with
		// --role api the worker flags still describe the workers' policy,
		// and must be given to both (README).
		cbPolicy, err := f.worker.callbackPolicy()
		if err != nil {
			return exitUsage, err
		}
		a, err := api.New(api.Config{
			Redis: rdb, Keys: keys, NoAuth: f.noAuth, Quota: f.quota,
			BatchFinishWithin: f.batchFinish,
			MaxWait:           f.maxWait, ValidateWait: f.validateWait, ValidateMaxWait: f.validateMaxWait, MaxBatchRows: f.batchMaxRows, Retention: f.retention,
			Publishable: pubKeys, PublishableIPQuota: f.pkIPQuota,
			SignupPolicy: &signup.Policy{RejectDisposable: f.worker.rejectDispos, RejectRole: f.worker.rejectRole, RejectFree: f.worker.rejectFree},
			QueueShards:  f.worker.queueShards,
			BodyTimeout:  f.bodyTimeout, BatchBodyTimeout: f.batchBodyTime,
			AuthFailuresPerIP: f.authFailIP, AuthFailuresPerKey: f.authFailKey,
			Limiter: limiter, Limits: lcfg, Static: static, MonitoringWrite: f.monitoringWrite,
			Registry: reg, Logger: log,
			CheckCallbackURL: func(u string) error { return worker.CheckURL(u, cbPolicy) },
		})
		if err != nil {
			return exitUsage, usageError{err.Error()}
		}
		defer a.Close() // after the HTTP server's shutdown, below
		// The handler bounds each request's body and answer; WriteTimeout
		// backs that up with the longest any route needs (docs/reliability.md,
		// "slow clients").
		srv = &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			WriteTimeout: a.WriteTimeout(), ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		if ln, err = net.Listen("tcp", f.listen); err != nil {
			return exitFailure, fmt.Errorf("--listen %s: %w", f.listen, err)
		}
		ln = api.LimitListener(ln, api.ConnLimits{Total: f.maxConns, PerIP: f.maxConnsPerIP})
	case f.metricsListen != "":
		if srv, ln, err = listenMetrics(f.metricsListen, reg); err != nil {
			return exitFailure, err
		}
	}

	if bw != nil {
		// bw.start, not bw.w.Start: it also runs the disposable-list
		// updater when --disposable-list-url is set.
		if err := bw.start(ctx); err != nil {
			if ln != nil {
				ln.Close()
			}
			return exitFailure, fmt.Errorf("starting worker: %w", err)
		}
		log.Info("worker started", "concurrency", f.worker.concurrency)
		go startupAudit(ctx, &f.worker, log) // as `mxprobe worker` does (README)
	}
	serveErr := make(chan error, 1)
	if srv != nil {
		go func() { serveErr <- srv.Serve(ln) }()
		log.Info("listening", "url", "http://"+ln.Addr().String()+"/", "role", f.role, "auth", !f.noAuth)
	}

	code := exitOK
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		code, runErr = exitFailure, fmt.Errorf("http server: %w", err)
	}
	log.Info("shutting down: no new requests or tasks; in-flight ones may finish", "timeout", f.worker.shutdownTimeout)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), f.worker.shutdownTimeout)
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("http shutdown", "err", err)
		}
		cancel()
	}
	if bw != nil {
		bw.w.Shutdown()
	}
	log.Info("stopped")
	return code, runErr
}

// loadKeys gathers API keys from --api-keys / MXPROBE_API_KEYS and
// --api-keys-file. With none and no --no-auth it makes one for this run and
// prints it once: the embedded default must never be an open API.
func (f *serveFlags) loadKeys() (*api.KeySet, error) {
	if f.noAuth {
		if f.apiKeys != "" || f.apiKeysFile != "" {
			return nil, usagef("--no-auth with API keys: choose one")
		}
		return nil, nil
	}
	keys, err := api.ParseKeys(f.apiKeys)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	if f.apiKeysFile != "" {
		fk, err := api.LoadKeysFile(f.apiKeysFile)
		if err != nil {
			return nil, usagef("--api-keys-file: %v", err)
		}
		if err := keys.Merge(fk); err != nil {
			return nil, usageError{err.Error()}
		}
	}
	return keys, nil
}

func randomSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// startEmbeddedRedis runs miniredis on loopback. miniredis only expires keys
// when told time has passed, so a ticker moves its clock forward as the
// wall clock goes; TIME (used by the limiter's scripts) already reads the
// wall clock because we never pin it with SetTime.
func startEmbeddedRedis() (*miniredis.Miniredis, func(), error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, nil, fmt.Errorf("embedded redis: %w", err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		// 100 ms: session leases and dedupe locks live seconds, so
		// expiring them up to a tenth of a second late is harmless.
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				mr.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	return mr, func() { close(done); <-stopped }, nil
}
