package worker_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// hookCounter records a CacheHook's calls per cache and outcome.
type hookCounter struct {
	mu sync.Mutex
	n  map[string]int // "catch_all hit", "mx miss", …
}

func (h *hookCounter) hook(cache string, hit bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = map[string]int{}
	}
	k := cache + " miss"
	if hit {
		k = cache + " hit"
	}
	h.n[k]++
}

func (h *hookCounter) get(k string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[k]
}

// Two probers (as in two worker processes) share one Redis: once the first
// has classified a domain, catch-all or not, the second asks the server only
// about its own address and never sends the random RCPT (docs/smtp.md §3).
func TestRedisCatchAllCacheSharedAcrossWorkers(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	sink := smtptest.Start(t, smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
		if strings.HasSuffix(to, "@anything.test") || strings.HasPrefix(to, "known-") {
			return nil // anything.test accepts every recipient
		}
		return notFound
	}})
	dns := dnstest.Start(t, dnstest.Zone{
		"anything.test.":    {dnstest.MX("mx.anything.test.", 10)},
		"strict.test.":      {dnstest.MX("mx.strict.test.", 10)},
		"mx.anything.test.": {dnstest.A("127.0.0.1")},
		"mx.strict.test.":   {dnstest.A("127.0.0.1")},
	})
	tests := []struct {
		name         string
		domain       string
		wantCatchAll bool
		wantVerdict  validator.Verdict
		wantReason   validator.Reason
	}{
		{name: "catch-all domain", domain: "anything.test", wantCatchAll: true, wantVerdict: validator.Risky, wantReason: validator.ReasonCatchAll},
		{name: "strict domain", domain: "strict.test", wantCatchAll: false, wantVerdict: validator.Valid, wantReason: validator.ReasonMailboxExists},
	}
	// One shared prefix: the two domains have distinct keys, and each
	// sub-test counts only its own domain's recipients.
	prefix := redistest.Prefix(t)
	var hooks hookCounter
	newProber := func(t *testing.T) *validator.Validator {
		t.Helper()
		v, err := validator.New(validator.Config{
			Probe: validator.ProbeConfig{HeloName: "probe.mxprobe.test", MailFrom: "verify@mxprobe.test",
				Port: sink.Port(), ConnectTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second, CatchAllProbe: true,
				CatchAllCache: worker.NewRedisCatchAllCache(rdb, prefix, time.Hour, 100, hooks.hook, nil)},
			DNS: validator.DNSConfig{Servers: []string{dns.Addr()}, AllowPrivate: true, Timeout: 2 * time.Second},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		return v
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			first, second := newProber(t), newProber(t)
			ctx := context.Background()
			rcptsTo := func() []string {
				var out []string
				for _, r := range sink.Rcpts() {
					if strings.HasSuffix(r, "@"+tt.domain) {
						out = append(out, r)
					}
				}
				return out
			}
			r1, err := first.Validate(ctx, "known-1@"+tt.domain)
			if err != nil {
				t.Fatal(err)
			}
			if r1.Verdict != tt.wantVerdict || r1.Reason != tt.wantReason || r1.Flags.CatchAll != tt.wantCatchAll {
				t.Fatalf("first: %s/%s catch_all=%v, want %s/%s %v", r1.Verdict, r1.Reason, r1.Flags.CatchAll, tt.wantVerdict, tt.wantReason, tt.wantCatchAll)
			}
			if got := rcptsTo(); len(got) != 2 {
				t.Fatalf("first worker's RCPTs = %q, want the address and the random probe", got)
			}
			r2, err := second.Validate(ctx, "known-2@"+tt.domain)
			if err != nil {
				t.Fatal(err)
			}
			if r2.Verdict != tt.wantVerdict || r2.Reason != tt.wantReason || r2.Flags.CatchAll != tt.wantCatchAll {
				t.Errorf("second: %s/%s catch_all=%v, want %s/%s %v", r2.Verdict, r2.Reason, r2.Flags.CatchAll, tt.wantVerdict, tt.wantReason, tt.wantCatchAll)
			}
			if got := rcptsTo(); len(got) != 3 || got[2] != "known-2@"+tt.domain {
				t.Errorf("RCPTs = %q; the second worker should have sent only known-2@%s", got, tt.domain)
			}
		})
	}
	t.Cleanup(func() {
		// Each sub-test: one miss (first prober), one Redis hit (second).
		if got := hooks.get("catch_all hit"); got != len(tests) {
			t.Errorf("catch_all hits = %d, want %d", got, len(tests))
		}
		if got := hooks.get("catch_all miss"); got != len(tests) {
			t.Errorf("catch_all misses = %d, want %d", got, len(tests))
		}
	})
}

