package validator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
)

type dnsBundle struct {
	srv   *dnstest.Server
	r     *DNSResolver
	clock *testClock
}

// setupDNS starts a test server with zone and a resolver pointed at it.
// The resolver allows private addresses (the zone uses loopback) and never
// shuffles unless mod says otherwise, so answers are deterministic.
func setupDNS(t *testing.T, zone dnstest.Zone, mod func(*DNSConfig)) dnsBundle {
	t.Helper()
	srv := dnstest.Start(t, zone)
	clock := &testClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	cfg := DNSConfig{
		Servers:      []string{srv.Addr()},
		Timeout:      2 * time.Second,
		AllowPrivate: true,
		NowFunc:      clock.Now,
		ShuffleFunc:  func(int, func(i, j int)) {},
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := NewDNSResolver(cfg)
	if err != nil {
		t.Fatalf("NewDNSResolver: %v", err)
	}
	return dnsBundle{srv: srv, r: r, clock: clock}
}

// hostNames renders a set as "name/pref" list for comparisons.
func hostNames(s MXSet) string {
	var parts []string
	for _, h := range s.Hosts {
		parts = append(parts, fmt.Sprintf("%s/%d", h.Name, h.Pref))
	}
	return strings.Join(parts, " ")
}

func hostAddrs(s MXSet) string {
	var parts []string
	for _, h := range s.Hosts {
		var as []string
		for _, a := range h.Addrs {
			as = append(as, a.String())
		}
		parts = append(parts, h.Name+"="+strings.Join(as, ","))
	}
	return strings.Join(parts, " ")
}

// baseZone has one host per letter a..e and domains built from them.
func baseZone() dnstest.Zone {
	z := dnstest.Zone{}
	for i, n := range []string{"a", "b", "c", "d", "e"} {
		z[n+".mx.test."] = []dns.RR{dnstest.A(fmt.Sprintf("127.0.0.%d", i+1))}
	}
	return z
}

func TestResolveMXSortedAndShuffled(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{
		dnstest.MX("d.mx.test.", 20), dnstest.MX("a.mx.test.", 10), dnstest.MX("b.mx.test.", 10),
		dnstest.MX("e.mx.test.", 5), dnstest.MX("c.mx.test.", 10),
	}
	tests := []struct {
		name    string
		shuffle func(n int, swap func(i, j int))
		want    string
	}{
		{name: "no shuffle keeps server order within a preference", shuffle: func(int, func(i, j int)) {},
			want: "e.mx.test/5 a.mx.test/10 b.mx.test/10 c.mx.test/10 d.mx.test/20"},
		// Rotating left by one, applied twice (once when the set is built,
		// which decides the hosts kept under MaxMXHosts, once per answer).
		{name: "rotating shuffle reorders only equal preferences", shuffle: func(n int, swap func(i, j int)) {
			for i := range n - 1 {
				swap(i, i+1)
			}
		}, want: "e.mx.test/5 c.mx.test/10 a.mx.test/10 b.mx.test/10 d.mx.test/20"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupDNS(t, z, func(c *DNSConfig) { c.ShuffleFunc = tt.shuffle; c.MaxMXHosts = 5 })
			set, err := b.r.ResolveMX(t.Context(), "example.test")
			if err != nil {
				t.Fatal(err)
			}
			if got := hostNames(set); got != tt.want {
				t.Errorf("hosts = %s\nwant    %s", got, tt.want)
			}
		})
	}
}

func TestResolveMXSeededShuffleDeterministic(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10), dnstest.MX("b.mx.test.", 10), dnstest.MX("c.mx.test.", 10), dnstest.MX("d.mx.test.", 10)}
	seeded := func() func(int, func(i, j int)) {
		var mu sync.Mutex
		rng := rand.New(rand.NewPCG(1, 2))
		return func(n int, swap func(i, j int)) { mu.Lock(); rng.Shuffle(n, swap); mu.Unlock() }
	}
	orders := func(shuffle func(int, func(i, j int))) []string {
		b := setupDNS(t, z, func(c *DNSConfig) { c.ShuffleFunc = shuffle; c.MaxMXHosts = 4 })
		var out []string
		for range 20 { // the first resolves, the rest come from the cache, reshuffled
			set, err := b.r.ResolveMX(t.Context(), "example.test")
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, hostNames(set))
		}
		return out
	}
	first, second := orders(seeded()), orders(seeded())
	if !slices.Equal(first, second) {
		t.Errorf("same seed, different orders:\n%v\n%v", first, second)
	}
	if distinct := len(slices.Compact(slices.Sorted(slices.Values(first)))); distinct < 2 {
		t.Errorf("20 answers from the cache all in one order %q: equal preferences not reshuffled", first[0])
	}
}

func TestResolveMXDefaultShuffleVaries(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10), dnstest.MX("b.mx.test.", 10), dnstest.MX("c.mx.test.", 10)}
	b := setupDNS(t, z, func(c *DNSConfig) { c.ShuffleFunc = nil })
	seen := map[string]bool{}
	for range 50 { // P(one order 50 times) = 6^-49
		set, err := b.r.ResolveMX(t.Context(), "example.test")
		if err != nil {
			t.Fatal(err)
		}
		seen[hostNames(set)] = true
	}
	if len(seen) < 2 {
		t.Errorf("default shuffle produced one order only: %v", seen)
	}
}

