package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/tasks"
)

// settle reuses the caller's encoding of the result only when that encoding
// holds nothing of the requester's: the cached entry never carries another
// request's metadata, request id or transcript.
func TestSettleReusesEncodingOnlyWithoutRequesterData(t *testing.T) {
	t.Parallel()
	base := tasks.Result{TaskID: "t1", Final: true, Attempts: 1,
		Check: tasks.Check{Input: "a@example.test", Address: "a@example.test", Verdict: tasks.VerdictValid,
			Reason: "mailbox_exists", CheckedAt: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC), Duration: "1ms"}}
	tests := []struct {
		name      string
		res       func(tasks.Result) tasks.Result
		wantReuse bool
	}{
		{name: "plain result: encoding reused", res: func(r tasks.Result) tasks.Result { return r }, wantReuse: true},
		{name: "metadata stripped", res: func(r tasks.Result) tasks.Result { r.Metadata = json.RawMessage(`{"u":1}`); return r }},
		{name: "request id stripped", res: func(r tasks.Result) tasks.Result { r.RequestID = "req-9"; return r }},
		{name: "transcript stripped", res: func(r tasks.Result) tasks.Result {
			r.Transcript = []tasks.TranscriptLine{{Dir: ">", Line: "QUIT"}}
			return r
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &resultStore{rdb: redistest.Client(t), prefix: redistest.Prefix(t), ttl: DefaultCacheTTL}
			r := tt.res(base)
			encoded, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := s.settle(ctx, r.Address, "", r, encoded, taskResult{}); err != nil {
				t.Fatal(err)
			}
			raw, err := s.rdb.Get(ctx, s.resultKey(r.Address)).Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if got := string(raw) == string(encoded); got != tt.wantReuse {
				t.Errorf("cached %s; encoding reused = %v, want %v", raw, got, tt.wantReuse)
			}
			var cached tasks.Result
			if err := json.Unmarshal(raw, &cached); err != nil {
				t.Fatal(err)
			}
			if cached.Metadata != nil || cached.RequestID != "" || cached.Transcript != nil || cached.Verdict != tasks.VerdictValid {
				t.Errorf("cached %s: want the valid verdict without the requester's data", raw)
			}
		})
	}
}

// settle writes the task's asynq result in the same round trip as the cache
// and the lead, to the key asynq keeps it in: read back through asynq's own
// Inspector, so a change of asynq's key layout fails here. It announces the
// task on tasks.DoneChannel, with the result already readable. It works on
// a server whose script cache is empty (a fresh or restarted Redis), and on
// a Redis Cluster node (where the announcement follows the pipeline).
func TestSettleWritesTheAsynqResult(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"single", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var rdb redis.UniversalClient
			if mode == "cluster" {
				rdb = redistest.StartCluster(t).ClusterClient(t)
			} else {
				rdb = redistest.StartServer(t).Client(t)
			}
			ctx := context.Background()
			sub := rdb.Subscribe(ctx, tasks.DoneChannel)
			defer sub.Close()
			if _, err := sub.Receive(ctx); err != nil {
				t.Fatal(err)
			}
			announced := sub.Channel()
			client := asynq.NewClientFromRedisClient(rdb)
			info, err := client.EnqueueContext(ctx, asynq.NewTask(tasks.TypeValidate, []byte(`{}`)), asynq.Queue("bulk"), asynq.Retention(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			s := &resultStore{rdb: rdb, prefix: redistest.Prefix(t), ttl: DefaultCacheTTL}
			for i, flush := range []bool{true, false} {
				if flush {
					if err := rdb.ScriptFlush(ctx).Err(); err != nil {
						t.Fatal(err)
					}
				}
				addr := fmt.Sprintf("a%d@example.test", i)
				r := tasks.Result{TaskID: info.ID, Final: true, Attempts: 1, Check: tasks.Check{Address: addr, Verdict: tasks.VerdictInvalid, Reason: "mailbox_not_found"}}
				b, err := json.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				if _, leader, _, err := s.lookup(ctx, addr, info.ID); err != nil || leader != info.ID {
					t.Fatalf("lookup: leader %q, %v", leader, err)
				}
				if err := s.settle(ctx, addr, info.ID, r, b, taskResult{key: asynqTaskKey("bulk", info.ID), id: info.ID, data: b}); err != nil {
					t.Fatalf("settle (script flushed %v): %v", flush, err)
				}
				select {
				case m := <-announced:
					if m.Payload != info.ID {
						t.Errorf("announced %q, want %q", m.Payload, info.ID)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("settle did not announce the result")
				}
				ti, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo("bulk", info.ID)
				if err != nil {
					t.Fatal(err)
				}
				if string(ti.Result) != string(b) {
					t.Errorf("asynq sees result %q; want %q", ti.Result, b)
				}
				if hit, leader, _, err := s.lookup(ctx, addr, "other"); err != nil || hit == nil || hit.Verdict != tasks.VerdictInvalid || leader != "" {
					t.Errorf("after settle (script flushed %v): hit %v, leader %q, %v; want the cached verdict", flush, hit, leader, err)
				}
			}
		})
	}
}
