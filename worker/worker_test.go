package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		runChildWorker()
		return
	}
	redistest.Main(m)
}

var secret = []byte("test-callback-secret")

var (
	notFound   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	greylisted = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/"}
)

// bundle is one test's private world: Redis, DNS, SMTP, a callback
// receiver, and a worker wired like production (validator → gate → limiter).
type bundle struct {
	redis    *redistest.Server
	rdb      *redis.Client
	dns      *dnstest.Server
	smtp     *smtptest.Server
	client   *tasks.Client
	insp     *asynq.Inspector
	receiver *receiver
}

type setupOpts struct {
	smtp     smtptest.Options
	limit    ratelimit.Limit
	retry    worker.RetryPolicy
	cbRetry  worker.RetryPolicy
	noWorker bool
	// commandTimeout overrides the probe's per-command timeout.
	commandTimeout time.Duration
	// attemptTimeout overrides worker.Config.AttemptTimeout.
	attemptTimeout time.Duration
}

func setup(t *testing.T, o setupOpts) *bundle {
	t.Helper()
	b := &bundle{}
	b.redis = redistest.StartServer(t)
	b.rdb = b.redis.Client(t)
	b.smtp = smtptest.Start(t, o.smtp)
	b.dns = dnstest.Start(t, dnstest.Zone{
		"example.test.":    {dnstest.MX("mx.example.test.", 10)},
		"mx.example.test.": {dnstest.A("127.0.0.1")},
	})
	b.client = tasks.NewClient(b.rdb)
	b.insp = asynq.NewInspectorFromRedisClient(b.rdb)
	b.receiver = newReceiver(t)
	if !o.noWorker {
		b.startWorker(t, o)
	}
	return b
}

func (b *bundle) env() workerEnv {
	return workerEnv{RedisURL: b.redis.URL(), DNS: b.dns.Addr(), SMTPPort: b.smtp.Port()}
}

// workerEnv is what a worker needs to find the test's world; it crosses the
// process boundary as JSON for the SIGKILL test.
type workerEnv struct {
	RedisURL string
	DNS      string
	SMTPPort int
	Limit    ratelimit.Limit
	Retry    worker.RetryPolicy
	CBRetry  worker.RetryPolicy
	// CommandTimeout overrides the probe's per-command timeout (10 s).
	CommandTimeout time.Duration
	// AttemptTimeout overrides worker.Config.AttemptTimeout.
	AttemptTimeout time.Duration
}

func (b *bundle) startWorker(t *testing.T, o setupOpts) *worker.Worker {
	t.Helper()
	e := b.env()
	e.Limit, e.Retry, e.CBRetry, e.CommandTimeout, e.AttemptTimeout = o.limit, o.retry, o.cbRetry, o.commandTimeout, o.attemptTimeout
	return workertest.Start(t, b.rdb, e.options())
}

// options builds the worker these tests run, in this process or a child.
func (e workerEnv) options() workertest.Options {
	return workertest.Options{SMTPPort: e.SMTPPort, DNS: e.DNS, Limit: e.Limit,
		LimiterPrefix: "test:rl:", CallbackSecret: secret,
		Adjust: func(wc *worker.Config, vc *validator.Config) {
			if e.Retry != (worker.RetryPolicy{}) {
				wc.Retry = e.Retry
			}
			if e.CBRetry != (worker.RetryPolicy{}) {
				wc.CallbackRetry = e.CBRetry
			}
			if e.CommandTimeout > 0 {
				vc.Probe.CommandTimeout = e.CommandTimeout
			}
			if e.AttemptTimeout > 0 {
				wc.AttemptTimeout = e.AttemptTimeout
			}
		}}
}