func TestResolveMXPaths(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["mx.example.test."] = []dns.RR{dnstest.MX("a.mx.test", 10)}
	z["implicit.test."] = []dns.RR{dnstest.A("127.0.0.9"), dnstest.TXT("v=spf1 -all")}
	// MX exists but its target is gone; the domain's own A must not be used.
	z["nofallback.test."] = []dns.RR{dnstest.MX("gone.mx.test.", 10), dnstest.A("127.0.0.9")}
	z["null.test."] = []dns.RR{dnstest.NullMX()}
	z["nullplus.test."] = []dns.RR{dnstest.MX(".", 0), dnstest.MX("b.mx.test.", 10)}
	z["nothing.test."] = []dns.RR{dnstest.TXT("no mail here")}
	z["literal.test."] = []dns.RR{dnstest.MX("127.0.0.1.", 10)}
	z["literalplus.test."] = []dns.RR{dnstest.MX("127.0.0.1.", 5), dnstest.MX("c.mx.test.", 10)}
	z["dup.test."] = []dns.RR{dnstest.MX("a.mx.test.", 20), dnstest.MX("a.mx.test.", 10), dnstest.MX("b.mx.test.", 30)}
	z["partial.test."] = []dns.RR{dnstest.MX("gone.mx.test.", 5), dnstest.MX("d.mx.test.", 10)}
	z["alias.test."] = []dns.RR{dnstest.CNAME("mx.example.test.")}
	z["cnamemx.test."] = []dns.RR{dnstest.MX("alias.mx.test.", 10)}
	z["alias.mx.test."] = []dns.RR{dnstest.CNAME("e.mx.test.")}

	tests := []struct {
		name       string
		domain     string
		wantHosts  string
		wantAddrs  string
		wantErr    error
		wantImpl   bool
		wantNullMX bool
		noQuery    string // a name that must not have been asked for A
	}{
		{name: "mx", domain: "mx.example.test", wantHosts: "a.mx.test/10", wantAddrs: "a.mx.test=127.0.0.1"},
		{name: "trailing dot and case", domain: "MX.Example.TEST.", wantHosts: "a.mx.test/10"},
		{name: "implicit mx", domain: "implicit.test", wantHosts: "implicit.test/0", wantAddrs: "implicit.test=127.0.0.9", wantImpl: true},
		{name: "mx exists, no fallback to A", domain: "nofallback.test", wantErr: ErrNoMailHost, noQuery: "nofallback.test."},
		{name: "null mx", domain: "null.test", wantErr: ErrNullMX, wantNullMX: true, noQuery: "null.test."},
		{name: "null mx among others ignored", domain: "nullplus.test", wantHosts: "b.mx.test/10"},
		{name: "nxdomain", domain: "missing.test", wantErr: ErrDomainNotFound},
		{name: "no mx no address", domain: "nothing.test", wantErr: ErrNoMailHost},
		{name: "ip literal target refused", domain: "literal.test", wantErr: ErrMXAddressLiteral, noQuery: "127.0.0.1."},
		{name: "ip literal skipped, next used", domain: "literalplus.test", wantHosts: "c.mx.test/10", noQuery: "127.0.0.1."},
		{name: "duplicate targets keep best preference", domain: "dup.test", wantHosts: "a.mx.test/10 b.mx.test/30"},
		{name: "unresolvable target dropped", domain: "partial.test", wantHosts: "d.mx.test/10"},
		{name: "domain is a CNAME", domain: "alias.test", wantHosts: "a.mx.test/10"},
		{name: "mx target is a CNAME", domain: "cnamemx.test", wantHosts: "alias.mx.test/10", wantAddrs: "alias.mx.test=127.0.0.5"},
	}
	b := setupDNS(t, z, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, err := b.r.ResolveMX(t.Context(), tt.domain)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := hostNames(set); got != tt.wantHosts {
				t.Errorf("hosts = %q, want %q", got, tt.wantHosts)
			}
			if got := hostAddrs(set); tt.wantAddrs != "" && got != tt.wantAddrs {
				t.Errorf("addrs = %q, want %q", got, tt.wantAddrs)
			}
			if set.Implicit != tt.wantImpl || set.NullMX != tt.wantNullMX {
				t.Errorf("Implicit=%v NullMX=%v, want %v %v", set.Implicit, set.NullMX, tt.wantImpl, tt.wantNullMX)
			}
			if set.Domain != strings.ToLower(strings.TrimSuffix(tt.domain, ".")) {
				t.Errorf("Domain = %q", set.Domain)
			}
			if tt.noQuery != "" {
				if n := b.srv.Count(tt.noQuery, dns.TypeA) + b.srv.Count(tt.noQuery, dns.TypeAAAA); n != 0 {
					t.Errorf("%d address queries for %s, want none", n, tt.noQuery)
				}
			}
			var de *DNSError
			if err != nil && !errors.As(err, &de) {
				t.Errorf("error %v is not a *DNSError", err)
			}
		})
	}
}

func TestResolveMXNXDOMAINDetails(t *testing.T) {
	t.Parallel()
	b := setupDNS(t, baseZone(), nil)
	_, err := b.r.ResolveMX(t.Context(), "missing.test")
	var de *DNSError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want *DNSError", err)
	}
	want := DNSError{Name: "missing.test.", Qtype: "MX", Rcode: "NXDOMAIN", Server: b.srv.Addr(), Err: ErrDomainNotFound}
	if *de != want {
		t.Errorf("got %+v\nwant %+v", *de, want)
	}
	if errors.Is(err, ErrDNSTemporary) {
		t.Error("NXDOMAIN reported as temporary")
	}
}

