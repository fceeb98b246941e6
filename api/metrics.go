package api

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
)

func prometheusGoCollectors() []prometheus.Collector {
	return []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
}

func (s *Server) getMetrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, r)
}

// QueueCollector reports asynq's queues as Prometheus gauges, read from
// Redis at scrape time through asynq.Inspector: tasks by state, latency of
// the oldest pending task, pause state, processed and failed totals, and
// the number of live worker servers.
type QueueCollector struct {
	insp                          *asynq.Inspector
	tasks, latency, paused, procd *prometheus.Desc
	failed, workers, up           *prometheus.Desc
}

// NewQueueCollector returns a collector over insp.
func NewQueueCollector(insp *asynq.Inspector) *QueueCollector {
	return &QueueCollector{
		insp:    insp,
		tasks:   prometheus.NewDesc("mxprobe_queue_tasks", "Tasks in a queue by state.", []string{"queue", "state"}, nil),
		latency: prometheus.NewDesc("mxprobe_queue_latency_seconds", "Age of the oldest pending task of a queue.", []string{"queue"}, nil),
		paused:  prometheus.NewDesc("mxprobe_queue_paused", "1 when the queue is paused.", []string{"queue"}, nil),
		procd:   prometheus.NewDesc("mxprobe_queue_processed_total", "Tasks processed by a queue (asynq's running total).", []string{"queue"}, nil),
		failed:  prometheus.NewDesc("mxprobe_queue_failed_total", "Task attempts that failed in a queue (asynq's running total).", []string{"queue"}, nil),
		workers: prometheus.NewDesc("mxprobe_workers", "Worker servers with a live heartbeat in Redis.", nil, nil),
		up:      prometheus.NewDesc("mxprobe_queue_scrape_ok", "1 when the queues could be read from Redis at this scrape.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.tasks, c.latency, c.paused, c.procd, c.failed, c.workers, c.up} {
		ch <- d
	}
}

// scrapeTimeout bounds the Redis reads of one scrape (Prometheus' default
// scrape timeout is 10 s).
const scrapeTimeout = 5 * time.Second

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	queues, err := inspectorCall(ctx, c.insp.Queues)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	// Our queues are always reported, even before their first task (when
	// asynq does not know them yet), so dashboards and alerts see zeros
	// rather than gaps.
	all := slices.Clone(queues)
	for _, q := range tasks.Queues {
		if !slices.Contains(all, q) {
			all = append(all, q)
		}
	}
	ok := 1.0
	for _, q := range all {
		info := &asynq.QueueInfo{Queue: q}
		if slices.Contains(queues, q) {
			if info, err = inspectorCall(ctx, func() (*asynq.QueueInfo, error) { return c.insp.GetQueueInfo(q) }); err != nil {
				ok = 0
				continue
			}
		}
		for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived, "completed": info.Completed, "aggregating": info.Aggregating} {
			ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.GaugeValue, float64(n), q, state)
		}
		ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, info.Latency.Seconds(), q)
		paused := 0.0
		if info.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, paused, q)
		ch <- prometheus.MustNewConstMetric(c.procd, prometheus.CounterValue, float64(info.ProcessedTotal), q)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(info.FailedTotal), q)
	}
	if servers, err := inspectorCall(ctx, c.insp.Servers); err == nil {
		ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(len(servers)))
	} else {
		ok = 0
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, ok)
}

var _ prometheus.Collector = (*QueueCollector)(nil)

// Metrics is the Prometheus side of the worker's and the limiter's events:
// pass ObserveResult as worker.Config.OnResult, CallbackOutcome as
// worker.Config.OnCallback, CacheLookup as worker.Config.CacheHook (and to
// the shared MX and catch-all caches), CanaryChecked to the validator's DNS
// canary, and the Metrics itself as
// ratelimit.Config.Metrics.
//
// Provider labels are bounded: a provider group not named in Providers is
// counted as "other", because groups are registrable domains and a bulk
// import would otherwise mint a time series per recipient domain.
type Metrics struct {
	providers map[string]bool

	mu           sync.Mutex
	otherWaiting map[string]int // provider → waiting, for groups counted as "other"

	verdicts    *prometheus.CounterVec
	smtpReplies *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	acquired    *prometheus.CounterVec
	denied      *prometheus.CounterVec
	reserved    *prometheus.CounterVec
	coolDowns   *prometheus.CounterVec
	restored    prometheus.Counter
	callbacks   *prometheus.CounterVec
	cache       *prometheus.CounterVec
	canary      prometheus.Gauge
	canaryRuns  *prometheus.CounterVec
	sessRcpts   prometheus.Histogram
	sessWait    *prometheus.HistogramVec
	sessWaiting *prometheus.GaugeVec
}

