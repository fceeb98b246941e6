package api_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

var batchBenchRows = flag.Int("batchbench.rows", 10_000, "BenchmarkBatchProgress: rows in the batch (10,000 is serve's default --batch-max-rows)")

// BenchmarkBatchProgress is one poll of GET /v1/batches/{id} on a batch
// whose rows are all still queued (no worker runs): the worst case, every
// row's task read on every poll. It reports Redis round trips per poll
// (a pipeline counts once) beside the time.
//
//	go test -run '^$' -bench BenchmarkBatchProgress -benchtime 20x -count 5 ./api/
func BenchmarkBatchProgress(b *testing.B) {
	bb := setup(b, opts{cfg: func(c *api.Config) { c.Quota = 1 << 30; c.MaxBatchRows = *batchBenchRows }})
	var body strings.Builder
	body.WriteString("email\n")
	for i := range *batchBenchRows {
		fmt.Fprintf(&body, "user%06d@example.com\n", i)
	}
	resp, out := bb.do(b, "POST", "/v1/batches", keyA, "text/csv", body.String())
	if resp.StatusCode != http.StatusAccepted {
		b.Fatalf("POST batch: %d %s", resp.StatusCode, out)
	}
	var accepted struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &accepted); err != nil || accepted.ID == "" {
		b.Fatalf("POST batch: %s (%v)", out, err)
	}
	var trips redistest.Counter
	bb.rdb.AddHook(&trips)
	b.ResetTimer()
	for b.Loop() {
		resp, out := bb.do(b, "GET", "/v1/batches/"+accepted.ID, keyA, "", nil)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET batch: %d %s", resp.StatusCode, out)
		}
	}
	b.ReportMetric(float64(trips.RoundTrips())/float64(b.N), "redis-rt/poll")
}

// BenchmarkValidateWait is the synchronous sign-up path: POST
// /v1/validations?wait=10s, one request at a time, each for a new address
// of one domain, against a real worker whose SMTP sink answers every
// command after 20 ms (one simulated network round trip; the session pool
// makes most validations a single RCPT). It reports the median and p90
// response times: how long after the verdict exists the API answers is the
// difference between them and the probe's own time.
//
//	go test -run '^$' -bench BenchmarkValidateWait -benchtime 100x ./api/
func BenchmarkValidateWait(b *testing.B) {
	bb := setup(b, opts{worker: true, smtp: smtptest.Options{ReplyDelay: 20 * time.Millisecond},
		cfg: func(c *api.Config) { c.Quota = 1 << 30 }})
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		start := time.Now()
		resp, out := bb.do(b, "POST", "/v1/validations?wait=10s", keyA, "application/json",
			fmt.Sprintf(`{"address":"user%05d@example.test"}`, i))
		lat = append(lat, time.Since(start))
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("POST: %d %s", resp.StatusCode, out)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
}
