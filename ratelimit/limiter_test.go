package ratelimit_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/ratelimit"
)

func TestBurstThenRateThenReservationRedeemed(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: ratelimit.Limit{Rate: 1, Per: time.Minute, Burst: 3, Sessions: 100}})
	l := b.limiter()
	req := ratelimit.Request{Egress: "192.0.2.10", MXHost: "mx1.example.com"}
	for i := range 3 {
		le := acquire(t, l, req)
		if le.Reserved || le.Group != "example.com" || le.MXHost != "mx1.example.com" || le.Egress != "192.0.2.10" {
			t.Fatalf("lease %d = %+v", i, le)
		}
	}
	d := deny(t, l, req, ratelimit.ReasonRate)
	// The first token after the burst comes back one interval after the
	// first admission, a few milliseconds ago.
	if d.RetryIn > time.Minute || d.RetryIn < 55*time.Second {
		t.Fatalf("RetryIn = %s; want just under 1m", d.RetryIn)
	}
	if d.Reservation == "" {
		t.Fatal("denial carries no reservation")
	}
	// Another MX host of the same provider shares the bucket; another egress
	// does not.
	other := deny(t, l, ratelimit.Request{Egress: "192.0.2.10", MXHost: "mx2.example.com"}, ratelimit.ReasonRate)
	if got := other.Until.Sub(d.Until); got != time.Minute {
		t.Fatalf("second reservation %s after the first; want 1m", got)
	}
	acquire(t, l, ratelimit.Request{Egress: "192.0.2.11", MXHost: "mx1.example.com"})

	ratelimit.Advance(l, d.RetryIn)
	req.Reservation = d.Reservation
	le := acquire(t, l, req)
	if !le.Reserved {
		t.Fatal("lease from a redeemed reservation has Reserved = false")
	}
	// Redeemed once only.
	ratelimit.Advance(l, time.Millisecond)
	again := deny(t, l, req, ratelimit.ReasonRate)
	if again.Reservation != d.Reservation || again.Until.Sub(other.Until) != time.Minute {
		t.Fatalf("after redeeming, the same id got %+v; want a new slot under the same id one minute after %v", again, other.Until)
	}
}

func TestReservationsAreDistinctAndHonoured(t *testing.T) {
	t.Parallel()
	const rate, burst, callers = 50, 5, 100
	interval := time.Second / rate
	b := setup(t, ratelimit.Config{Default: ratelimit.Limit{Rate: rate, Per: time.Second, Burst: burst, Sessions: 1000}})
	l := b.limiter()
	ctx := context.Background()
	req := ratelimit.Request{Egress: "198.51.100.7", MXHost: "mx.example.org"}
	for range burst {
		acquire(t, l, req)
	}

	start := make(chan struct{})
	type result struct {
		first  *ratelimit.DeniedError
		second error
		lease  *ratelimit.Lease
	}
	results := make([]result, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			_, err := l.Acquire(ctx, req)
			if !errors.As(err, &results[i].first) {
				results[i].second = fmt.Errorf("first Acquire: %v; want a denial", err)
				return
			}
			// A worker reschedules its task RetryIn from now; here a timer.
			<-time.After(results[i].first.RetryIn)
			r := req
			r.Reservation = results[i].first.Reservation
			results[i].lease, results[i].second = l.Acquire(ctx, r)
		})
	}
	close(start)
	wg.Wait()

	var slots []time.Time
	ids := map[string]bool{}
	retryIns := map[time.Duration]bool{}
	for i, r := range results {
		if r.first == nil {
			t.Fatalf("caller %d: %v", i, r.second)
		}
		if r.first.Reason != ratelimit.ReasonRate || r.first.Reservation == "" {
			t.Fatalf("caller %d: denial %+v; want a rate denial with a reservation", i, r.first)
		}
		ids[r.first.Reservation] = true
		retryIns[r.first.RetryIn] = true
		slots = append(slots, r.first.Until)
		if r.second != nil || r.lease == nil || !r.lease.Reserved {
			t.Errorf("caller %d returning at its slot: lease %+v, err %v; want admitted by its reservation", i, r.lease, r.second)
		}
	}
	if len(ids) != callers || len(retryIns) != callers {
		t.Fatalf("%d distinct reservations and %d distinct RetryIn for %d callers", len(ids), len(retryIns), callers)
	}
	slices.SortFunc(slots, time.Time.Compare)
	for i := 1; i < len(slots); i++ {
		if gap := slots[i].Sub(slots[i-1]); gap != interval {
			t.Fatalf("slot %d is %s after slot %d; want exactly %s", i, gap, i-1, interval)
		}
	}
}