// cacheNames are the caches CacheLookup counts by name; any other name is
// counted as "other", so a caller cannot mint label values.
var cacheNames = []string{"mx", "catch_all", "result"}

// NewMetrics registers the counters in reg. providers are the groups that
// get their own label value.
func NewMetrics(reg prometheus.Registerer, providers []string) (*Metrics, error) {
	m := &Metrics{
		providers:    map[string]bool{},
		otherWaiting: map[string]int{},
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxprobe_verdicts_total",
			Help: "Final verdicts by verdict and reason."}, []string{"verdict", "reason", "cached"}),
		smtpReplies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxprobe_smtp_replies_total",
			Help: "SMTP replies that decided a final verdict, by provider group and reply class (2xx, 4xx, 5xx, none)."}, []string{"provider", "class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mxprobe_probe_duration_seconds",
			Help:    "Duration of the check that produced a final verdict (cache hits excluded).",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180}}, []string{"verdict"}),
		acquired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxprobe_ratelimit_acquired_total",
			Help: "SMTP sessions admitted by the shared rate limiter."}, []string{"provider", "reserved"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxprobe_ratelimit_denied_total",
			Help: "SMTP sessions denied by the shared rate limiter, by reason (rate, sessions, cool_down, failover)."}, []string{"provider", "reason"}),
		reserved: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxprobe_ratelimit_reserved_total",
			Help: "Denied callers granted a future slot."}, []string{"provider"}),
		coolDowns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxprobe_ratelimit_cooldowns_total",
			Help: "Cool-downs opened after a provider throttled or blocked us."}, []string{"provider", "reason"}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{Name: "mxprobe_ratelimit_leases_restored_total",
			Help: "Session leases this process put back into Redis after a failover lost them."}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxprobe_callbacks_total",
			Help: "Callback delivery attempts by outcome."}, []string{"outcome"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxprobe_cache_lookups_total",
			Help: "Lookups in the shared caches (mx: DNS answers, catch_all: per-domain catch-all status, result: final verdicts per address), by result (hit, miss)."},
			[]string{"cache", "result"}),
		canary: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mxprobe_dns_canary_healthy",
			Help: "1 while the DNS canary names resolve, 0 while they do not (NXDOMAIN and no-MX answers are then unknown/dns_error, not invalid), -1 before the first check or with --dns-canary none."}),
		canaryRuns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxprobe_dns_canary_checks_total",
			Help: "DNS canary results this process ran or read from Redis, by result (healthy, failed)."}, []string{"result"}),
	}
	m.sessRcpts = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mxprobe_session_recipients",
		Help:    "Recipients asked per SMTP session, observed when the session ends (the catch-all probe not counted).",
		Buckets: []float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20}})
	m.sessWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mxprobe_session_wait_seconds",
		Help:    "Time an address handed to the worker holding its MX host's session waited for its result, by outcome (joined: asked on that session; declined: probed itself).",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180}}, []string{"outcome"})
	m.sessWaiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mxprobe_session_waiting",
		Help: "Addresses in this process waiting for a session another worker (or this one) holds, by provider group."}, []string{"provider"})
	m.sessWait.WithLabelValues("joined")
	m.sessWait.WithLabelValues("declined")
	for _, p := range append(slices.Clone(providers), "other") {
		m.sessWaiting.WithLabelValues(p)
	}
	m.canary.Set(-1)
	m.canaryRuns.WithLabelValues("healthy")
	m.canaryRuns.WithLabelValues("failed")
	// Every series exists from the start: a hit ratio reads 0 hits, not
	// no data, before the first lookup.
	for _, c := range cacheNames {
		m.cache.WithLabelValues(c, "hit")
		m.cache.WithLabelValues(c, "miss")
	}
	for _, p := range providers {
		m.providers[p] = true
	}
	for _, c := range []prometheus.Collector{m.verdicts, m.smtpReplies, m.duration, m.acquired, m.denied, m.reserved, m.coolDowns, m.restored, m.callbacks, m.cache, m.canary, m.canaryRuns, m.sessRcpts, m.sessWait, m.sessWaiting} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) provider(group string) string {
	if group == "" {
		return "none"
	}
	if m.providers[group] {
		return group
	}
	return "other"
}