func TestResolveMXTemporary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		setup     func(*dnstest.Server)
		wantRcode string
	}{
		{name: "servfail on mx", setup: func(s *dnstest.Server) { s.Fail("example.test.") }, wantRcode: "SERVFAIL"},
		{name: "refused", setup: func(s *dnstest.Server) { s.SetRcode("example.test.", dns.RcodeRefused) }, wantRcode: "REFUSED"},
		{name: "timeout", setup: func(s *dnstest.Server) { s.Drop("example.test.") }},
		{name: "all mx targets servfail", setup: func(s *dnstest.Server) { s.Fail("a.mx.test."); s.Fail("b.mx.test.") }, wantRcode: "SERVFAIL"},
		{name: "all mx targets time out", setup: func(s *dnstest.Server) { s.Drop("a.mx.test."); s.Drop("b.mx.test.") }},
		{name: "implicit mx address servfail", setup: func(s *dnstest.Server) {
			s.Set("example.test.", dnstest.A("127.0.0.1"))
			s.Only(dns.TypeA).Fail("example.test.")
			s.Only(dns.TypeAAAA).Fail("example.test.")
		}, wantRcode: "SERVFAIL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			z := baseZone()
			z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10), dnstest.MX("b.mx.test.", 20)}
			b := setupDNS(t, z, func(c *DNSConfig) { c.Timeout = 100 * time.Millisecond })
			tt.setup(b.srv)
			_, err := b.r.ResolveMX(t.Context(), "example.test")
			if !errors.Is(err, ErrDNSTemporary) {
				t.Fatalf("err = %v, want ErrDNSTemporary", err)
			}
			var de *DNSError
			if !errors.As(err, &de) || !de.Temporary || de.Rcode != tt.wantRcode {
				t.Fatalf("err = %#v, want Temporary with rcode %q", err, tt.wantRcode)
			}
			for _, s := range []error{ErrDomainNotFound, ErrNoMailHost, ErrNullMX} {
				if errors.Is(err, s) {
					t.Errorf("temporary failure also matches %v", s)
				}
			}
			// Not cached: a second call asks again.
			before := b.srv.Count("", 0)
			_, _ = b.r.ResolveMX(t.Context(), "example.test")
			if b.srv.Count("", 0) == before {
				t.Error("temporary failure was cached")
			}
		})
	}
}

func TestResolveMXPartialTemporary(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10), dnstest.MX("b.mx.test.", 20)}
	b := setupDNS(t, z, nil)
	b.srv.Fail("a.mx.test.")
	set, err := b.r.ResolveMX(t.Context(), "example.test")
	if err != nil || hostNames(set) != "b.mx.test/20" {
		t.Fatalf("got %q, %v; want b.mx.test/20", hostNames(set), err)
	}
	// Cached only briefly (maxPartialTTL), then the healed host comes back.
	b.srv.Heal("a.mx.test.")
	b.clock.Advance(maxPartialTTL + time.Second)
	set, err = b.r.ResolveMX(t.Context(), "example.test")
	if err != nil || hostNames(set) != "a.mx.test/10 b.mx.test/20" {
		t.Fatalf("after heal: %q, %v", hostNames(set), err)
	}
}

func TestLookupAddrsOneFamilyFails(t *testing.T) {
	t.Parallel()
	z := dnstest.Zone{"dual.test.": {dnstest.TTL(dnstest.A("127.0.0.1"), 3600), dnstest.AAAA("::1")}}
	b := setupDNS(t, z, nil)
	b.srv.Only(dns.TypeAAAA).Fail("dual.test.")
	addrs, ttl, err := b.r.hostAddrs(t.Context(), "dual.test")
	if err != nil || fmt.Sprint(addrs) != "[127.0.0.1]" {
		t.Fatalf("got %v, %v; want the IPv4 address", addrs, err)
	}
	if ttl != maxPartialTTL {
		t.Errorf("ttl = %v, want the partial cap %v", ttl, maxPartialTTL)
	}
}

func TestResolveMXTruncatedRetriesOverTCP(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10)}
	b := setupDNS(t, z, nil)
	b.srv.Truncate("example.test.")
	set, err := b.r.ResolveMX(t.Context(), "example.test")
	if err != nil || hostNames(set) != "a.mx.test/10" {
		t.Fatalf("got %q, %v", hostNames(set), err)
	}
	var nets []string
	for _, q := range b.srv.Queries() {
		if q.Name == "example.test." {
			nets = append(nets, q.Net)
		}
	}
	if !slices.Equal(nets, []string{"udp", "tcp"}) {
		t.Errorf("queries for the domain went over %v, want [udp tcp]", nets)
	}
}

func TestResolveMXUsesEDNS0(t *testing.T) {
	t.Parallel()
	z := baseZone()
	var mxs []dns.RR
	for i := range 30 { // ~1 kB: over the 512 bytes of plain DNS, under EDNS0's 1232
		mxs = append(mxs, dnstest.MX(fmt.Sprintf("host-number-%02d.mx.test.", i), uint16(i)))
	}
	z["example.test."] = mxs
	b := setupDNS(t, z, func(c *DNSConfig) { c.MaxMXHosts = 1 })
	_, _ = b.r.ResolveMX(t.Context(), "example.test")
	q := b.srv.Queries()
	if len(q) == 0 || q[0] != (dnstest.Query{Name: "example.test.", Type: dns.TypeMX, Net: "udp", UDPSize: ednsUDPSize}) {
		t.Fatalf("first query %+v, want MX over UDP with EDNS0 size %d", q, ednsUDPSize)
	}
	if n := b.srv.Count("example.test.", dns.TypeMX); n != 1 {
		t.Errorf("%d MX queries, want 1 (answer fits the EDNS0 buffer, no TCP retry)", n)
	}
}

func TestResolveMXServerWithoutEDNS0(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10)}
	b := setupDNS(t, z, nil)
	b.srv.NoEDNS0()
	set, err := b.r.ResolveMX(t.Context(), "example.test")
	if err != nil || hostNames(set) != "a.mx.test/10" {
		t.Fatalf("got %q, %v; want a retry without EDNS0 to succeed", hostNames(set), err)
	}
}

