package validator

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
)

// startHostileDNS serves handler on 127.0.0.1 over UDP and TCP (one port)
// until the test ends: for answers dnstest cannot give (truncated over TCP
// too, NXDOMAIN for every name).
func startHostileDNS(t *testing.T, handler dns.HandlerFunc) string {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	for range 20 {
		p, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", p.LocalAddr().String())
		if err == nil {
			pc, ln = p, l
			break
		}
		p.Close()
	}
	if pc == nil {
		t.Fatal("no free UDP+TCP port pair on 127.0.0.1")
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // registered first, so it runs after the Shutdowns
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() { _ = s.ActivateAndServe() })
		<-started
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// dnsOnlyValidator validates with NoSMTP against server, so the verdicts
// are the DNS stage's.
func dnsOnlyValidator(t *testing.T, server string, mod func(*DNSConfig)) (*Validator, *MemoryMXCache) {
	t.Helper()
	cache := NewMemoryMXCache(100)
	cfg := Config{NoSMTP: true, DNS: DNSConfig{
		Servers: []string{server}, Timeout: 2 * time.Second, AllowPrivate: true, Cache: cache,
	}}
	if mod != nil {
		mod(&cfg.DNS)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, cache
}

func wantVerdict(t *testing.T, v *Validator, addr string, verdict Verdict, reason Reason, retryable bool) Result {
	t.Helper()
	res, err := v.Validate(t.Context(), addr)
	if err != nil {
		t.Fatalf("%s: operational error %v", addr, err)
	}
	if res.Verdict != verdict || res.Reason != reason || res.Retryable != retryable {
		t.Fatalf("%s: got %s/%s retryable=%v (%s), want %s/%s retryable=%v",
			addr, res.Verdict, res.Reason, res.Retryable, res.Error, verdict, reason, retryable)
	}
	return res
}

func TestTruncatedOverTCPIsDNSError(t *testing.T) {
	t.Parallel()
	var tcpQueries atomic.Int32
	addr := startHostileDNS(t, func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Truncated = true // empty and truncated, over UDP and TCP alike
		if w.LocalAddr().Network() == "tcp" {
			tcpQueries.Add(1)
		}
		_ = w.WriteMsg(m)
	})
	v, cache := dnsOnlyValidator(t, addr, nil)
	wantVerdict(t, v, "a@trunc.test", Unknown, ReasonDNSError, true)
	if tcpQueries.Load() == 0 {
		t.Error("no TCP retry after the truncated UDP answer")
	}
	if e, ok := cache.Get(t.Context(), "trunc.test"); ok {
		t.Errorf("truncated answer cached: %+v", e)
	}
}

func TestCNAMELoopIsDNSError(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, dnstest.Zone{
		"loop.test.":    {dnstest.MX("l1.mx.test.", 10)},
		"l1.mx.test.":   {dnstest.CNAME("l2.mx.test.")},
		"l2.mx.test.":   {dnstest.CNAME("l1.mx.test.")},
		"dloop.test.":   {dnstest.CNAME("dloop2.test.")},
		"dloop2.test.":  {dnstest.CNAME("dloop.test.")},
		"selfmx.test.":  {dnstest.MX("self.mx.test.", 10)},
		"self.mx.test.": {dnstest.CNAME("self.mx.test.")},
	})
	v, cache := dnsOnlyValidator(t, srv.Addr(), nil)
	for _, a := range []string{"a@loop.test", "a@dloop.test", "a@selfmx.test"} {
		wantVerdict(t, v, a, Unknown, ReasonDNSError, true)
	}
	if cache.Len() != 0 {
		t.Errorf("%d CNAME-loop answers cached", cache.Len())
	}
}

func TestMXAddressLiteral(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, dnstest.Zone{
		"bare.test.":     {dnstest.MX("192.0.2.1.", 10)},
		"bracket.test.":  {dnstest.MX("[192.0.2.1].", 10)},
		"v6.test.":       {dnstest.MX("[IPv6:2001:db8::1].", 10)},
		"mixed.test.":    {dnstest.MX("192.0.2.1.", 5), dnstest.MX("mx.mixed.test.", 10)},
		"mx.mixed.test.": {dnstest.A("127.0.0.1")},
		"garbage.test.":  {dnstest.MX("bad_name!.test.", 10)},
	})
	v, _ := dnsOnlyValidator(t, srv.Addr(), nil)
	for _, a := range []string{"a@bare.test", "a@bracket.test", "a@v6.test"} {
		res := wantVerdict(t, v, a, Unknown, ReasonMXIPLiteral, false)
		if err := v.Check(t.Context(), a); !errors.Is(err, ErrUnverifiable) {
			t.Errorf("%s: Check = %v, want ErrUnverifiable (%+v)", a, err, res)
		}
	}
	// The literal is skipped, the named host used.
	res := wantVerdict(t, v, "a@mixed.test", Unknown, ReasonSMTPSkipped, false)
	if res.MXHost != "mx.mixed.test" {
		t.Errorf("mixed: MX host %q, want mx.mixed.test", res.MXHost)
	}
	// A target that is neither a name nor an address is not taken for one.
	res, err := v.Validate(t.Context(), "a@garbage.test")
	if err != nil || res.Reason == ReasonMXIPLiteral {
		t.Errorf("garbage target: %s/%s, %v", res.Verdict, res.Reason, err)
	}
}

