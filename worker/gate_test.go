package worker_test

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// The Gate's Admission: one token and lease per new session, the lease back
// once at Done however often it is called, and a cool-down opened at the
// Report that asks for it, which also stops reuse of parked sessions.
func TestGateAdmission(t *testing.T) {
	t.Parallel()
	cfg := ratelimit.DefaultConfig()
	cfg.Prefix = redistest.Prefix(t)
	cfg.Default = ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 100, Sessions: 1}
	rdb := redistest.Client(t)
	var sent redistest.Counter
	rdb.AddHook(&sent)
	l, err := ratelimit.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := worker.NewGate(l, "test", slog.New(slog.DiscardHandler))
	host := validator.MXHost{Name: "mx1.example.com"}
	ctx := t.Context()

	adm, err := g.Admit(ctx, host)
	if err != nil {
		t.Fatalf("first Admit: %v", err)
	}
	if _, err := g.Admit(ctx, host); !isDenied(err, ratelimit.ReasonSessions) {
		t.Fatalf("second Admit while the lease is held: %v, want a sessions denial", err)
	}
	adm.Report(validator.Outcome{Verdict: validator.Valid})
	before := sent.Commands()
	if !adm.Reusable() {
		t.Error("not reusable without a cool-down")
	}
	if n := sent.Commands() - before; n != 0 {
		t.Errorf("reuse of a fresh lease sent %d Redis commands; want none (renewal waits for a quarter of the lease TTL)", n)
	}
	adm.Done()
	adm.Done() // the pool guarantees once; a second call must still be harmless
	adm2, err := g.Admit(ctx, host)
	if err != nil {
		t.Fatalf("Admit after Done: %v", err)
	}
	adm2.Report(validator.Outcome{Verdict: validator.Unknown, Reason: validator.ReasonRateLimited, Action: validator.ActionCoolDown})
	if adm2.Reusable() {
		t.Error("reusable while its provider cools down")
	}
	adm2.Done()
	if _, err := g.Admit(ctx, validator.MXHost{Name: "mx2.example.com"}); !isDenied(err, ratelimit.ReasonCoolDown) {
		t.Errorf("Admit after the cool-down report: %v, want a cool-down denial for the whole provider", err)
	}
}

func isDenied(err error, reason string) bool {
	var d *ratelimit.DeniedError
	return errors.As(err, &d) && d.Reason == reason
}

// A reused session renews its lease once a quarter of the TTL has passed,
// so the per-MX session cap holds for sessions handed from probe to probe
// longer than one LeaseTTL.
func TestGateReuseRenewsLease(t *testing.T) {
	t.Parallel()
	cfg := ratelimit.DefaultConfig()
	cfg.Prefix = redistest.Prefix(t)
	cfg.Default = ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 100, Sessions: 1}
	cfg.LeaseTTL = 2 * time.Second
	l, err := ratelimit.New(redistest.Client(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := worker.NewGate(l, "test", slog.New(slog.DiscardHandler))
	host := validator.MXHost{Name: "mx1.example.com"}
	adm, err := g.Admit(t.Context(), host)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Done()
	// Expiry is the thing under test, so time must pass: 1.2 s, renew,
	// 1.2 s — past the first lease's end, inside the renewed one.
	time.Sleep(1200 * time.Millisecond)
	if !adm.Reusable() {
		t.Fatal("not reusable")
	}
	time.Sleep(1200 * time.Millisecond)
	if _, err := g.Admit(t.Context(), host); !isDenied(err, ratelimit.ReasonSessions) {
		t.Fatalf("second session admitted while the reused one holds a renewed lease: %v", err)
	}
}

// A reserved slot within SlotWait is waited for in the Gate and redeemed at
// its instant, so tasks holding reservations reach the provider at the
// configured rate, not in a clump; a farther slot is still a denial that
// carries the reservation.
func TestGateWaitsForNearReservedSlot(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		rate       int // per second, burst 1
		admits     int
		wantDenial bool
	}{
		{name: "slots 100 ms apart are waited for", rate: 10, admits: 4},
		{name: "a slot 5 s away is a denial", rate: 1, admits: 2, wantDenial: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ratelimit.DefaultConfig()
			cfg.Prefix = redistest.Prefix(t)
			cfg.Default = ratelimit.Limit{Rate: tt.rate, Per: time.Second, Burst: 1, Sessions: 100}
			if tt.wantDenial {
				cfg.Default = ratelimit.Limit{Rate: 1, Per: 5 * time.Second, Burst: 1, Sessions: 100}
			}
			l, err := ratelimit.New(redistest.Client(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			g := worker.NewGate(l, "test", slog.New(slog.DiscardHandler))
			host := validator.MXHost{Name: "mx1.example.com"}
			start := time.Now()
			var last error
			for range tt.admits {
				adm, err := g.Admit(t.Context(), host)
				last = err
				if err != nil {
					break
				}
				adm.Done()
			}
			if tt.wantDenial {
				var d *ratelimit.DeniedError
				if !errors.As(last, &d) || d.Reason != ratelimit.ReasonRate || d.Reservation == "" {
					t.Fatalf("second Admit: %v, want a rate denial with a reservation", last)
				}
				if took := time.Since(start); took >= worker.SlotWait {
					t.Errorf("denial took %s: the Gate must not wait for a slot beyond SlotWait", took)
				}
				return
			}
			if last != nil {
				t.Fatalf("Admit: %v, want every slot within SlotWait waited for and redeemed", last)
			}
			// Burst 1: the first at once, each next one a full interval
			// later (never sooner: that would exceed the rate).
			want := time.Duration(tt.admits-1) * time.Second / time.Duration(tt.rate)
			if took := time.Since(start); took < want-10*time.Millisecond {
				t.Errorf("%d admissions took %s, want at least %s", tt.admits, took, want)
			}
		})
	}
}
