package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
)

// eightAddresses: three mailboxes exist, five do not; with three refusals
// per session (--session-rejects) they need two sessions at least.
func eightAddresses() (addrs []string, rcpt map[string]*smtp.SMTPError, want map[string]string) {
	rcpt = map[string]*smtp.SMTPError{}
	want = map[string]string{}
	for i := range 8 {
		a := fmt.Sprintf("user%d@example.test", i)
		addrs = append(addrs, a)
		if i%3 == 0 { // 0, 3, 6 exist
			rcpt[a] = nil
			want[a] = tasks.VerdictValid
		} else {
			want[a] = tasks.VerdictInvalid
		}
	}
	return addrs, rcpt, want
}

// With a provider limited to 4 sessions a minute, one at a time, eight
// addresses enqueued at once take two SMTP sessions whether one worker or
// three run them: the addresses of the other workers are asked on the
// session one worker holds, and after its refusals end it, on the one
// session the next reserved slot opens.
func TestFleetSharesSessions(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d workers", workers), func(t *testing.T) {
			t.Parallel()
			addrs, rcpt, want := eightAddresses()
			o := setupOpts{
				smtp:     smtptest.Options{Rcpt: rcpt, RcptDefault: notFound},
				limit:    ratelimit.Limit{Rate: 4, Per: time.Minute, Burst: 1, Sessions: 1},
				noWorker: true,
			}
			b := setup(t, o)
			for range workers {
				b.startWorker(t, o)
			}
			ids := map[string]string{}
			for _, a := range addrs {
				ids[b.enqueue(t, a)] = a
			}
			for id, a := range ids {
				st := b.waitFor(t, id, 90*time.Second)
				if st.Result.Verdict != want[a] {
					t.Errorf("%s: %s/%s, want %s", a, st.Result.Verdict, st.Result.Reason, want[a])
				}
			}
			if n := b.smtp.Sessions(); n != 2 {
				t.Errorf("%d SMTP sessions for 8 addresses (5 refused, 3 refusals per session), want 2", n)
			}
			if n := len(b.smtp.Rcpts()); n != 8 {
				t.Errorf("%d RCPTs for 8 addresses, want 8 (each asked once)", n)
			}
		})
	}
}

// A holder that is subscribed but never answers (hung) costs a waiter the
// acknowledgement timeout, not its attempt: the waiter withdraws the
// advertisement and probes itself.
func TestHungSessionHolderIsBypassed(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{smtp: smtptest.Options{}})
	ctx := context.Background()
	deaf := b.rdb.Subscribe(ctx, "mxprobe:sessions:{deadbeef}")
	t.Cleanup(func() { deaf.Close() })
	if _, err := deaf.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.rdb.Set(ctx, "mxprobe:holder:{mx.example.test}:test", "deadbeef", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st := b.waitFor(t, b.enqueue(t, "alice@example.test"), 30*time.Second)
	if st.Result.Verdict != tasks.VerdictValid {
		t.Fatalf("%s/%s, want valid", st.Result.Verdict, st.Result.Reason)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("took %s behind a hung holder", took)
	}
	if v, _ := b.rdb.Get(ctx, "mxprobe:holder:{mx.example.test}:test").Result(); v == "deadbeef" {
		t.Error("the hung holder is still advertised")
	}
}

// A holder whose process is gone (its advertisement outlived it) is noticed
// at once: nobody listens on its channel.
func TestStaleSessionAdvertisementIsWithdrawn(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{smtp: smtptest.Options{}})
	ctx := context.Background()
	if err := b.rdb.Set(ctx, "mxprobe:holder:{mx.example.test}:test", "gone", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	st := b.waitFor(t, b.enqueue(t, "alice@example.test"), 10*time.Second)
	if st.Result.Verdict != tasks.VerdictValid {
		t.Fatalf("%s/%s, want valid", st.Result.Verdict, st.Result.Reason)
	}
	if v, _ := b.rdb.Get(ctx, "mxprobe:holder:{mx.example.test}:test").Result(); v == "gone" {
		t.Error("the stale advertisement is still there")
	}
}

// On Redis Cluster the hand-offs use sharded pub/sub: a classic PUBLISH
// would count only one node's subscribers and make every waiter think the
// holder gone.
func TestFleetSharesSessionsOnCluster(t *testing.T) {
	t.Parallel()
	r := runFleet(t, fleetRun{workers: 3, providers: 1, domains: 1, addrs: 8, cluster: true,
		exists: func(i int) bool { return i%3 == 0 },
		limit:  ratelimit.Limit{Rate: 4, Per: time.Minute, Burst: 1, Sessions: 1}})
	if r.sessions != 2 || r.rcpts != 8 || r.wrong != 0 {
		t.Errorf("on a cluster: %s; want 2 sessions, 8 recipients, no wrong verdict", r)
	}
}

// Bad input on a worker's hand-off channel (not JSON, a job for a host it
// holds no session to, a reply nobody waits for) is ignored or declined:
// the worker goes on probing.
func TestHandoffChannelBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{smtp: smtptest.Options{}})
	ctx := context.Background()
	chans, err := b.rdb.PubSubChannels(ctx, "mxprobe:sessions:*").Result()
	if err != nil || len(chans) != 1 {
		t.Fatalf("hand-off channels %v (err %v), want the worker's one", chans, err)
	}
	reply := b.rdb.Subscribe(ctx, "mxprobe:sessions:{asker}")
	t.Cleanup(func() { reply.Close() })
	if _, err := reply.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"not json", `{}`, `{"reply":{"id":"nobody-waits","declined":true}}`,
		`{"job":{"id":"j1","from":"asker","host":"mx.example.test","input":"alice@example.test","task_id":"t1"}}`} {
		if err := b.rdb.Publish(ctx, chans[0], msg).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// The job for a host it holds no session to is declined, to its sender.
	select {
	case m := <-reply.Channel():
		if !strings.Contains(m.Payload, `"declined":true`) || !strings.Contains(m.Payload, `"j1"`) {
			t.Errorf("answer %s, want j1 declined", m.Payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stray job was not answered")
	}
	st := b.waitFor(t, b.enqueue(t, "alice@example.test"), 10*time.Second)
	if st.Result.Verdict != tasks.VerdictValid {
		t.Fatalf("after bad input: %s/%s, want valid", st.Result.Verdict, st.Result.Reason)
	}
}
