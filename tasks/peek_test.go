package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/tasks"
)

// TestPeekAgreesWithGet puts validations in every state a batch can see —
// pending, scheduled, active, retry (with a provisional result), completed
// (final result), archived (no result) — plus ids with no task, and checks
// that Peek's one pipelined read says what Get says for each. Peek reads
// asynq's task hash directly, so this is where a change of asynq's key
// layout shows.
func TestPeekAgreesWithGet(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	c := tasks.NewClient(rdb)
	ctx := t.Context()

	release := make(chan struct{}) // ends the active task's handler
	handler := func(ctx context.Context, task *asynq.Task) error {
		p, err := tasks.DecodeValidatePayload(task.Payload())
		if err != nil {
			return err
		}
		write := func(final bool, verdict string) {
			id, _ := asynq.GetTaskID(ctx)
			b, _ := json.Marshal(tasks.Result{TaskID: id, Final: final, Check: tasks.Check{Address: p.Address, Verdict: verdict, Reason: "test"}})
			task.ResultWriter().Write(b)
		}
		switch strings.SplitN(p.Address, "@", 2)[0] {
		case "done":
			write(true, tasks.VerdictValid)
			return nil
		case "retry":
			write(false, tasks.VerdictUnknown)
			return errors.New("greylisted")
		case "archived":
			return fmt.Errorf("bad payload: %w", asynq.SkipRetry)
		case "active":
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}
		return nil
	}
	worker := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:    4,
		Queues:         map[string]int{tasks.QueueDefault: 1}, // bulk is never worked: its task stays pending
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
		LogLevel:       asynq.FatalLevel,
	})
	if err := worker.Start(asynq.HandlerFunc(handler)); err != nil {
		t.Fatal(err)
	}
	defer worker.Shutdown()
	defer close(release) // first, so Shutdown need not wait for the active task

	want := map[string]string{} // id → state
	enqueue := func(addr, state string, opts ...tasks.Option) string {
		id, err := c.Enqueue(ctx, tasks.Request{Address: addr}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = state
		return id
	}
	enqueue("done@example.com", "completed")
	enqueue("retry@example.com", "retry")
	enqueue("archived@example.com", "archived")
	enqueue("active@example.com", "active")
	enqueue("pending@example.com", "pending", tasks.Queue(tasks.QueueBulk))
	enqueue("scheduled@example.com", "scheduled", tasks.ProcessIn(time.Hour))
	ids := []string{"default_00000000-0000-0000-0000-000000000000", "nonsense"}
	for id := range want {
		ids = append(ids, id)
	}

	// Wait for the worker to bring each task to its state.
	for id, state := range want {
		deadline := time.Now().Add(15 * time.Second)
		for {
			st, err := c.Get(ctx, id)
			if err == nil && st.State == state {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("set-up: %s is %q (%v), want %s", id, st.State, err, state)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Peek through a client that counts round trips: one pipeline for all,
	// plus Get (two round trips) only for the archived task and the
	// well-formed id with no task. Reading the wrong keys would still give
	// right answers, through Get for every id, so the count is the check.
	counted := srv.Client(t)
	var trips redistest.Counter
	counted.AddHook(&trips)
	found, missing, err := tasks.NewClient(counted).Peek(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if n := trips.RoundTrips(); n > 1+2*2 {
		t.Errorf("Peek of %d ids took %d round trips; want at most 5 (one pipeline, Get for 2)", len(ids), n)
	}
	if got := strings.Join(missing, ","); got != ids[0]+",nonsense" && got != "nonsense,"+ids[0] {
		t.Errorf("missing = %q, want the two ids without a task", got)
	}
	for id, state := range want {
		got, ok := found[id]
		if !ok {
			t.Errorf("%s (%s): not found by Peek", id, state)
			continue
		}
		full, err := c.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != full.State || got.Queue != full.Queue || got.Done() != full.Done() || !reflect.DeepEqual(got.Result, full.Result) {
			t.Errorf("%s: Peek %+v (result %+v), Get %+v (result %+v)", state, got, got.Result, full, full.Result)
		}
		if state == "archived" && got.LastError == "" {
			t.Errorf("archived: Peek lost LastError, which says why there is no verdict")
		}
	}
}
