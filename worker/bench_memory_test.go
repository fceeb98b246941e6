package worker_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/tasks"
)

var queueMemoryTasks = flag.Int("queuememory.tasks", 100_000, "BenchmarkQueueMemory: tasks queued per case")

// BenchmarkQueueMemory measures what queued validation tasks
// cost Redis: -queuememory.tasks tasks enqueued through tasks.Client into a
// private redis-server with no worker running, INFO memory used_memory
// before and after, divided by the count. Cases: the bare request (an
// address), and a typical API request (callback URL and a little
// metadata). Each b.N iteration measures both cases again on an emptied
// database.
//
//	go test -run '^$' -bench QueueMemory -benchtime 3x -v ./worker/
func BenchmarkQueueMemory(b *testing.B) {
	srv := redistest.StartServer(b)
	rdb := srv.Client(b)
	prod := tasks.NewClient(rdb)
	ctx := context.Background()
	cases := []struct {
		name string
		req  func(i int) tasks.Request
	}{
		{name: "address", req: func(i int) tasks.Request {
			return tasks.Request{Address: fmt.Sprintf("user%06d@example.com", i)}
		}},
		{name: "callback+metadata", req: func(i int) tasks.Request {
			return tasks.Request{Address: fmt.Sprintf("user%06d@example.com", i),
				CallbackURL: "https://signup.example.com/hooks/mxprobe",
				Metadata:    json.RawMessage(`{"user_id":"` + strconv.Itoa(1_000_000+i) + `","source":"signup-form"}`)}
		}},
	}
	perTask := map[string][]float64{}
	n := *queueMemoryTasks
	b.ResetTimer()
	for range b.N {
		for _, c := range cases {
			if err := rdb.FlushDB(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			before := usedMemory(b, rdb.Info(ctx, "memory").Val())
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				wg.Go(func() {
					for i := g; i < n; i += 8 {
						if _, err := prod.Enqueue(ctx, c.req(i)); err != nil {
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
			after := usedMemory(b, rdb.Info(ctx, "memory").Val())
			perTask[c.name] = append(perTask[c.name], float64(after-before)/float64(n))
		}
	}
	b.StopTimer()
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d tasks per case, %d runs\n", n, b.N)
	for _, c := range cases {
		m := median(perTask[c.name])
		fmt.Fprintf(&sb, "%-18s median %6.0f bytes per queued task = %6.1f MiB per 100,000 (runs: %v)\n", c.name, m, m*100_000/(1<<20), perTask[c.name])
		b.ReportMetric(m, c.name+"-B/task")
	}
	b.Log("\n" + sb.String())
}

func usedMemory(b *testing.B, info string) int64 {
	b.Helper()
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("INFO memory has no used_memory")
	return 0
}