func TestSettingsNeverMakeInvalid(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, dnstest.Zone{
		"v4only.test.":     {dnstest.MX("mx.v4only.test.", 10)},
		"mx.v4only.test.":  {dnstest.A("127.0.0.1")},
		"v6only.test.":     {dnstest.MX("mx.v6only.test.", 10)},
		"mx.v6only.test.":  {dnstest.AAAA("::1")},
		"implicit4.test.":  {dnstest.A("127.0.0.1")},
		"noaddr.test.":     {dnstest.MX("mx.noaddr.test.", 10)},
		"mx.noaddr.test.":  {dnstest.TXT("no address here")},
		"private.test.":    {dnstest.MX("mx.private.test.", 10)},
		"mx.private.test.": {dnstest.A("10.1.2.3"), dnstest.A("127.0.0.1")},
	})
	tests := []struct {
		name    string
		mod     func(*DNSConfig)
		addr    string
		verdict Verdict
		reason  Reason
	}{
		{"ipv6 only, MX has only A", func(c *DNSConfig) { c.Family = FamilyIPv6 }, "a@v4only.test", Unknown, ReasonNoUsableAddress},
		{"ipv4 only, MX has only AAAA", func(c *DNSConfig) { c.Family = FamilyIPv4 }, "a@v6only.test", Unknown, ReasonNoUsableAddress},
		{"ipv6 only, implicit MX has only A", func(c *DNSConfig) { c.Family = FamilyIPv6 }, "a@implicit4.test", Unknown, ReasonNoUsableAddress},
		{"ipv6 only, MX has no address at all", func(c *DNSConfig) { c.Family = FamilyIPv6 }, "a@noaddr.test", Invalid, ReasonNoMX},
		{"ipv4 only, MX has A", func(c *DNSConfig) { c.Family = FamilyIPv4 }, "a@v4only.test", Unknown, ReasonSMTPSkipped},
		{"private addresses refused", func(c *DNSConfig) { c.AllowPrivate = false }, "a@private.test", Unknown, ReasonNoUsableAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, cache := dnsOnlyValidator(t, srv.Addr(), tt.mod)
			wantVerdict(t, v, tt.addr, tt.verdict, tt.reason, false)
			if tt.reason == ReasonNoUsableAddress {
				if e, ok := cache.Get(t.Context(), tt.addr[2:]); ok && e.Reason != "" {
					t.Errorf("cached as %q", e.Reason)
				}
			}
		})
	}
}

// memCanaryStore is a CanaryStore in memory, standing for the Redis one
// (worker/canary.go, tested against real Redis there).
type memCanaryStore struct {
	mu    sync.Mutex
	m     map[string]CanaryState
	loads int
}

func (s *memCanaryStore) LoadCanary(_ context.Context, key string) (CanaryState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	st, ok := s.m[key]
	return st, ok
}

func (s *memCanaryStore) StoreCanary(_ context.Context, key string, st CanaryState, _ time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]CanaryState{}
	}
	s.m[key] = st
}

