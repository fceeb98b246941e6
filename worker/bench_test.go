package worker_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"
	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// Flags of BenchmarkThroughput, after -args:
//
//	go test -run '^$' -bench Throughput -benchtime 5x ./worker/ -args -throughput.tasks 2000
var (
	throughputTasks       = flag.Int("throughput.tasks", 2000, "BenchmarkThroughput: tasks per run")
	throughputConcurrency = flag.Int("throughput.concurrency", 64, "BenchmarkThroughput: asynq concurrency of every variant (64 is worker.Config's default)")
	throughputVariants    = flag.String("throughput.variants", "", "BenchmarkThroughput: comma-separated variants to run (default all; 'cached' needs 'mxprobe'), e.g. 'mxprobe' for a -cpuprofile of the worker alone")
	throughputNoConnCheck = flag.Bool("throughput.noconncheck", false, "BenchmarkThroughput: hide the socket from go-redis so it skips its per-command connection health check (a measurement of that check's cost, not how mxprobe runs; docs/benchmarks.md)")
	throughputSink        = flag.String("throughput.sink", "inprocess", "BenchmarkThroughput: where the SMTP sink and the DNS server run: inprocess, or process (a child process, as a remote MX would be: their CPU and goroutines leave the worker's process and its Go scheduler)")
	throughputPerDomain   = flag.Int("throughput.perdomain", 10, "BenchmarkThroughput: addresses per recipient domain (each domain has its own MX host name), so the session pool can serve them on one session")
)

// throughputGroup is how many domains' addresses are interleaved in the
// queue: more than the concurrency, so that the previous address of a
// domain has finished and parked its session when the next one starts, and
// fewer than the pool's MaxIdle (256), so that parked sessions are not
// closed for room.
const throughputGroup = 100

