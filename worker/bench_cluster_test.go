package worker_test

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/redisconn"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

var (
	clusterMemTasks   = flag.Int("clusterbench.tasks", 30_000, "BenchmarkClusterQueueMemory: tasks queued per case")
	clusterDrainTasks = flag.Int("clusterbench.drain", 1_500, "BenchmarkClusterDrain: addresses drained per case")
)

// BenchmarkClusterQueueMemory queues -clusterbench.tasks tasks (no worker
// running) into a private 3-master Redis Cluster with the queue unsharded
// and in 3 shards, and reports what each master's used_memory grew by:
// the busiest master's share of the total, and its MiB.
//
//	go test -run '^$' -bench ClusterQueueMemory -benchtime 1x -v ./worker/
func BenchmarkClusterQueueMemory(b *testing.B) {
	for _, shards := range []int{1, 3} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
			c := redistest.StartClusterN(b, 3, 5*time.Second)
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
			b.Cleanup(func() { _ = rdb.Close() })
			prod := tasks.NewClient(rdb, tasks.WithShards(shards))
			ctx := context.Background()
			n := *clusterMemTasks
			var busiest, share []float64
			for range b.N {
				for _, m := range c.Masters {
					if err := m.Client(b).FlushDB(ctx).Err(); err != nil {
						b.Fatal(err)
					}
				}
				before := mastersMemory(b, c)
				var wg sync.WaitGroup
				errs := make(chan error, 8)
				for g := range 8 {
					wg.Go(func() {
						for i := g; i < n; i += 8 {
							if _, err := prod.Enqueue(ctx, tasks.Request{Address: fmt.Sprintf("user%06d@example.com", i)}); err != nil {
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
				after := mastersMemory(b, c)
				var grew []float64
				total := 0.0
				for i := range after {
					d := float64(after[i] - before[i])
					grew = append(grew, d)
					total += d
				}
				busiest = append(busiest, slices.Max(grew)/(1<<20))
				share = append(share, slices.Max(grew)/total)
				b.Logf("%d tasks, %d shards: MiB per master %.1f", n, shards, func() []float64 {
					out := make([]float64, len(grew))
					for i, g := range grew {
						out[i] = g / (1 << 20)
					}
					return out
				}())
			}
			b.ReportMetric(median(busiest), "busiest-master-MiB")
			b.ReportMetric(median(share), "busiest-share")
		})
	}
}

func mastersMemory(b *testing.B, c *redistest.Cluster) []int64 {
	b.Helper()
	var out []int64
	for _, m := range c.Masters {
		out = append(out, usedMemory(b, m.Client(b).Info(context.Background(), "memory").Val()))
	}
	return out
}

// mastersCommands is each master's total_commands_processed.
func mastersCommands(b *testing.B, c *redistest.Cluster) []int64 {
	b.Helper()
	var out []int64
	for _, m := range c.Masters {
		info := m.Client(b).Info(context.Background(), "stats").Val()
		n := int64(-1)
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
				var err error
				if n, err = strconv.ParseInt(v, 10, 64); err != nil {
					b.Fatal(err)
				}
			}
		}
		if n < 0 {
			b.Fatal("INFO stats has no total_commands_processed")
		}
		out = append(out, n)
	}
	return out
}

// BenchmarkClusterDrain drains -clusterbench.drain addresses at 20 domains
// of one loopback SMTP server (limits out of the way) with three workers
// of 16 slots each, on one Redis, on a 3-master Cluster with the queue
// unsharded, and on the Cluster with 3 shards, and reports validations per
// second from the first enqueue to the last final result and, on the
// Cluster, the busiest master's share of the commands processed. Every Redis
// node, worker and server shares this machine's cores.
//
//	go test -run '^$' -bench ClusterDrain -benchtime 1x -count 3 -v ./worker/
func BenchmarkClusterDrain(b *testing.B) {
	for _, bc := range []struct {
		name    string
		cluster bool
		shards  int
	}{
		{name: "one-node", shards: 1},
		{name: "cluster/shards=1", cluster: true, shards: 1},
		{name: "cluster/shards=3", cluster: true, shards: 3},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var rdb redis.UniversalClient
			var c *redistest.Cluster
			if bc.cluster {
				c = redistest.StartClusterN(b, 3, 5*time.Second)
				cc := redisconn.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
				b.Cleanup(func() { _ = cc.Close() })
				rdb = cc
			} else {
				rdb = redistest.StartServer(b).Client(b)
			}
			srv := smtptest.Start(b, smtptest.Options{})
			zone := dnstest.Zone{}
			const domains = 20
			for d := range domains {
				zone[fmt.Sprintf("d%d.test.", d)] = []dns.RR{dnstest.MX(fmt.Sprintf("mx.d%d.test.", d), 10)}
				zone[fmt.Sprintf("mx.d%d.test.", d)] = []dns.RR{dnstest.A("127.0.0.1")}
			}
			dnsSrv := dnstest.Start(b, zone)
			for range 3 {
				workertest.Start(b, rdb, workertest.Options{SMTPPort: srv.Port(), DNS: dnsSrv.Addr(),
					Limit: ratelimit.Limit{Rate: 100_000, Per: time.Second, Burst: 10_000, Sessions: 4},
					Adjust: func(wc *worker.Config, _ *validator.Config) {
						wc.Concurrency = 16
						wc.QueueShards = bc.shards
					}})
			}
			client := tasks.NewClient(rdb, tasks.WithShards(bc.shards))
			b.Cleanup(func() { _ = client.Close() })
			ctx := context.Background()
			var rates, cmdShare []float64
			b.ResetTimer()
			for run := range b.N {
				n := *clusterDrainTasks
				var cmdsBefore []int64
				if c != nil {
					cmdsBefore = mastersCommands(b, c)
				}
				start := time.Now()
				ids := make([]string, 0, n)
				for i := range n {
					id, err := client.Enqueue(ctx, tasks.Request{Address: fmt.Sprintf("r%du%d@d%d.test", run, i, i%domains)})
					if err != nil {
						b.Fatal(err)
					}
					ids = append(ids, id)
				}
				var wg sync.WaitGroup
				var mu sync.Mutex
				wrong := 0
				for _, id := range ids {
					wg.Go(func() {
						wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
						defer cancel()
						st, err := client.Wait(wctx, id)
						if err != nil || st.Result == nil || st.Result.Verdict != tasks.VerdictValid {
							mu.Lock()
							wrong++
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				if wrong > 0 {
					b.Fatalf("%d of %d results not valid", wrong, n)
				}
				rates = append(rates, float64(n)/time.Since(start).Seconds())
				if c != nil {
					after := mastersCommands(b, c)
					var done []float64
					total := 0.0
					for i := range after {
						done = append(done, float64(after[i]-cmdsBefore[i]))
						total += done[i]
					}
					cmdShare = append(cmdShare, slices.Max(done)/total)
					b.Logf("%s: commands per master %v", bc.name, done)
				}
			}
			b.StopTimer()
			b.ReportMetric(median(rates), "validations/s")
			if c != nil {
				b.ReportMetric(median(cmdShare), "busiest-master-cmd-share")
			}
		})
	}
}
