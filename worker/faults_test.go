package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// Faults with real processes (docs/reliability.md §4). Each test asserts what is
// delivered and that nothing accepted is lost. The SIGKILLed worker is
// TestWorkerKilledMidTaskAnotherCompletesIt and a receiver that answers 503
// is TestCallbackReceiverDownThenUp, both in worker_test.go.

// faultWorld is like bundle but lets each test choose its Redis (AOF), tune
// the worker (callback timeout) and read the worker's log.
type faultWorld struct {
	redis  *redistest.Server
	rdb    *redis.Client
	dns    *dnstest.Server
	smtp   *smtptest.Server
	client *tasks.Client
	insp   *asynq.Inspector
	log    *syncBuffer
}

// syncBuffer is the worker's log: a JSON handler writes into it while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newFaultWorld(t *testing.T, rs *redistest.Server, opts smtptest.Options) *faultWorld {
	t.Helper()
	f := &faultWorld{redis: rs, log: &syncBuffer{}}
	// Retries on every command: the client must ride out a Redis restart.
	f.rdb = redis.NewClient(&redis.Options{Addr: rs.Addr(), MaxRetries: 10, MinRetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond})
	t.Cleanup(func() { f.rdb.Close() })
	f.smtp = smtptest.Start(t, opts)
	f.dns = dnstest.Start(t, dnstest.Zone{
		"example.test.":    {dnstest.MX("mx.example.test.", 10)},
		"mx.example.test.": {dnstest.A("127.0.0.1")},
	})
	f.client = tasks.NewClient(f.rdb)
	f.insp = asynq.NewInspectorFromRedisClient(f.rdb)
	return f
}

// startWorker builds a worker like newWorker does, with mutate applied to
// its config, logging JSON at debug level into f.log.
func (f *faultWorld) startWorker(t *testing.T, mutate func(*worker.Config, *validator.Config)) *worker.Worker {
	t.Helper()
	log := slog.New(slog.NewJSONHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return workertest.Start(t, f.rdb, workertest.Options{SMTPPort: f.smtp.Port(), DNS: f.dns.Addr(), Log: log,
		LimiterPrefix: "test:rl:", CallbackSecret: secret,
		Adjust: func(wc *worker.Config, vc *validator.Config) {
			vc.DNS.Timeout = 300 * time.Millisecond
			fast := worker.RetryPolicy{FirstDelay: 50 * time.Millisecond, Multiplier: 2, MaxDelay: 500 * time.Millisecond, GiveUpAfter: 20 * time.Second, Jitter: 0.1}
			wc.Retry, wc.CallbackRetry = fast, fast
			if mutate != nil {
				mutate(wc, vc)
			}
		}})
}

func (f *faultWorld) enqueue(t *testing.T, addr, callbackURL string) string {
	t.Helper()
	id, err := f.client.Enqueue(context.Background(), tasks.Request{Address: addr, CallbackURL: callbackURL})
	if err != nil {
		t.Fatalf("Enqueue(%s): %v", addr, err)
	}
	return id
}

func (f *faultWorld) wait(t *testing.T, id string) tasks.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := f.client.Wait(ctx, id)
	if err != nil || st.Result == nil {
		t.Fatalf("Wait(%s): %v (status %+v)", id, err, st)
	}
	return st
}

// TestRedisRestartedMidRunLosesNothing: Redis (AOF on, fsync always) is
// killed while probes are in flight and tasks wait in the queue, then
// restarted. Every task accepted before the crash ends with its verdict and
// its callback; the worker and the producer reconnect by themselves.
func TestRedisRestartedMidRunLosesNothing(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	arrived := make(chan string, 100)
	f := newFaultWorld(t, redistest.StartServerAOF(t), smtptest.Options{
		RcptFunc: func(to string) *smtp.SMTPError {
			arrived <- to
			<-release // probes in flight across the crash
			return nil
		},
	})
	rcv := newReceiver(t)
	f.startWorker(t, func(c *worker.Config, _ *validator.Config) { c.Concurrency = 2 })
	var before []string
	for i := range 6 {
		before = append(before, f.enqueue(t, fmt.Sprintf("before%d@example.test", i), rcv.url()))
	}
	<-arrived
	<-arrived // both worker slots are inside a probe; four tasks wait

	f.redis.Kill(t)
	// While Redis is down nothing can be accepted, and Enqueue says so.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if _, err := f.client.Enqueue(ctx, tasks.Request{Address: "during@example.test"}); err == nil {
		t.Error("Enqueue succeeded while Redis was down")
	}
	cancel()
	f.redis.Restart(t)
	close(release)

	after := f.enqueue(t, "after@example.test", rcv.url())
	want := map[string]bool{after: true}
	for _, id := range before {
		want[id] = true
	}
	for id := range want {
		if r := f.wait(t, id).Result; r.Verdict != tasks.VerdictValid || !r.Final {
			t.Errorf("%s: %+v, want final valid", id, r)
		}
	}
	got := map[string]bool{}
	for len(got) < len(want) {
		cb := rcv.next(t)
		if !want[cb.TaskID] {
			t.Fatalf("callback for unknown task %s", cb.TaskID)
		}
		got[cb.TaskID] = true // a duplicate (at least once) carries the same id
	}
	if rcv.bad != 0 {
		t.Errorf("%d callbacks failed verification", rcv.bad)
	}
}

