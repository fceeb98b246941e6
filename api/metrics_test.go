package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mxprobe/mxprobe/api"
)

// CacheLookup feeds mxprobe_cache_lookups_total: every cache's hit and miss
// series exists from the start, lookups add up per cache and result, and a
// name that is not one of the three caches cannot mint a label value.
func TestMetricsCacheLookups(t *testing.T) {
	t.Parallel()
	type lookup struct {
		cache string
		hit   bool
	}
	tests := []struct {
		name    string
		lookups []lookup
		want    []string
	}{
		{name: "before any lookup", want: []string{
			`mxprobe_cache_lookups_total{cache="mx",result="hit"} 0`,
			`mxprobe_cache_lookups_total{cache="catch_all",result="miss"} 0`,
			`mxprobe_cache_lookups_total{cache="result",result="hit"} 0`,
		}},
		{name: "hits and misses per cache", lookups: []lookup{{"mx", false}, {"mx", true}, {"mx", true}, {"catch_all", false}, {"result", true}},
			want: []string{
				`mxprobe_cache_lookups_total{cache="mx",result="hit"} 2`,
				`mxprobe_cache_lookups_total{cache="mx",result="miss"} 1`,
				`mxprobe_cache_lookups_total{cache="catch_all",result="miss"} 1`,
				`mxprobe_cache_lookups_total{cache="catch_all",result="hit"} 0`,
				`mxprobe_cache_lookups_total{cache="result",result="hit"} 1`,
				`mxprobe_cache_lookups_total{cache="result",result="miss"} 0`,
			}},
		{name: "unknown cache name", lookups: []lookup{{"user@example.com", true}}, want: []string{
			`mxprobe_cache_lookups_total{cache="other",result="hit"} 1`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			m, err := api.NewMetrics(reg, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range tt.lookups {
				m.CacheLookup(l.cache, l.hit)
			}
			body := scrapeMetrics(t, reg)
			for _, w := range tt.want {
				if !strings.Contains(string(body), w+"\n") {
					t.Errorf("/metrics lacks %q", w)
				}
			}
			if strings.Contains(string(body), "user@example.com") {
				t.Error("a caller-supplied cache name became a label value")
			}
		})
	}
}

// CanaryChecked feeds the DNS canary's gauge (-1 until the first result)
// and its results counter, whose series exist from the start.
func TestMetricsDNSCanary(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := api.NewMetrics(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := func(step string, lines ...string) { t.Helper(); wantMetrics(t, reg, step, lines...) }
	want("before any check", `mxprobe_dns_canary_healthy -1`,
		`mxprobe_dns_canary_checks_total{result="healthy"} 0`, `mxprobe_dns_canary_checks_total{result="failed"} 0`)
	m.CanaryChecked(true)
	want("healthy", `mxprobe_dns_canary_healthy 1`, `mxprobe_dns_canary_checks_total{result="healthy"} 1`)
	m.CanaryChecked(false)
	m.CanaryChecked(false)
	want("failing", `mxprobe_dns_canary_healthy 0`, `mxprobe_dns_canary_checks_total{result="failed"} 2`,
		`mxprobe_dns_canary_checks_total{result="healthy"} 1`)
}

// Session sharing's series exist from the start; recipients per session,
// hand-off waits and waiting addresses add up, and groups not named in the
// limits share "other" without overwriting each other.
func TestMetricsSessions(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := api.NewMetrics(reg, []string{"google.com"})
	if err != nil {
		t.Fatal(err)
	}
	want := func(step string, lines ...string) { t.Helper(); wantMetrics(t, reg, step, lines...) }
	want("start", `mxprobe_session_recipients_count 0`, `mxprobe_session_waiting{provider="google.com"} 0`,
		`mxprobe_session_waiting{provider="other"} 0`, `mxprobe_session_wait_seconds_count{outcome="joined"} 0`)
	m.SessionEnded(10)
	m.SessionEnded(3)
	m.SessionWait("google.com", 200*time.Millisecond, true)
	m.SessionWait("google.com", time.Second, false)
	m.SessionsWaiting("google.com", 4)
	m.SessionsWaiting("a.example", 2)
	m.SessionsWaiting("b.example", 3)
	m.SessionsWaiting("a.example", 0)
	want("after", `mxprobe_session_recipients_sum 13`, `mxprobe_session_recipients_count 2`,
		`mxprobe_session_wait_seconds_count{outcome="joined"} 1`, `mxprobe_session_wait_seconds_count{outcome="declined"} 1`,
		`mxprobe_session_waiting{provider="google.com"} 4`, `mxprobe_session_waiting{provider="other"} 3`)
}

// scrapeMetrics returns what /metrics serves for reg.
func scrapeMetrics(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// wantMetrics fails unless every line is a whole line of /metrics.
func wantMetrics(t *testing.T, reg *prometheus.Registry, step string, lines ...string) {
	t.Helper()
	body := scrapeMetrics(t, reg)
	for _, w := range lines {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("%s: /metrics lacks %q", step, w)
		}
	}
}
