package worker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// The real recipient is accepted and the random one gets a 4yz: the verdict
// is valid with catch_all_state "unknown", cached only for the unknown TTL,
// and the next address of the domain is tested again.
func TestInconclusiveCatchAllCachedBriefly(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noWorker: true, smtp: smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
		if strings.HasPrefix(to, "known") {
			return nil
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
	}}})
	opts := b.env().options()
	adjust := opts.Adjust
	opts.Adjust = func(wc *worker.Config, vc *validator.Config) {
		adjust(wc, vc)
		vc.Probe.CatchAllProbe = true
	}
	workertest.Start(t, b.rdb, opts)
	ctx := context.Background()
	for i, addr := range []string{"known1@example.test", "known2@example.test"} {
		r := b.wait(t, b.enqueue(t, addr)).Result
		if r.Verdict != tasks.VerdictValid || r.Flags.CatchAllState != "unknown" || r.Flags.CatchAll {
			t.Fatalf("%s: %s/%s flags %+v, want valid with catch_all_state unknown", addr, r.Verdict, r.Reason, r.Flags)
		}
		ttl := b.rdb.PTTL(ctx, "mxprobe:result:{"+addr+"}").Val()
		if ttl <= 0 || ttl > worker.DefaultCacheTTL.Unknown {
			t.Errorf("%s cached for %v, want at most the unknown TTL %v", addr, ttl, worker.DefaultCacheTTL.Unknown)
		}
		random := 0
		for _, rc := range b.smtp.Rcpts() {
			if !strings.HasPrefix(rc, "known") {
				random++
			}
		}
		if random != i+1 {
			t.Errorf("after %s: %d random RCPTs, want %d (an inconclusive test is not remembered)", addr, random, i+1)
		}
	}
}
