package worker_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// Two workers' resolvers share one Redis: the second never asks DNS for a
// domain the first resolved, and negative answers are shared too.
func TestRedisMXCacheSharedAcrossWorkers(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	dns := dnstest.Start(t, dnstest.Zone{
		"shared.test.":    {dnstest.MX("mx.shared.test.", 10)},
		"mx.shared.test.": {dnstest.A("127.0.0.1")},
	})
	var mu sync.Mutex
	hits := map[bool]int{}
	hook := func(cache string, hit bool) {
		mu.Lock()
		hits[hit]++
		mu.Unlock()
	}
	resolver := func() *validator.DNSResolver {
		r, err := validator.NewDNSResolver(validator.DNSConfig{Servers: []string{dns.Addr()}, AllowPrivate: true,
			Timeout: time.Second, Cache: worker.NewRedisMXCache(rdb, prefix, 100, hook, nil)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first, second := resolver(), resolver()
	ctx := context.Background()
	set, err := first.ResolveMX(ctx, "shared.test")
	if err != nil || len(set.Hosts) != 1 || set.Hosts[0].Addrs[0] != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("first: %+v, %v", set, err)
	}
	queries := len(dns.Queries())
	set2, err := second.ResolveMX(ctx, "shared.test")
	if err != nil || set2.Hosts[0].Name != set.Hosts[0].Name {
		t.Fatalf("second: %+v, %v", set2, err)
	}
	if n := len(dns.Queries()); n != queries {
		t.Errorf("second worker sent %d DNS queries; the shared cache should have answered", n-queries)
	}
	// Negative answers (NXDOMAIN) are shared as well.
	if _, err := first.ResolveMX(ctx, "missing.test"); err == nil {
		t.Fatal("missing.test resolved")
	}
	queries = len(dns.Queries())
	if _, err := second.ResolveMX(ctx, "missing.test"); err == nil {
		t.Fatal("missing.test resolved on the second worker")
	}
	if n := len(dns.Queries()); n != queries {
		t.Errorf("negative answer not shared: %d more queries", n-queries)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits[true] < 2 || hits[false] < 2 {
		t.Errorf("hook saw %d hits, %d misses", hits[true], hits[false])
	}
}

// With Redis gone, resolution still works from DNS: the cache is an
// optimisation, never a dependency.
func TestRedisMXCacheDownFallsBackToDNS(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	dns := dnstest.Start(t, dnstest.Zone{
		"down.test.":    {dnstest.MX("mx.down.test.", 10)},
		"mx.down.test.": {dnstest.A("127.0.0.1")},
	})
	srv.Kill(t)
	r, err := validator.NewDNSResolver(validator.DNSConfig{Servers: []string{dns.Addr()}, AllowPrivate: true,
		Timeout: time.Second, Cache: worker.NewRedisMXCache(rdb, "x:", 10, nil, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ResolveMX(context.Background(), "down.test"); err != nil {
		t.Fatalf("ResolveMX with Redis down: %v", err)
	}
}