func TestResolveMXHugeSetCapped(t *testing.T) {
	t.Parallel()
	var mxs, dead []dns.RR
	z := baseZone()
	for i := range 500 {
		h := fmt.Sprintf("h%03d.mx.test.", i)
		z[h] = []dns.RR{dnstest.A("127.0.1.1")}
		mxs = append(mxs, dnstest.MX(h, uint16(i)))
		dead = append(dead, dnstest.MX(fmt.Sprintf("dead%03d.mx.test.", i), uint16(i)))
	}
	z["huge.test."] = mxs // ~15 kB: truncated over UDP, read over TCP
	z["hugedead.test."] = dead
	tests := []struct {
		name        string
		domain      string
		wantErr     error
		wantHosts   int
		wantAddrQry int
	}{
		// Stops once MaxMXHosts hosts are found: 3 targets × A+AAAA.
		{name: "resolvable", domain: "huge.test", wantHosts: 3, wantAddrQry: 6},
		// Never more than MaxRecords targets asked about.
		{name: "none resolvable", domain: "hugedead.test", wantErr: ErrNoMailHost, wantAddrQry: 2 * 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupDNS(t, z, func(c *DNSConfig) { c.MaxRecords = 7 })
			set, err := b.r.ResolveMX(t.Context(), tt.domain)
			if !errors.Is(err, tt.wantErr) || len(set.Hosts) != tt.wantHosts {
				t.Fatalf("got %d hosts, %v; want %d, %v", len(set.Hosts), err, tt.wantHosts, tt.wantErr)
			}
			addrQ := b.srv.Count("", dns.TypeA) + b.srv.Count("", dns.TypeAAAA)
			if addrQ != tt.wantAddrQry {
				t.Errorf("%d address queries, want %d", addrQ, tt.wantAddrQry)
			}
			if b.srv.Count(tt.domain, dns.TypeMX) != 2 {
				t.Errorf("MX queries = %+v, want UDP then TCP", b.srv.Queries()[:2])
			}
		})
	}
}

func TestResolveMXStopsAfterTemporaryFailures(t *testing.T) {
	t.Parallel()
	z := baseZone()
	var mxs []dns.RR
	var names []string
	for i := range 10 {
		names = append(names, fmt.Sprintf("t%d.mx.test.", i))
		mxs = append(mxs, dnstest.MX(names[i], uint16(i)))
	}
	z["example.test."] = mxs
	b := setupDNS(t, z, nil)
	for _, n := range names {
		b.srv.Fail(n)
	}
	_, err := b.r.ResolveMX(t.Context(), "example.test")
	if !errors.Is(err, ErrDNSTemporary) {
		t.Fatalf("err = %v, want temporary", err)
	}
	// A resolver failing for 3 targets is taken as down: no more look-ups.
	if n := b.srv.Count("", dns.TypeA); n != maxTempFailures {
		t.Errorf("%d A queries, want %d", n, maxTempFailures)
	}
}

func TestResolveMXMaxHosts(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 1), dnstest.MX("b.mx.test.", 2), dnstest.MX("c.mx.test.", 3), dnstest.MX("d.mx.test.", 4), dnstest.MX("e.mx.test.", 5)}
	tests := []struct {
		name string
		max  int
		want string
	}{
		{name: "default 3", max: 0, want: "a.mx.test/1 b.mx.test/2 c.mx.test/3"},
		{name: "one", max: 1, want: "a.mx.test/1"},
		{name: "more than exist", max: 10, want: "a.mx.test/1 b.mx.test/2 c.mx.test/3 d.mx.test/4 e.mx.test/5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupDNS(t, z, func(c *DNSConfig) { c.MaxMXHosts = tt.max })
			set, err := b.r.ResolveMX(t.Context(), "example.test")
			if err != nil || hostNames(set) != tt.want {
				t.Fatalf("got %q, %v; want %q", hostNames(set), err, tt.want)
			}
		})
	}
}

func TestResolveMXFamily(t *testing.T) {
	t.Parallel()
	z := dnstest.Zone{
		"example.test.": {dnstest.MX("dual.mx.test.", 10), dnstest.MX("v6.mx.test.", 20), dnstest.MX("v4.mx.test.", 30)},
		"dual.mx.test.": {dnstest.AAAA("::1"), dnstest.A("127.0.0.1")},
		"v6.mx.test.":   {dnstest.AAAA("fd00::6")},
		"v4.mx.test.":   {dnstest.A("127.0.0.4")},
	}
	tests := []struct {
		family    IPFamily
		want      string
		wantTypes []uint16 // query types sent for address look-ups
	}{
		{family: FamilyAny, want: "dual.mx.test=127.0.0.1,::1 v6.mx.test=fd00::6 v4.mx.test=127.0.0.4", wantTypes: []uint16{dns.TypeA, dns.TypeAAAA}},
		{family: FamilyIPv4, want: "dual.mx.test=127.0.0.1 v4.mx.test=127.0.0.4", wantTypes: []uint16{dns.TypeA}},
		{family: FamilyIPv6, want: "dual.mx.test=::1 v6.mx.test=fd00::6", wantTypes: []uint16{dns.TypeAAAA}},
	}
	for _, tt := range tests {
		t.Run(tt.family.String(), func(t *testing.T) {
			t.Parallel()
			b := setupDNS(t, z, func(c *DNSConfig) { c.Family = tt.family })
			set, err := b.r.ResolveMX(t.Context(), "example.test")
			if err != nil || hostAddrs(set) != tt.want {
				t.Fatalf("got %q, %v\nwant %q", hostAddrs(set), err, tt.want)
			}
			var types []uint16
			for _, q := range b.srv.Queries() {
				if q.Type != dns.TypeMX && !slices.Contains(types, q.Type) {
					types = append(types, q.Type)
				}
			}
			slices.Sort(types)
			if !slices.Equal(types, tt.wantTypes) {
				t.Errorf("address query types %v, want %v", types, tt.wantTypes)
			}
		})
	}
}

