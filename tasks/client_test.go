package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/tasks"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// newClient gives each test its own Redis server: asynq's keys cannot be
// prefixed, so isolation is by server.
func newClient(t *testing.T) (*tasks.Client, *asynq.Inspector) {
	t.Helper()
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	return tasks.NewClient(rdb), asynq.NewInspectorFromRedisClient(rdb)
}

func TestEnqueueStoresNormalisedPayload(t *testing.T) {
	t.Parallel()
	c, insp := newClient(t)
	ctx := context.Background()
	id, err := c.Enqueue(ctx, tasks.Request{Address: "Alice@Bücher.DE", CallbackURL: "https://hooks.example.com/x",
		Metadata: json.RawMessage(`{"user":42}`), RequestID: "r-1"}, tasks.Queue(tasks.QueueCritical), tasks.WithTranscript())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, "critical_") {
		t.Errorf("id %q does not name its queue", id)
	}
	info, err := insp.GetTaskInfo(tasks.QueueCritical, id)
	if err != nil {
		t.Fatal(err)
	}
	if info.MaxRetry != tasks.MaxRetryCeiling {
		t.Errorf("MaxRetry = %d, want %d (never 0: asynq archives at once)", info.MaxRetry, tasks.MaxRetryCeiling)
	}
	if info.Retention <= 0 {
		t.Errorf("Retention = %v, want > 0 so results stay readable", info.Retention)
	}
	p, err := tasks.DecodeValidatePayload(info.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if p.Address != "Alice@xn--bcher-kva.de" || p.Input != "Alice@Bücher.DE" || !p.Transcript || p.RequestID != "r-1" {
		t.Errorf("payload = %+v", p)
	}
	st, err := c.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "pending" || st.Result != nil || st.Done() {
		t.Errorf("status = %+v, want pending without result", st)
	}
}

func TestEnqueueRefusesBadRequests(t *testing.T) {
	t.Parallel()
	c, insp := newClient(t)
	tests := []struct {
		name      string
		req       tasks.Request
		opts      []tasks.Option
		wantField string
	}{
		{"no at sign", tasks.Request{Address: "alice.example.com"}, nil, "address"},
		{"injection", tasks.Request{Address: "a@b.com>\r\nRCPT TO:<c@d.com"}, nil, "address"},
		{"empty", tasks.Request{}, nil, "address"},
		{"ftp callback", tasks.Request{Address: "a@example.com", CallbackURL: "ftp://x/y"}, nil, "callback_url"},
		{"callback with credentials", tasks.Request{Address: "a@example.com", CallbackURL: "https://u:p@x.com/"}, nil, "callback_url"},
		{"callback without host", tasks.Request{Address: "a@example.com", CallbackURL: "https:///path"}, nil, "callback_url"},
		// Forms the worker would refuse at delivery are refused here, so no
		// accepted request has a callback that can never be delivered.
		{"callback to a mail port", tasks.Request{Address: "a@example.com", CallbackURL: "http://example.com:25/"}, nil, "callback_url"},
		{"callback port out of range", tasks.Request{Address: "a@example.com", CallbackURL: "http://example.com:99999/"}, nil, "callback_url"},
		{"callback raw IDN host", tasks.Request{Address: "a@example.com", CallbackURL: "http://bücher.example/"}, nil, "callback_url"},
		{"callback with a space", tasks.Request{Address: "a@example.com", CallbackURL: "http://example.com/a b"}, nil, "callback_url"},
		{"callback numeric IPv4 host", tasks.Request{Address: "a@example.com", CallbackURL: "http://2130706433/"}, nil, "callback_url"},
		{"metadata null", tasks.Request{Address: "a@example.com", Metadata: json.RawMessage(`null`)}, nil, "metadata"},
		{"metadata array", tasks.Request{Address: "a@example.com", Metadata: json.RawMessage(`[1,2]`)}, nil, "metadata"},
		{"metadata broken", tasks.Request{Address: "a@example.com", Metadata: json.RawMessage(`{"a":`)}, nil, "metadata"},
		{"metadata huge", tasks.Request{Address: "a@example.com", Metadata: json.RawMessage(`{"a":"` + strings.Repeat("x", tasks.MaxMetadataBytes) + `"}`)}, nil, "metadata"},
		{"unknown queue", tasks.Request{Address: "a@example.com"}, []tasks.Option{tasks.Queue("urgent")}, "queue"},
		{"request id with newline", tasks.Request{Address: "a@example.com", RequestID: "a\nb"}, nil, "request_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id, err := c.Enqueue(context.Background(), tt.req, tt.opts...)
			var re *tasks.RequestError
			if !errors.As(err, &re) || !errors.Is(err, tasks.ErrBadRequest) {
				t.Fatalf("Enqueue = %q, %v; want a *RequestError", id, err)
			}
			if re.Field != tt.wantField {
				t.Errorf("field = %q, want %q (%v)", re.Field, tt.wantField, err)
			}
		})
	}
	t.Cleanup(func() {
		for _, q := range tasks.Queues {
			if qi, err := insp.GetQueueInfo(q); err == nil && qi.Size > 0 {
				t.Errorf("queue %s holds %d tasks after refused requests", q, qi.Size)
			}
		}
	})
}

