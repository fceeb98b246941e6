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
	l, err := ratelimit.New(redistest.Client(t), cfg)
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
	if !adm.Reusable() {
		t.Error("not reusable without a cool-down")
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

// A reused session renews its lease, so the per-MX session cap holds for
// sessions handed from probe to probe longer than one LeaseTTL.
func TestGateReuseRenewsLease(t *testing.T) {
	t.Parallel()
	cfg := ratelimit.DefaultConfig()
	cfg.Prefix = redistest.Prefix(t)
	cfg.Default = ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 100, Sessions: 1}
	cfg.LeaseTTL = time.Second
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
	// Expiry is the thing under test, so time must pass: 0.7 s, renew,
	// 0.7 s — past the first lease's end, inside the renewed one.
	time.Sleep(700 * time.Millisecond)
	if !adm.Reusable() {
		t.Fatal("not reusable")
	}
	time.Sleep(700 * time.Millisecond)
	if _, err := g.Admit(t.Context(), host); !isDenied(err, ratelimit.ReasonSessions) {
		t.Fatalf("second session admitted while the reused one holds a renewed lease: %v", err)
	}
}
