package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/api"
)

// failScripts lets asynq's enqueue script succeed n times, then fails it
// and, with pipelines set, every transaction: Redis going away in the middle
// of a batch. It counts successes, not attempts: the batch enqueues rows
// concurrently, and counting attempts let a failure cancel the batch before
// any row was queued (go-redis also retries a NOSCRIPT EVALSHA as EVAL).
type failScripts struct {
	n, ok     atomic.Int64
	pipelines bool
}

var errInjected = errors.New("injected: connection reset")

func (f *failScripts) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f *failScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		name := cmd.Name()
		if (name != "evalsha" && name != "eval") || !enqueuesTask(cmd) {
			return next(ctx, cmd)
		}
		if f.ok.Load() >= f.n.Load() {
			cmd.SetErr(errInjected)
			return errInjected
		}
		err := next(ctx, cmd)
		if err == nil {
			f.ok.Add(1)
		}
		return err
	}
}

// enqueuesTask tells asynq's enqueue script (its first key is a task hash)
// from the other scripts the API runs (quota, inspector).
func enqueuesTask(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 4 {
		return false
	}
	key, _ := args[3].(string)
	return strings.HasPrefix(key, "asynq:{bulk}:t:")
}

func (f *failScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f.pipelines && f.ok.Load() >= f.n.Load() {
			for _, c := range cmds {
				c.SetErr(errInjected)
			}
			return errInjected
		}
		return next(ctx, cmds)
	}
}

// Redis failing part-way through a batch: what the client is told matches
// what was queued, row by row. With the batch record stored, the answer is
// 202 and every row not queued is rejected with a reason to submit it
// again; without it, the 503 says how many rows were queued anyway.
func TestBatchRedisFailsPartWay(t *testing.T) {
	t.Parallel()
	const rows = 40
	for _, storeFails := range []bool{false, true} {
		t.Run(fmt.Sprintf("record stored %v", !storeFails), func(t *testing.T) {
			t.Parallel()
			f := &failScripts{pipelines: storeFails}
			f.n.Store(8)
			b := setup(t, opts{cfg: func(c *api.Config) {
				rc := redis.NewClient(&redis.Options{Addr: c.Redis.(*redis.Client).Options().Addr, MaxRetries: -1})
				t.Cleanup(func() { rc.Close() })
				rc.AddHook(f)
				c.Redis = rc
			}})
			var body strings.Builder
			for i := range rows {
				fmt.Fprintf(&body, "u%02d@example.com\n", i)
			}
			resp, out := b.do(t, "POST", "/v1/batches", keyA, "text/csv", body.String())
			qi, err := asynq.NewInspectorFromRedisClient(b.rdb).GetQueueInfo("bulk")
			if err != nil {
				t.Fatal(err)
			}
			if storeFails {
				msg := decodeError(t, out).Error.Message
				if resp.StatusCode != http.StatusServiceUnavailable || qi.Size == 0 ||
					!strings.Contains(msg, fmt.Sprintf("%d of its rows were queued and will run", qi.Size)) {
					t.Errorf("%d %q with %d tasks queued; want a 503 that counts them", resp.StatusCode, msg, qi.Size)
				}
				return
			}
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("status %d: %s", resp.StatusCode, out)
			}
			got := mustJSON[struct {
				Accepted int `json:"accepted"`
				Rejected []struct {
					Line  int    `json:"line"`
					Error string `json:"error"`
				} `json:"rejected"`
			}](t, out)
			notQueued := 0
			for _, r := range got.Rejected {
				if strings.Contains(r.Error, "submit this row again") {
					notQueued++
				}
			}
			if got.Accepted == 0 || got.Accepted != qi.Size || got.Accepted+len(got.Rejected) != rows || notQueued != len(got.Rejected) {
				t.Errorf("accepted %d, rejected %d (%d not queued), queue holds %d; want accepted = queued and every row accounted for",
					got.Accepted, len(got.Rejected), notQueued, qi.Size)
			}
		})
	}
}