func TestReservationEarlyReturnKeepsItsSlot(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: ratelimit.Limit{Rate: 1, Per: time.Second, Burst: 1, Sessions: 10}})
	l := b.limiter()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.net", Reservation: "task-42"}
	acquire(t, l, req)
	d := deny(t, l, req, ratelimit.ReasonRate)
	if d.Reservation != "task-42" {
		t.Fatalf("Reservation = %q; want the caller's id task-42", d.Reservation)
	}
	// Coming back too early neither loses the slot nor takes a second one.
	again := deny(t, l, req, ratelimit.ReasonRate)
	if !again.Until.Equal(d.Until) || again.Reservation != "task-42" {
		t.Fatalf("early return: %+v; want the same slot %v", again, d.Until)
	}
	next := deny(t, l, ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.net"}, ratelimit.ReasonRate)
	if got := next.Until.Sub(d.Until); got != time.Second {
		t.Fatalf("next caller's slot is %s after task-42's; want 1s", got)
	}
}

func TestReservationExpiresAfterGrace(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{
		Default:      ratelimit.Limit{Rate: 1, Per: time.Second, Burst: 1, Sessions: 10},
		ReserveGrace: time.Second,
	})
	l := b.limiter()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.net", Reservation: "late"}
	acquire(t, l, req)
	d := deny(t, l, req, ratelimit.ReasonRate)
	// Far past slot+grace the reservation is gone; the bucket has refilled
	// meanwhile, so the caller is admitted as a fresh request.
	ratelimit.Advance(l, d.RetryIn+time.Minute)
	if le := acquire(t, l, req); le.Reserved {
		t.Fatal("a reservation was redeemed after its grace")
	}
}

func TestReservationHorizon(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{
		Default:        ratelimit.Limit{Rate: 1, Per: time.Minute, Burst: 1, Sessions: 10},
		ReserveHorizon: 90 * time.Second,
	})
	l := b.limiter()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.net"}
	acquire(t, l, req)
	d1 := deny(t, l, req, ratelimit.ReasonRate) // slot ≈ +1m: within the horizon
	if d1.Reservation == "" {
		t.Fatal("no reservation within the horizon")
	}
	d2 := deny(t, l, req, ratelimit.ReasonRate) // slot ≈ +2m: beyond it
	if d2.Reservation != "" {
		t.Fatalf("reserved %q beyond the horizon", d2.Reservation)
	}
	// Come back when the next slot (d1 + 1m) is within the horizon.
	if want := d1.Until.Add(time.Minute - 90*time.Second); !d2.Until.Equal(want) {
		t.Fatalf("beyond-horizon Until = %v; want %v", d2.Until, want)
	}
	ratelimit.Advance(l, d2.RetryIn)
	d3 := deny(t, l, req, ratelimit.ReasonRate)
	if d3.Reservation == "" || !d3.Until.Equal(d1.Until.Add(time.Minute)) {
		t.Fatalf("after waiting: %+v; want the slot right after %v", d3, d1.Until)
	}
}

func TestSessionsPerMXHost(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: fast, SessionRetry: 3 * time.Second})
	l := b.limiter()
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx1.example.com"}
	first := acquire(t, l, req)
	acquire(t, l, req)
	d := deny(t, l, req, ratelimit.ReasonSessions)
	if d.RetryIn < 1500*time.Millisecond || d.RetryIn > 3*time.Second {
		t.Fatalf("RetryIn = %s; want within [SessionRetry/2, SessionRetry]", d.RetryIn)
	}
	// Other MX hosts of the group and other egresses have their own.
	acquire(t, l, ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx2.example.com"})
	acquire(t, l, ratelimit.Request{Egress: "192.0.2.2", MXHost: "mx1.example.com"})

	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	acquire(t, l, req)
	deny(t, l, req, ratelimit.ReasonSessions)
}