// BenchmarkThroughput measures end-to-end validations per second through
// Redis next to a bare asynq handler that does nothing, on the same
// private redis-server, the same go-redis client and the same concurrency.
//
// One b.N iteration is one round: every variant drains its own batch of
// -throughput.tasks tasks, enqueued up front and timed from the server's
// Start until the handler has seen the last one. Variants alternate their
// order from round to round (bare first, then last), so a neighbour's load
// on the shared machine falls on both alike; run with -benchtime 5x (or
// more) and read the medians, not any single round.
//
// Variants (each a throughputVariant; add one to compare a new path, e.g.
// the session pool):
//
//	bare     asynq handler returning nil: the floor asynq and Redis set
//	mxprobe  worker.New with the real validator: distinct addresses, so each
//	         misses the result cache, takes the lead, then DNS (cached) →
//	         ratelimit.Acquire → SMTP probe (EHLO, MAIL, RCPT, catch-all RCPT,
//	         QUIT) against a loopback go-smtp sink → store → release
//	fresh    as mxprobe with tasks.NoDedupe: no cache read, no lead
//	cached   the addresses mxprobe just validated, answered from the cache
//	nopool   as mxprobe with session reuse off (validator.PoolConfig.Disabled):
//	         a new TCP session per address
//	shared   as mxprobe with session sharing across workers on (its Gate
//	         advertises sessions; addresses for a held host are handed to
//	         the holder), as `mxprobe worker` runs: the price of sharing
//
// Addresses: -throughput.perdomain (10) per recipient domain, each domain
// with its own MX host name on 127.0.0.1, interleaved in groups of
// throughputGroup domains so that one pooled session serves a domain's
// addresses one after the other (a new session per domain, RSET never
// needed). The validators are wired as `mxprobe worker` wires them: DNS
// answers and catch-all status shared through Redis (RedisMXCache,
// RedisCatchAllCache) behind their in-process copies, catch-all probe on.
//
// Limits are effectively off (a million sessions per second, unbounded
// sessions per host); no callback URL is set, so no email:callback tasks.
//
// Redis cost is counted two ways: a go-redis hook on the client the worker
// and asynq share (asynq builds its broker, processor, heartbeater and
// forwarder on that one client: NewServerFromRedisClient → rdb.NewRDB(c)),
// giving commands and round trips (a pipeline is one); and INFO
// commandstats deltas on the private server, which also count the commands
// run inside Lua scripts. Both include asynq's background work (heartbeat,
// forwarder, syncer) for the duration of the run.
func BenchmarkThroughput(b *testing.B) {
	env := newThroughputEnv(b)
	variants := []throughputVariant{
		{name: "bare", start: env.startBare},
		{name: "mxprobe", start: env.startWorker},
		{name: "cached", start: env.startWorker, reuse: "mxprobe"},
		{name: "fresh", start: env.startWorker, opts: []tasks.Option{tasks.NoDedupe()}},
		{name: "nopool", start: env.startWorkerNoPool},
		{name: "shared", start: env.startWorkerShared},
	}
	if *throughputVariants != "" {
		want := strings.Split(*throughputVariants, ",")
		variants = slices.DeleteFunc(variants, func(v throughputVariant) bool { return !slices.Contains(want, v.name) })
	}
	if len(variants) == 0 {
		b.Fatalf("-throughput.variants=%q names no variant", *throughputVariants)
	}
	stats := map[string][]runStats{}
	ratios := map[string][]float64{}
	b.ResetTimer()
	for round := range b.N {
		order := slices.Clone(variants)
		if round%2 == 1 {
			// bare last on odd rounds (a variant that reuses another's
			// addresses keeps its place after it).
			if i := slices.IndexFunc(order, func(v throughputVariant) bool { return v.name == "bare" }); i >= 0 {
				order = append(slices.Delete(order, i, i+1), variants[i])
			}
		}
		addrs := map[string][]string{}
		for i, v := range order {
			if v.reuse != "" && (i == 0 || order[i-1].name != v.reuse) {
				b.Fatalf("variant %s must run right after %s (another run would empty the cache)", v.name, v.reuse)
			}
			st := env.run(b, v, round, addrs)
			stats[v.name] = append(stats[v.name], st)
		}
		if bare, ok := stats["bare"]; ok {
			for _, name := range []string{"mxprobe", "nopool"} {
				if mx, ok := stats[name]; ok {
					ratios[name] = append(ratios[name], mx[len(mx)-1].rate()/bare[len(bare)-1].rate())
				}
			}
		}
	}
	b.StopTimer()

	var sb strings.Builder
	fmt.Fprintf(&sb, "%d tasks per run, %d per domain, concurrency %d, %d rounds\n", *throughputTasks, *throughputPerDomain, *throughputConcurrency, b.N)
	fmt.Fprintf(&sb, "%-8s %10s %8s %8s %7s %8s %9s %10s %9s %9s %8s %8s   per-round val/s\n", "variant", "median/s", "min/s", "max/s", "rt/val", "srv/val", "goCPU µs", "redisCPU µs",
		"smtp s/v", "smtp c/v", "smtp rt", "RSS MiB")
	for _, v := range variants {
		s := stats[v.name]
		rates := make([]float64, len(s))
		for i, st := range s {
			rates[i] = st.rate()
		}
		per := make([]string, len(rates))
		for i, r := range rates {
			per[i] = strconv.FormatFloat(r, 'f', 0, 64)
		}
		med := median(rates)
		rt, srv := median(mapf(s, runStats.roundTripsPerVal)), median(mapf(s, runStats.serverCmdsPerVal))
		goCPU, redisCPU := median(mapf(s, runStats.procCPUPerVal)), median(mapf(s, runStats.redisCPUPerVal))
		smtpSess, smtpCmds, smtpRT := median(mapf(s, runStats.smtpSessionsPerVal)), median(mapf(s, runStats.smtpCmdsPerVal)), median(mapf(s, runStats.smtpRoundTripsPerVal))
		peakRSS := slices.Max(mapf(s, func(st runStats) float64 { return float64(st.peakRSS) / (1 << 20) }))
		fmt.Fprintf(&sb, "%-8s %10.0f %8.0f %8.0f %7.2f %8.2f %9.0f %10.0f %9.2f %9.2f %8.2f %8.1f   %s\n", v.name, med, slices.Min(rates), slices.Max(rates), rt, srv, goCPU, redisCPU,
			smtpSess, smtpCmds, smtpRT, peakRSS, strings.Join(per, " "))
		b.ReportMetric(med, v.name+"-val/s")
		b.ReportMetric(rt, v.name+"-rt/val")
		b.ReportMetric(median(mapf(s, runStats.clientCmdsPerVal)), v.name+"-cmd/val")
		b.ReportMetric(srv, v.name+"-srvcmd/val")
		b.ReportMetric(goCPU, v.name+"-goCPU-µs/val")
		b.ReportMetric(redisCPU, v.name+"-redisCPU-µs/val")
		b.ReportMetric(smtpSess, v.name+"-smtpSessions/val")
		b.ReportMetric(smtpRT, v.name+"-smtpRT/val")
		b.ReportMetric(peakRSS, v.name+"-peakRSS-MiB")
	}
	for _, name := range []string{"mxprobe", "nopool"} {
		rs := ratios[name]
		if len(rs) == 0 {
			continue
		}
		perRound := make([]string, len(rs))
		for i, r := range rs {
			perRound[i] = strconv.FormatFloat(r, 'f', 3, 64)
		}
		fmt.Fprintf(&sb, "%s/bare: median of per-round ratios %.3f (%s)\n", name, median(rs), strings.Join(perRound, " "))
		b.ReportMetric(median(rs), name+"-ratio")
	}
	for _, v := range variants {
		s := stats[v.name]
		fmt.Fprintf(&sb, "%s, last round, client commands per validation: %s\n", v.name, s[len(s)-1].clientBreakdown())
		fmt.Fprintf(&sb, "%s, last round, server commands per validation: %s\n", v.name, s[len(s)-1].serverBreakdown())
	}
	b.Log("\n" + sb.String())
}

