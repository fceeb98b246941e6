package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// One worker meets a server's error limit (Postfix's smtpd_hard_error_limit
// = 3); a second worker, sharing only Redis, starts its sessions with the
// lowered budget and never meets the limit.
func TestRejectBudgetSharedAcrossWorkers(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	srv := smtptest.Start(t, smtptest.Options{ErrorLimit: 3, RcptDefault: notFound})
	dns := dnstest.Start(t, dnstest.Zone{
		"limited.test.":    {dnstest.MX("mx.limited.test.", 10)},
		"mx.limited.test.": {dnstest.A("127.0.0.1")},
	})
	newWorker := func() *validator.Validator {
		v, err := validator.New(validator.Config{
			Probe: validator.ProbeConfig{HeloName: "probe.mxprobe.test", MailFrom: "verify@mxprobe.test",
				Port: srv.Port(), ConnectTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second,
				RejectBudgets: worker.NewRedisRejectBudgets(rdb, prefix, nil)},
			DNS: validator.DNSConfig{Servers: []string{dns.Addr()}, AllowPrivate: true, Timeout: 2 * time.Second},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		return v
	}
	ctx := context.Background()
	run := func(v *validator.Validator, who string) {
		for i := range 6 {
			addr := fmt.Sprintf("%s-%d@limited.test", who, i)
			r, err := v.Validate(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			if r.Verdict != validator.Invalid {
				t.Errorf("%s: %s/%s, want invalid", addr, r.Verdict, r.Reason)
			}
		}
	}
	run(newWorker(), "first")
	if hits := srv.ErrorLimitHits(); hits != 1 {
		t.Fatalf("the first worker met the limit %d times, want once (to learn it)", hits)
	}
	key := prefix + "rejectbudget:{mx.limited.test}"
	if n, err := rdb.Get(ctx, key).Int(); err != nil || n != 2 {
		t.Fatalf("shared budget %d (err %v), want 2", n, err)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > validator.RejectBudgetTTL {
		t.Errorf("shared budget TTL %v, want within %v", ttl, validator.RejectBudgetTTL)
	}
	run(newWorker(), "second")
	if hits := srv.ErrorLimitHits(); hits != 1 {
		t.Errorf("error limit met %d times in all, want 1: the second worker ignored the shared budget", hits)
	}
}

// A lower budget replaces a higher one; a higher one never replaces a lower.
func TestRedisRejectBudgetsOnlyLower(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	b := worker.NewRedisRejectBudgets(rdb, prefix, nil)
	ctx := context.Background()
	if _, ok := b.RejectBudget(ctx, "mx.example.test"); ok {
		t.Fatal("budget known before any was learnt")
	}
	for _, step := range []struct{ set, want int }{{3, 3}, {2, 2}, {5, 2}, {0, 1}} {
		b.LowerRejectBudget(ctx, "MX.Example.test.", step.set, time.Minute)
		if n, ok := b.RejectBudget(ctx, "mx.example.test"); !ok || n != step.want {
			t.Errorf("after %d: budget %d (%v), want %d", step.set, n, ok, step.want)
		}
	}
	// Garbage in Redis is "none learnt", not a budget of zero.
	if err := rdb.Set(ctx, prefix+"rejectbudget:{bad.example.test}", "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if n, ok := b.RejectBudget(ctx, "bad.example.test"); ok {
		t.Errorf("garbage read as budget %d", n)
	}
}