func TestParseIPFamily(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    IPFamily
		wantErr bool
	}{
		{in: "ipv4", want: FamilyIPv4},
		{in: "IPv6", want: FamilyIPv6},
		{in: "both", want: FamilyAny},
		{in: "", wantErr: true},
		{in: "ip4", wantErr: true},
		{in: "any", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseIPFamily(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseIPFamily(%q) = %v, %v; want %v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err == nil {
			var back IPFamily
			text, _ := got.MarshalText()
			if err := back.UnmarshalText(text); err != nil || back != got {
				t.Errorf("%v does not round-trip through text: %q %v", got, text, err)
			}
		}
	}
	if _, err := IPFamily(7).MarshalText(); err == nil {
		t.Error("IPFamily(7) marshalled")
	}
}

func TestResolveMXCNAMEChains(t *testing.T) {
	t.Parallel()
	z := dnstest.Zone{
		"loop.test.":        {dnstest.MX("l1.mx.test.", 10)},
		"l1.mx.test.":       {dnstest.CNAME("l2.mx.test.")},
		"l2.mx.test.":       {dnstest.CNAME("l1.mx.test.")},
		"self.test.":        {dnstest.CNAME("self.test.")},
		"long.test.":        {dnstest.MX("c0.mx.test.", 10)},
		"short.test.":       {dnstest.MX("c5.mx.test.", 10)},
		"end.mx.test.":      {dnstest.A("127.0.0.1")},
		"loopplus.test.":    {dnstest.MX("l1.mx.test.", 10), dnstest.MX("end.mx.test.", 20)},
		"domainloop.test.":  {dnstest.CNAME("domainloop2.test.")},
		"domainloop2.test.": {dnstest.CNAME("domainloop.test.")},
	}
	// c0 → c1 → … → c9 → end: 11 names, over the cap of 8; c5 → … → end: 6.
	for i := range 10 {
		next := fmt.Sprintf("c%d.mx.test.", i+1)
		if i == 9 {
			next = "end.mx.test."
		}
		z[fmt.Sprintf("c%d.mx.test.", i)] = []dns.RR{dnstest.CNAME(next)}
	}
	tests := []struct {
		name      string
		domain    string
		wantErr   error
		wantHosts string
	}{
		{name: "mx target loop", domain: "loop.test", wantErr: ErrCNAMEChain},
		{name: "domain CNAME to itself", domain: "self.test", wantErr: ErrCNAMEChain},
		{name: "domain CNAME loop", domain: "domainloop.test", wantErr: ErrCNAMEChain},
		{name: "chain too long", domain: "long.test", wantErr: ErrCNAMEChain},
		{name: "short chain followed", domain: "short.test", wantHosts: "c5.mx.test/10"},
		{name: "loop skipped, next host used", domain: "loopplus.test", wantHosts: "end.mx.test/20"},
	}
	b := setupDNS(t, z, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, err := b.r.ResolveMX(t.Context(), tt.domain)
			if !errors.Is(err, tt.wantErr) || hostNames(set) != tt.wantHosts {
				t.Fatalf("got %q, %v; want %q, %v", hostNames(set), err, tt.wantHosts, tt.wantErr)
			}
			if tt.wantErr != nil && (errors.Is(err, ErrNoMailHost) || !errors.Is(err, ErrDNSTemporary)) {
				t.Errorf("%v: a CNAME loop must be a temporary DNS error, never \"no mail host\"", err)
			}
		})
	}
	t.Cleanup(func() { // after the parallel subtests
		// The loop costs a bounded number of queries.
		if n := b.srv.Count("l1.mx.test.", 0); n == 0 || n > 2*maxCNAMEChain {
			t.Errorf("%d queries for a looping name", n)
		}
	})
}

func TestPrivateAddressesRefused(t *testing.T) {
	t.Parallel()
	bad := []string{
		"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "0.0.0.0", "0.1.2.3",
		"224.0.0.1", "255.255.255.255", "100.64.0.1", "::1", "::", "fe80::1", "fc00::1", "fd12::1",
		"ff02::1", "::ffff:127.0.0.1", "::ffff:8.8.8.8", "64:ff9b::a00:1",
	}
	z := dnstest.Zone{
		"public.test.":      {dnstest.MX("pub.mx.test.", 10)},
		"pub.mx.test.":      {dnstest.A("192.0.2.1"), dnstest.AAAA("2001:db8::1")},
		"localhost.test.":   {dnstest.MX("localhost.", 10)},
		"localhost.":        {dnstest.A("127.0.0.1")},
		"mixed.test.":       {dnstest.MX("mixed.mx.test.", 10)},
		"mixed.mx.test.":    {dnstest.A("10.0.0.1"), dnstest.A("198.51.100.7")},
		"implicitpriv.test": {dnstest.A("192.168.0.1")},
	}
	type tc struct {
		name      string
		domain    string
		allow     bool
		wantErr   error
		wantAddrs string
	}
	tests := []tc{
		{name: "public", domain: "public.test", wantAddrs: "pub.mx.test=192.0.2.1,2001:db8::1"},
		{name: "private dropped, public kept", domain: "mixed.test", wantAddrs: "mixed.mx.test=198.51.100.7"},
		{name: "localhost target", domain: "localhost.test", wantErr: ErrNoMailHost},
		{name: "localhost target allowed", domain: "localhost.test", allow: true, wantAddrs: "localhost=127.0.0.1"},
		{name: "implicit mx private", domain: "implicitpriv.test", wantErr: ErrNoUsableAddress},
		{name: "implicit mx private allowed", domain: "implicitpriv.test", allow: true, wantAddrs: "implicitpriv.test=192.168.0.1"},
	}
	for i, a := range bad {
		host := fmt.Sprintf("h%d.mx.test.", i)
		rr := dnstest.AAAA(a)
		if netip.MustParseAddr(a).Is4() {
			rr = dnstest.A(a)
		}
		z[host] = []dns.RR{rr}
		z[fmt.Sprintf("d%d.test.", i)] = []dns.RR{dnstest.MX(host, 10)}
		tests = append(tests,
			tc{name: a, domain: fmt.Sprintf("d%d.test", i), wantErr: ErrNoUsableAddress},
			tc{name: a + " allowed", domain: fmt.Sprintf("d%d.test", i), allow: true, wantAddrs: strings.TrimSuffix(host, ".") + "=" + a})
	}
	srv := dnstest.Start(t, z)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := NewDNSResolver(DNSConfig{Servers: []string{srv.Addr()}, AllowPrivate: tt.allow, CacheSize: -1})
			if err != nil {
				t.Fatal(err)
			}
			set, err := r.ResolveMX(t.Context(), tt.domain)
			if !errors.Is(err, tt.wantErr) || hostAddrs(set) != tt.wantAddrs {
				t.Fatalf("got %q, %v; want %q, %v", hostAddrs(set), err, tt.wantAddrs, tt.wantErr)
			}
		})
	}
	t.Cleanup(func() { // after the parallel subtests
		if n := srv.Count("localhost.", dns.TypeA); n != 1 { // only the allowed case asks
			t.Errorf("localhost asked %d times, want 1", n)
		}
	})
}

