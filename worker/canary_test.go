package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// dnsOnly is a worker's validator without SMTP whose DNS canary shares its
// results through store.
func dnsOnly(t *testing.T, dnsAddr string, store validator.CanaryStore) *validator.Validator {
	t.Helper()
	v, err := validator.New(validator.Config{
		NoSMTP: true,
		DNS: validator.DNSConfig{Servers: []string{dnsAddr}, AllowPrivate: true, Timeout: 2 * time.Second,
			Canary: validator.CanaryConfig{Names: []string{"canary.test"}, Interval: time.Hour, Store: store}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func verdictOf(t *testing.T, v *validator.Validator, addr string) string {
	t.Helper()
	r, err := v.Validate(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return string(r.Verdict) + "/" + string(r.Reason)
}

// Workers sharing Redis check the canary once between them, and agree.
func TestCanarySharedThroughRedis(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	srv := dnstest.Start(t, dnstest.Zone{"canary.test.": {dnstest.MX("mx.canary.test.", 10)}})

	first := dnsOnly(t, srv.Addr(), worker.NewRedisCanaryStore(rdb, prefix, nil))
	if got := verdictOf(t, first, "a@nowhere.test"); got != "invalid/domain_not_found" {
		t.Fatalf("healthy resolver: %s, want invalid/domain_not_found", got)
	}
	second := dnsOnly(t, srv.Addr(), worker.NewRedisCanaryStore(rdb, prefix, nil))
	if got := verdictOf(t, second, "b@nowhere.test"); got != "invalid/domain_not_found" {
		t.Fatalf("second worker: %s, want invalid/domain_not_found", got)
	}
	if n := srv.Count("canary.test.", dns.TypeMX); n != 1 {
		t.Errorf("%d canary queries from two workers sharing Redis, want 1", n)
	}
	keys, err := rdb.Keys(context.Background(), prefix+"dnscanary:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("shared canary keys %v (err %v), want one", keys, err)
	}
	if ttl := rdb.PTTL(context.Background(), keys[0]).Val(); ttl <= 0 || ttl > 2*time.Hour {
		t.Errorf("shared canary result kept for %v, want a bound of two intervals", ttl)
	}
}

// One worker finds the resolver lying; another, started later, holds back
// negative answers too without asking the canary itself.
func TestCanaryFailureSharedThroughRedis(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	srv := dnstest.Start(t, dnstest.Zone{})
	srv.SetRcode("canary.test.", dns.RcodeNameError) // the canary "does not exist"

	first := dnsOnly(t, srv.Addr(), worker.NewRedisCanaryStore(rdb, prefix, nil))
	if got := verdictOf(t, first, "a@nowhere.test"); got != "unknown/dns_error" {
		t.Fatalf("lying resolver: %s, want unknown/dns_error", got)
	}
	second := dnsOnly(t, srv.Addr(), worker.NewRedisCanaryStore(rdb, prefix, nil))
	st, ok := second.DNS().CanaryCheck(context.Background())
	if !ok || st.Healthy || !strings.Contains(st.Reason, "canary.test: NXDOMAIN") {
		t.Fatalf("second worker's canary %+v (configured %v), want the shared failure", st, ok)
	}
	if got := verdictOf(t, second, "b@nowhere.test"); got != "unknown/dns_error" {
		t.Fatalf("second worker: %s, want unknown/dns_error", got)
	}
	if n := srv.Count("canary.test.", dns.TypeMX); n != 1 {
		t.Errorf("%d canary queries, want 1 (the second worker reads the first's result)", n)
	}
}

// Bad input: an unreadable shared value, or Redis gone, is "nothing shared",
// and the worker checks for itself.
func TestCanaryStoreBadValueAndRedisDown(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	srv := dnstest.Start(t, dnstest.Zone{"canary.test.": {dnstest.MX("mx.canary.test.", 10)}})
	store := worker.NewRedisCanaryStore(rdb, prefix, nil)
	ctx := context.Background()
	for _, bad := range []string{"not json", `{"healthy":true}`, `{"healthy":"yes","checked":"x"}`} {
		if err := rdb.Set(ctx, prefix+"dnscanary:k", bad, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if st, ok := store.LoadCanary(ctx, "k"); ok {
			t.Errorf("stored %q loaded as %+v", bad, st)
		}
	}
	st := validator.CanaryState{Healthy: false, Reason: "x: NXDOMAIN", Checked: time.Now().UTC().Truncate(time.Second)}
	store.StoreCanary(ctx, "k", st, time.Minute)
	if got, ok := store.LoadCanary(ctx, "k"); !ok || got != st {
		t.Errorf("round trip: %+v %v, want %+v", got, ok, st)
	}

	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:9", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { down.Close() })
	v := dnsOnly(t, srv.Addr(), worker.NewRedisCanaryStore(down, prefix, nil))
	if got := verdictOf(t, v, "a@nowhere.test"); got != "invalid/domain_not_found" {
		t.Errorf("Redis down, healthy resolver: %s, want invalid/domain_not_found", got)
	}
}
