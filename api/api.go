package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/signup"
	"github.com/mxprobe/mxprobe/tasks"
)

// Config configures a Server. Zero fields take the documented defaults.
type Config struct {
	// Redis holds the queues, batches and quota counters. Required.
	Redis redis.UniversalClient
	// Keys are the accepted API keys. Required unless NoAuth.
	Keys *KeySet
	// NoAuth serves every route without a key: for local demos only.
	NoAuth bool
	// Quota is each key's request budget per minute (0: unlimited).
	Quota int
	// AuthFailuresPerIP and AuthFailuresPerKey are the failed
	// authentications allowed per minute from one client IP and for one
	// key id before both answer 429 (0: the defaults; negative: no limit).
	AuthFailuresPerIP  int
	AuthFailuresPerKey int
	// MaxWait caps the wait parameter of POST /v1/validations (default 30 s).
	MaxWait time.Duration
	// ValidateWait is how long POST /validate waits for a verdict before
	// answering with a provisional one, the sign-up form's time budget
	// (default 3 s); a request may ask for another with ?wait= up to
	// ValidateMaxWait (default 10 s).
	ValidateWait    time.Duration
	ValidateMaxWait time.Duration
	// SignupPolicy decides which addresses that receive mail /validate
	// and the decision field still reject (default: disposable ones).
	SignupPolicy *signup.Policy
	// Publishable are the keys a browser may use for POST /validate from
	// the origins listed (publishable.go); PublishableIPQuota bounds their
	// requests per minute per client IP (0: DefaultPublishableIPQuota;
	// negative: no limit).
	Publishable        Publishable
	PublishableIPQuota int
	// MaxBatchRows caps the rows of one batch (default 10,000);
	// MaxBatchBytes its body (default 8 MiB).
	MaxBatchRows  int
	MaxBatchBytes int64
	// BodyTimeout bounds the time a request may take to send its body
	// (default DefaultBodyTimeout); BatchBodyTimeout that of a batch
	// upload (default DefaultBatchBodyTimeout).
	BodyTimeout      time.Duration
	BatchBodyTimeout time.Duration
	// BatchFinishWithin is how long a batch's rows may take unless the
	// request says (finish_within, deadline): a row not final by then ends
	// as unknown with its last reason (0: no bound, rows retry for as long
	// as the workers' give-up allows).
	BatchFinishWithin time.Duration
	// BatchQueue is the queue batches go to unless the request names one
	// (default bulk, so imports never delay sign-up forms).
	BatchQueue string
	// Retention is how long results and batches stay readable (default
	// 24 h, like tasks.Client's default).
	Retention time.Duration
	// QueueShards is how many shards each priority queue is split into
	// (tasks.WithShards; default 1); the workers need the same.
	QueueShards int
	// Prefix starts the API's own Redis keys (default "mxprobe:api:").
	Prefix string
	// Limiter and Limits answer GET /v1/providers (cool-downs in force, and
	// the configured budgets). Optional: without them the list is empty.
	Limiter *ratelimit.Limiter
	Limits  ratelimit.Config
	// CheckCallbackURL refuses callback URLs at enqueue (422 on
	// callback_url): give it the workers' address policy (worker.CheckURL
	// with their configuration). Nil: only the syntax is checked, and the
	// workers refuse the rest at delivery.
	CheckCallbackURL func(rawURL string) error
	// Static is the web page served at / (index.html at its root).
	Static fs.FS
	// MonitoringWrite lets asynqmon change queues (pause, delete, run);
	// without it asynqmon is read-only.
	MonitoringWrite bool
	// Registry is where /metrics gathers from; the queue collector is
	// registered in it. Nil: a new registry with the Go and process
	// collectors.
	Registry *prometheus.Registry
	// SkipWorkerCheck lets /readyz pass while no worker heartbeats in
	// Redis (by default an API with no worker is not ready: validations
	// would queue but never finish).
	SkipWorkerCheck bool
	Logger          *slog.Logger
}

// Server is the HTTP API. Its Handler is safe for concurrent use.
type Server struct {
	cfg     Config
	rdb     redis.UniversalClient
	client  *tasks.Client
	insp    *asynq.Inspector
	log     *slog.Logger
	mux     *http.ServeMux
	handler http.Handler
	reg     *prometheus.Registry
	now     func() time.Time
}

// route is one entry of the routing table; the OpenAPI test walks it.
type route struct {
	method, pattern string
	auth            bool
	// doc is false for routes deliberately left out of the OpenAPI
	// document (the web page, asynqmon, the login form).
	doc     bool
	handler http.HandlerFunc
}

