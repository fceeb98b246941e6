package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/tasks"
)

// TestResultCacheAndLead covers the store's two round trips per validation:
// one script reads the cache or takes the lead, one caches the verdict and
// gives the lead up.
func TestResultCacheAndLead(t *testing.T) {
	t.Parallel()
	const addr = "frank@example.test"
	resultKey, leadKey := "mxprobe:result:{"+addr+"}", "mxprobe:lead:{"+addr+"}"
	earlier, err := json.Marshal(tasks.Result{TaskID: "earlier", Final: true,
		Check: tasks.Check{Address: addr, Verdict: tasks.VerdictValid, Reason: "mailbox_exists"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		seed       string // cache entry before the request; empty: none
		wantCached bool
		wantRcpts  int
	}{
		{name: "hit answers without SMTP", seed: string(earlier), wantCached: true, wantRcpts: 0},
		{name: "miss probes and caches", wantRcpts: 1},
		{name: "corrupt entry is a miss and is replaced", seed: "{not json", wantRcpts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{noWorker: true})
			ctx := context.Background()
			if tt.seed != "" {
				if err := b.rdb.Set(ctx, resultKey, tt.seed, 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			b.startWorker(t, setupOpts{})
			id := b.enqueue(t, addr)
			r := b.wait(t, id).Result
			if r.Verdict != tasks.VerdictValid || !r.Final || r.Cached != tt.wantCached {
				t.Fatalf("result %+v, want final valid with cached=%v", r, tt.wantCached)
			}
			if tt.wantCached && r.SharedWith != "earlier" {
				t.Errorf("shared_with = %q, want the cached entry's task", r.SharedWith)
			}
			if n := b.smtp.Commands("RCPT"); n != tt.wantRcpts {
				t.Errorf("RCPT sent %d times, want %d", n, tt.wantRcpts)
			}
			// The lead is given up with the final verdict, and the cache
			// holds a decodable result for the next request.
			if err := b.rdb.Get(ctx, leadKey).Err(); !errors.Is(err, redis.Nil) {
				t.Errorf("lead key after the final verdict: err %v, want none", err)
			}
			raw, err := b.rdb.Get(ctx, resultKey).Bytes()
			if err != nil {
				t.Fatalf("cache entry after the final verdict: %v", err)
			}
			var cached tasks.Result
			if err := json.Unmarshal(raw, &cached); err != nil || cached.Verdict != tasks.VerdictValid || cached.Metadata != nil {
				t.Errorf("cache entry %s (err %v), want a valid verdict without the requester's metadata", raw, err)
			}
		})
	}
}