func TestResolveMXCache(t *testing.T) {
	t.Parallel()
	z := dnstest.Zone{
		"example.test.": {dnstest.TTL(dnstest.MX("a.mx.test.", 10), 600)},
		"a.mx.test.":    {dnstest.TTL(dnstest.A("127.0.0.1"), 120)},
		"short.test.":   {dnstest.TTL(dnstest.MX("s.mx.test.", 10), 1)},
		"s.mx.test.":    {dnstest.TTL(dnstest.A("127.0.0.1"), 1)},
		"long.test.":    {dnstest.TTL(dnstest.MX("l.mx.test.", 10), 86400)},
		"l.mx.test.":    {dnstest.TTL(dnstest.A("127.0.0.1"), 86400)},
		"null.test.":    {dnstest.TTL(dnstest.NullMX(), 86400)},
		"nomx.test.":    {dnstest.TXT("x")},
	}
	tests := []struct {
		name    string
		domain  string
		negTTL  uint32
		wantErr error
		fresh   time.Duration // still cached this long after the first answer
		expired time.Duration // asked again this long after
	}{
		{name: "positive: smallest TTL of MX and A", domain: "example.test", fresh: 119 * time.Second, expired: 121 * time.Second},
		{name: "positive: MinTTL floor", domain: "short.test", fresh: 9 * time.Second, expired: 11 * time.Second},
		{name: "positive: MaxTTL cap", domain: "long.test", fresh: 59 * time.Minute, expired: 61 * time.Minute},
		{name: "nxdomain: SOA minimum", domain: "missing.test", negTTL: 60, wantErr: ErrDomainNotFound, fresh: 59 * time.Second, expired: 61 * time.Second},
		{name: "nxdomain: capped at 5 minutes", domain: "missing.test", negTTL: 86400, wantErr: ErrDomainNotFound, fresh: 299 * time.Second, expired: 301 * time.Second},
		{name: "null mx: record TTL capped", domain: "null.test", wantErr: ErrNullMX, fresh: 299 * time.Second, expired: 301 * time.Second},
		{name: "no mx: SOA minimum", domain: "nomx.test", negTTL: 30, wantErr: ErrNoMailHost, fresh: 29 * time.Second, expired: 31 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupDNS(t, z, nil)
			if tt.negTTL != 0 {
				b.srv.SetNegativeTTL(tt.negTTL)
			}
			resolve := func(when string) MXSet {
				t.Helper()
				set, err := b.r.ResolveMX(t.Context(), tt.domain)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("%s: err = %v, want %v", when, err, tt.wantErr)
				}
				return set
			}
			first := resolve("first")
			n := b.srv.Count("", 0)
			b.clock.Advance(tt.fresh)
			if got := resolve("cached"); hostAddrs(got) != hostAddrs(first) || got.NullMX != first.NullMX {
				t.Errorf("cached answer %+v differs from %+v", got, first)
			}
			if got := b.srv.Count("", 0); got != n {
				t.Fatalf("cache miss after %v: %d queries, want %d", tt.fresh, got, n)
			}
			b.clock.Advance(tt.expired - tt.fresh)
			resolve("expired")
			if got := b.srv.Count("", 0); got != 2*n {
				t.Errorf("after %v: %d queries, want %d (asked again)", tt.expired, got, 2*n)
			}
		})
	}
}

func TestResolveMXCacheReturnsCopies(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10)}
	b := setupDNS(t, z, nil)
	set, _ := b.r.ResolveMX(t.Context(), "example.test")
	set.Hosts[0].Addrs[0] = netip.MustParseAddr("192.0.2.66")
	set.Hosts[0].Name = "evil"
	again, _ := b.r.ResolveMX(t.Context(), "example.test")
	if got := hostAddrs(again); got != "a.mx.test=127.0.0.1" {
		t.Errorf("caller's edit leaked into the cache: %s", got)
	}
}

func TestResolveMXCacheDisabled(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10)}
	b := setupDNS(t, z, func(c *DNSConfig) { c.CacheSize = -1 })
	for range 2 {
		if _, err := b.r.ResolveMX(t.Context(), "example.test"); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.srv.Count("example.test.", dns.TypeMX); n != 2 {
		t.Errorf("%d MX queries with caching off, want 2", n)
	}
}

// recordingCache is an MXCache that records what it is given, standing in
// for a shared backend.
type recordingCache struct {
	mu   sync.Mutex
	m    map[string]MXCacheEntry
	sets int
}

func (c *recordingCache) Get(_ context.Context, k string) (MXCacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	return e, ok
}

func (c *recordingCache) Set(_ context.Context, k string, e MXCacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[k] = e
	c.sets++
}

