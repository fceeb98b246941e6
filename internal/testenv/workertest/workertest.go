// Package workertest builds the real worker as tests need it: the
// production wiring (validator → Gate → ratelimit → worker) on a test's own
// Redis, DNS server and SMTP server, with retries, scheduling and polling
// fast enough for tests. Each test adjusts what it is about through
// Options.Adjust.
package workertest

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// Options say where the test's world is.
type Options struct {
	SMTPPort int    // every MX host is asked on this port
	DNS      string // the DNS server's host:port
	// Log receives the worker's, the Gate's and the validator's logs; nil
	// discards them.
	Log *slog.Logger
	// Limit is every provider's limit; zero: 1000/s, burst 100, 20
	// sessions per MX host (out of the way unless a test is about it).
	Limit ratelimit.Limit
	// LimiterPrefix prefixes the limiter's keys; "" keeps ratelimit's.
	LimiterPrefix string
	// CallbackSecret signs callbacks; nil: "workertest-callback-secret".
	CallbackSecret []byte
	// Adjust changes the configurations before the worker is built.
	Adjust func(*worker.Config, *validator.Config)
}

// FastRetry is the retry policy tests start from: 50 ms, doubling, at most
// a second apart, given up after 10 s.
var FastRetry = worker.RetryPolicy{FirstDelay: 50 * time.Millisecond, Multiplier: 2, MaxDelay: time.Second, GiveUpAfter: 10 * time.Second, Jitter: 0.1}

// New builds a worker on rdb without starting it. It needs no testing.TB,
// for tests whose worker runs in a child process.
func New(rdb redis.UniversalClient, o Options) (*worker.Worker, error) {
	lcfg := ratelimit.DefaultConfig()
	if o.LimiterPrefix != "" {
		lcfg.Prefix = o.LimiterPrefix
	}
	lcfg.Default = ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 100, Sessions: 20}
	if o.Limit != (ratelimit.Limit{}) {
		lcfg.Default = o.Limit
	}
	limiter, err := ratelimit.New(rdb, lcfg)
	if err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	secret := o.CallbackSecret
	if secret == nil {
		secret = []byte("workertest-callback-secret")
	}
	gate := worker.NewGate(limiter, "test", log)
	sessions := worker.NewSessions(rdb, worker.SessionsConfig{Egress: "test", Logger: log})
	gate.ShareSessions(sessions)
	vcfg := validator.Config{
		Probe: validator.ProbeConfig{HeloName: "probe.mxprobe.test", MailFrom: "verify@mxprobe.test",
			Port: o.SMTPPort, ConnectTimeout: 5 * time.Second, CommandTimeout: 10 * time.Second,
			RejectBudgets: worker.NewRedisRejectBudgets(rdb, "mxprobe:", log)},
		DNS:          validator.DNSConfig{Servers: []string{o.DNS}, AllowPrivate: true, Timeout: 2 * time.Second},
		Gate:         gate,
		ProviderFunc: limiter.Group,
		Logger:       log,
	}
	wcfg := worker.Config{
		Concurrency:       8,
		Retry:             FastRetry,
		CallbackRetry:     FastRetry,
		ShutdownTimeout:   2 * time.Second,
		Callback:          worker.CallbackConfig{Secret: secret, Allowlist: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}},
		SchedulerInterval: 50 * time.Millisecond,
		PollInterval:      20 * time.Millisecond,
		Sessions:          sessions,
		ProviderFunc:      limiter.Group,
		Logger:            log,
	}
	if o.Adjust != nil {
		o.Adjust(&wcfg, &vcfg)
	}
	v, err := validator.New(vcfg)
	if err != nil {
		return nil, err
	}
	return worker.New(rdb, v, wcfg)
}

// Start builds and starts a worker on rdb; it shuts down at the test's
// cleanup.
func Start(t testing.TB, rdb redis.UniversalClient, o Options) *worker.Worker {
	t.Helper()
	w, err := New(rdb, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	return w
}
