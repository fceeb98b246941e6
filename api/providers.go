package api

import (
	"net/http"
	"slices"
	"time"

	"github.com/mxprobe/mxprobe/ratelimit"
)

type limitJSON struct {
	Rate     int    `json:"rate"`
	Per      string `json:"per"`
	Burst    int    `json:"burst"`
	Sessions int    `json:"sessions"`
}

type pauseJSON struct {
	Egress    string    `json:"egress"`
	Group     string    `json:"group"`
	Reason    string    `json:"reason"`
	Since     time.Time `json:"since"`
	Until     time.Time `json:"until"`
	Step      int       `json:"step"`
	RemainsMS int64     `json:"remains_ms"`
	// Hint points at the fix when the pause says the host itself is the
	// problem: a provider that blocks us will block every probe
	// from this host until its reputation is repaired.
	Hint string `json:"hint,omitempty"`
}

// doctorHint is the Hint of a pause whose reason is a block of our host.
// The worker logs the same advice when it opens such a cool-down.
const doctorHint = "this provider blocks the probing host: run `mxprobe doctor` on the worker hosts to check outbound port 25, reverse DNS, the HELO name, SPF and block-list listings"

// pauseHint returns the hint for a cool-down reason: the validator's
// blocked and blocked_rdns (validator.ReasonBlocked, ReasonBlockedRDNS;
// the api package does not import the validator).
func pauseHint(reason string) string {
	switch reason {
	case "blocked", "blocked_rdns":
		return doctorHint
	}
	return ""
}

type providerJSON struct {
	Group  string      `json:"group"`
	Limit  limitJSON   `json:"limit"`
	Paused []pauseJSON `json:"paused"`
}

type providersResponse struct {
	Default   limitJSON      `json:"default"`
	Providers []providerJSON `json:"providers"`
	// CoolDowns lists every pause in force, soonest end first.
	CoolDowns []pauseJSON `json:"cool_downs"`
}

func toLimitJSON(l ratelimit.Limit, def ratelimit.Limit) limitJSON {
	if l.Sessions == 0 {
		l.Sessions = def.Sessions
	}
	if l.Sessions == 0 {
		l.Sessions = ratelimit.DefaultSessions
	}
	return limitJSON{Rate: l.Rate, Per: l.Per.String(), Burst: l.Burst, Sessions: l.Sessions}
}

// getProviders shows the configured budgets and the cool-downs in force.
// It only reads: resuming a provider early is an operator's decision made
// with the CLI, not something an API key can do.
func (s *Server) getProviders(w http.ResponseWriter, r *http.Request) {
	resp := providersResponse{Providers: []providerJSON{}, CoolDowns: []pauseJSON{}}
	def := s.cfg.Limits.Default
	resp.Default = toLimitJSON(def, def)
	byGroup := map[string]*providerJSON{}
	for g, l := range s.cfg.Limits.Providers {
		resp.Providers = append(resp.Providers, providerJSON{Group: g, Limit: toLimitJSON(l, def), Paused: []pauseJSON{}})
	}
	if s.cfg.Limiter != nil {
		pauses, err := s.cfg.Limiter.Paused(r.Context())
		if err != nil {
			logger(r.Context()).Warn("reading cool-downs failed", "err", err)
			writeUnavailable(w)
			return
		}
		now := s.now()
		for _, p := range pauses {
			pj := pauseJSON{Egress: p.Egress, Group: p.Group, Reason: p.Reason, Since: p.Since.UTC(), Until: p.Until.UTC(),
				Step: p.Step, RemainsMS: max(0, p.Until.Sub(now).Milliseconds()), Hint: pauseHint(p.Reason)}
			resp.CoolDowns = append(resp.CoolDowns, pj)
			known := false
			for i := range resp.Providers {
				if resp.Providers[i].Group == p.Group {
					known = true
				}
			}
			if !known {
				resp.Providers = append(resp.Providers, providerJSON{Group: p.Group, Limit: toLimitJSON(s.cfg.Limiter.Limit(p.Group), def), Paused: []pauseJSON{}})
			}
		}
	}
	slices.SortFunc(resp.Providers, func(a, b providerJSON) int {
		switch {
		case a.Group < b.Group:
			return -1
		case a.Group > b.Group:
			return 1
		}
		return 0
	})
	for i := range resp.Providers {
		byGroup[resp.Providers[i].Group] = &resp.Providers[i]
	}
	for _, pj := range resp.CoolDowns {
		if p := byGroup[pj.Group]; p != nil {
			p.Paused = append(p.Paused, pj)
		}
	}
	writeJSON(w, http.StatusOK, resp)
}
