package ratelimit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/ratelimit"
)

// BenchmarkAcquire measures Acquire against the package's local
// redis-server, from 4×GOMAXPROCS goroutines sharing one Limiter, and
// reports Redis round trips per Acquire (commands seen by a go-redis hook,
// connection handshakes excluded) and Acquire calls per second.
//
//	admit:   every call is granted a lease (never released; leases expire)
//	reserve: every call is denied for rate and given a reservation
//	deny:    every call is denied for rate beyond the horizon (no state written)
func BenchmarkAcquire(b *testing.B) {
	cases := []struct {
		name       string
		cfg        ratelimit.Config
		wantDenied bool
	}{
		{name: "admit", cfg: ratelimit.Config{Default: ratelimit.Limit{Rate: 1_000_000, Per: time.Second, Burst: 1_000_000, Sessions: 1 << 30}, LeaseTTL: time.Second}},
		{name: "reserve", cfg: ratelimit.Config{Default: ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 1, Sessions: 10}}, wantDenied: true},
		{name: "deny", cfg: ratelimit.Config{Default: ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 1, Sessions: 10}, ReserveHorizon: time.Millisecond}, wantDenied: true},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			bc.cfg.Prefix = redistest.Prefix(b)
			rdb := redistest.Client(b)
			counter := &cmdCounter{}
			rdb.AddHook(counter)
			l, err := ratelimit.New(rdb, bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			req := ratelimit.Request{Egress: "192.0.2.1", MXHost: "mx.bench.example"}
			// Warm up: load the script, drain the burst, open connections,
			// and (reserve) book 200 slots 1 ms apart, so the bucket is
			// 200 ms ahead when timing starts: with only the burst drained,
			// a first timed call a few ms later was admitted (flaky).
			for range 200 {
				_, _ = l.Acquire(ctx, req)
			}
			counter.n.Store(0)
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, err := l.Acquire(ctx, req)
					if denied := errors.Is(err, ratelimit.ErrDenied); denied != bc.wantDenied || (err != nil && !denied) {
						b.Errorf("Acquire: %v", err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(counter.n.Load())/float64(b.N), "roundtrips/op")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acquires/s")
		})
	}
}
