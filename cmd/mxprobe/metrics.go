package main

import (
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/validator"
)

// newMetrics builds the registry of one process: Go and process collectors
// plus mxprobe's counters, with every configured provider's series present
// from the start.
func newMetrics(lcfg ratelimit.Config) (*prometheus.Registry, *api.Metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := api.NewMetrics(reg, slices.Collect(maps.Keys(lcfg.Providers)))
	if err != nil {
		return nil, nil, err
	}
	return reg, m, nil
}

// wireMetrics counts a worker's verdicts, probe durations, rate-limit
// decisions, callbacks and cache lookups in m: they happen where the worker
// runs, so only that process can count them.
func wireMetrics(m *api.Metrics) buildHook {
	return func(c buildConfigs) {
		lc, wc, vc := c.limiter, c.worker, c.validator
		vc.DNS.Canary.OnCheck = func(st validator.CanaryState) { m.CanaryChecked(st.Healthy) }
		vc.Probe.OnSessionEnd = func(s validator.SessionStats) { m.SessionEnded(s.Rcpts) }
		c.sessions.OnWait = m.SessionWait
		c.sessions.OnWaiting = m.SessionsWaiting
		lc.Metrics = m
		wc.OnResult = m.ObserveResult
		wc.OnCallback = m.CallbackOutcome
		wc.CacheHook = m.CacheLookup
	}
}

// listenMetrics serves /metrics and /healthz, without auth, on addr: for a
// worker process, which has no API (scrape it on a private network).
func listenMetrics(addr string, reg *prometheus.Registry) (*http.Server, net.Listener, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, `{"status":"ok"}`) })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln, nil
}