func TestSessionDenialDoesNotSpendTokens(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 2, Sessions: 1}})
	l := b.limiter()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	le := acquire(t, l, req)
	for range 5 {
		deny(t, l, req, ratelimit.ReasonSessions)
	}
	if err := le.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	acquire(t, l, req) // the second token of the burst is still there
}

func TestLeaseExtend(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 100, Sessions: 1}, LeaseTTL: time.Minute})
	l := b.limiter()
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	le := acquire(t, l, req)
	orig := le.Expires
	ratelimit.Advance(l, 40*time.Second)
	if err := le.Extend(ctx); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if got := le.Expires.Sub(orig); got < 39*time.Second || got > 41*time.Second {
		t.Fatalf("Extend moved expiry by %s; want ≈40s", got)
	}
	ratelimit.Advance(l, 40*time.Second) // past the original expiry
	deny(t, l, req, ratelimit.ReasonSessions)
	ratelimit.Advance(l, 21*time.Second) // past the extended one
	if err := le.Extend(ctx); !errors.Is(err, ratelimit.ErrLeaseLost) {
		t.Fatalf("Extend after expiry = %v; want ErrLeaseLost", err)
	}
	acquire(t, l, req)
}

// TestLeaseExtendIfDue: a lease used again soon after it was granted is
// not renewed (no command reaches Redis); one past a quarter of its TTL is,
// and one past its expiry reports ErrLeaseLost.
func TestLeaseExtendIfDue(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 100, Sessions: 1}, LeaseTTL: time.Minute})
	l, counter := b.countedLimiter()
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	le := acquire(t, l, req)
	orig := le.Expires

	ratelimit.Advance(l, 10*time.Second) // under a quarter of the TTL
	before := counter.n.Load()
	went, err := le.ExtendIfDue(ctx)
	if err != nil || went {
		t.Fatalf("ExtendIfDue at 10s of 60s = %v, %v; want false, nil", went, err)
	}
	if n := counter.n.Load() - before; n != 0 || !le.Expires.Equal(orig) {
		t.Fatalf("ExtendIfDue not due sent %d commands and moved expiry by %s; want none", n, le.Expires.Sub(orig))
	}

	ratelimit.Advance(l, 6*time.Second) // 16 s: past a quarter
	went, err = le.ExtendIfDue(ctx)
	if err != nil || !went {
		t.Fatalf("ExtendIfDue at 16s of 60s = %v, %v; want true, nil", went, err)
	}
	if got := le.Expires.Sub(orig); got < 15*time.Second || got > 17*time.Second {
		t.Fatalf("ExtendIfDue moved expiry by %s; want ≈16s", got)
	}
	// Just extended: not due again until another quarter has passed.
	if went, _ := le.ExtendIfDue(ctx); went {
		t.Fatal("ExtendIfDue right after an extension went to Redis")
	}

	ratelimit.Advance(l, 61*time.Second) // past the extended expiry
	if _, err := le.ExtendIfDue(ctx); !errors.Is(err, ratelimit.ErrLeaseLost) {
		t.Fatalf("ExtendIfDue after expiry = %v; want ErrLeaseLost", err)
	}
}

// TestLeaseHolderProcess is the child of TestKilledHolderLeaseExpires: it
// takes a lease, says so, and waits to be killed.
func TestLeaseHolderProcess(t *testing.T) {
	t.Parallel()
	prefix := os.Getenv("RATELIMIT_TEST_HOLDER_PREFIX")
	if prefix == "" {
		t.Skip("child process of TestKilledHolderLeaseExpires")
	}
	l, err := ratelimit.New(redistest.Client(t), holderConfig(prefix))
	if err != nil {
		t.Fatal(err)
	}
	le := acquire(t, l, holderRequest)
	fmt.Printf("LEASE %s\n", le.ID)
	select {} // until SIGKILL: the lease is never released
}

func holderConfig(prefix string) ratelimit.Config {
	return ratelimit.Config{Prefix: prefix, Default: ratelimit.Limit{Rate: 100, Per: time.Second, Burst: 10, Sessions: 1}, LeaseTTL: 30 * time.Second}
}

var holderRequest = ratelimit.Request{Egress: "192.0.2.9", MXHost: "mx.example.com"}

