package tasks_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/tasks"
)

// finishLikeTheWorker stores a final result in the task's asynq hash and,
// if announce, publishes the id on DoneChannel, as the worker does.
func finishLikeTheWorker(t *testing.T, rdb *redis.Client, id string, announce bool) {
	t.Helper()
	b, _ := json.Marshal(tasks.Result{TaskID: id, Final: true, Check: tasks.Check{Address: "a@example.com", Verdict: tasks.VerdictValid, Reason: "mailbox_exists"}})
	ctx := context.Background()
	if err := rdb.HSet(ctx, "asynq:{"+tasks.QueueDefault+"}:t:"+id, "result", b).Err(); err != nil {
		t.Fatal(err)
	}
	if announce {
		if err := rdb.Publish(ctx, tasks.DoneChannel, id).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// startWait runs c.Wait(id) and returns its outcome on a channel, once
// the Wait has read the task at least once (gets counts the reads).
func startWait(t *testing.T, c *tasks.Client, id string, gets *atomic.Int64) <-chan tasks.Status {
	t.Helper()
	before := gets.Load()
	out := make(chan tasks.Status, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := c.Wait(ctx, id)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		out <- st
	}()
	for deadline := time.Now().Add(10 * time.Second); gets.Load() == before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Wait never read the task")
		}
	}
	return out
}

// scriptCalls counts EVALSHA commands (asynq's GetTaskInfo script: one
// per Get).
type scriptCalls struct{ n *atomic.Int64 }

func (h scriptCalls) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h scriptCalls) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "evalsha" || cmd.Name() == "eval" {
			h.n.Add(1)
		}
		return err
	}
}
func (h scriptCalls) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A final result announced on DoneChannel ends Wait at once: with its
// safety-net polling set to an hour, the Wait returns only if the
// announcement woke it.
func TestWaitWakesOnAnnouncement(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	var gets atomic.Int64
	rdb.AddHook(scriptCalls{&gets})
	c := tasks.NewClient(rdb)
	defer c.Close()
	tasks.SetSafetyNet(c, time.Hour, time.Hour)
	id, err := c.Enqueue(context.Background(), tasks.Request{Address: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	done := startWait(t, c, id, &gets)
	finishLikeTheWorker(t, srv.Client(t), id, true)
	select {
	case st := <-done:
		if !st.Done() || st.Result.Verdict != tasks.VerdictValid {
			t.Errorf("Wait returned %+v", st)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait was not woken by the announcement")
	}
}

// Where SUBSCRIBE is refused (a proxy or an ACL that forbids pub/sub),
// Wait polls alone and still sees the final result.
func TestWaitPollsWithoutSubscription(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServerArgs(t, "--rename-command", "SUBSCRIBE", "")
	rdb := srv.Client(t)
	var gets atomic.Int64
	rdb.AddHook(scriptCalls{&gets})
	c := tasks.NewClient(rdb)
	defer c.Close()
	tasks.SetSafetyNet(c, time.Hour, time.Hour) // unused: no subscription
	id, err := c.Enqueue(context.Background(), tasks.Request{Address: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	done := startWait(t, c, id, &gets)
	finishLikeTheWorker(t, srv.Client(t), id, false)
	select {
	case st := <-done:
		if !st.Done() {
			t.Errorf("Wait returned %+v", st)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait without a subscription never saw the result")
	}
}