// receiver is a callback endpoint that verifies signatures and records
// every delivery; fail makes it answer 503 that many times first.
type receiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	got   []tasks.Result
	bad   int
	fail  atomic.Int32
	calls atomic.Int32
	ch    chan tasks.Result
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{ch: make(chan tasks.Result, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.calls.Add(1)
		if r.fail.Load() > 0 {
			r.fail.Add(-1)
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		body, err := tasks.VerifyRequest(req, [][]byte{secret}, 1<<20)
		if err != nil {
			r.mu.Lock()
			r.bad++
			r.mu.Unlock()
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var res tasks.Result
		if err := json.Unmarshal(body, &res); err != nil || req.Header.Get(tasks.HeaderEventID) != res.TaskID {
			http.Error(w, "bad body or event id", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, res)
		r.mu.Unlock()
		r.ch <- res
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url() string { return r.srv.URL + "/hook" }

func (r *receiver) next(t *testing.T) tasks.Result {
	t.Helper()
	select {
	case res := <-r.ch:
		return res
	case <-time.After(30 * time.Second):
		t.Fatal("no callback arrived within 30 s")
	}
	return tasks.Result{}
}

func (b *bundle) wait(t *testing.T, id string) tasks.Status {
	t.Helper()
	return b.waitFor(t, id, 60*time.Second)
}

func (b *bundle) waitFor(t *testing.T, id string, limit time.Duration) tasks.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	st, err := b.client.Wait(ctx, id)
	if err != nil {
		t.Fatalf("Wait(%s): %v (last status %+v)", id, err, st)
	}
	if st.Result == nil {
		t.Fatalf("Wait(%s): no result, state %s, last error %q", id, st.State, st.LastError)
	}
	return st
}

func (b *bundle) enqueue(t *testing.T, addr string, opts ...tasks.Option) string {
	t.Helper()
	id, err := b.client.Enqueue(context.Background(), tasks.Request{Address: addr, CallbackURL: b.receiver.url(),
		Metadata: json.RawMessage(`{"user":7}`)}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestValidAndInvalidThroughTheQueue(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{smtp: smtptest.Options{
		Rcpt:        map[string]*smtp.SMTPError{"alice@example.test": nil},
		RcptDefault: notFound,
	}})
	for _, tt := range []struct {
		addr, verdict, reason, decision string
	}{
		{"alice@example.test", tasks.VerdictValid, "mailbox_exists", "accept"},
		{"bob@example.test", tasks.VerdictInvalid, "mailbox_not_found", "reject"},
	} {
		id := b.enqueue(t, tt.addr)
		st := b.wait(t, id)
		r := st.Result
		if r.Verdict != tt.verdict || r.Reason != tt.reason || !r.Final || r.TaskID != id {
			t.Errorf("%s: result %+v, want %s/%s final", tt.addr, r, tt.verdict, tt.reason)
		}
		if r.MXHost != "mx.example.test" || r.SMTP == nil || r.SMTP.Stage != "rcpt" {
			t.Errorf("%s: SMTP details missing: mx %q smtp %+v", tt.addr, r.MXHost, r.SMTP)
		}
		if string(r.Metadata) != `{"user":7}` {
			t.Errorf("%s: metadata %s not echoed", tt.addr, r.Metadata)
		}
		cb := b.receiver.next(t)
		if cb.TaskID != id || cb.Verdict != tt.verdict {
			t.Errorf("%s: callback %+v", tt.addr, cb)
		}
		// The sign-up decision rides on the result and the callback.
		if r.Decision != tt.decision || cb.Decision != tt.decision || (tt.decision == "reject") != (cb.Message != "") {
			t.Errorf("%s: decision %q / callback %q %q, want %s", tt.addr, r.Decision, cb.Decision, cb.Message, tt.decision)
		}
	}
	if n := b.smtp.Commands("DATA"); n != 0 {
		t.Errorf("DATA sent %d times; mxprobe must never send DATA", n)
	}
}

func TestGreylistedThenAccepted(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	b := setup(t, setupOpts{smtp: smtptest.Options{
		RcptFunc: func(to string) *smtp.SMTPError {
			if n.Add(1) <= 2 {
				return greylisted
			}
			return nil
		},
	}})
	id := b.enqueue(t, "carol@example.test")
	st := b.wait(t, id)
	if st.Result.Verdict != tasks.VerdictValid || st.Result.Attempts != 3 {
		t.Fatalf("result %+v, want valid after 3 attempts", st.Result)
	}
	// Greylisting pins the triplet: every attempt used the same sender.
	froms := b.smtp.Froms()
	for _, f := range froms {
		if f != froms[0] {
			t.Fatalf("MAIL FROM changed between attempts: %q", froms)
		}
	}
	if cb := b.receiver.next(t); cb.Verdict != tasks.VerdictValid {
		t.Errorf("callback verdict %s", cb.Verdict)
	}
}

func TestRetriesExhaustedEndUnknownWithCallback(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{
		smtp:  smtptest.Options{RcptDefault: greylisted},
		retry: worker.RetryPolicy{FirstDelay: 30 * time.Millisecond, Multiplier: 2, MaxDelay: time.Second, GiveUpAfter: 80 * time.Millisecond, Jitter: 0.01},
	})
	id := b.enqueue(t, "dave@example.test")
	st := b.wait(t, id)
	var err error
	r := st.Result
	if r.Verdict != tasks.VerdictUnknown || r.Reason != "greylisted" || !r.Final {
		t.Fatalf("result %+v, want final unknown/greylisted", r)
	}
	if r.Attempts != 3 { // 30 ms + 60 ms reach 80 ms: two retries
		t.Errorf("attempts = %d, want 3", r.Attempts)
	}
	// Wait returns once the final result is stored and announced; asynq
	// marks the task completed a moment later, after the handler returns.
	for deadline := time.Now().Add(10 * time.Second); st.State == "active" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st, err = b.client.Get(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	if st.State != "completed" {
		t.Errorf("state %s: a final unknown must complete, never be archived silently", st.State)
	}
	if cb := b.receiver.next(t); cb.TaskID != id || cb.Verdict != tasks.VerdictUnknown {
		t.Errorf("callback %+v", cb)
	}
}

func TestRateLimitedTasksUseNoRetries(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{
		smtp:  smtptest.Options{},
		limit: ratelimit.Limit{Rate: 5, Per: time.Second, Burst: 1, Sessions: 1},
	})
	var ids []string
	for i := range 6 {
		ids = append(ids, b.enqueue(t, fmt.Sprintf("user%d@example.test", i)))
	}
	for _, id := range ids {
		st := b.wait(t, id)
		if st.Result.Verdict != tasks.VerdictValid {
			t.Errorf("%s: %+v", id, st.Result)
		}
		if st.Retried != 0 || st.Result.Attempts != 1 {
			t.Errorf("%s: retried %d, attempts %d: rate-limit denials must not count", id, st.Retried, st.Result.Attempts)
		}
	}
}

func TestConcurrentRequestsShareOneProbe(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	arrived := make(chan struct{}, 10)
	b := setup(t, setupOpts{smtp: smtptest.Options{
		RcptFunc: func(to string) *smtp.SMTPError {
			arrived <- struct{}{}
			<-release
			return nil
		},
	}})
	first := b.enqueue(t, "erin@example.test")
	<-arrived // the first probe is in flight
	second := b.enqueue(t, "erin@example.test")
	// The second request must wait for the first probe, not start its own.
	st, _ := b.client.Get(context.Background(), second)
	for deadline := time.Now().Add(20 * time.Second); st.Result == nil || st.Result.SharedWith != first; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the second request never waited on the first probe: %+v", st.Result)
		}
		st, _ = b.client.Get(context.Background(), second)
	}
	close(release)
	r1, r2 := b.wait(t, first).Result, b.wait(t, second).Result
	if r1.Verdict != tasks.VerdictValid || r2.Verdict != tasks.VerdictValid {
		t.Fatalf("verdicts %s, %s", r1.Verdict, r2.Verdict)
	}
	if r2.SharedWith != first {
		t.Errorf("second result shared_with = %q, want %q", r2.SharedWith, first)
	}
	if n := b.smtp.Commands("RCPT"); n != 1 {
		t.Errorf("RCPT sent %d times for two requests, want 1", n)
	}
	got := map[string]bool{b.receiver.next(t).TaskID: true, b.receiver.next(t).TaskID: true}
	if !got[first] || !got[second] {
		t.Errorf("callbacks for %v, want both %s and %s", got, first, second)
	}
}

func TestCallbackReceiverDownThenUp(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{smtp: smtptest.Options{}})
	b.receiver.fail.Store(3)
	id := b.enqueue(t, "frank@example.test")
	cb := b.receiver.next(t)
	if cb.TaskID != id {
		t.Fatalf("callback for %s, want %s", cb.TaskID, id)
	}
	if calls := b.receiver.calls.Load(); calls != 4 {
		t.Errorf("receiver called %d times, want 3 failures + 1 delivery", calls)
	}
	if b.receiver.bad != 0 {
		t.Errorf("%d callbacks failed signature verification", b.receiver.bad)
	}
}

func TestCallbackToPrivateAddressRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{smtp: smtptest.Options{}})
	// 127.0.0.2 is not on the worker's allowlist: refused at dial time.
	hits := atomic.Int32{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	srv.Start()
	t.Cleanup(srv.Close)
	_, port, _ := splitHostPort(srv.URL)
	id, err := b.client.Enqueue(context.Background(), tasks.Request{Address: "gina@example.test",
		CallbackURL: "http://127.0.0.2:" + port + "/hook"})
	if err != nil {
		t.Fatal(err)
	}
	b.wait(t, id)
	// The callback task ends archived (not retried) with the refusal.
	for {
		info, err := b.insp.GetTaskInfo(tasks.QueueDefault, "cb_"+id)
		if err == nil && info.State == asynq.TaskStateArchived {
			break
		}
	}
	if hits.Load() != 0 {
		t.Errorf("the private receiver was reached %d times", hits.Load())
	}
}