// ObserveResult counts one final result (worker.Config.OnResult). Results
// that are not final are ignored: their verdict is provisional.
func (m *Metrics) ObserveResult(_ context.Context, r tasks.Result) {
	if !r.Final {
		return
	}
	m.verdicts.WithLabelValues(r.Verdict, r.Reason, strconv.FormatBool(r.Cached)).Inc()
	if r.Cached || r.SharedWith != "" {
		return
	}
	class := "none"
	if r.SMTP != nil && r.SMTP.Code >= 200 && r.SMTP.Code < 600 {
		class = strconv.Itoa(r.SMTP.Code/100) + "xx"
	}
	if r.MXHost != "" || r.SMTP != nil {
		m.smtpReplies.WithLabelValues(m.provider(r.Provider), class).Inc()
	}
	if d, err := time.ParseDuration(r.Duration); err == nil {
		m.duration.WithLabelValues(r.Verdict).Observe(d.Seconds())
	}
}

// CallbackOutcome counts one callback attempt: "delivered", "gone",
// "refused" (final), "retry" (will be tried again).
func (m *Metrics) CallbackOutcome(_ context.Context, outcome string) {
	m.callbacks.WithLabelValues(outcome).Inc()
}

// CacheLookup counts one cache lookup (worker.CacheHook): cache is "mx",
// "catch_all" or "result".
func (m *Metrics) CacheLookup(cache string, hit bool) {
	if !slices.Contains(cacheNames, cache) {
		cache = "other"
	}
	result := "miss"
	if hit {
		result = "hit"
	}
	m.cache.WithLabelValues(cache, result).Inc()
}

// SessionEnded observes the recipients of one SMTP session when it ends
// (validator.ProbeConfig.OnSessionEnd).
func (m *Metrics) SessionEnded(rcpts int) { m.sessRcpts.Observe(float64(rcpts)) }

// SessionWait observes one hand-off to a session holder
// (worker.SessionsConfig.OnWait).
func (m *Metrics) SessionWait(_ string, waited time.Duration, joined bool) {
	outcome := "declined"
	if joined {
		outcome = "joined"
	}
	m.sessWait.WithLabelValues(outcome).Observe(waited.Seconds())
}

// SessionsWaiting sets the addresses of a provider waiting in this process
// for a held session (worker.SessionsConfig.OnWaiting). Providers not named
// in the limits add up under "other".
func (m *Metrics) SessionsWaiting(provider string, n int) {
	p := m.provider(provider)
	if p == "other" {
		// Many groups share "other": a gauge set per group would
		// overwrite; count the change instead.
		m.mu.Lock()
		prev := m.otherWaiting[provider]
		if n <= 0 {
			delete(m.otherWaiting, provider)
		} else {
			m.otherWaiting[provider] = n
		}
		m.mu.Unlock()
		m.sessWaiting.WithLabelValues(p).Add(float64(n - prev))
		return
	}
	m.sessWaiting.WithLabelValues(p).Set(float64(n))
}

// CanaryChecked records one DNS canary result (validator.CanaryConfig's
// OnCheck).
func (m *Metrics) CanaryChecked(healthy bool) {
	if healthy {
		m.canary.Set(1)
		m.canaryRuns.WithLabelValues("healthy").Inc()
		return
	}
	m.canary.Set(0)
	m.canaryRuns.WithLabelValues("failed").Inc()
}

// Acquired implements ratelimit.Metrics.
func (m *Metrics) Acquired(_, group string, reserved bool) {
	m.acquired.WithLabelValues(m.provider(group), strconv.FormatBool(reserved)).Inc()
}

// Denied implements ratelimit.Metrics.
func (m *Metrics) Denied(_, group, reason string) {
	m.denied.WithLabelValues(m.provider(group), reason).Inc()
}

// Reserved implements ratelimit.Metrics.
func (m *Metrics) Reserved(_, group string, _ time.Duration) {
	m.reserved.WithLabelValues(m.provider(group)).Inc()
}

// CoolDownOpened implements ratelimit.Metrics.
func (m *Metrics) CoolDownOpened(_, group, reason string, _ time.Duration) {
	m.coolDowns.WithLabelValues(m.provider(group), reason).Inc()
}

// LeasesRestored implements ratelimit.Metrics.
func (m *Metrics) LeasesRestored(n int) { m.restored.Add(float64(n)) }

var _ ratelimit.Metrics = (*Metrics)(nil)