// throughputVariant is one way of draining a batch of validation tasks.
type throughputVariant struct {
	name string
	// start starts a server draining the queue, calling seen once per
	// finished task with whether its result is what the variant expects.
	start func(b *testing.B, seen func(ok bool)) (stop func())
	// opts are the producer's Enqueue options.
	opts []tasks.Option
	// reuse names the variant run just before this one in the round whose
	// addresses this one enqueues again (and whose result cache it keeps);
	// empty means fresh addresses and an emptied Redis.
	reuse string
}

// throughputEnv is the benchmark's private world, shared by all rounds:
// one redis-server (so INFO commandstats sees only us), DNS, an SMTP sink,
// one validator (its DNS cache warm after the first task, as in production).
type throughputEnv struct {
	redis *redistest.Server
	admin *redis.Client // enqueue, reset, stats: not counted
	rdb   *redis.Client // the worker's and asynq's client, counted by hook
	hook  *cmdHook
	sink  benchSink
	v     *validator.Validator
	// vNoPool is v with session reuse off.
	vNoPool *validator.Validator
	// vShared is v with its Gate sharing sessions through sessions, as
	// `mxprobe worker` runs.
	vShared  *validator.Validator
	sessions *worker.Sessions
	group    func(string) string
	prod     *tasks.Client
}