func TestResolveMXCustomCache(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10)}
	cache := &recordingCache{m: map[string]MXCacheEntry{}}
	b := setupDNS(t, z, func(c *DNSConfig) { c.Cache = cache })
	if _, err := b.r.ResolveMX(t.Context(), "Example.Test."); err != nil {
		t.Fatal(err)
	}
	if _, err := b.r.ResolveMX(t.Context(), "nope.test"); !errors.Is(err, ErrDomainNotFound) {
		t.Fatal(err)
	}
	e, ok := cache.Get(t.Context(), "example.test")
	if !ok || e.Reason != "" || hostNames(e.Set) != "a.mx.test/10" || !e.Expires.Equal(b.clock.Now().Add(dnstest.DefaultTTL*time.Second)) {
		t.Errorf("positive entry = %+v, %v", e, ok)
	}
	if e, ok := cache.Get(t.Context(), "nope.test"); !ok || e.Reason != ReasonDomainNotFound {
		t.Errorf("negative entry = %+v, %v", e, ok)
	}
	// An entry put there by another worker is used without a query.
	cache.Set(t.Context(), "other.test", MXCacheEntry{Reason: ReasonNullMX, Expires: b.clock.Now().Add(time.Minute)})
	set, err := b.r.ResolveMX(t.Context(), "other.test")
	if !errors.Is(err, ErrNullMX) || !set.NullMX || b.srv.Count("other.test.", 0) != 0 {
		t.Errorf("shared entry not used: %+v %v", set, err)
	}
}

func TestResolveMXSecondServer(t *testing.T) {
	t.Parallel()
	zone := func() dnstest.Zone {
		z := baseZone()
		z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10)}
		return z
	}
	tests := []struct {
		name      string
		breakIt   func(*dnstest.Server)
		breakBoth bool
	}{
		{name: "servfail", breakIt: func(s *dnstest.Server) { s.Fail(dnstest.All) }},
		{name: "refused", breakIt: func(s *dnstest.Server) { s.SetRcode(dnstest.All, dns.RcodeRefused) }},
		{name: "timeout", breakIt: func(s *dnstest.Server) { s.Drop(dnstest.All) }},
		{name: "down", breakIt: func(s *dnstest.Server) { s.Close() }},
		{name: "both servfail", breakIt: func(s *dnstest.Server) { s.Fail(dnstest.All) }, breakBoth: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			first, second := dnstest.Start(t, zone()), dnstest.Start(t, zone())
			tt.breakIt(first)
			if tt.breakBoth {
				tt.breakIt(second)
			}
			r, err := NewDNSResolver(DNSConfig{Servers: []string{first.Addr(), second.Addr()}, Timeout: 100 * time.Millisecond, AllowPrivate: true})
			if err != nil {
				t.Fatal(err)
			}
			set, err := r.ResolveMX(t.Context(), "example.test")
			if tt.breakBoth {
				var de *DNSError
				if !errors.Is(err, ErrDNSTemporary) || !errors.As(err, &de) || de.Server != second.Addr() {
					t.Fatalf("err = %v, want temporary from the last server", err)
				}
				return
			}
			if err != nil || hostNames(set) != "a.mx.test/10" {
				t.Fatalf("got %q, %v", hostNames(set), err)
			}
			if second.Count("example.test.", dns.TypeMX) != 1 {
				t.Error("second server not asked")
			}
		})
	}
}

func TestResolveMXContextCanceled(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10)}
	b := setupDNS(t, z, func(c *DNSConfig) { c.Timeout = time.Minute })
	b.srv.Drop("example.test.")
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-b.srv.Seen("example.test."); cancel() }()
	_, err := b.r.ResolveMX(ctx, "example.test")
	if !errors.Is(err, ErrDNSTemporary) {
		t.Fatalf("err = %v, want temporary", err)
	}
}

func TestResolveMXConcurrent(t *testing.T) {
	t.Parallel()
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10), dnstest.MX("b.mx.test.", 10)}
	b := setupDNS(t, z, func(c *DNSConfig) { c.ShuffleFunc = nil })
	b.srv.Delay("example.test.", 20*time.Millisecond) // let callers pile up on one flight
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			set, err := b.r.ResolveMX(t.Context(), "example.test")
			if err == nil && len(set.Hosts) != 2 {
				err = fmt.Errorf("got %d hosts", len(set.Hosts))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := b.srv.Count("example.test.", dns.TypeMX); n >= 32 {
		t.Errorf("%d MX queries for 32 concurrent callers: not shared", n)
	}
}

func TestLookupAddrs(t *testing.T) {
	t.Parallel()
	z := dnstest.Zone{
		"dual.test.":  {dnstest.A("127.0.0.1"), dnstest.AAAA("::1"), dnstest.A("127.0.0.2")},
		"txt.test.":   {dnstest.TXT("x")},
		"alias.test.": {dnstest.CNAME("dual.test.")},
		"loop.test.":  {dnstest.CNAME("loop.test.")},
	}
	tests := []struct {
		name    string
		host    string
		want    string
		wantErr error
	}{
		{name: "v4 first", host: "dual.test", want: "[127.0.0.1 127.0.0.2 ::1]"},
		{name: "cname", host: "alias.test.", want: "[127.0.0.1 127.0.0.2 ::1]"},
		{name: "nodata", host: "txt.test", want: "[]", wantErr: ErrNoAddress},
		{name: "nxdomain", host: "missing.test", want: "[]", wantErr: ErrDomainNotFound},
		{name: "loop", host: "loop.test", want: "[]", wantErr: ErrCNAMEChain},
		{name: "invalid", host: "bad..test", want: "[]", wantErr: ErrInvalidName},
	}
	b := setupDNS(t, z, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := b.r.LookupAddrs(t.Context(), tt.host)
			if !errors.Is(err, tt.wantErr) || fmt.Sprint(got) != tt.want {
				t.Fatalf("got %v, %v; want %s, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestResolveMXBadNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		domain string
	}{
		{name: "empty", domain: ""},
		{name: "root", domain: "."},
		{name: "trailing garbage", domain: "example.test garbage"},
		{name: "nul", domain: "example.test\x00"},
		{name: "crlf", domain: "example.test\r\nRCPT TO:<x>"},
		{name: "semicolon", domain: "example.test;rm"},
		{name: "empty label", domain: "example..test"},
		{name: "two trailing dots", domain: "example.test.."},
		{name: "leading hyphen", domain: "-example.test"},
		{name: "trailing hyphen", domain: "example-.test"},
		{name: "underscore", domain: "ex_ample.test"},
		{name: "ipv4 literal", domain: "127.0.0.1"},
		{name: "ipv6 literal", domain: "::1"},
		{name: "address literal", domain: "[127.0.0.1]"},
		{name: "numeric tld", domain: "1.2.3.04"},
		{name: "unicode", domain: "bücher.test"},
		{name: "label too long", domain: strings.Repeat("a", 64) + ".test"},
		{name: "name too long", domain: strings.Repeat("abcdefghi.", 26) + "test"},
	}
	b := setupDNS(t, baseZone(), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := b.r.ResolveMX(t.Context(), tt.domain)
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("err = %v, want ErrInvalidName", err)
			}
		})
	}
	t.Cleanup(func() {
		if n := b.srv.Count("", 0); n != 0 {
			t.Errorf("%d queries sent for invalid names: %v", n, b.srv.Queries())
		}
	})
	// The longest legal name passes the check.
	longest := strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 61)
	if _, err := canonicalName(longest); err != nil || len(longest) != 253 {
		t.Errorf("253-character name refused: %v", err)
	}
}

func TestNewDNSResolverConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.conf", "nameserver 127.0.0.53\nnameserver ::1\n")
	empty := write("empty.conf", "search example.test\n")
	tests := []struct {
		name        string
		cfg         DNSConfig
		wantErr     string
		wantServers []string
	}{
		{name: "servers with and without port", cfg: DNSConfig{Servers: []string{"127.0.0.1:5353", "127.0.0.2", "::1", "[::1]:54"}},
			wantServers: []string{"127.0.0.1:5353", "127.0.0.2:53", "[::1]:53", "[::1]:54"}},
		{name: "from resolv.conf", cfg: DNSConfig{ResolvConf: good}, wantServers: []string{"127.0.0.53:53", "[::1]:53"}},
		{name: "resolv.conf missing", cfg: DNSConfig{ResolvConf: dir + "/nope"}, wantErr: "unusable"},
		{name: "resolv.conf without nameserver", cfg: DNSConfig{ResolvConf: empty}, wantErr: "none in"},
		{name: "server is a name", cfg: DNSConfig{Servers: []string{"dns.example:53"}}, wantErr: `"dns.example:53": want an IP`},
		{name: "server port 0", cfg: DNSConfig{Servers: []string{"127.0.0.1:0"}}, wantErr: "port 0"},
		{name: "negative timeout", cfg: DNSConfig{Servers: []string{"127.0.0.1"}, Timeout: -time.Second}, wantErr: "timeout"},
		{name: "bad family", cfg: DNSConfig{Servers: []string{"127.0.0.1"}, Family: 9}, wantErr: "IPFamily(9)"},
		{name: "negative max hosts", cfg: DNSConfig{Servers: []string{"127.0.0.1"}, MaxMXHosts: -1}, wantErr: "MaxMXHosts"},
		{name: "negative max records", cfg: DNSConfig{Servers: []string{"127.0.0.1"}, MaxRecords: -1}, wantErr: "MaxRecords"},
		{name: "ttl bounds inverted", cfg: DNSConfig{Servers: []string{"127.0.0.1"}, MinTTL: time.Hour, MaxTTL: time.Minute}, wantErr: "MinTTL <= MaxTTL"},
		{name: "all errors reported", cfg: DNSConfig{Servers: []string{"x"}, MaxMXHosts: -1}, wantErr: "want an IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := NewDNSResolver(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Servers(); !slices.Equal(got, tt.wantServers) {
				t.Errorf("servers = %v, want %v", got, tt.wantServers)
			}
		})
	}
}

func TestMemoryMXCacheBounded(t *testing.T) {
	t.Parallel()
	c := NewMemoryMXCache(3)
	ctx := t.Context()
	for _, d := range []string{"a", "b", "c"} {
		c.Set(ctx, d, MXCacheEntry{Set: MXSet{Domain: d}})
	}
	c.Get(ctx, "a") // a is now most recent; b is the oldest
	c.Set(ctx, "d", MXCacheEntry{Set: MXSet{Domain: "d"}})
	tests := []struct {
		key    string
		wantOK bool
	}{{"a", true}, {"b", false}, {"c", true}, {"d", true}}
	for _, tt := range tests {
		if _, ok := c.Get(ctx, tt.key); ok != tt.wantOK {
			t.Errorf("Get(%q) ok = %v, want %v", tt.key, ok, tt.wantOK)
		}
	}
	if c.Len() != 3 {
		t.Errorf("Len = %d, want 3", c.Len())
	}
	c.Set(ctx, "c", MXCacheEntry{Reason: ReasonNoMX})
	if e, _ := c.Get(ctx, "c"); e.Reason != ReasonNoMX || c.Len() != 3 {
		t.Errorf("overwrite: %+v, len %d", e, c.Len())
	}
}

func TestDNSErrorMessage(t *testing.T) {
	t.Parallel()
	err := error(&DNSError{Name: "example.test.", Qtype: "MX", Rcode: "SERVFAIL", Server: "127.0.0.1:53", Temporary: true, Err: errors.New("server answered SERVFAIL")})
	want := "dns MX example.test.: SERVFAIL from 127.0.0.1:53: server answered SERVFAIL"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}

func BenchmarkResolveMXCached(b *testing.B) {
	z := baseZone()
	z["example.test."] = []dns.RR{dnstest.MX("a.mx.test.", 10), dnstest.MX("b.mx.test.", 10), dnstest.MX("c.mx.test.", 20)}
	srv := dnstest.Start(b, z)
	r, err := NewDNSResolver(DNSConfig{Servers: []string{srv.Addr()}, AllowPrivate: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.ResolveMX(ctx, "example.test"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := r.ResolveMX(ctx, "example.test"); err != nil {
			b.Fatal(err)
		}
	}
	if n := srv.Count("example.test.", dns.TypeMX); n != 1 {
		b.Fatalf("%d MX queries, want 1 (cache not used)", n)
	}
}