func TestCanaryLyingResolver(t *testing.T) {
	t.Parallel()
	// Answers NXDOMAIN for every name, like a captive or filtering resolver.
	addr := startHostileDNS(t, func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeNameError)
		_ = w.WriteMsg(m)
	})
	var states []CanaryState
	var mu sync.Mutex
	v, cache := dnsOnlyValidator(t, addr, func(c *DNSConfig) {
		c.Canary = CanaryConfig{Names: []string{"canary.test"}, OnCheck: func(st CanaryState) {
			mu.Lock()
			states = append(states, st)
			mu.Unlock()
		}}
	})
	res := wantVerdict(t, v, "a@nowhere.test", Unknown, ReasonDNSError, true)
	if !errors.Is(errors.New(res.Error), ErrResolverUnhealthy) && !contains(res.Error, "canary") {
		t.Errorf("error %q does not say the canary failed", res.Error)
	}
	if cache.Len() != 0 {
		t.Errorf("%d untrusted negative answers cached", cache.Len())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(states) == 0 || states[0].Healthy {
		t.Errorf("canary states %+v, want an unhealthy one", states)
	}

	// Without a canary ("--dns-canary none") the lie is believed: this is
	// what the canary is for.
	v2, _ := dnsOnlyValidator(t, addr, nil)
	wantVerdict(t, v2, "a@nowhere.test", Invalid, ReasonDomainNotFound, false)
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestCanaryHealthyResolver(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, dnstest.Zone{
		"canary.test.":    {dnstest.MX("mx.canary.test.", 10)},
		"noaddr.test.":    {dnstest.MX("mx.noaddr.test.", 10)},
		"mx.noaddr.test.": {dnstest.TXT("x")},
		"nullmx.test.":    {dnstest.NullMX()},
	})
	clock := &testClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	store := &memCanaryStore{}
	mod := func(c *DNSConfig) {
		c.NowFunc = clock.Now
		c.Canary = CanaryConfig{Names: []string{"canary.test"}, Interval: time.Minute, Store: store}
	}
	v, _ := dnsOnlyValidator(t, srv.Addr(), mod)
	wantVerdict(t, v, "a@nowhere.test", Invalid, ReasonDomainNotFound, false)
	wantVerdict(t, v, "a@noaddr.test", Invalid, ReasonNoMX, false)
	wantVerdict(t, v, "a@nullmx.test", Invalid, ReasonNullMX, false)
	if n := srv.Count("canary.test.", dns.TypeMX); n != 1 {
		t.Errorf("%d canary queries within one interval, want 1", n)
	}

	// A second process with the same resolvers uses the shared result.
	v2, _ := dnsOnlyValidator(t, srv.Addr(), mod)
	wantVerdict(t, v2, "b@nowhere.test", Invalid, ReasonDomainNotFound, false)
	if n := srv.Count("canary.test.", dns.TypeMX); n != 1 {
		t.Errorf("%d canary queries for two processes sharing a store, want 1", n)
	}

	// The canary name disappears: after the interval, negatives are held back.
	srv.SetRcode("canary.test.", dns.RcodeNameError)
	clock.Advance(2 * time.Minute)
	wantVerdict(t, v, "c@nowhere.test", Unknown, ReasonDNSError, true)
	// Positive answers need no canary.
	wantVerdict(t, v, "a@nullmx.test", Invalid, ReasonNullMX, false)
}

func TestCanaryConfigBad(t *testing.T) {
	t.Parallel()
	for _, cc := range []CanaryConfig{
		{Names: []string{"bad..name"}},
		{Names: []string{"192.0.2.1"}},
		{Names: []string{"ok.test"}, Interval: -time.Second},
	} {
		if _, err := NewDNSResolver(DNSConfig{Servers: []string{"127.0.0.1:53"}, Canary: cc}); err == nil {
			t.Errorf("%+v accepted", cc)
		}
	}
}

// A fault of the domain's mail hosts is no_mx: a malformed target is not a
// malformed address (bad_syntax), a target's NXDOMAIN is not the domain's
// (domain_not_found). A target named with '_' is dialled, as MTAs do.
func TestMXTargetFaults(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, dnstest.Zone{
		"canary.test.":     {dnstest.MX("mx.canary.test.", 10)},
		"under.test.":      {dnstest.MX("mx_1.under.test.", 10)},
		"mx_1.under.test.": {dnstest.A("192.0.2.1")},
		"garbage.test.":    {dnstest.MX(`mx\032evil.test.`, 10)},
		"gone.test.":       {dnstest.MX("mx.gone.test.", 10)}, // mx.gone.test: NXDOMAIN
	})
	v, cache := dnsOnlyValidator(t, srv.Addr(), func(c *DNSConfig) {
		c.Canary = CanaryConfig{Names: []string{"canary.test"}}
	})
	wantVerdict(t, v, "a@under.test", Unknown, ReasonSMTPSkipped, false)
	wantVerdict(t, v, "a@garbage.test", Invalid, ReasonNoMX, false)
	wantVerdict(t, v, "a@gone.test", Invalid, ReasonNoMX, false)
	e, ok := cache.Get(t.Context(), "gone.test")
	if !ok || e.Reason != ReasonNoMX {
		t.Errorf("MX cache for gone.test: %+v %v, want no_mx", e, ok)
	}

	// The target's NXDOMAIN is as negative as the domain's: a lying
	// resolver's is held back.
	srv.SetRcode("canary.test.", dns.RcodeNameError)
	v2, _ := dnsOnlyValidator(t, srv.Addr(), func(c *DNSConfig) {
		c.Canary = CanaryConfig{Names: []string{"canary.test"}}
	})
	wantVerdict(t, v2, "b@gone.test", Unknown, ReasonDNSError, true)
}