func newThroughputEnv(b *testing.B) *throughputEnv {
	b.Helper()
	e := &throughputEnv{hook: &cmdHook{}}
	e.redis = redistest.StartServer(b)
	e.admin = e.redis.Client(b)
	e.rdb = e.redis.Client(b)
	if *throughputNoConnCheck {
		// go-redis peeks at every pooled connection (a recvfrom syscall)
		// before each command unless the conn hides its syscall.Conn.
		e.rdb = redis.NewClient(&redis.Options{Addr: e.redis.Addr(), Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return struct{ net.Conn }{c}, nil
		}})
		b.Cleanup(func() { e.rdb.Close() })
	}
	e.rdb.AddHook(e.hook)
	switch *throughputSink {
	case "inprocess":
		e.sink = startBenchSink(b)
	case "process":
		e.sink = startBenchSinkProcess(b, e.redis.URL())
	default:
		b.Fatalf("-throughput.sink=%q: want inprocess or process", *throughputSink)
	}
	lcfg := ratelimit.DefaultConfig()
	lcfg.Default = ratelimit.Limit{Rate: 1_000_000, Per: time.Second, Burst: 1_000_000, Sessions: 1 << 30}
	limiter, err := ratelimit.New(e.rdb, lcfg)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	newValidator := func(pool validator.PoolConfig, gate *worker.Gate) *validator.Validator {
		// As cmd/mxprobe wires it (worker.go build): shared caches, each
		// with its in-process copy.
		v, err := validator.New(validator.Config{
			Probe: validator.ProbeConfig{HeloName: "probe.mxprobe.test", MailFrom: "verify@mxprobe.test",
				Port: e.sink.smtpPort, ConnectTimeout: 5 * time.Second, CommandTimeout: 10 * time.Second, CatchAllProbe: true,
				Pool:          pool,
				CatchAllCache: worker.NewRedisCatchAllCache(e.rdb, "mxprobe:", worker.DefaultCatchAllTTL, 10000, nil, log)},
			DNS: validator.DNSConfig{Servers: []string{e.sink.dnsAddr}, AllowPrivate: true, Timeout: 2 * time.Second,
				Cache: worker.NewRedisMXCache(e.rdb, "mxprobe:", 10000, nil, log)},
			Gate:         gate,
			ProviderFunc: limiter.Group,
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { v.Close() })
		return v
	}
	e.v = newValidator(validator.PoolConfig{}, worker.NewGate(limiter, "bench", log))
	e.vNoPool = newValidator(validator.PoolConfig{Disabled: true}, worker.NewGate(limiter, "bench", log))
	e.sessions = worker.NewSessions(e.rdb, worker.SessionsConfig{Egress: "bench"})
	shared := worker.NewGate(limiter, "bench", log)
	shared.ShareSessions(e.sessions)
	e.vShared = newValidator(validator.PoolConfig{}, shared)
	e.group = limiter.Group
	e.prod = tasks.NewClient(e.admin)
	return e
}

// queues and concurrency are the same for every variant: worker.Config's
// defaults, spelled out for the bare server.
var benchQueues = map[string]int{tasks.QueueCritical: 6, tasks.QueueDefault: 3, tasks.QueueBulk: 1}

func (e *throughputEnv) startBare(b *testing.B, seen func(bool)) func() {
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{
		Concurrency:     *throughputConcurrency,
		Queues:          benchQueues,
		ShutdownTimeout: 5 * time.Second,
		Logger:          quietLogger{},
		LogLevel:        asynq.ErrorLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		seen(true)
		return nil
	})); err != nil {
		b.Fatal(err)
	}
	return srv.Shutdown
}

// throughputDomains is how many recipient domains a run spreads over.
func throughputDomains() int {
	per := max(*throughputPerDomain, 1)
	return (*throughputTasks + per - 1) / per
}

// throughputAddr is the i-th address of a run: domains interleave in groups
// of throughputGroup (see the const).
func throughputAddr(variant string, round, i int) string {
	per := max(*throughputPerDomain, 1)
	block := throughputGroup * per
	group, j := i/block, i%block
	domains := min(throughputGroup, throughputDomains()-group*throughputGroup)
	d := group*throughputGroup + j%domains
	return fmt.Sprintf("bench-%s-r%d-%d@d%d.test", variant, round, i, d)
}

func (e *throughputEnv) startWorker(b *testing.B, seen func(bool)) func() {
	return e.startWorkerWith(b, e.v, seen)
}

func (e *throughputEnv) startWorkerNoPool(b *testing.B, seen func(bool)) func() {
	return e.startWorkerWith(b, e.vNoPool, seen)
}

func (e *throughputEnv) startWorkerShared(b *testing.B, seen func(bool)) func() {
	return e.startWorkerCfg(b, struct{ worker.SessionValidator }{e.vShared}, seen, e.sessions)
}

func (e *throughputEnv) startWorkerWith(b *testing.B, v *validator.Validator, seen func(bool)) func() {
	return e.startWorkerCfg(b, struct{ worker.Validator }{v}, seen, nil)
}

