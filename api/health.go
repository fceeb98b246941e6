package api

import (
	"context"
	"net/http"
	"time"
)

// getHealthz says the process is up and serving; it touches nothing else,
// so a Redis outage never gets the API restarted by its orchestrator.
func (s *Server) getHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type readyResponse struct {
	Status  string `json:"status"`
	Redis   string `json:"redis"`
	Workers int    `json:"workers"`
	Error   string `json:"error,omitempty"`
}

// getReadyz says whether requests can be served end to end: Redis answers,
// and at least one worker heartbeats (asynq servers write a heartbeat every
// few seconds; Inspector.Servers lists the live ones). Without a worker
// validations would queue up but never finish.
func (s *Server) getReadyz(w http.ResponseWriter, r *http.Request) {
	resp := readyResponse{Status: "ready", Redis: "ok"}
	if err := s.ping(r.Context()); err != nil {
		// /readyz needs no key: the cause (which names internal hosts) goes
		// to the log, not to whoever asks.
		logger(r.Context()).Warn("readyz: redis unavailable", "err", err)
		resp.Status, resp.Redis, resp.Error = "unavailable", "down", "redis does not answer"
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, resp)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	servers, err := inspectorCall(ctx, s.insp.Servers)
	if err != nil {
		logger(r.Context()).Warn("readyz: listing workers failed", "err", err)
		resp.Status, resp.Error = "unavailable", "cannot list workers"
		writeJSON(w, http.StatusServiceUnavailable, resp)
		return
	}
	resp.Workers = len(servers)
	if resp.Workers == 0 && !s.cfg.SkipWorkerCheck {
		resp.Status, resp.Error = "unavailable", "no worker is running"
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, resp)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// inspectorCall bounds an Inspector method (which takes no context) by ctx.
func inspectorCall[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case res := <-ch:
		return res.v, res.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