func TestGetUnknownIDs(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	for _, id := range []string{"", "nonsense", "default_", "default_0000", "urgent_1234", "../../etc"} {
		if _, err := c.Get(context.Background(), id); !errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func TestWaitHonoursContext(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	id, err := c.Enqueue(context.Background(), tasks.Request{Address: "a@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nobody works the queue: Wait must give up with ctx's error
	if _, err := c.Wait(ctx, id); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
}

func TestDecodePayloadRefusesBadInput(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, in string }{
		{"not json", `hello`},
		{"wrong version", `{"v":2,"address":"a@b.c","input":"a@b.c"}`},
		{"no address", `{"v":1,"input":"x"}`},
		{"unknown field", `{"v":1,"address":"a@b.c","input":"a@b.c","evil":true}`},
		{"trailing data", `{"v":1,"address":"a@b.c","input":"a@b.c"}{}`},
	} {
		if _, err := tasks.DecodeValidatePayload([]byte(tt.in)); err == nil {
			t.Errorf("%s: DecodeValidatePayload accepted %s", tt.name, tt.in)
		}
	}
	for _, in := range []string{`{}`, `{"v":1,"url":"http://x","event_id":"e"}`, `[]`} {
		if _, err := tasks.DecodeCallbackPayload([]byte(in)); err == nil {
			t.Errorf("DecodeCallbackPayload accepted %s", in)
		}
	}
}

// TestGetTaskLostWithRedisData: Redis restarts empty (no persistence) while
// a worker is still probing; new work recreates the queue; the worker's
// result write (asynq's ResultWriter is a bare HSET of the "result" field)
// recreates the task's hash without msg or state. asynq then answers
// `FAILED_PRECONDITION: "" is not supported task state`; Get and Wait must
// say ErrNotFound instead.
func TestGetTaskLostWithRedisData(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	c := tasks.NewClient(srv.Client(t))
	ctx := context.Background()
	lost, err := c.Enqueue(ctx, tasks.Request{Address: "lost@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill(t)
	srv.Restart(t)
	rdb := srv.Client(t)
	// A fresh producer (asynq's client remembers which queues it has
	// published and would not re-add the queue to the emptied server).
	if _, err := tasks.NewClient(rdb).Enqueue(ctx, tasks.Request{Address: "after@example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, "asynq:{"+tasks.QueueDefault+"}:t:"+lost, "result", `{"verdict":"valid","final":true}`).Err(); err != nil {
		t.Fatal(err)
	}
	// The raw inspector shows the state this test is about.
	if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(tasks.QueueDefault, lost); err == nil || !strings.Contains(err.Error(), "not supported task state") {
		t.Fatalf("set-up: inspector says %v, want asynq's FAILED_PRECONDITION", err)
	}
	_, err = c.Get(ctx, lost)
	if !errors.Is(err, tasks.ErrNotFound) || strings.Contains(err.Error(), "FAILED_PRECONDITION") {
		t.Errorf("Get = %v, want ErrNotFound in plain words", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Wait(wctx, lost); !errors.Is(err, tasks.ErrNotFound) {
		t.Errorf("Wait = %v, want ErrNotFound", err)
	}
}

func TestRequestErrorReadsCleanly(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	tests := []struct {
		name string
		req  tasks.Request
		want string
	}{
		{"address names itself once", tasks.Request{Address: "not-an-address"}, `address "not-an-address": missing '@'`},
		{"other fields are prefixed", tasks.Request{Address: "a@example.com", CallbackURL: "ftp://x"}, `callback_url: scheme "ftp": only http and https are allowed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := c.Enqueue(context.Background(), tt.req)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Error() = %q, want %q", err, tt.want)
			}
		})
	}
}

func TestCheckDeadline(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		d    time.Time
		ok   bool
	}{
		{"a minute ahead", now.Add(time.Minute), true},
		{"a nanosecond ahead", now.Add(time.Nanosecond), true},
		{"exactly the limit", now.Add(tasks.MaxDeadlineAhead), true},
		{"now", now, false},
		{"in the past", now.Add(-time.Hour), false},
		{"zero time", time.Time{}, false},
		{"past the limit", now.Add(tasks.MaxDeadlineAhead + time.Second), false},
		{"a year ahead", now.AddDate(1, 0, 0), false},
	}
	for _, tt := range tests {
		if err := tasks.CheckDeadline(tt.d, now); (err == nil) != tt.ok {
			t.Errorf("%s: CheckDeadline(%s) = %v, want ok %v", tt.name, tt.d, err, tt.ok)
		}
	}
}
