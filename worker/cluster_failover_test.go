package worker_test

import (
	"context"
	"fmt"
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

// The master holding the default queue of a 3-master Redis Cluster is
// killed while two workers drain it. Its replica is promoted; the workers
// and the producer follow, every address ends valid, none waits on the
// greylisting schedule because of the outage (it starts at an hour here),
// and no MX host saw more sessions at once than its limit. A task whose
// handler ended while its master was dead is left active by asynq until
// its lease expires and asynq's recoverer retries it (retried 1, up to
// about a minute later: docs/reliability.md "Limit (asynq v0.26)").
func TestClusterFailoverMidRun(t *testing.T) {
	t.Parallel()
	c := redistest.StartClusterN(t, 3, time.Second)
	rdb := redisconn.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DialTimeout: 500 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()

	srv := smtptest.Start(t, smtptest.Options{})
	zone := dnstest.Zone{}
	const domains, perDomain = 20, 6
	for d := range domains {
		zone[fmt.Sprintf("d%d.test.", d)] = []dns.RR{dnstest.MX(fmt.Sprintf("mx.d%d.test.", d), 10)}
		zone[fmt.Sprintf("mx.d%d.test.", d)] = []dns.RR{dnstest.A("127.0.0.1")}
	}
	dnsSrv := dnstest.Start(t, zone)
	limit := ratelimit.Limit{Rate: 50, Per: time.Second, Burst: 10, Sessions: 2}
	for range 2 {
		workertest.Start(t, rdb, workertest.Options{SMTPPort: srv.Port(), DNS: dnsSrv.Addr(), Limit: limit,
			Adjust: func(wc *worker.Config, _ *validator.Config) {
				wc.Concurrency = 8
				wc.Retry = worker.RetryPolicy{FirstDelay: time.Hour, MaxDelay: time.Hour, GiveUpAfter: 2 * time.Hour}
			}})
	}
	client := tasks.NewClient(rdb)

	// The master that owns asynq's default queue (its keys share the tag
	// {default}).
	slot, err := rdb.ClusterKeySlot(ctx, "asynq:{default}:pending").Result()
	if err != nil {
		t.Fatal(err)
	}
	victim := min(int(slot)/(16384/3), 2)

	var ids []string
	for d := range domains {
		for i := range perDomain {
			id, err := client.Enqueue(ctx, tasks.Request{Address: fmt.Sprintf("u%d@d%d.test", i, d)})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	// Let part of the run finish, then kill the queue's master.
	first, err := client.Wait(ctx, ids[0])
	if err != nil || first.Result == nil {
		t.Fatalf("first result: %v %+v", err, first)
	}
	// The limiter's session leases of the run's MX hosts (ratelimit's key
	// layout: prefix, {egress|group}, ses, MX host).
	liveLeases := func() int {
		live := 0
		for d := range domains {
			key := fmt.Sprintf("mxprobe:rl:{test|d%d.test}:ses:mx.d%d.test", d, d)
			n, err := rdb.ZCount(ctx, key, strconv.FormatInt(time.Now().UnixMicro(), 10), "+inf").Result()
			if err == nil {
				live += int(n)
			}
		}
		return live
	}
	if liveLeases() == 0 {
		t.Fatal("no live session lease found mid-run: the key layout this test reads has changed")
	}
	promoted := c.PromotedAfter(victim)
	killed := time.Now()
	c.Masters[victim].Kill(t)
	var promotedAt time.Time
	select {
	case <-promoted:
		promotedAt = time.Now()
	case <-time.After(30 * time.Second):
		t.Fatal("no replica was promoted")
	}

	var mu sync.Mutex
	var wrong []string
	recovered := 0
	var last time.Time
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
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
			if err == nil && st.Retried == 1 {
				recovered++
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
	t.Logf("master %d killed; promoted %s later; last of %d results %s after the promotion; %d retried once by asynq's lease recovery",
		victim, promotedAt.Sub(killed).Round(time.Millisecond), len(ids), last.Sub(promotedAt).Round(time.Millisecond), recovered)
	if after := last.Sub(promotedAt); after > 2*time.Minute {
		t.Errorf("the last result came %s after the promotion", after)
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d addresses not final valid within one retry:\n%s", len(wrong), len(ids), strings.Join(wrong[:min(len(wrong), 10)], "\n"))
	}
	// No lease outlives its session by more than the release retry: once
	// the parked sessions have idled out (5 s), every lease is gone
	// (released, or lost with the dead master), none waits for its TTL.
	deadline := time.Now().Add(5*time.Second + 3*worker.ReleaseRetryMax + 5*time.Second)
	for {
		live := liveLeases()
		if live == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d session leases still live %s after the last result", live, time.Since(last).Round(time.Second))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := srv.MaxLiveConns(); n > domains*limit.Sessions {
		t.Errorf("%d sessions open at once, more than %d hosts × %d", n, domains, limit.Sessions)
	}
}