func splitHostPort(u string) (string, string, error) {
	ap, err := netip.ParseAddrPort(u[len("http://"):])
	if err != nil {
		return "", "", err
	}
	return ap.Addr().String(), strconv.Itoa(int(ap.Port())), nil
}

func TestMalformedPayloadIsStoredNotRetried(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{smtp: smtptest.Options{}})
	sub := b.rdb.Subscribe(t.Context(), tasks.DoneChannel)
	defer sub.Close()
	if _, err := sub.Receive(t.Context()); err != nil {
		t.Fatal(err)
	}
	ac := asynq.NewClientFromRedisClient(b.rdb)
	info, err := ac.Enqueue(asynq.NewTask(tasks.TypeValidate, []byte(`{"v":99}`)), asynq.MaxRetry(5), asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// Its final result is announced like any other, so a Wait ends at once.
	select {
	case m := <-sub.Channel():
		if m.Payload != info.ID {
			t.Errorf("announced %q, want %q", m.Payload, info.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the bad_payload result was not announced")
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the malformed task was never archived")
		}
		ti, err := b.insp.GetTaskInfo(info.Queue, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ti.State == asynq.TaskStateArchived {
			if ti.Retried != 0 {
				t.Errorf("malformed payload retried %d times", ti.Retried)
			}
			var r tasks.Result
			if err := json.Unmarshal(ti.Result, &r); err != nil || r.Reason != "bad_payload" {
				t.Errorf("stored result %s (%v), want reason bad_payload", ti.Result, err)
			}
			return
		}
	}
}

func TestShutdownDrainLosesNothing(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	arrived := make(chan struct{}, 10)
	var hold atomic.Bool
	hold.Store(true)
	b := setup(t, setupOpts{noWorker: true, smtp: smtptest.Options{
		RcptFunc: func(to string) *smtp.SMTPError {
			if hold.Load() {
				arrived <- struct{}{}
				<-release
			}
			return nil
		},
	}})
	w1, err := workertest.New(b.rdb, b.env().options())
	if err != nil {
		t.Fatal(err)
	}
	if err := w1.Start(); err != nil {
		t.Fatal(err)
	}
	id := b.enqueue(t, "hank@example.test")
	<-arrived
	// Shutdown while the probe hangs: after ShutdownTimeout the task goes
	// back to the queue instead of being lost.
	hold.Store(false)
	done := make(chan struct{})
	go func() { w1.Shutdown(); close(done) }()
	<-done
	close(release)
	st, err := b.client.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "pending" && st.State != "retry" && st.State != "completed" {
		t.Fatalf("after shutdown the task is %s", st.State)
	}
	b.startWorker(t, setupOpts{})
	if r := b.wait(t, id).Result; r.Verdict != tasks.VerdictValid {
		t.Errorf("after restart: %+v", r)
	}
}

const childEnv = "MXPROBE_TEST_CHILD_WORKER"

// runChildWorker is the body of the child process of the SIGKILL test: a
// plain worker on the test's Redis, DNS and SMTP, until killed.
func runChildWorker() {
	var e workerEnv
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &e); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	opt, err := redis.ParseURL(e.RedisURL)
	if err != nil {
		os.Exit(2)
	}
	w, err := workertest.New(redis.NewClient(opt), e.options())
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	if err := w.Start(); err != nil {
		os.Exit(2)
	}
	select {}
}

func TestWorkerKilledMidTaskAnotherCompletesIt(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for asynq's lease expiry (about a minute)")
	}
	t.Parallel()
	arrived := make(chan struct{}, 10)
	var hold atomic.Bool
	hold.Store(true)
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	b := setup(t, setupOpts{noWorker: true, smtp: smtptest.Options{
		RcptFunc: func(to string) *smtp.SMTPError {
			if hold.Load() {
				arrived <- struct{}{}
				<-stuck // the killed worker's connection just hangs here
			}
			return nil
		},
	}})
	env, _ := json.Marshal(b.env())
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(env))
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	id := b.enqueue(t, "ivan@example.test")
	<-arrived
	hold.Store(false)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	b.startWorker(t, setupOpts{})
	// asynq hands the task on once its lease (30 s) has expired and its
	// recoverer, which runs once a minute, has seen it: up to two minutes.
	st := b.waitFor(t, id, 200*time.Second)
	if st.Result.Verdict != tasks.VerdictValid || st.Result.TaskID != id {
		t.Fatalf("result %+v", st.Result)
	}
	cb := b.receiver.next(t)
	if cb.TaskID != id {
		t.Errorf("callback for %s, want %s", cb.TaskID, id)
	}
	select {
	case extra := <-b.receiver.ch:
		if extra.TaskID != id {
			t.Errorf("unexpected callback %+v", extra)
		}
		// A duplicate is allowed (at-least-once) and carries the same id.
	default:
	}
}