func (e *throughputEnv) startWorkerCfg(b *testing.B, v worker.Validator, seen func(bool), sessions *worker.Sessions) func() {
	// Shutdown closes an io.Closer validator (the pool); these are shared
	// by every round, so the worker gets them without Close.
	w, err := worker.New(e.rdb, v, worker.Config{
		Sessions:        sessions,
		ProviderFunc:    e.group,
		Concurrency:     *throughputConcurrency,
		Queues:          benchQueues,
		ShutdownTimeout: 5 * time.Second,
		Logger:          slog.New(slog.DiscardHandler),
		Callback:        worker.CallbackConfig{Secret: secret}, // required; no task has a callback URL
		OnResult: func(_ context.Context, r tasks.Result) {
			seen(r.Final && r.Verdict == tasks.VerdictValid && r.Reason == "mailbox_exists")
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	return w.Shutdown
}

// run drains one batch with variant v and returns what it cost.
func (e *throughputEnv) run(b *testing.B, v throughputVariant, round int, addrs map[string][]string) runStats {
	b.Helper()
	ctx := context.Background()
	n := *throughputTasks
	list := addrs[v.reuse]
	if v.reuse == "" {
		if err := e.admin.FlushDB(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		list = make([]string, n)
		for i := range list {
			list[i] = throughputAddr(v.name, round, i)
		}
	} else {
		e.deleteKeys(b, "asynq:*")
	}
	addrs[v.name] = list
	e.enqueue(b, list, v.opts)

	var done, bad atomic.Int64
	finished := make(chan struct{})
	seen := func(ok bool) {
		if !ok {
			bad.Add(1)
		}
		if done.Add(1) == int64(n) {
			close(finished)
		}
	}
	if err := e.admin.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	e.hook.reset()

	smtp0 := e.smtpCounts()
	rss := startRSSSampler(b)
	redisCPU0 := e.redisCPU(b)
	procCPU0 := processCPU(b)
	start := time.Now()
	stop := v.start(b, seen)
	select {
	case <-finished:
	case <-time.After(5 * time.Minute):
		stop()
		b.Fatalf("%s: only %d of %d tasks done after 5 min", v.name, done.Load(), n)
	}
	elapsed := time.Since(start)
	procCPU := processCPU(b) - procCPU0
	redisCPU := e.redisCPU(b) - redisCPU0
	peakRSS := rss()
	// The handler has returned for every task; wait for asynq to record the
	// last completions so their commands are in the counts.
	polls := e.waitCompleted(b, n)
	st := runStats{n: n, elapsed: elapsed, procCPU: procCPU, redisCPU: redisCPU, client: e.hook.snapshot(), server: e.commandStats(b),
		peakRSS: peakRSS}
	// Sessions parked by the pool QUIT later (idle timeout): their QUITs
	// fall into the next run's counts, one per session, a small share.
	st.smtp = e.smtpCounts().sub(smtp0)
	st.server["zcard"] -= polls // ours
	st.server["info"]--         // the INFO that read the stats
	stop()
	if bad.Load() > 0 {
		b.Fatalf("%s: %d of %d results were not valid/mailbox_exists", v.name, bad.Load(), n)
	}
	if d := done.Load(); d != int64(n) {
		b.Fatalf("%s: %d results for %d tasks", v.name, d, n)
	}
	return st
}

// enqueue queues the batch through the producer Client, from a few
// goroutines so that setup stays short; it is not timed.
func (e *throughputEnv) enqueue(b *testing.B, list []string, opts []tasks.Option) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < len(list); i += 8 {
				if _, err := e.prod.Enqueue(context.Background(), tasks.Request{Address: list[i]}, opts...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

func (e *throughputEnv) deleteKeys(b *testing.B, pattern string) {
	b.Helper()
	ctx := context.Background()
	it := e.admin.Scan(ctx, 0, pattern, 1000).Iterator()
	var keys []string
	for it.Next(ctx) {
		keys = append(keys, it.Val())
	}
	if err := it.Err(); err != nil {
		b.Fatal(err)
	}
	for c := range slices.Chunk(keys, 500) {
		if err := e.admin.Unlink(ctx, c...).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// waitCompleted polls the completed set of the default queue (retention
// keeps completed tasks there) until it holds n tasks, and returns how many
// ZCARDs that took. Polling is fine here: it is after the timed part.
func (e *throughputEnv) waitCompleted(b *testing.B, n int) int64 {
	b.Helper()
	var polls int64
	deadline := time.Now().Add(time.Minute)
	for {
		polls++
		c, err := e.admin.ZCard(context.Background(), "asynq:{"+tasks.QueueDefault+"}:completed").Result()
		if err != nil {
			b.Fatal(err)
		}
		if c >= int64(n) {
			return polls
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d tasks marked completed after a minute", c, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// commandStats reads INFO commandstats: calls per command since the last
// CONFIG RESETSTAT, commands run by Lua scripts included.
func (e *throughputEnv) commandStats(b *testing.B) map[string]int64 {
	b.Helper()
	s, err := e.admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	m := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		// cmdstat_evalsha:calls=4001,usec=…,usec_per_call=…,…
		name, rest, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		c, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			b.Fatalf("commandstats line %q: %v", sc.Text(), err)
		}
		m[name] = c
	}
	return m
}

// redisCPU is redis-server's CPU time so far (user + system, INFO cpu).
func (e *throughputEnv) redisCPU(b *testing.B) time.Duration {
	b.Helper()
	s, err := e.admin.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(s, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "used_cpu_sys" && k != "used_cpu_user") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			b.Fatalf("INFO cpu line %q: %v", line, err)
		}
		total += f
	}
	return time.Duration(total * float64(time.Second))
}

// processCPU is this process's CPU time so far (user + system).
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runStats is one variant's run.
type runStats struct {
	n       int
	elapsed time.Duration
	// procCPU is this process's CPU time (worker, asynq, and the loopback
	// SMTP and DNS servers, which live here too); redisCPU redis-server's.
	procCPU, redisCPU time.Duration
	client            hookCounts
	server            map[string]int64
	// smtp is what the sink saw; peakRSS the process's VmRSS peak, sampled.
	smtp    smtpCounts
	peakRSS int64
}

func (s runStats) smtpSessionsPerVal() float64 { return float64(s.smtp.conns) / float64(s.n) }
func (s runStats) smtpCmdsPerVal() float64     { return float64(s.smtp.cmds) / float64(s.n) }

// smtpRoundTripsPerVal: without pipelining every command whose reply is
// awaited is one round trip (QUIT's is not), and each connection one more
// (connect + banner).
func (s runStats) smtpRoundTripsPerVal() float64 {
	return float64(s.smtp.cmds-s.smtp.quits+s.smtp.conns) / float64(s.n)
}

// smtpCounts are the sink's counters: TCP connections, command lines, and
// of those the QUITs.
type smtpCounts struct{ conns, cmds, quits int64 }

func (a smtpCounts) sub(b smtpCounts) smtpCounts {
	return smtpCounts{a.conns - b.conns, a.cmds - b.cmds, a.quits - b.quits}
}

func (e *throughputEnv) smtpCounts() smtpCounts { return e.sink.counts() }

// benchSink is the SMTP sink and DNS server the validators talk to.
type benchSink struct {
	smtpPort int
	dnsAddr  string
	counts   func() smtpCounts
}

// startBenchSink starts the sink in this process. It accepts the
// benchmark's mailboxes and refuses every other local part, so the
// catch-all probe (on by default in `mxprobe worker`) runs and the verdict
// is valid/mailbox_exists; the zone gives every recipient domain its own MX
// host name on 127.0.0.1.
func startBenchSink(tb testing.TB) benchSink {
	srv := smtptest.Start(tb, smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
		if strings.HasPrefix(to, "bench-") {
			return nil
		}
		return notFound
	}})
	zone := dnstest.Zone{}
	for d := range throughputDomains() {
		name := fmt.Sprintf("d%d.test.", d)
		zone[name] = []dns.RR{dnstest.MX("mx."+name, 10)}
		zone["mx."+name] = []dns.RR{dnstest.A("127.0.0.1")}
	}
	dnsSrv := dnstest.Start(tb, zone)
	return benchSink{smtpPort: srv.Port(), dnsAddr: dnsSrv.Addr(), counts: func() smtpCounts {
		c := smtpCounts{conns: int64(srv.Conns()), quits: int64(srv.Sent("QUIT"))}
		for _, verb := range []string{"EHLO", "HELO", "MAIL", "RCPT", "RSET", "NOOP", "QUIT"} {
			c.cmds += int64(srv.Sent(verb))
		}
		return c
	}}
}

const sinkProcessEnv = "MXPROBE_BENCH_SINK_PROCESS"

// TestBenchSinkProcess is the child of -throughput.sink=process: it runs
// startBenchSink, prints "ready PORT DNSADDR", answers each "counts" line
// on stdin with "counts CONNS CMDS QUITS", and ends when stdin closes.
func TestBenchSinkProcess(t *testing.T) {
	if os.Getenv(sinkProcessEnv) == "" {
		t.Skip("child process of BenchmarkThroughput -throughput.sink=process")
	}
	sink := startBenchSink(t)
	fmt.Printf("ready %d %s\n", sink.smtpPort, sink.dnsAddr)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "counts" {
			c := sink.counts()
			fmt.Printf("counts %d %d %d\n", c.conns, c.cmds, c.quits)
		}
	}
}

// startBenchSinkProcess runs the sink in a child process (this test binary,
// TestBenchSinkProcess), as a remote MX would be.
func startBenchSinkProcess(b *testing.B, redisURL string) benchSink {
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchSinkProcess$", "-test.count=1",
		"-throughput.tasks="+strconv.Itoa(*throughputTasks), "-throughput.perdomain="+strconv.Itoa(*throughputPerDomain))
	// The child's TestMain would start a redis-server of its own otherwise.
	cmd.Env = append(os.Environ(), sinkProcessEnv+"=1", redistest.EnvURL+"="+redisURL)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	out := bufio.NewScanner(stdout)
	var sink benchSink
	for out.Scan() {
		if _, err := fmt.Sscanf(out.Text(), "ready %d %s", &sink.smtpPort, &sink.dnsAddr); err == nil {
			break
		}
	}
	if sink.dnsAddr == "" {
		b.Fatalf("sink process ended before it was ready: %v", out.Err())
	}
	var mu sync.Mutex
	sink.counts = func() smtpCounts {
		mu.Lock()
		defer mu.Unlock()
		var c smtpCounts
		if _, err := io.WriteString(stdin, "counts\n"); err != nil {
			b.Fatalf("sink process: %v", err)
		}
		for out.Scan() {
			if _, err := fmt.Sscanf(out.Text(), "counts %d %d %d", &c.conns, &c.cmds, &c.quits); err == nil {
				return c
			}
		}
		b.Fatalf("sink process ended: %v", out.Err())
		return c
	}
	return sink
}

// startRSSSampler reads this process's VmRSS every 10 ms until the
// returned func is called, which returns the peak in bytes. The process
// holds the worker and also the benchmark's SMTP sink and DNS server.
func startRSSSampler(b *testing.B) func() int64 {
	b.Helper()
	var peak atomic.Int64
	peak.Store(vmRSS(b))
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if v := vmRSS(b); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	return func() int64 {
		close(done)
		<-stopped
		return peak.Load()
	}
}

// vmRSS is VmRSS from /proc/self/status, in bytes.
func vmRSS(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Error(err)
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				b.Error(err)
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

func (s runStats) rate() float64 { return float64(s.n) / s.elapsed.Seconds() }

// µs of CPU per validation.
func (s runStats) procCPUPerVal() float64  { return float64(s.procCPU.Microseconds()) / float64(s.n) }
func (s runStats) redisCPUPerVal() float64 { return float64(s.redisCPU.Microseconds()) / float64(s.n) }
func (s runStats) roundTripsPerVal() float64 {
	return float64(s.client.roundTrips) / float64(s.n)
}
func (s runStats) clientCmdsPerVal() float64 { return float64(s.client.cmds) / float64(s.n) }
func (s runStats) serverCmdsPerVal() float64 {
	var t int64
	for _, c := range s.server {
		t += c
	}
	return float64(t) / float64(s.n)
}

func (s runStats) clientBreakdown() string { return breakdown(s.client.byLabel, s.n) }
func (s runStats) serverBreakdown() string { return breakdown(s.server, s.n) }

// breakdown lists counts per validation, largest first, leaving out what
// rounds to zero.
func breakdown(m map[string]int64, n int) string {
	type kv struct {
		k string
		v int64
	}
	var l []kv
	for k, v := range m {
		if float64(v)/float64(n) >= 0.005 {
			l = append(l, kv{k, v})
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = fmt.Sprintf("%s %.2f", e.k, float64(e.v)/float64(n))
	}
	return strings.Join(parts, ", ")
}

// cmdHook counts, on the client side, every command (a pipeline's
// commands each) and every round trip (a pipeline is one), and labels
// commands by name and key shape so a breakdown shows where they go.
// Connection handshakes are left out: they are per connection, not per task.
type cmdHook struct {
	mu sync.Mutex
	c  hookCounts
}

type hookCounts struct {
	cmds, roundTrips int64
	byLabel          map[string]int64
}

func (h *cmdHook) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.c = hookCounts{byLabel: map[string]int64{}}
}

func (h *cmdHook) snapshot() hookCounts {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.c
	c.byLabel = make(map[string]int64, len(h.c.byLabel))
	for k, v := range h.c.byLabel {
		c.byLabel[k] = v
	}
	return c
}

func (h *cmdHook) count(cmds ...redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.c.byLabel == nil {
		h.c.byLabel = map[string]int64{}
	}
	n := 0
	for _, cmd := range cmds {
		switch cmd.Name() {
		case "hello", "client", "auth", "select", "multi", "exec":
			continue
		}
		n++
		h.c.byLabel[cmdLabel(cmd)]++
	}
	h.c.cmds += int64(n)
	if n > 0 {
		h.c.roundTrips++
	}
}

func (h *cmdHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *cmdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}
func (h *cmdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.count(cmds...)
		return next(ctx, cmds)
	}
}

// cmdLabel names a command by its name and the shape of its first key, ids
// cut off: "evalsha asynq:{default}:pending", "hset asynq:{default}:t".
// Scripts are told apart by the key they start from.
func cmdLabel(cmd redis.Cmder) string {
	args := cmd.Args()
	name := cmd.Name()
	keyAt := 1
	switch name {
	case "evalsha", "eval":
		keyAt = 3
		if len(args) > 2 && argString(args[2]) == "0" {
			return name
		}
	}
	if len(args) <= keyAt {
		return name
	}
	key := argString(args[keyAt])
	if i := strings.IndexByte(key, '{'); i >= 0 {
		// Drop the hash tag's content when it is per address or per
		// provider; keep queue names.
		if j := strings.IndexByte(key[i:], '}'); j > 0 {
			tag := key[i+1 : i+j]
			if !slices.Contains(tasks.Queues, tag) {
				key = key[:i+1] + "…" + key[i+j:]
			}
		}
	}
	parts := strings.Split(key, ":")
	if len(parts) > 3 {
		parts = parts[:3]
	}
	return name + " " + strings.Join(parts, ":")
}

// argString avoids fmt for the common case: the hook runs on every
// command of the worker variants (about twice as many as bare's), and its
// cost is charged to them.
func argString(a any) string {
	if s, ok := a.(string); ok {
		return s
	}
	return fmt.Sprint(a)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mapf[T any](xs []T, f func(T) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// quietLogger keeps the bare server as silent as the worker's.
type quietLogger struct{}

func (quietLogger) Debug(...any) {}
func (quietLogger) Info(...any)  {}
func (quietLogger) Warn(...any)  {}
func (quietLogger) Error(...any) {}
func (quietLogger) Fatal(...any) {}
