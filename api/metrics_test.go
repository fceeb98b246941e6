package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
			srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			defer srv.Close()
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
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
