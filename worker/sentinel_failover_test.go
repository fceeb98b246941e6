package worker_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

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

// Two workers drain 120 addresses at two providers, each one MX host of its
// own with at most 2 sessions at once, through Sentinel (master, replica,
// 3 sentinels); mid-run the master fails over, gracefully (SENTINEL
// FAILOVER: for a moment two masters take writes, and leases written to
// the old one vanish with its demotion) or by a kill. Every address ends
// valid, none waits on the greylisting schedule (an hour here), and no
// provider sees more than 2 sessions at once (docs/reliability.md, "Redis
// failover and the session cap").
func TestSentinelFailoverMidRun(t *testing.T) {
	t.Parallel()
	for _, kill := range []bool{false, true} {
		name := "graceful"
		if kill {
			name = "kill"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := redistest.StartSentinel(t)
			rdb := d.FailoverClient(t, &redis.FailoverOptions{DialTimeout: 500 * time.Millisecond,
				ReadTimeout: time.Second, WriteTimeout: time.Second})
			ctx := context.Background()

			const providers, perProvider = 2, 60
			limit := ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 100, Sessions: 2}
			var servers []*smtptest.Server
			zone := dnstest.Zone{}
			for p := range providers {
				// Slow replies keep the run going through the failover.
				o := smtptest.Options{ReplyDelay: 50 * time.Millisecond}
				ip := netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + p)})
				if p > 0 {
					o.Listen = netip.AddrPortFrom(ip, uint16(servers[0].Port()))
				}
				servers = append(servers, smtptest.Start(t, o))
				zone[fmt.Sprintf("p%d.test.", p)] = []dns.RR{dnstest.MX(fmt.Sprintf("mx.p%d.test.", p), 10)}
				zone[fmt.Sprintf("mx.p%d.test.", p)] = []dns.RR{dnstest.A(ip.String())}
			}
			dnsSrv := dnstest.Start(t, zone)
			for range 2 {
				workertest.Start(t, rdb, workertest.Options{SMTPPort: servers[0].Port(), DNS: dnsSrv.Addr(), Limit: limit,
					Adjust: func(wc *worker.Config, _ *validator.Config) {
						wc.Concurrency = 8
						wc.Retry = worker.RetryPolicy{FirstDelay: time.Hour, MaxDelay: time.Hour, GiveUpAfter: 2 * time.Hour}
					}})
			}
			client := tasks.NewClient(rdb)
			t.Cleanup(func() { _ = client.Close() })
			var ids []string
			for i := range perProvider {
				for p := range providers {
					id, err := client.Enqueue(ctx, tasks.Request{Address: fmt.Sprintf("u%d@p%d.test", i, p)})
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, id)
				}
			}
			if first, err := client.Wait(ctx, ids[0]); err != nil || first.Result == nil {
				t.Fatalf("first result: %v %+v", err, first)
			}
			switched := d.Switched()
			began := time.Now()
			if kill {
				d.Master.Kill(t)
			} else {
				d.Failover(t)
			}
			var switchedAt time.Time
			select {
			case <-switched:
				switchedAt = time.Now()
			case <-time.After(30 * time.Second):
				t.Fatal("no +switch-master")
			}

			var mu sync.Mutex
			var wrong []string
			var last time.Time
			var wg sync.WaitGroup
			for _, id := range ids {
				wg.Go(func() {
					// A task whose completion was lost (written to the old
					// master as it was demoted, or not written while the
					// master was dead) stays active until asynq's lease
					// recovery retries it, up to about two minutes
					// (docs/reliability.md, "Limit (asynq v0.26)"), and
					// then runs again.
					wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
					defer cancel()
					var st tasks.Status
					var err error
					for {
						// Wait itself may meet the failover: ask again.
						if st, err = client.Wait(wctx, id); err == nil || wctx.Err() != nil {
							break
						}
					}
					mu.Lock()
					defer mu.Unlock()
					if now := time.Now(); now.After(last) {
						last = now
					}
					switch {
					case err != nil || st.Result == nil:
						wrong = append(wrong, fmt.Sprintf("%s: %v (state %s)", id, err, st.State))
					case st.Result.Verdict != tasks.VerdictValid || st.Retried > 1:
						wrong = append(wrong, fmt.Sprintf("%s: %s/%s retried %d", id, st.Result.Verdict, st.Result.Reason, st.Retried))
					}
				})
			}
			wg.Wait()
			t.Logf("%s: new master announced %s after the failover began; last of %d results %s after that",
				name, switchedAt.Sub(began).Round(time.Millisecond), len(ids), last.Sub(switchedAt).Round(time.Millisecond))
			if len(wrong) > 0 {
				t.Errorf("%d of %d addresses not final valid within one retry:\n%s", len(wrong), len(ids), strings.Join(wrong[:min(len(wrong), 10)], "\n"))
			}
			for p, s := range servers {
				if n := s.MaxLiveConns(); n > limit.Sessions {
					t.Errorf("%s: provider p%d saw %d sessions at once; the limit is %d", name, p, n, limit.Sessions)
				}
			}
		})
	}
}