// A producer's deadline ends a greylisted validation at the deadline, not a
// greylisting delay later: the retry is moved up to it and is the last.
func TestDeadlineEndsRetriesOnTime(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{
		smtp:  smtptest.Options{RcptDefault: greylisted},
		retry: worker.RetryPolicy{FirstDelay: time.Minute, Multiplier: 2, MaxDelay: time.Hour, GiveUpAfter: 24 * time.Hour, Jitter: 0.1},
	})
	// asynq schedules retries in whole seconds, so the deadline is too.
	id := b.enqueue(t, "judy@example.test", tasks.Deadline(time.Now().Add(2*time.Second)))
	st := b.waitFor(t, id, 20*time.Second) // far less than the one-minute first retry
	if r := st.Result; r.Verdict != tasks.VerdictUnknown || r.Reason != "greylisted" || !r.Final || r.Attempts != 2 {
		t.Fatalf("result %+v, want a final unknown/greylisted after 2 attempts", r)
	}
	if cb := b.receiver.next(t); cb.TaskID != id || !cb.Final {
		t.Errorf("callback %+v", cb)
	}
}

// A provider cooling down holds tasks back without using retries; when the
// producer's deadline comes first, the task ends as a final unknown naming
// the cool-down's reason, and its callback fires. No server is asked.
func TestDeadlineDuringCoolDownEndsUnknown(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{smtp: smtptest.Options{}})
	lcfg := ratelimit.DefaultConfig()
	lcfg.Prefix = "test:rl:" // the worker's limiter, seen from another process
	other, err := ratelimit.New(b.rdb, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.CoolDown(context.Background(), "test", other.Group("mx.example.test"), "blocked"); err != nil {
		t.Fatal(err)
	}
	id := b.enqueue(t, "kim@example.test", tasks.Deadline(time.Now().Add(2*time.Second)))
	st := b.waitFor(t, id, 20*time.Second)
	if r := st.Result; r.Verdict != tasks.VerdictUnknown || r.Reason != "blocked" || !r.Final {
		t.Fatalf("result %+v, want a final unknown/blocked", r)
	}
	if st.Retried != 0 {
		t.Errorf("retried %d: cool-down denials must not use retries", st.Retried)
	}
	if n := b.smtp.Conns(); n != 0 {
		t.Errorf("%d SMTP connections to a provider that is cooling down", n)
	}
	if cb := b.receiver.next(t); cb.TaskID != id || cb.Reason != "blocked" {
		t.Errorf("callback %+v", cb)
	}
}