func TestKilledHolderLeaseExpires(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLeaseHolderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "RATELIMIT_TEST_HOLDER_PREFIX="+prefix, redistest.EnvURL+"="+redistest.URL(t))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	var leaseID string
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "LEASE "); ok {
			leaseID = id
			break
		}
	}
	if leaseID == "" {
		t.Fatalf("holder process ended without a lease: %v", sc.Err())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	l, err := ratelimit.New(redistest.Client(t), holderConfig(prefix))
	if err != nil {
		t.Fatal(err)
	}
	// The dead holder still counts until its lease's expiry…
	d := deny(t, l, holderRequest, ratelimit.ReasonSessions)
	if d.RetryIn > 30*time.Second {
		t.Fatalf("RetryIn = %s; want ≤ LeaseTTL", d.RetryIn)
	}
	ratelimit.Advance(l, 29*time.Second)
	deny(t, l, holderRequest, ratelimit.ReasonSessions)
	// …and not after.
	ratelimit.Advance(l, 2*time.Second)
	acquire(t, l, holderRequest)
}

func TestCoolDownSharedAndEnds(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: fast})
	a, other := b.limiter(), b.limiter()
	both := func(d time.Duration) { ratelimit.Advance(a, d); ratelimit.Advance(other, d) }
	ctx := context.Background()
	const egress = "203.0.113.5"
	req := ratelimit.Request{Egress: egress, MXHost: "alt1.aspmx.l.google.com"}
	acquire(t, other, req)

	before := redisNow(t, redistest.Client(t))
	until, err := a.CoolDown(ctx, egress, "google.com", "421 4.7.0 Try again later")
	if err != nil {
		t.Fatal(err)
	}
	if got := until.Sub(before); got < 15*time.Minute || got > 15*time.Minute+5*time.Second {
		t.Fatalf("first cool-down lasts %s; want 15m", got)
	}
	// The other client is denied at once, until the same instant.
	d := deny(t, other, req, ratelimit.ReasonCoolDown)
	if !d.Until.Equal(until) || d.Detail != "421 4.7.0 Try again later" || d.RetryIn > 15*time.Minute || d.RetryIn < 14*time.Minute {
		t.Fatalf("denial %+v; want until %v with the reason", d, until)
	}
	// Other pairs are not paused.
	acquire(t, other, ratelimit.Request{Egress: "203.0.113.6", MXHost: req.MXHost})
	acquire(t, other, ratelimit.Request{Egress: egress, MXHost: "mx.example.com"})

	// Many workers report the same block: one pause, not an escalation.
	again, err := other.CoolDown(ctx, egress, "google.com", "421 4.7.28 rate limited")
	if err != nil || !again.Equal(until) {
		t.Fatalf("repeat CoolDown = %v, %v; want the running pause's end %v", again, err, until)
	}
	ps, err := other.Paused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Egress != egress || ps[0].Group != "google.com" || ps[0].Reason != "421 4.7.0 Try again later" || !ps[0].Until.Equal(until) || ps[0].Step != 1 {
		t.Fatalf("Paused = %+v; want the one google.com pause", ps)
	}

	both(d.RetryIn - time.Second)
	deny(t, other, req, ratelimit.ReasonCoolDown)
	both(time.Second)
	acquire(t, other, req)
	if ps, err := a.Paused(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("Paused after the end = %+v, %v; want none", ps, err)
	}
}