// The Redis side: entries expire with the TTL given, in-process copies
// answer without Redis, foreign or damaged values are misses, and bad input
// is ignored.
func TestRedisCatchAllCacheEntries(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	ctx := context.Background()
	tests := []struct {
		name      string
		stored    string // raw value put in Redis first; "" for none
		set       *bool  // SetCatchAll before the lookup, through another cache
		domain    string
		wantKnown bool
		wantValue bool
	}{
		{name: "miss", domain: "nothing.test"},
		{name: "shared yes", set: ptr(true), domain: "yes.test", wantKnown: true, wantValue: true},
		{name: "shared no", set: ptr(false), domain: "no.test", wantKnown: true, wantValue: false},
		{name: "case folded", set: ptr(true), domain: "MiXeD.TEST", wantKnown: true, wantValue: true},
		{name: "damaged value is a miss", stored: "maybe", domain: "damaged.test"},
		{name: "empty domain", set: ptr(true), domain: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			prefix := redistest.Prefix(t)
			if tt.stored != "" {
				rdb.Set(ctx, prefix+"catchall:{"+strings.ToLower(tt.domain)+"}", tt.stored, time.Hour)
			}
			if tt.set != nil {
				worker.NewRedisCatchAllCache(rdb, prefix, time.Hour, 10, nil, nil).SetCatchAll(ctx, tt.domain, *tt.set)
			}
			var h hookCounter
			c := worker.NewRedisCatchAllCache(rdb, prefix, time.Hour, 10, h.hook, nil)
			v, known := c.CatchAll(ctx, tt.domain)
			if known != tt.wantKnown || v != tt.wantValue {
				t.Fatalf("CatchAll(%q) = %v, %v; want %v, %v", tt.domain, v, known, tt.wantValue, tt.wantKnown)
			}
			if tt.wantKnown {
				if h.get("catch_all hit") != 1 {
					t.Errorf("hook: %v, want one hit", h.n)
				}
				ttl, err := rdb.PTTL(ctx, prefix+"catchall:{"+strings.ToLower(tt.domain)+"}").Result()
				if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
					t.Errorf("PTTL = %v, %v; want about an hour", ttl, err)
				}
				// Now in process: answered even after Redis forgot it.
				rdb.Del(ctx, prefix+"catchall:{"+strings.ToLower(tt.domain)+"}")
				if v, known := c.CatchAll(ctx, tt.domain); !known || v != tt.wantValue {
					t.Errorf("in-process copy: %v, %v", v, known)
				}
			} else if h.get("catch_all miss") != 1 {
				t.Errorf("hook: %v, want one miss", h.n)
			}
		})
	}
}

// With Redis gone the cache answers "not known" and drops writes: the
// prober then sends the random RCPT itself, as without a shared cache.
func TestRedisCatchAllCacheRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	srv.Kill(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	writer := worker.NewRedisCatchAllCache(rdb, "x:", 0, 10, nil, nil)
	writer.SetCatchAll(ctx, "down.test", true)
	var h hookCounter
	reader := worker.NewRedisCatchAllCache(rdb, "x:", 0, 10, h.hook, nil)
	if v, known := reader.CatchAll(ctx, "down.test"); known || v {
		t.Errorf("CatchAll with Redis down = %v, %v; want a miss", v, known)
	}
	if h.get("catch_all miss") != 1 {
		t.Errorf("hook: %v, want one miss", h.n)
	}
	// The writer's own copy still answers it.
	if v, known := writer.CatchAll(ctx, "down.test"); !known || !v {
		t.Errorf("writer's in-process copy = %v, %v", v, known)
	}
}

func ptr[T any](v T) *T { return &v }