// A server that never answers RCPT cannot hold a task past its producer's
// deadline: the attempt is bounded, and ends as a final unknown/timeout with
// its callback (asynq's own timeout would count a failure and record
// nothing).
func TestHangingServerEndsAtDeadline(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	// The per-command timeout (2 min) is far beyond the wait below: only
	// the attempt bound can end this in time.
	b := setup(t, setupOpts{commandTimeout: 2 * time.Minute,
		smtp: smtptest.Options{RcptFunc: func(string) *smtp.SMTPError { <-hang; return nil }}})
	id := b.enqueue(t, "lou@example.test", tasks.Deadline(time.Now().Add(time.Second)))
	st := b.waitFor(t, id, 30*time.Second)
	if r := st.Result; r.Verdict != tasks.VerdictUnknown || r.Reason != "timeout" || !r.Final {
		t.Fatalf("result %+v, want a final unknown/timeout", r)
	}
	if cb := b.receiver.next(t); cb.TaskID != id || cb.Reason != "timeout" {
		t.Errorf("callback %+v", cb)
	}
}

// Config.AttemptTimeout (`mxprobe worker --timeout`) bounds an attempt
// against a server that never answers, without any producer deadline: the
// attempt ends unknown/timeout and is retried, and the last retry is final.
func TestAttemptTimeoutBoundsAHangingServer(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	b := setup(t, setupOpts{commandTimeout: 2 * time.Minute, attemptTimeout: 300 * time.Millisecond,
		retry: worker.RetryPolicy{FirstDelay: 50 * time.Millisecond, Multiplier: 2, MaxDelay: 100 * time.Millisecond, GiveUpAfter: 120 * time.Millisecond, Jitter: 0.01},
		smtp:  smtptest.Options{RcptFunc: func(string) *smtp.SMTPError { <-hang; return nil }}})
	id := b.enqueue(t, "max@example.test")
	st := b.waitFor(t, id, 30*time.Second)
	if r := st.Result; r.Verdict != tasks.VerdictUnknown || r.Reason != "timeout" || !r.Final || r.Attempts < 2 {
		t.Fatalf("result %+v, want a final unknown/timeout after retries", r)
	}
}