func TestCoolDownEscalatesAndResets(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: fast})
	l := b.limiter()
	ctx := context.Background()
	tests := []struct {
		name  string
		quiet time.Duration // after the previous pause ends
		want  time.Duration
		step  int
	}{
		{name: "first", want: 15 * time.Minute, step: 1},
		{name: "second in a row", quiet: time.Minute, want: time.Hour, step: 2},
		{name: "third", quiet: time.Hour, want: 4 * time.Hour, step: 3},
		{name: "capped", quiet: 23 * time.Hour, want: 4 * time.Hour, step: 4},
		{name: "after a quiet day", quiet: 25 * time.Hour, want: 15 * time.Minute, step: 1},
	}
	var prev time.Duration // length of the previous pause
	for _, tt := range tests {
		// Step to tt.quiet after the previous pause's end (plus the few
		// real milliseconds the test takes, far below any margin here).
		ratelimit.Advance(l, prev+tt.quiet)
		if _, err := l.CoolDown(ctx, "192.0.2.1", "example.com", "blocked"); err != nil {
			t.Fatal(err)
		}
		ps, err := l.Paused(ctx)
		if err != nil || len(ps) != 1 {
			t.Fatalf("%s: Paused = %+v, %v", tt.name, ps, err)
		}
		if got := ps[0].Until.Sub(ps[0].Since); got != tt.want || ps[0].Step != tt.step {
			t.Fatalf("%s: pause of %s at step %d; want %s at step %d", tt.name, got, ps[0].Step, tt.want, tt.step)
		}
		prev = ps[0].Until.Sub(ps[0].Since)
	}
}

func TestResume(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: fast})
	l := b.limiter()
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	if _, err := l.CoolDown(ctx, req.Egress, "example.com", "554 blocked using zen.spamhaus.org"); err != nil {
		t.Fatal(err)
	}
	deny(t, l, req, ratelimit.ReasonCoolDown)
	if err := l.Resume(ctx, req.Egress, "example.com"); err != nil {
		t.Fatal(err)
	}
	acquire(t, l, req)
	if ps, err := l.Paused(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("Paused after Resume = %+v, %v", ps, err)
	}
}

func TestPausedSortedAcrossPairs(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: fast, CoolDown: ratelimit.CoolDownConfig{Initial: time.Minute, Max: time.Hour}})
	l := b.limiter()
	ctx := context.Background()
	pairs := []struct{ egress, group string }{{"192.0.2.2", "b.example"}, {"192.0.2.1", "a.example"}, {"socks5://proxy-1:1080", "google.com"}}
	for _, p := range pairs {
		if _, err := l.CoolDown(ctx, p.egress, p.group, "rbl"); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := l.Paused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.Egress+" "+p.Group)
	}
	want := []string{"192.0.2.2 b.example", "192.0.2.1 a.example", "socks5://proxy-1:1080 google.com"}
	if !slices.Equal(got, want) {
		t.Fatalf("Paused = %q; want %q (soonest end first)", got, want)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: fast})
	l := b.limiter()
	ctx := context.Background()
	tests := []struct {
		name    string
		req     ratelimit.Request
		wantErr string
	}{
		{name: "empty egress", req: ratelimit.Request{MXHost: "mx.example.com"}, wantErr: "egress"},
		{name: "egress with hash tag", req: ratelimit.Request{Egress: "a}b", MXHost: "mx.example.com"}, wantErr: "egress"},
		{name: "egress with separator", req: ratelimit.Request{Egress: "a|b", MXHost: "mx.example.com"}, wantErr: "egress"},
		{name: "empty MX", req: ratelimit.Request{Egress: "192.0.2.1"}, wantErr: "MX host"},
		{name: "MX with space", req: ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx example.com"}, wantErr: "MX host"},
		{name: "long reservation", req: ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com", Reservation: strings.Repeat("x", 201)}, wantErr: "reservation"},
	}
	for _, tt := range tests {
		le, err := l.Acquire(ctx, tt.req)
		if err == nil || le != nil || errors.Is(err, ratelimit.ErrDenied) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: Acquire = %v, %v; want an error about %s", tt.name, le, err, tt.wantErr)
		}
	}
	if _, err := l.CoolDown(ctx, "192.0.2.1", "Not A Group", "x"); err == nil {
		t.Error("CoolDown accepted a malformed group")
	}
}

func TestRedisUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	l, err := ratelimit.New(rdb, ratelimit.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	le, err := l.Acquire(ctx, ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"})
	if err == nil || le != nil || errors.Is(err, ratelimit.ErrDenied) {
		t.Fatalf("Acquire with Redis down = %v, %v; want a plain error", le, err)
	}
	if _, err := l.CoolDown(ctx, "192.0.2.1", "example.com", "x"); err == nil {
		t.Error("CoolDown with Redis down succeeded")
	}
	if _, err := l.Paused(ctx); err == nil {
		t.Error("Paused with Redis down succeeded")
	}
}

func TestRedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	counter := &cmdCounter{}
	rdb := srv.Client(t)
	rdb.AddHook(counter)
	l, err := ratelimit.New(rdb, ratelimit.Config{Default: fast})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	le := acquire(t, l, req)
	srv.Kill(t)
	if le2, err := l.Acquire(ctx, req); err == nil || le2 != nil || errors.Is(err, ratelimit.ErrDenied) {
		t.Fatalf("Acquire with Redis killed = %v, %v; want a plain error", le2, err)
	}
	if err := le.Release(ctx); err == nil {
		t.Fatal("Release with Redis killed succeeded")
	}
	srv.Restart(t)
	// The new server has no scripts cached: EVALSHA fails with NOSCRIPT and
	// go-redis falls back to EVAL once.
	before := counter.n.Load()
	acquire(t, l, req)
	if got := counter.n.Load() - before; got != 2 {
		t.Fatalf("first Acquire after restart took %d commands; want 2 (EVALSHA, EVAL)", got)
	}
	before = counter.n.Load()
	acquire(t, l, ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx2.example.com"})
	if got := counter.n.Load() - before; got != 1 {
		t.Fatalf("steady-state Acquire took %d commands; want 1", got)
	}
}

func TestAcquireIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 2, Sessions: 10}})
	l, counter := b.countedLimiter()
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	acquire(t, l, req) // loads the script if this server has not seen it
	tests := []struct {
		name   string
		reason string // "" = admitted
	}{
		{name: "admitted"},
		{name: "denied for rate", reason: ratelimit.ReasonRate},
	}
	for _, tt := range tests {
		before := counter.n.Load()
		_, err := l.Acquire(ctx, req)
		if got := counter.n.Load() - before; got != 1 {
			t.Errorf("%s: %d commands; want 1", tt.name, got)
		}
		var d *ratelimit.DeniedError
		if (tt.reason == "") != (err == nil) || (err != nil && (!errors.As(err, &d) || d.Reason != tt.reason)) {
			t.Errorf("%s: err = %v", tt.name, err)
		}
	}
}

func TestMetricsHooks(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	b := setup(t, ratelimit.Config{Default: ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 1, Sessions: 10}, Metrics: rec})
	l := b.limiter()
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	acquire(t, l, req)
	d := deny(t, l, req, ratelimit.ReasonRate)
	ratelimit.Advance(l, d.RetryIn)
	acquire(t, l, ratelimit.Request{Egress: req.Egress, MXHost: req.MXHost, Reservation: d.Reservation})
	if _, err := l.CoolDown(ctx, req.Egress, "example.com", "421"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CoolDown(ctx, req.Egress, "example.com", "421"); err != nil {
		t.Fatal(err)
	}
	deny(t, l, req, ratelimit.ReasonCoolDown)
	want := []string{
		"acquired example.com",
		"reserved example.com", "denied rate example.com",
		"acquired-reserved example.com",
		"cooldown example.com", // once: the repeat report opens nothing
		"denied cool_down example.com",
	}
	if got := rec.get(); !slices.Equal(got, want) {
		t.Fatalf("events = %q; want %q", got, want)
	}
}

func TestEveryKeyExpires(t *testing.T) {
	t.Parallel()
	b := setup(t, ratelimit.Config{Default: ratelimit.Limit{Rate: 1, Per: time.Minute, Burst: 1, Sessions: 10}})
	l := b.limiter()
	ctx := context.Background()
	req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.example.com"}
	acquire(t, l, req)
	deny(t, l, req, ratelimit.ReasonRate)
	if _, err := l.CoolDown(ctx, req.Egress, "example.com", "421"); err != nil {
		t.Fatal(err)
	}
	rdb := redistest.Client(t)
	keys, err := rdb.Keys(ctx, b.prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	tag := b.prefix + "{192.0.2.1|example.com}"
	want := []string{tag + ":cd", tag + ":cdstep", tag + ":fence", tag + ":res", tag + ":ses:mx.example.com", tag + ":tat", b.prefix + "paused"}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("keys = %q; want %q", keys, want)
	}
	for _, k := range keys {
		ttl, err := rdb.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 {
			t.Errorf("key %s has TTL %s, %v; want a positive TTL", k, ttl, err)
		}
	}
}
