package tasks_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/tasks"
)

// TestBatchWebhookQueuedOnceAndRepaired: the last row's end queues one
// batch.done callback; when queueing it fails (Redis refused the asynq
// client), the next call for that row queues it after all, and later
// calls add nothing.
func TestBatchWebhookQueuedOnceAndRepaired(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	c := tasks.NewClient(rdb)
	t.Cleanup(func() { _ = c.Close() })
	if err := c.BatchStarted(ctx, "b_test1", tasks.QueueDefault, 2, "https://hooks.example/done"); err != nil {
		t.Fatal(err)
	}
	ac := asynq.NewClientFromRedisClient(rdb)
	deadRedis := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = deadRedis.Close() })
	dead := asynq.NewClientFromRedisClient(deadRedis)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	cbTask := func() *asynq.TaskInfo {
		ti, err := insp.GetTaskInfo(tasks.QueueDefault, "cb_batch_b_test1")
		if err != nil {
			return nil
		}
		return ti
	}
	if err := tasks.BatchRowEnded(ctx, rdb, ac, tasks.QueueDefault, "b_test1", "t1"); err != nil || cbTask() != nil {
		t.Fatalf("first of two rows: %v, callback %v", err, cbTask())
	}
	if err := tasks.BatchRowEnded(ctx, rdb, dead, tasks.QueueDefault, "b_test1", "t2"); err == nil {
		t.Fatal("queueing on a dead client succeeded")
	}
	// The task retries: the same row ends again, now with a working client.
	if err := tasks.BatchRowEnded(ctx, rdb, ac, tasks.QueueDefault, "b_test1", "t2"); err != nil {
		t.Fatal(err)
	}
	ti := cbTask()
	if ti == nil {
		t.Fatal("no batch callback after the repair")
	}
	var cp tasks.CallbackPayload
	var done tasks.BatchDone
	if json.Unmarshal(ti.Payload, &cp) != nil || json.Unmarshal(cp.Body, &done) != nil || done.BatchID != "b_test1" || done.Total != 2 || cp.URL != "https://hooks.example/done" {
		t.Errorf("callback %+v body %+v", cp, done)
	}
	// Later ends (a duplicate run) queue nothing more and keep no set.
	if err := tasks.BatchRowEnded(ctx, rdb, ac, tasks.QueueDefault, "b_test1", "t1"); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Exists(ctx, "mxprobe:batch:{b_test1}:rows").Result(); n != 0 {
		t.Error("the set of ended rows outlived the webhook")
	}
}
