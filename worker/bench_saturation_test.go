package worker_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// Flags of BenchmarkRateLimitSaturation, after -args:
//
//	go test -run '^$' -bench RateLimitSaturation -benchtime 3x -v ./worker/ -args -saturation.tasks 1000 -saturation.rate 10
var (
	saturationTasks     = flag.Int("saturation.tasks", 200, "BenchmarkRateLimitSaturation: tasks per run, all for one provider")
	saturationRate      = flag.Int("saturation.rate", 20, "BenchmarkRateLimitSaturation: the provider's sessions per second")
	saturationBurst     = flag.Int("saturation.burst", 2, "BenchmarkRateLimitSaturation: the provider's burst")
	saturationSessions  = flag.Int("saturation.sessions", 5, "BenchmarkRateLimitSaturation: concurrent sessions per MX host")
	saturationScheduler = flag.Duration("saturation.scheduler", time.Second, "BenchmarkRateLimitSaturation: worker.Config.SchedulerInterval (1 s: `mxprobe worker`'s default; 0: asynq's, 5 s)")
)

// BenchmarkRateLimitSaturation queues -saturation.tasks
// validations for one provider at once and lets the real worker (validator
// → Gate → ratelimit → asynq) drain them under a limit of
// -saturation.rate sessions per second, with session reuse off, so every
// task needs a new session and therefore a token: the limiter, not the
// pool, sets the pace. The catch-all probe is off, so each session asks
// exactly one RCPT.
//
// It reports, per run (one b.N iteration; read medians over -benchtime 3x or
// more):
//
//   - reschedules per task: RateLimitError returns (asynq brings the task
//     back without using a retry), counted from the worker's "task not done"
//     log records, split by the limiter's reason (rate, sessions,
//     cool_down). Target ≤ 1.2.
//   - admitted rate: sessions per second as the SMTP sink sees them (the
//     instant of each RCPT), after the initial burst:
//     (n − 1 − burst) / (t[n−1] − t[burst]). Target: within 5 % of the
//     configured rate. Stragglers (a task denied for sessions waits for a
//     lease to expire; asynq forwards retries only every
//     SchedulerInterval) stretch that span without the limiter admitting
//     less, so the steady rate over the middle of the run is reported as
//     well: 0.8·n / (t[0.9n] − t[0.1n]).
func BenchmarkRateLimitSaturation(b *testing.B) {
	n, rate, burst := *saturationTasks, *saturationRate, *saturationBurst
	if burst >= n-1 {
		b.Fatalf("-saturation.burst %d must be well below -saturation.tasks %d", burst, n)
	}
	srv := redistest.StartServer(b)
	admin := srv.Client(b)
	rdb := srv.Client(b)
	var mu sync.Mutex
	var rcptAt []time.Time
	sink := smtptest.Start(b, smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
		mu.Lock()
		rcptAt = append(rcptAt, time.Now())
		mu.Unlock()
		return nil
	}})
	dnsSrv := dnstest.Start(b, dnstest.Zone{
		"provider.test.":    {dnstest.MX("mx.provider.test.", 10)},
		"mx.provider.test.": {dnstest.A("127.0.0.1")},
	})
	prod := tasks.NewClient(admin)

	type runResult struct {
		reschedules map[string]int
		admitted    float64
		steady      float64
		wall        time.Duration
		firstToLast time.Duration
	}
	var runs []runResult
	b.ResetTimer()
	for round := range b.N {
		ctx := context.Background()
		if err := admin.FlushDB(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		rcptAt = rcptAt[:0]
		mu.Unlock()
		lcfg := ratelimit.DefaultConfig()
		lcfg.Default = ratelimit.Limit{Rate: rate, Per: time.Second, Burst: burst, Sessions: *saturationSessions}
		limiter, err := ratelimit.New(rdb, lcfg)
		if err != nil {
			b.Fatal(err)
		}
		counter := &denialCounter{}
		log := slog.New(counter)
		v, err := validator.New(validator.Config{
			Probe: validator.ProbeConfig{HeloName: "probe.mxprobe.test", MailFrom: "verify@mxprobe.test",
				Port: sink.Port(), ConnectTimeout: 5 * time.Second, CommandTimeout: 10 * time.Second,
				Pool: validator.PoolConfig{Disabled: true}},
			DNS:          validator.DNSConfig{Servers: []string{dnsSrv.Addr()}, AllowPrivate: true, Timeout: 2 * time.Second},
			Gate:         worker.NewGate(limiter, "bench", nil),
			ProviderFunc: limiter.Group,
		})
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			if _, err := prod.Enqueue(ctx, tasks.Request{Address: fmt.Sprintf("sat-r%d-%d@provider.test", round, i)}); err != nil {
				b.Fatal(err)
			}
		}
		var done atomic.Int64
		finished := make(chan struct{})
		w, err := worker.New(rdb, v, worker.Config{
			ShutdownTimeout:   5 * time.Second,
			SchedulerInterval: *saturationScheduler,
			Logger:            log,
			Callback:          worker.CallbackConfig{Secret: secret},
			OnResult: func(_ context.Context, r tasks.Result) {
				if r.Final && done.Add(1) == int64(n) {
					close(finished)
				}
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := w.Start(); err != nil {
			b.Fatal(err)
		}
		limit := time.Duration(3*n/rate)*time.Second + time.Minute
		select {
		case <-finished:
		case <-time.After(limit):
			w.Shutdown()
			b.Fatalf("only %d of %d tasks done after %s", done.Load(), n, limit)
		}
		wall := time.Since(start)
		w.Shutdown()
		mu.Lock()
		at := slices.Clone(rcptAt)
		mu.Unlock()
		slices.SortFunc(at, func(x, y time.Time) int { return x.Compare(y) })
		if len(at) != n {
			b.Fatalf("the sink saw %d RCPTs for %d tasks (reuse is off: one session, one RCPT per task)", len(at), n)
		}
		r := runResult{reschedules: counter.snapshot(), wall: wall, firstToLast: at[n-1].Sub(at[0]),
			admitted: float64(n-1-burst) / at[n-1].Sub(at[burst]).Seconds(),
			steady:   float64(n*9/10-n/10) / at[n*9/10].Sub(at[n/10]).Seconds()}
		runs = append(runs, r)
	}
	b.StopTimer()

	var sb strings.Builder
	fmt.Fprintf(&sb, "%d tasks, one provider, limit %d/s burst %d, %d sessions per host, reuse off, scheduler interval %v, %d runs\n",
		n, rate, burst, *saturationSessions, *saturationScheduler, len(runs))
	fmt.Fprintf(&sb, "%-4s %12s %10s %10s %10s %12s %10s %10s\n", "run", "resched/task", "rate", "sessions", "cool_down", "admitted/s", "p10-p90/s", "wall")
	var per, adm, steady []float64
	for i, r := range runs {
		total := 0
		for _, c := range r.reschedules {
			total += c
		}
		per = append(per, float64(total)/float64(n))
		adm = append(adm, r.admitted)
		steady = append(steady, r.steady)
		fmt.Fprintf(&sb, "%-4d %12.3f %10d %10d %10d %12.2f %10.2f %10s\n", i, per[i], r.reschedules[ratelimit.ReasonRate],
			r.reschedules[ratelimit.ReasonSessions], r.reschedules[ratelimit.ReasonCoolDown], r.admitted, r.steady, r.wall.Round(10*time.Millisecond))
	}
	fmt.Fprintf(&sb, "median reschedules per task %.3f (target ≤ 1.2); median admitted rate %.2f/s = %.1f%% of %d/s (target within 5%%); steady p10–p90 %.2f/s = %.1f%%\n",
		median(per), median(adm), 100*median(adm)/float64(rate), rate, median(steady), 100*median(steady)/float64(rate))
	b.ReportMetric(median(steady), "steady/s")
	b.ReportMetric(median(per), "resched/task")
	b.ReportMetric(median(adm), "admitted/s")
	b.ReportMetric(100*median(adm)/float64(rate), "admitted-%")
	b.Log("\n" + sb.String())
}

// denialCounter is a slog.Handler that counts the worker's "task not done"
// records whose error is a *worker.RateLimitError, by the limiter's reason:
// each is one reschedule that used no retry.
type denialCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (d *denialCounter) Enabled(context.Context, slog.Level) bool { return true }
func (d *denialCounter) WithAttrs([]slog.Attr) slog.Handler       { return d }
func (d *denialCounter) WithGroup(string) slog.Handler            { return d }
func (d *denialCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "task not done" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "err" {
			return true
		}
		err, _ := a.Value.Any().(error)
		var rl *worker.RateLimitError
		if errors.As(err, &rl) {
			d.mu.Lock()
			if d.n == nil {
				d.n = map[string]int{}
			}
			d.n[rl.Reason]++
			d.mu.Unlock()
		}
		return false
	})
	return nil
}

func (d *denialCounter) snapshot() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[string]int, len(d.n))
	for k, v := range d.n {
		m[k] = v
	}
	return m
}
