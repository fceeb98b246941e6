package worker_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// TestSessionSharingBenchmark measures what session sharing buys a fleet
// at rate-limited providers: SMTP sessions (TCP connections the servers
// accepted), recipients per session, wall time, and, from the servers' own
// accept times, the most sessions in any window of the limit's period and
// the most open at once. Figures go to docs/benchmarks.md. It takes about
// ten minutes:
//
//	MXPROBE_BENCH=1 go test -count=1 -run TestSessionSharingBenchmark -v -timeout 30m ./worker/
func TestSessionSharingBenchmark(t *testing.T) {
	if os.Getenv("MXPROBE_BENCH") == "" {
		t.Skip("set MXPROBE_BENCH=1 to run the session-sharing benchmark")
	}
	slow := ratelimit.Limit{Rate: 4, Per: time.Minute, Burst: 1, Sessions: 1}
	t.Run("8 addresses, 5 refused, 4 sessions/min", func(t *testing.T) {
		for _, workers := range []int{1, 3} {
			var got []string
			for run := range 3 {
				r := runFleet(t, fleetRun{workers: workers, providers: 1, domains: 1, addrs: 8, exists: func(i int) bool { return i%3 == 0 }, limit: slow})
				got = append(got, fmt.Sprint(r.sessions))
				t.Logf("workers=%d run=%d: %s", workers, run+1, r)
			}
			t.Logf("workers=%d: sessions per run %s (minimum 2)", workers, strings.Join(got, ", "))
		}
	})
	t.Run("100 addresses, all exist, 4 sessions/min", func(t *testing.T) {
		var walls []time.Duration
		for _, workers := range []int{1, 3} {
			r := runFleet(t, fleetRun{workers: workers, providers: 1, domains: 1, addrs: 100, limit: slow})
			walls = append(walls, r.wall)
			t.Logf("workers=%d: %s (minimum 10 sessions)", workers, r)
		}
		t.Logf("wall time 3 workers / 1 worker: %.2f", walls[1].Seconds()/walls[0].Seconds())
	})
	t.Run("1000 addresses, 20 domains, 3 providers, 12 sessions/min, 2 at once", func(t *testing.T) {
		r := runFleet(t, fleetRun{workers: 3, providers: 3, domains: 20, addrs: 1000, exists: func(i int) bool { return i%20 != 19 },
			limit: ratelimit.Limit{Rate: 12, Per: time.Minute, Burst: 1, Sessions: 2}})
		t.Logf("workers=3: %s", r)
	})
}

type fleetRun struct {
	workers, providers, domains, addrs int
	exists                             func(i int) bool // nil: every address exists
	limit                              ratelimit.Limit
	cluster                            bool // a one-node Redis Cluster
}

type fleetResult struct {
	sessions, rcpts int
	wall            time.Duration
	perProvider     []string
	wrong           int
}

func (r fleetResult) String() string {
	return fmt.Sprintf("%d sessions, %.2f recipients/session, wall %s, wrong verdicts %d; per provider: %s",
		r.sessions, float64(r.rcpts)/float64(max(r.sessions, 1)), r.wall.Round(100*time.Millisecond), r.wrong, strings.Join(r.perProvider, "; "))
}

func runFleet(t *testing.T, fr fleetRun) fleetResult {
	t.Helper()
	var rdb redis.UniversalClient
	if fr.cluster {
		rdb = redistest.StartCluster(t).ClusterClient(t)
	} else {
		rdb = redistest.StartServer(t).Client(t)
	}
	want := map[string]string{}
	rcpt := map[string]*smtp.SMTPError{}
	var addrs []string
	for i := range fr.addrs {
		a := fmt.Sprintf("user%d@d%d.test", i, i%fr.domains)
		addrs = append(addrs, a)
		if fr.exists != nil && !fr.exists(i) {
			want[a] = tasks.VerdictInvalid
		} else {
			rcpt[a] = nil
			want[a] = tasks.VerdictValid
		}
	}
	var servers []*smtptest.Server
	zone := dnstest.Zone{}
	for p := range fr.providers {
		o := smtptest.Options{Rcpt: rcpt, RcptDefault: notFound}
		ip := netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + p)})
		if p > 0 {
			o.Listen = netip.AddrPortFrom(ip, uint16(servers[0].Port()))
		}
		servers = append(servers, smtptest.Start(t, o))
		zone[fmt.Sprintf("mx.p%d.test.", p)] = []dns.RR{dnstest.A(ip.String())}
	}
	for d := range fr.domains {
		zone[fmt.Sprintf("d%d.test.", d)] = []dns.RR{dnstest.MX(fmt.Sprintf("mx.p%d.test.", d%fr.providers), 10)}
	}
	dnsSrv := dnstest.Start(t, zone)
	var ws []*worker.Worker
	for range fr.workers {
		ws = append(ws, workertest.Start(t, rdb, workertest.Options{SMTPPort: servers[0].Port(), DNS: dnsSrv.Addr(),
			Limit: fr.limit, LimiterPrefix: "bench:rl:",
			Adjust: func(wc *worker.Config, vc *validator.Config) {
				wc.Concurrency = 16
				// Waiting for rate slots uses no retries; the give-up
				// horizon must outlast the run.
				wc.Retry = worker.RetryPolicy{FirstDelay: time.Second, Multiplier: 2, MaxDelay: time.Minute, GiveUpAfter: time.Hour}
			}}))
	}
	client := tasks.NewClient(rdb)
	start := time.Now()
	ids := map[string]string{}
	for _, a := range addrs {
		id, err := client.Enqueue(context.Background(), tasks.Request{Address: a})
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = a
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	res := fleetResult{}
	for id, a := range ids {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			st, err := client.Wait(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || st.Result == nil || st.Result.Verdict != want[a] {
				res.wrong++
				if res.wrong <= 5 {
					t.Errorf("%s: %+v (err %v), want %s", a, st.Result, err, want[a])
				}
			}
		})
	}
	wg.Wait()
	res.wall = time.Since(start)
	for _, w := range ws {
		w.Shutdown() // sessions end: the servers have seen everything
	}
	for p, s := range servers {
		times := s.ConnTimes()
		res.sessions += len(times)
		res.rcpts += len(s.Rcpts())
		window := maxInWindow(times, fr.limit.Per)
		res.perProvider = append(res.perProvider, fmt.Sprintf("p%d: %d sessions, %d recipients, most in any %s %d (limit %d+%d burst), most at once %d (limit %d)",
			p, len(times), len(s.Rcpts()), fr.limit.Per, window, fr.limit.Rate, fr.limit.Burst, s.MaxLiveConns(), fr.limit.Sessions))
		if window > fr.limit.Rate+fr.limit.Burst || s.MaxLiveConns() > fr.limit.Sessions {
			t.Errorf("provider p%d saw more than its limit: %d in a window, %d at once", p, window, s.MaxLiveConns())
		}
	}
	return res
}

// maxInWindow is the most times within any span of length per.
func maxInWindow(times []time.Time, per time.Duration) int {
	ts := slices.Clone(times)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= per {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
