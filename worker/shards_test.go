package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// A worker with three shards drains what producers with three shards and
// with none queue; a worker with one shard still drains the shards a
// producer with five left in Redis before it started, and says so.
func TestWorkersDrainShardedQueues(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{})
	dnsSrv := dnstest.Start(t, dnstest.Zone{
		"shards.test.":    {dnstest.MX("mx.shards.test.", 10)},
		"mx.shards.test.": {dnstest.A("127.0.0.1")},
	})
	ctx := context.Background()
	enqueue := func(t *testing.T, c *tasks.Client, prefix string, n int, opts ...tasks.Option) []string {
		t.Helper()
		var ids []string
		for i := range n {
			id, err := c.Enqueue(ctx, tasks.Request{Address: fmt.Sprintf("%s%d@shards.test", prefix, i)}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	waitValid := func(t *testing.T, c *tasks.Client, ids []string) map[string]bool {
		t.Helper()
		queues := map[string]bool{}
		for _, id := range ids {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			st, err := c.Wait(wctx, id)
			cancel()
			if err != nil || st.Result == nil || st.Result.Verdict != tasks.VerdictValid {
				t.Fatalf("%s: %+v, %v; want valid", id, st, err)
			}
			queues[st.Queue] = true
		}
		return queues
	}
	t.Run("same setting", func(t *testing.T) {
		t.Parallel()
		redis := redistest.StartServer(t)
		rdb := redis.Client(t)
		workertest.Start(t, rdb, workertest.Options{SMTPPort: srv.Port(), DNS: dnsSrv.Addr(),
			Adjust: func(wc *worker.Config, _ *validator.Config) { wc.QueueShards = 3 }})
		sharded := tasks.NewClient(rdb, tasks.WithShards(3))
		defer sharded.Close()
		plain := tasks.NewClient(rdb)
		defer plain.Close()
		ids := enqueue(t, sharded, "s", 30)
		ids = append(ids, enqueue(t, sharded, "c", 6, tasks.Queue(tasks.QueueCritical))...)
		ids = append(ids, enqueue(t, plain, "p", 6)...)
		queues := waitValid(t, plain, ids)
		if len(queues) < 4 || !queues[tasks.QueueDefault] {
			t.Errorf("tasks came from queues %v; want several shards and the plain default queue", queues)
		}
	})

	t.Run("producer with more shards than the worker", func(t *testing.T) {
		t.Parallel()
		redis := redistest.StartServer(t)
		rdb := redis.Client(t)
		sharded := tasks.NewClient(rdb, tasks.WithShards(5))
		defer sharded.Close()
		ids := enqueue(t, sharded, "m", 20)
		logs := &syncBuffer{}
		workertest.Start(t, rdb, workertest.Options{SMTPPort: srv.Port(), DNS: dnsSrv.Addr(),
			Log: slog.New(slog.NewTextHandler(logs, nil))})
		queues := waitValid(t, sharded, ids)
		if len(queues) < 2 {
			t.Errorf("tasks came from queues %v; want several shards", queues)
		}
		if out := logs.String(); !strings.Contains(out, "consuming queue shards this worker's --queue-shards does not name") ||
			!strings.Contains(out, tasks.QueueDefault+".") {
			t.Errorf("the worker did not say it drains shards it was not told of:\n%s", out)
		}
	})
}

func TestWorkerRefusesBadShardSetting(t *testing.T) {
	t.Parallel()
	for _, n := range []int{-1, tasks.MaxShards + 1} {
		_, err := workertest.New(redistest.Client(t), workertest.Options{DNS: "127.0.0.1:53", Adjust: func(wc *worker.Config, _ *validator.Config) { wc.QueueShards = n }})
		if err == nil || !strings.Contains(err.Error(), "shards") {
			t.Errorf("QueueShards %d: %v; want refused", n, err)
		}
	}
}