// TestProbeEndingDuringOutageStoresItsVerdict: two probes end while Redis
// is down, so their verdicts cannot be stored. Each handler keeps trying
// and stores its verdict once Redis is back, in the same attempt: the task
// is never retried and finishes long before asynq's lease on it could have
// expired (without the retry it would stay active until asynq's recoverer
// found the lease expired, a minute or more later, and run it again).
func TestProbeEndingDuringOutageStoresItsVerdict(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	arrived := make(chan string, 100)
	f := newFaultWorld(t, redistest.StartServerAOF(t), smtptest.Options{
		RcptFunc: func(to string) *smtp.SMTPError {
			arrived <- to
			<-release
			return nil
		},
	})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	f.startWorker(t, func(c *worker.Config, _ *validator.Config) { c.Concurrency = 2 })
	ids := map[string]bool{}
	for i := range 2 {
		ids[f.enqueue(t, fmt.Sprintf("inflight%d@example.test", i), "")] = true
	}
	for range 2 {
		if to := <-arrived; !strings.HasPrefix(to, "inflight") {
			t.Fatalf("first RCPT to %s, want an address under test", to)
		}
	} // both tasks are inside their probe

	failed := make(chan string, 100)
	stop := worker.OnStoreFinal(func(id string, err error) {
		if ids[id] && err != nil {
			failed <- id
		}
	})
	defer stop()
	f.redis.Kill(t)
	killed := time.Now()
	releaseOnce.Do(func() { close(release) })
	for seen := map[string]bool{}; len(seen) < len(ids); {
		select {
		case id := <-failed:
			seen[id] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of %d verdicts met the outage", len(seen), len(ids))
		}
	}
	f.redis.Restart(t)

	for id := range ids {
		if st := f.wait(t, id); st.Result.Verdict != tasks.VerdictValid || !st.Result.Final {
			t.Errorf("%s: %+v, want final valid", id, st.Result)
		}
	}
	// Each address was probed once: no attempt ran again for want of
	// storing the first one's verdict.
	probed := map[string]int{}
	for len(arrived) > 0 {
		if to := <-arrived; strings.HasPrefix(to, "inflight") {
			probed[to]++
		}
	}
	for i := range 2 {
		// The two read before the kill are not in arrived any more.
		if a := fmt.Sprintf("inflight%d@example.test", i); probed[a] != 0 {
			t.Errorf("%s probed %d more times after the outage, want its first verdict kept", a, probed[a])
		}
	}
	// asynq's lease on a task is 30 s, not extended while Redis is away.
	if took := time.Since(killed); took > 30*time.Second {
		t.Errorf("verdicts stored %v after the kill, past the task lease", took)
	}
}

