package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/validator"
)

// When the task that reserved an MX host's next slot comes back late (asynq
// returns a retry a second or more after its time, later on a loaded
// machine), the first task of that host to come back after the slot opens
// the session with the owner's reservation. It must neither reserve a slot
// of its own (one more session, later) nor wait for the owner.
func TestLateReservationOwnerIsStoodInFor(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	cfg := ratelimit.DefaultConfig()
	cfg.Prefix = prefix
	// One session per 4 s: a reserved slot is farther than SlotWait, so
	// the Gate hands the denial back instead of waiting for it.
	cfg.Default = ratelimit.Limit{Rate: 1, Per: 4 * time.Second, Burst: 1, Sessions: 10}
	l, err := ratelimit.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSessions(rdb, SessionsConfig{Prefix: prefix})
	g := NewGate(l, "test", nil)
	g.ShareSessions(s)
	host := validator.MXHost{Name: "mx.late.test"}
	ctx := t.Context()

	first, err := g.Admit(withReservation(ctx, "task-a"), host)
	if err != nil {
		t.Fatalf("first Admit: %v", err)
	}
	first.Done()

	_, err = g.Admit(withReservation(ctx, "task-owner"), host)
	var d *ratelimit.DeniedError
	var jd *joinDenial
	if !errors.As(err, &d) || d.Reservation != "task-owner" || errors.As(err, &jd) {
		t.Fatalf("second Admit: %v, want a rate denial reserving the next slot for task-owner", err)
	}

	_, err = g.Admit(withReservation(ctx, "task-joiner"), host)
	if !errors.As(err, &jd) {
		t.Fatalf("third Admit: %v, want a join denial (the next slot is task-owner's)", err)
	}
	// The owner does not come back. Wait for the instant the joiner was
	// told to come back at.
	time.Sleep(time.Until(jd.Until))

	adm, err := g.Admit(withReservation(ctx, "task-joiner"), host)
	if err != nil {
		t.Fatalf("joiner back after the slot: %v, want the session opened with the owner's reservation", err)
	}
	defer adm.Done()
	if lease := adm.(*admission).lease; !lease.Reserved {
		t.Errorf("joiner admitted from the bucket, want by redeeming the owner's reservation")
	}
	if _, owner, ok, _ := s.nextSession(ctx, host.Name, ""); ok {
		t.Errorf("the slot is still marked for %s after it opened its session", owner)
	}
	if n, err := rdb.Exists(ctx, s.reservedKey("task-owner")).Result(); err != nil || n != 0 {
		t.Errorf("task-owner's note says it still holds a slot (exists=%d, err=%v): coming back, it would open a session instead of joining", n, err)
	}
	if !s.holds(host.Name) {
		t.Errorf("the session is not recorded as held here: other tasks could not join it")
	}

	// The owner comes back now: its reservation is spent, so asking again
	// is a plain ask against an empty bucket (in the worker it first finds
	// the session above and joins it).
	_, err = g.Admit(withReservation(ctx, "task-owner"), host)
	if !errors.As(err, &d) || d.Reason != ratelimit.ReasonRate {
		t.Fatalf("owner back after the joiner used its slot: %v, want a rate denial", err)
	}
}