// The worker records a transcript only for a request that asks for one
// (validator.WithTranscript per call; `mxprobe worker` no longer records
// every probe), also when both requests share one pooled SMTP session.
func TestTranscriptOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	tests := []struct {
		name, addr string
		opts       []tasks.Option
		want       bool
	}{
		{name: "asked", addr: "tina@example.test", opts: []tasks.Option{tasks.WithTranscript()}, want: true},
		{name: "not asked", addr: "tom@example.test", want: false},
		{name: "asked again", addr: "tess@example.test", opts: []tasks.Option{tasks.WithTranscript()}, want: true},
	}
	for _, tt := range tests {
		r := b.wait(t, b.enqueue(t, tt.addr, tt.opts...)).Result
		if got := len(r.Transcript) > 0; got != tt.want {
			t.Errorf("%s: transcript %v, want recorded = %v", tt.name, r.Transcript, tt.want)
		}
		for _, l := range r.Transcript {
			if strings.HasPrefix(l.Line, "RCPT") && !strings.Contains(l.Line, tt.addr) {
				t.Errorf("%s: transcript holds another request's line %q", tt.name, l.Line)
			}
		}
	}
}

// Every final result is announced on tasks.DoneChannel once it is stored,
// whether probed (the settle pipeline) or answered from the result cache
// (storeFinal), so a producer's Wait answers at once; a provisional one is
// not announced.
func TestFinalResultsAreAnnounced(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	b := setup(t, setupOpts{smtp: smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
		if to == "grey@example.test" && calls.Add(1) == 1 {
			return greylisted
		}
		if to == "alice@example.test" || to == "grey@example.test" {
			return nil
		}
		return notFound
	}}, retry: worker.RetryPolicy{FirstDelay: 100 * time.Millisecond, Multiplier: 2, MaxDelay: time.Second, GiveUpAfter: 30 * time.Second}})
	ctx := t.Context()
	sub := b.rdb.Subscribe(ctx, tasks.DoneChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	announced := sub.Channel()
	next := func(want string) {
		t.Helper()
		select {
		case m := <-announced:
			if m.Payload != want {
				t.Errorf("announced %q, want %q", m.Payload, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s was never announced", want)
		}
	}
	probed := b.enqueue(t, "alice@example.test")
	next(probed)
	cached := b.enqueue(t, "alice@example.test")
	next(cached)
	if st := b.wait(t, cached); !st.Result.Cached {
		t.Errorf("second request not answered from the cache: %+v", st.Result)
	}
	grey := b.enqueue(t, "grey@example.test")
	next(grey) // the greylisted first attempt is not announced; its retry is
	// Read at once: had the provisional result been announced, this would
	// see it (the retry comes 100 ms later at the earliest).
	if st, err := b.client.Get(ctx, grey); err != nil || st.Result == nil || !st.Result.Final ||
		st.Result.Verdict != tasks.VerdictValid || st.Result.Attempts != 2 {
		t.Errorf("announced result of the greylisted address: %+v (%v), want the final valid of attempt 2", st.Result, err)
	}
}

// A request waiting on another's probe of the same address keeps its own
// deadline: with the leader greylisted and due back in a minute, a follower
// with a 2 s deadline answers at its deadline.
func TestFollowerKeepsItsOwnDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{
		smtp:  smtptest.Options{RcptDefault: greylisted},
		retry: worker.RetryPolicy{FirstDelay: time.Minute, Multiplier: 2, MaxDelay: time.Hour, GiveUpAfter: 24 * time.Hour, Jitter: 0.1},
	})
	leader := b.enqueue(t, "nora@example.test")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st, _ := b.client.Get(t.Context(), leader); st.Result != nil && !st.Result.NextAttemptAt.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the leader was never greylisted")
		}
	}
	follower := b.enqueue(t, "nora@example.test", tasks.Deadline(time.Now().Add(2*time.Second)))
	if r := b.waitFor(t, follower, 20*time.Second).Result; !r.Final || r.Verdict != tasks.VerdictUnknown {
		t.Errorf("follower: %+v, want a final unknown at its own deadline", r)
	}
}