// TestSlowCallbackReceiverRetriedThenDelivered: the receiver takes longer
// than the delivery timeout once. The attempt is abandoned and retried; the
// result arrives later, and exactly once with a 2xx.
func TestSlowCallbackReceiverRetriedThenDelivered(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	delivered := make(chan string, 10)
	abandoned := make(chan struct{}, 1)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := tasks.VerifyRequest(r, [][]byte{secret}, 1<<20)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if calls.Add(1) == 1 {
			// Slow: hold the answer until the worker gives up on us.
			<-r.Context().Done()
			abandoned <- struct{}{}
			return
		}
		var res tasks.Result
		if err := json.Unmarshal(body, &res); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		delivered <- r.Header.Get(tasks.HeaderEventID)
	}))
	t.Cleanup(rcv.Close)
	f := newFaultWorld(t, redistest.StartServer(t), smtptest.Options{})
	f.startWorker(t, func(c *worker.Config, _ *validator.Config) { c.Callback.Timeout = 300 * time.Millisecond })
	id := f.enqueue(t, "slow@example.test", rcv.URL+"/hook")
	select {
	case <-abandoned:
	case <-time.After(30 * time.Second):
		t.Fatal("the slow attempt was never abandoned")
	}
	select {
	case ev := <-delivered:
		if ev != id {
			t.Errorf("delivered event %q, want %q", ev, id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the callback was never delivered after the slow attempt")
	}
	// The delivered attempt completes the callback task: no more calls.
	for {
		info, err := f.insp.GetTaskInfo(tasks.QueueDefault, "cb_"+id)
		if err == nil && info.State == asynq.TaskStateCompleted {
			break
		}
		if err == nil && info.State == asynq.TaskStateArchived {
			t.Fatalf("callback task archived: %s", info.LastErr)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("receiver called %d times, want 2 (one slow, one delivered)", n)
	}
	select {
	case ev := <-delivered:
		t.Errorf("delivered twice (%s)", ev)
	default:
	}
}

// TestDNSDownThenBack: while the DNS server answers nothing, the validation
// is a retryable unknown/dns_error (never invalid); once DNS is back, the
// task's own retry succeeds through the queue and the callback carries the
// final verdict.
func TestDNSDownThenBack(t *testing.T) {
	t.Parallel()
	f := newFaultWorld(t, redistest.StartServer(t), smtptest.Options{})
	f.dns.Drop(dnstest.All)
	rcv := newReceiver(t)
	f.startWorker(t, nil)
	id := f.enqueue(t, "dns@example.test", rcv.url())
	// Wait for the attempt that saw DNS down.
	var first *tasks.Result
	for first == nil {
		st, err := f.client.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if st.Result != nil {
			first = st.Result
		}
	}
	if first.Final || first.Verdict != tasks.VerdictUnknown || first.Reason != "dns_error" || !first.Retryable {
		t.Fatalf("with DNS down: %+v, want a non-final retryable unknown/dns_error", first)
	}
	if f.smtp.Conns() != 0 {
		t.Errorf("%d SMTP connections without DNS", f.smtp.Conns())
	}
	f.dns.Heal(dnstest.All)
	st := f.wait(t, id)
	if r := st.Result; r.Verdict != tasks.VerdictValid || !r.Final || r.Attempts < 2 {
		t.Errorf("after DNS came back: %+v, want final valid after at least 2 attempts", r)
	}
	if cb := rcv.next(t); cb.TaskID != id || cb.Verdict != tasks.VerdictValid {
		t.Errorf("callback %+v, want the final valid verdict", cb)
	}
	select {
	case extra := <-rcv.ch:
		t.Errorf("second callback %+v: only the final verdict is delivered", extra)
	default:
	}
}

// TestWorkerLogsKeepSecrets: a worker whose callbacks carry a token in the
// URL and fail, whose probes fail, logging at debug level, never writes the
// callback secret or the URL's token (docs/reliability.md §5). Errors of the HTTP
// client quote the whole URL; they must be stripped before logging.
func TestWorkerLogsKeepSecrets(t *testing.T) {
	t.Parallel()
	const token = "tok3n-in-the-query"
	f := newFaultWorld(t, redistest.StartServer(t), smtptest.Options{RcptDefault: notFound})
	closed := smtptest.ClosedPort(t) // nothing listens: every delivery fails
	f.startWorker(t, func(c *worker.Config, _ *validator.Config) {
		c.CallbackRetry = worker.RetryPolicy{FirstDelay: 20 * time.Millisecond, Multiplier: 1, MaxDelay: 20 * time.Millisecond, GiveUpAfter: 100 * time.Millisecond}
	})
	id := f.enqueue(t, "secret@example.test", fmt.Sprintf("http://%s/hook/%s?token=%s", closed, token, token))
	f.wait(t, id)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the callback task was never archived")
		}
		info, err := f.insp.GetTaskInfo(tasks.QueueDefault, "cb_"+id)
		if err == nil && info.State == asynq.TaskStateArchived {
			if strings.Contains(info.LastErr, token) {
				t.Errorf("the task's stored error shows the URL token: %s", info.LastErr)
			}
			break
		}
	}
	logs := f.log.String()
	if !strings.Contains(logs, "callback attempt") {
		t.Fatalf("no callback attempt logged; the test proves nothing:\n%s", logs)
	}
	for _, s := range []string{string(secret), token} {
		if strings.Contains(logs, s) {
			t.Errorf("log contains secret %q:\n%s", s, logs)
		}
	}
}
