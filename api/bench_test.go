package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/api"
)

// BenchmarkEnqueueAPI measures POST /v1/validations end to end on loopback:
// HTTP/1.1 keep-alive, auth with the per-key Redis quota counter, strict
// decoding, and the asynq enqueue into a private redis-server, from 32
// concurrent clients. It reports requests per second and the p50/p99
// latency the clients saw.
//
//	go test -run '^$' -bench BenchmarkEnqueueAPI -benchtime 20000x ./api/
func BenchmarkEnqueueAPI(b *testing.B) {
	bb := setup(b, opts{cfg: func(c *api.Config) { c.Quota = 1 << 30 }})
	const clients = 32
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	body := []byte(`{"address":"someone@example.com","queue":"bulk"}`)
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	work := make(chan struct{})
	var wg sync.WaitGroup
	var failed error
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, b.N/clients+1)
			for range work {
				req, _ := http.NewRequest("POST", bb.srv.URL+"/v1/validations", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keyA)
				req.Header.Set("Content-Type", "application/json")
				start := time.Now()
				resp, err := hc.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				mine = append(mine, time.Since(start))
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
