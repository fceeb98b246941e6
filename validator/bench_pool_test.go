package validator

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// TestSessionReuseBenchmark measures round trips per address: a loopback server
// that holds back every reply by 20 ms (one simulated network round trip),
// ten addresses of one domain, each mode side by side in every run, medians
// over the runs. Round trips are counted in the client: each TCP connect and
// each flush followed by a read is one (the banner comes with the connect).
// It is slow, so it runs only when asked:
//
//	MXPROBE_BENCH=1 go test -run TestSessionReuseBenchmark -v ./validator/
func TestSessionReuseBenchmark(t *testing.T) {
	if os.Getenv("MXPROBE_BENCH") == "" {
		t.Skip("set MXPROBE_BENCH=1 to run the session-reuse benchmark")
	}
	const (
		runs    = 7
		perDom  = 10
		latency = 20 * time.Millisecond
	)
	srv := smtptest.Start(t, smtptest.Options{ReplyDelay: latency})
	type mode struct {
		name       string
		pool       bool
		resetEach  bool
		pipelining bool
		catchAll   bool
		known      bool // the domain's catch-all status is already cached (shared through Redis for 24 h in the worker)
	}
	modes := []mode{
		{name: "reuse off"},
		{name: "reuse on, RSET+MAIL per address", pool: true, resetEach: true},
		{name: "reuse on, transaction kept open (default)", pool: true},
		{name: "reuse on + pipelining, RSET+MAIL per address", pool: true, resetEach: true, pipelining: true},
		{name: "reuse on + pipelining", pool: true, pipelining: true},
		{name: "reuse off, catch-all probe on", catchAll: true},
		{name: "reuse on, catch-all probe on (cached per domain)", pool: true, catchAll: true},
		{name: "reuse on + pipelining, catch-all probe on", pool: true, pipelining: true, catchAll: true},
		{name: "reuse on, catch-all probe on, domain's status already known", pool: true, catchAll: true, known: true},
	}
	rtts := make([][]float64, len(modes))
	wall := make([][]float64, len(modes))
	conns := make([][]float64, len(modes))
	for run := range runs {
		for i, m := range modes {
			p, err := NewProber(ProbeConfig{
				HeloName: testHelo, MailFrom: testFrom, Port: srv.Port(),
				CatchAllProbe: m.catchAll, Pipelining: m.pipelining,
				Pool: PoolConfig{Disabled: !m.pool},
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			p.resetEach = m.resetEach
			mx := mxSet(srv.Addr().Addr())
			domain := fmt.Sprintf("run%d-mode%d.example", run, i)
			if m.known {
				p.catchAllCache.SetCatchAll(t.Context(), domain, false)
			}
			before := srv.Conns()
			start := time.Now()
			for _, r := range addrs(perDom, domain) {
				if got := p.Probe(t.Context(), mx, r, false); got.Stage != StageRcpt && got.Stage != StageCatchAll {
					t.Fatalf("%s %s: %+v %v", m.name, r, got.Outcome, got.Err)
				}
			}
			p.Close() // the closing QUIT is sent, and counted if it waited for a reply
			took := time.Since(start)
			rtts[i] = append(rtts[i], float64(p.rtts.Load())/perDom)
			wall[i] = append(wall[i], float64(took)/float64(time.Millisecond)/perDom)
			conns[i] = append(conns[i], float64(srv.Conns()-before))
		}
	}
	median := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d addresses per domain, reply delay %v, median of %d runs (Go %s, %d CPUs)\n\n", perDom, latency, runs, runtime.Version(), runtime.NumCPU())
	fmt.Fprintf(&b, "| mode | sessions | round trips / address | wall ms / address |\n|---|---|---|---|\n")
	for i, m := range modes {
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.1f |\n", m.name, median(conns[i]), median(rtts[i]), median(wall[i]))
	}
	t.Log("\n" + b.String())
}