// New checks cfg and builds the Server.
func New(cfg Config) (*Server, error) {
	if cfg.Redis == nil {
		return nil, errors.New("api: Config.Redis is required")
	}
	if !cfg.NoAuth && (cfg.Keys == nil || cfg.Keys.Len() == 0) {
		return nil, errors.New("api: no API keys configured (set Keys, or NoAuth for a local demo)")
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 30 * time.Second
	}
	if cfg.ValidateWait == 0 {
		cfg.ValidateWait = 3 * time.Second
	}
	if cfg.ValidateMaxWait == 0 {
		cfg.ValidateMaxWait = max(10*time.Second, cfg.ValidateWait)
	}
	if cfg.ValidateWait > cfg.ValidateMaxWait {
		return nil, fmt.Errorf("api: ValidateWait %s is above ValidateMaxWait %s", cfg.ValidateWait, cfg.ValidateMaxWait)
	}
	if err := checkPublishable(cfg.Publishable, cfg.Keys); err != nil {
		return nil, err
	}
	if cfg.PublishableIPQuota == 0 {
		cfg.PublishableIPQuota = DefaultPublishableIPQuota
	}
	if cfg.SignupPolicy == nil {
		p := signup.DefaultPolicy()
		cfg.SignupPolicy = &p
	}
	if cfg.MaxBatchRows == 0 {
		cfg.MaxBatchRows = 10_000
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = 8 << 20
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.BatchBodyTimeout == 0 {
		cfg.BatchBodyTimeout = DefaultBatchBodyTimeout
	}
	if cfg.AuthFailuresPerIP == 0 {
		cfg.AuthFailuresPerIP = DefaultAuthFailuresPerIP
	}
	if cfg.AuthFailuresPerKey == 0 {
		cfg.AuthFailuresPerKey = DefaultAuthFailuresPerKey
	}
	if cfg.BatchQueue == "" {
		cfg.BatchQueue = tasks.QueueBulk
	}
	if cfg.Retention == 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "mxprobe:api:"
	}
	if cfg.BatchFinishWithin < 0 || cfg.BatchFinishWithin > tasks.MaxDeadlineAhead {
		return nil, fmt.Errorf("api: BatchFinishWithin %s: want 0 (none) up to %s", cfg.BatchFinishWithin, tasks.MaxDeadlineAhead)
	}
	if cfg.MaxWait < 0 || cfg.ValidateWait < 0 || cfg.ValidateMaxWait < 0 || cfg.MaxBatchRows < 0 || cfg.MaxBatchBytes < 0 || cfg.Quota < 0 || cfg.Retention < 0 ||
		cfg.BodyTimeout < 0 || cfg.BatchBodyTimeout < 0 {
		return nil, errors.New("api: negative limits in Config")
	}
	s := &Server{
		cfg: cfg,
		rdb: cfg.Redis,
		client: tasks.NewClient(cfg.Redis, tasks.WithRetention(cfg.Retention), tasks.WithCallbackCheck(cfg.CheckCallbackURL),
			tasks.WithShards(cfg.QueueShards)),
		insp: asynq.NewInspectorFromRedisClient(cfg.Redis),
		log:  cfg.Logger,
		reg:  cfg.Registry,
		now:  time.Now,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(prometheusGoCollectors()...)
	}
	if err := s.reg.Register(NewQueueCollector(s.insp)); err != nil {
		return nil, err
	}
	s.mux = http.NewServeMux()
	for _, rt := range s.routes() {
		h := http.Handler(rt.handler)
		switch {
		case rt.auth && rt.method == "POST" && rt.pattern == "/validate":
			h = s.signupAuth(h)
		case rt.auth && !cfg.NoAuth:
			h = s.requireKey(h)
		}
		pattern := rt.pattern
		if rt.method != "" {
			pattern = rt.method + " " + pattern
		}
		s.mux.Handle(pattern, h)
	}
	s.handler = s.withDeadlines(s.withRequestID(s.withRecover(http.HandlerFunc(s.dispatch))))
	return s, nil
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Close releases what New opened (not the Redis client): the producer's
// subscription to result announcements.
func (s *Server) Close() error { return s.client.Close() }

func (s *Server) routes() []route {
	mon := s.adminOnly(s.monitoring().ServeHTTP)
	return []route{
		{"POST", "/v1/validations", true, true, s.postValidation},
		{"GET", "/v1/validations/{id}", true, true, s.getValidation},
		{"POST", "/v1/batches", true, true, s.postBatch},
		{"GET", "/v1/batches/{id}", true, true, s.getBatch},
		{"GET", "/v1/batches/{id}/results", true, true, s.getBatchResults},
		{"GET", "/v1/providers", true, true, s.getProviders},
		{"GET", "/v1/openapi.json", false, true, s.getOpenAPI},
		// Secret keys as everywhere, or a publishable key from its origins
		// (signupAuth, in New).
		{"POST", "/validate", true, true, s.postValidate},
		{"OPTIONS", "/validate", false, false, s.preflightValidate},
		{"GET", "/form.js", false, false, s.getFormJS},
		{"GET", "/signup-demo", false, false, s.getSignupDemo},
		{"GET", "/form-demo.css", false, false, s.getFormDemoCSS},
		{"GET", "/metrics", true, true, s.getMetrics},
		{"GET", "/healthz", false, true, s.getHealthz},
		{"GET", "/readyz", false, true, s.getReadyz},
		{"GET", "/login", false, true, s.getLogin},
		{"POST", "/login", false, true, s.postLogin},
		{"POST", "/logout", false, true, s.postLogout},
		// asynqmon uses GET, POST and DELETE; ReadOnly refuses the last two.
		{"GET", "/monitoring/", true, false, mon},
		{"POST", "/monitoring/", true, false, mon},
		{"DELETE", "/monitoring/", true, false, mon},
		{"GET", "/", true, false, s.serveStatic},
	}
}

// dispatch routes through the mux, answering a miss in the error shape
// instead of ServeMux's plain text.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	// No pattern: ServeMux would answer 404 or 405; ask it which, quietly.
	rec := httptest.NewRecorder()
	s.mux.ServeHTTP(rec, r)
	if rec.Code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.Header().Get("Allow"))
		writeError(w, http.StatusMethodNotAllowed, codeMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path)
		return
	}
	writeError(w, http.StatusNotFound, codeRouteNotFound, "no such endpoint; see /v1/openapi.json")
}

func (s *Server) withRecover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger(r.Context()).Error("panic in handler", "panic", v)
				writeError(w, http.StatusInternalServerError, codeInternal, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// ping checks Redis before accepting work that needs it.
func (s *Server) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.rdb.Ping(ctx).Err()
}
