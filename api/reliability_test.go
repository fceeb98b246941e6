package api_test

// Tests for issue 8 (docs/reliability.md) at the HTTP level: Redis restarted
// under the API, auth bypass attempts, secrets in the request log, and the
// doctor hint of issue 9 on /v1/providers.

import (
	"context"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/validator"
)

// TestProvidersHintDoctorWhenBlocked: a provider paused because it blocks
// this host points at `mxprobe doctor` (issue 9); other pauses carry no hint.
func TestProvidersHintDoctorWhenBlocked(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	lim, err := newLimiter(b)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, group, reason string
		wantHint            bool
	}{
		{"blocked", "blocker.test", string(validator.ReasonBlocked), true},
		{"blocked by rDNS", "rdns.test", string(validator.ReasonBlockedRDNS), true},
		{"throttled", "throttle.test", "rate_limited", false},
		{"SMTP reply as reason", "greylist.test", "421 4.7.0 Try again later", false},
	}
	for _, tt := range tests {
		if _, err := lim.CoolDown(context.Background(), "egress1", tt.group, tt.reason); err != nil {
			t.Fatal(err)
		}
	}
	p := setup(t, opts{cfg: func(c *api.Config) { c.Redis, c.Limiter = b.rdb, lim }})
	resp, body := p.do(t, "GET", "/v1/providers", keyA, "", nil)
	type pause struct{ Group, Reason, Hint string }
	got := mustJSON[struct {
		CoolDowns []pause `json:"cool_downs"`
		Providers []struct {
			Group  string
			Paused []pause
		}
	}](t, body)
	if resp.StatusCode != 200 || len(got.CoolDowns) != len(tests) {
		t.Fatalf("providers: %d %s", resp.StatusCode, body)
	}
	byGroup := map[string]pause{}
	for _, pr := range got.Providers {
		for _, pa := range pr.Paused {
			byGroup[pr.Group] = pa
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pa, ok := byGroup[tt.group]
			if !ok {
				t.Fatalf("%s not shown paused: %s", tt.group, body)
			}
			if has := strings.Contains(pa.Hint, "mxprobe doctor"); has != tt.wantHint {
				t.Errorf("%s (%s): hint %q, want a doctor hint: %v", tt.group, tt.reason, pa.Hint, tt.wantHint)
			}
		})
	}
	for _, cd := range got.CoolDowns {
		if cd.Hint != byGroup[cd.Group].Hint {
			t.Errorf("cool_downs[%s] hint %q differs from the provider's %q", cd.Group, cd.Hint, byGroup[cd.Group].Hint)
		}
	}
}