// A verdict made final only by its request's deadline (greylisted, not yet
// retried) is not cached: a later request with a full retry budget probes
// again and gets the real answer.
func TestDeadlineCutVerdictIsNotCached(t *testing.T) {
	t.Parallel()
	var accept atomic.Bool // greylisted until the first request has its answer
	b := setup(t, setupOpts{
		smtp: smtptest.Options{RcptFunc: func(string) *smtp.SMTPError {
			if !accept.Load() {
				return greylisted
			}
			return nil
		}},
		retry: worker.RetryPolicy{FirstDelay: time.Second, Multiplier: 2, MaxDelay: time.Hour, GiveUpAfter: 24 * time.Hour, Jitter: 0.1},
	})
	cut := b.enqueue(t, "olga@example.test", tasks.Deadline(time.Now().Add(500*time.Millisecond)))
	if r := b.waitFor(t, cut, 20*time.Second).Result; r.Verdict != tasks.VerdictUnknown || !r.Final {
		t.Fatalf("deadline request: %+v, want a final unknown", r)
	}
	accept.Store(true)
	full := b.enqueue(t, "olga@example.test")
	if r := b.waitFor(t, full, 20*time.Second).Result; r.Verdict != tasks.VerdictValid || r.Cached {
		t.Errorf("later request: %s/%s cached=%v; want valid from its own probe", r.Verdict, r.Reason, r.Cached)
	}
}
