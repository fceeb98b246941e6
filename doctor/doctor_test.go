package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// The egress IPs are documentation addresses (RFC 5737, RFC 3849): they
// appear only inside DNS answers from the loopback test server; no packet
// is ever sent to them.
const (
	egress4 = "192.0.2.10"
	egress6 = "2001:db8::10"
	echoIP  = "198.51.100.7"
)

func ptrRR(name string) dns.RR {
	return &dns.PTR{Hdr: dns.RR_Header{Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: dnstest.DefaultTTL}, Ptr: dns.Fqdn(name)}
}

func rev(ip string) string {
	r, err := dns.ReverseAddr(ip)
	if err != nil {
		panic(err)
	}
	return r
}

// baseZone is a well set-up sender: PTR ↔ A, HELO = PTR name, SPF pass,
// MX on loopback for the outbound-smtp check.
func baseZone() dnstest.Zone {
	return dnstest.Zone{
		rev(egress4):        {ptrRR("mail.example.test")},
		rev(egress6):        {ptrRR("mail.example.test")},
		"mail.example.test": {dnstest.A(egress4), dnstest.AAAA(egress6)},
		"example.test": {
			dnstest.TXT("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/64 -all"),
			dnstest.TXT("google-site-verification=xyz"), // not SPF: ignored
		},
		"mx.test":          {dnstest.MX("mx1.mx.test", 10)},
		"mx1.mx.test":      {dnstest.A("127.0.0.1")},
		"canary.test":      {dnstest.MX("mx.canary.test", 10)},
		"canary2.test":     {dnstest.MX("mx.canary.test", 10)},
		"zen.spamhaus.org": {}, // the zone exists; unlisted IPs get NXDOMAIN
		"bl.spamcop.net":   {},
	}
}

type bundle struct {
	dns *dnstest.Server
	cfg Config
}

// setup starts a DNS server with baseZone plus extra (extra replaces whole
// names) and a Config that sends every question to it.
func setup(t *testing.T, extra dnstest.Zone) *bundle {
	t.Helper()
	z := baseZone()
	for k, v := range extra {
		z[k] = v
	}
	srv := dnstest.Start(t, z)
	return &bundle{dns: srv, cfg: Config{
		HeloName:       "mail.example.test",
		MailFrom:       "verify@example.test",
		EgressIP:       netip.MustParseAddr(egress4),
		DNSServers:     []string{srv.Addr()},
		DNSTimeout:     2 * time.Second,
		ConnectTimeout: 5 * time.Second,
		CommandTimeout: 5 * time.Second,
		AllowPrivate:   true,
		CanaryNames:    []string{"canary.test", "canary2.test"},
	}}
}

func find(t *testing.T, fs []Finding, check string) Finding {
	t.Helper()
	for _, f := range fs {
		if f.Check == check {
			return f
		}
	}
	t.Fatalf("no finding %q in %+v", check, fs)
	return Finding{}
}

func wantFinding(t *testing.T, f Finding, status Status, summaryHas string) {
	t.Helper()
	if f.Status != status || !strings.Contains(f.Summary, summaryHas) {
		t.Errorf("%s: got %s %q (detail %q); want %s containing %q", f.Check, f.Status, f.Summary, f.Detail, status, summaryHas)
	}
	if (f.Status == Warn || f.Status == Fail) && f.Fix == "" {
		t.Errorf("%s: %s without a fix", f.Check, f.Status)
	}
}

func run(t *testing.T, cfg Config) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

func TestFCrDNS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		zone       dnstest.Zone
		egress     string
		servfail   string
		wantStatus Status
		wantIn     string
	}{
		{name: "forward-confirmed", egress: egress4, wantStatus: OK, wantIn: "192.0.2.10 ↔ mail.example.test"},
		{name: "IPv6 nibbles", egress: egress6, wantStatus: OK, wantIn: "↔ mail.example.test"},
		{name: "missing PTR", egress: "192.0.2.11", wantStatus: Fail, wantIn: "no reverse DNS"},
		{name: "PTR name empty (NODATA)", zone: dnstest.Zone{rev(egress4): {}}, egress: egress4, wantStatus: Fail, wantIn: "no reverse DNS"},
		{name: "mismatched PTR", zone: dnstest.Zone{
			rev(egress4):         {ptrRR("other.example.test")},
			"other.example.test": {dnstest.A("192.0.2.99")},
		}, egress: egress4, wantStatus: Fail, wantIn: "does not point back"},
		{name: "PTR name does not exist", zone: dnstest.Zone{rev(egress4): {ptrRR("gone.example.test")}},
			egress: egress4, wantStatus: Fail, wantIn: "does not point back"},
		{name: "SERVFAIL is not a failure", egress: egress4, servfail: rev(egress4), wantStatus: Warn, wantIn: "not checked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.zone)
			if tt.servfail != "" {
				b.dns.Fail(tt.servfail)
			}
			b.cfg.EgressIP = netip.MustParseAddr(tt.egress)
			fs := Quick(context.Background(), b.cfg)
			wantFinding(t, find(t, fs, "fcrdns"), tt.wantStatus, tt.wantIn)
		})
	}
}

func TestHELO(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		helo       string
		zone       dnstest.Zone
		wantStatus Status
		wantIn     string
	}{
		{name: "equals PTR name", helo: "mail.example.test", wantStatus: OK, wantIn: "is the PTR name"},
		{name: "trailing dot and case", helo: "Mail.Example.Test.", wantStatus: OK, wantIn: "is the PTR name"},
		{name: "differs from PTR name", helo: "relay.example.test",
			zone: dnstest.Zone{"relay.example.test": {dnstest.A(egress4)}}, wantStatus: Warn, wantIn: "does not match"},
		{name: "resolves elsewhere", helo: "web.example.test",
			zone: dnstest.Zone{"web.example.test": {dnstest.A("192.0.2.80")}}, wantStatus: Warn, wantIn: "does not match"},
		{name: "does not resolve", helo: "nowhere.example.test", wantStatus: Fail, wantIn: "does not resolve"},
		{name: "not fully qualified", helo: "localhost", wantStatus: Fail, wantIn: "not fully qualified"},
		{name: "address literal", helo: "[192.0.2.10]", wantStatus: Warn, wantIn: "address literal"},
		{name: "empty", helo: "", wantStatus: Warn, wantIn: "no HELO name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.zone)
			b.cfg.HeloName = tt.helo
			fs := Quick(context.Background(), b.cfg)
			f := find(t, fs, "helo")
			wantFinding(t, f, tt.wantStatus, tt.wantIn)
			if tt.name == "differs from PTR name" && !strings.Contains(f.Fix, "--helo mail.example.test") {
				t.Errorf("fix %q does not name the PTR name", f.Fix)
			}
		})
	}
}

func TestSPF(t *testing.T) {
	t.Parallel()
	// eleven includes: one more than RFC 7208 §4.6.4 allows.
	chain := dnstest.Zone{"loop.test": {dnstest.TXT("v=spf1 include:l1.loop.test -all")}}
	for i := 1; i <= 11; i++ {
		chain[fmt.Sprintf("l%d.loop.test", i)] = []dns.RR{dnstest.TXT(fmt.Sprintf("v=spf1 include:l%d.loop.test -all", i+1))}
	}
	chain["l12.loop.test"] = []dns.RR{dnstest.TXT("v=spf1 ip4:192.0.2.10 -all")}
	spfZone := func(rec ...string) dnstest.Zone {
		var rrs []dns.RR
		for _, r := range rec {
			rrs = append(rrs, dnstest.TXT(r))
		}
		return dnstest.Zone{"s.test": rrs}
	}
	tests := []struct {
		name       string
		from       string
		egress     string
		zone       dnstest.Zone
		servfail   string
		wantStatus Status
		wantIn     string
	}{
		{name: "pass ip4 CIDR", from: "v@example.test", wantStatus: OK, wantIn: "authorizes 192.0.2.10 (pass)"},
		{name: "pass ip6 CIDR", from: "v@example.test", egress: egress6, wantStatus: OK, wantIn: "(pass)"},
		{name: "fail", from: "v@s.test", zone: spfZone("v=spf1 ip4:203.0.113.0/24 -all"), wantStatus: Fail, wantIn: "(fail)"},
		{name: "softfail", from: "v@s.test", zone: spfZone("v=spf1 ip4:203.0.113.1 ~all"), wantStatus: Warn, wantIn: "(softfail)"},
		{name: "neutral", from: "v@s.test", zone: spfZone("v=spf1 ?all"), wantStatus: Warn, wantIn: "(neutral)"},
		{name: "no qualifier match is neutral", from: "v@s.test", zone: spfZone("v=spf1 ip4:203.0.113.1"), wantStatus: Warn, wantIn: "(neutral)"},
		{name: "none", from: "v@s.test", zone: spfZone("some other text"), wantStatus: Warn, wantIn: "no SPF record"},
		{name: "domain does not exist", from: "v@missing.test", wantStatus: Warn, wantIn: "no SPF record"},
		{name: "include pass", from: "v@s.test", zone: dnstest.Zone{
			"s.test":      {dnstest.TXT("v=spf1 include:_spf.s.test -all")},
			"_spf.s.test": {dnstest.TXT("v=spf1 ip4:192.0.2.10 -all")},
		}, wantStatus: OK, wantIn: "(pass)"},
		{name: "include that does not match falls through", from: "v@s.test", zone: dnstest.Zone{
			"s.test":      {dnstest.TXT("v=spf1 include:_spf.s.test ~all")},
			"_spf.s.test": {dnstest.TXT("v=spf1 ip4:203.0.113.1 -all")},
		}, wantStatus: Warn, wantIn: "(softfail)"},
		{name: "mx pass", from: "v@s.test", zone: dnstest.Zone{
			"s.test":    {dnstest.TXT("v=spf1 mx -all"), dnstest.MX("mx.s.test", 10)},
			"mx.s.test": {dnstest.A(egress4)},
		}, wantStatus: OK, wantIn: "(pass)"},
		{name: "a pass", from: "v@s.test", zone: dnstest.Zone{
			"s.test": {dnstest.TXT("v=spf1 a:mail.example.test -all")},
		}, wantStatus: OK, wantIn: "(pass)"},
		{name: "a with CIDR pass", from: "v@s.test", zone: dnstest.Zone{
			"s.test":     {dnstest.TXT("v=spf1 a:net.s.test/24 -all")},
			"net.s.test": {dnstest.A("192.0.2.200")},
		}, wantStatus: OK, wantIn: "(pass)"},
		{name: "redirect pass", from: "v@s.test", zone: dnstest.Zone{
			"s.test": {dnstest.TXT("v=spf1 redirect=example.test")},
		}, wantStatus: OK, wantIn: "(pass)"},
		{name: "redirect fail", from: "v@s.test", zone: dnstest.Zone{
			"s.test":       {dnstest.TXT("v=spf1 redirect=other.s.test")},
			"other.s.test": {dnstest.TXT("v=spf1 -all")},
		}, wantStatus: Fail, wantIn: "(fail)"},
		{name: "too many lookups", from: "v@loop.test", zone: chain, wantStatus: Fail, wantIn: "permerror"},
		{name: "two records", from: "v@s.test", zone: spfZone("v=spf1 -all", "v=spf1 +all"), wantStatus: Fail, wantIn: "permerror"},
		{name: "syntax error", from: "v@s.test", zone: spfZone("v=spf1 ip4:not-an-ip -all"), wantStatus: Fail, wantIn: "permerror"},
		{name: "temperror", from: "v@s.test", zone: spfZone("v=spf1 -all"), servfail: "s.test", wantStatus: Warn, wantIn: "temperror"},
		{name: "null sender checks the HELO name", from: "", zone: dnstest.Zone{
			"mail.example.test": {dnstest.A(egress4), dnstest.TXT("v=spf1 a -all")},
		}, wantStatus: OK, wantIn: "SPF of mail.example.test authorizes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.zone)
			if tt.servfail != "" {
				b.dns.Fail(tt.servfail)
			}
			b.cfg.MailFrom = tt.from
			if tt.egress != "" {
				b.cfg.EgressIP = netip.MustParseAddr(tt.egress)
			}
			f := find(t, Quick(context.Background(), b.cfg), "spf")
			wantFinding(t, f, tt.wantStatus, tt.wantIn)
			if tt.name == "too many lookups" && !strings.Contains(f.Fix, "10 DNS lookups") {
				t.Errorf("fix %q does not explain the lookup limit", f.Fix)
			}
		})
	}
}

func TestDNSBL(t *testing.T) {
	t.Parallel()
	listing := func(zone string, ips ...string) dnstest.Zone {
		var rrs []dns.RR
		for _, ip := range ips {
			rrs = append(rrs, dnstest.A(ip))
		}
		return dnstest.Zone{"10.2.0.192." + zone: rrs}
	}
	tests := []struct {
		name       string
		zone       dnstest.Zone
		check      string
		egress     string
		servfail   string
		wantStatus Status
		wantIn     string
		wantDetail string
	}{
		{name: "not listed", check: "zen.spamhaus.org", wantStatus: OK, wantIn: "not listed"},
		{name: "SBL", check: "zen.spamhaus.org", zone: listing("zen.spamhaus.org", "127.0.0.2"), wantStatus: Fail, wantIn: "LISTED", wantDetail: "SBL"},
		{name: "XBL", check: "zen.spamhaus.org", zone: listing("zen.spamhaus.org", "127.0.0.4"), wantStatus: Fail, wantIn: "LISTED", wantDetail: "exploited"},
		{name: "PBL and CSS", check: "zen.spamhaus.org", zone: listing("zen.spamhaus.org", "127.0.0.3", "127.0.0.10"), wantStatus: Fail, wantIn: "LISTED", wantDetail: "PBL (ISP-maintained)"},
		{name: "DROP", check: "zen.spamhaus.org", zone: listing("zen.spamhaus.org", "127.0.0.9"), wantStatus: Fail, wantIn: "LISTED", wantDetail: "DROP"},
		{name: "public resolver refused", check: "zen.spamhaus.org", zone: listing("zen.spamhaus.org", "127.255.255.254"), wantStatus: Warn, wantIn: "not a listing", wantDetail: "public or open resolver"},
		{name: "typo refused", check: "zen.spamhaus.org", zone: listing("zen.spamhaus.org", "127.255.255.252"), wantStatus: Warn, wantIn: "not a listing", wantDetail: "typo"},
		{name: "volume refused", check: "zen.spamhaus.org", zone: listing("zen.spamhaus.org", "127.255.255.255"), wantStatus: Warn, wantIn: "not a listing", wantDetail: "excessive volume"},
		{name: "spamcop listed", check: "bl.spamcop.net", zone: listing("bl.spamcop.net", "127.0.0.2"), wantStatus: Fail, wantIn: "LISTED", wantDetail: "SpamCop"},
		{name: "NXDOMAIN rewriting resolver", check: "bl.spamcop.net", zone: listing("bl.spamcop.net", "203.0.113.80"), wantStatus: Warn, wantIn: "not checked", wantDetail: "rewrite"},
		{name: "SERVFAIL", check: "zen.spamhaus.org", servfail: "10.2.0.192.zen.spamhaus.org", wantStatus: Warn, wantIn: "DNS failed"},
		{name: "IPv6 listed by nibbles", check: "zen.spamhaus.org", egress: egress6, zone: dnstest.Zone{
			"0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org": {dnstest.A("127.0.0.2")},
		}, wantStatus: Fail, wantIn: "LISTED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.zone)
			if tt.servfail != "" {
				b.dns.Fail(tt.servfail)
			}
			if tt.egress != "" {
				b.cfg.EgressIP = netip.MustParseAddr(tt.egress)
			}
			f := find(t, Quick(context.Background(), b.cfg), "dnsbl:"+tt.check)
			wantFinding(t, f, tt.wantStatus, tt.wantIn)
			if !strings.Contains(f.Detail, tt.wantDetail) {
				t.Errorf("detail %q does not contain %q", f.Detail, tt.wantDetail)
			}
		})
	}
}

func TestDNSBLListingShowsListText(t *testing.T) {
	t.Parallel()
	b := setup(t, dnstest.Zone{"10.2.0.192.zen.spamhaus.org": {
		dnstest.A("127.0.0.11"), dnstest.TXT("https://check.spamhaus.org/query/ip/192.0.2.10"),
	}})
	f := find(t, Quick(context.Background(), b.cfg), "dnsbl:zen.spamhaus.org")
	wantFinding(t, f, Fail, "LISTED")
	if !strings.Contains(f.Detail, "check.spamhaus.org/query") || !strings.Contains(f.Fix, "PBL") {
		t.Errorf("detail %q / fix %q", f.Detail, f.Fix)
	}
}

func TestReverseName(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, ip, want string }{
		{"IPv4", "192.0.2.99", "99.2.0.192"},
		{"IPv4-mapped", "::ffff:192.0.2.99", "99.2.0.192"},
		// The example of RFC 5782 §2.4.
		{"IPv6", "2001:db8:1:2:3:4:567:89ab", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := reverseName(netip.MustParseAddr(tt.ip)); got != tt.want {
				t.Errorf("reverseName(%s) = %q, want %q", tt.ip, got, tt.want)
			}
		})
	}
}

func TestQuickWithoutEgress(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.cfg.EgressIP = netip.Addr{}
	fs := Quick(context.Background(), b.cfg)
	wantFinding(t, find(t, fs, "egress-ip"), Warn, "not configured")
	for _, c := range []string{"fcrdns", "spf", "dnsbl:zen.spamhaus.org", "dnsbl:bl.spamcop.net"} {
		if f := find(t, fs, c); f.Status != Skip {
			t.Errorf("%s: %s, want skip", c, f.Status)
		}
	}
	// The HELO name is still checked to resolve.
	wantFinding(t, find(t, fs, "helo"), Skip, "resolves to 192.0.2.10")
	if n := b.dns.Count("", dns.TypePTR); n != 0 {
		t.Errorf("%d PTR queries without an egress IP", n)
	}
}

func TestQuickSourceAddrIsEgress(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.cfg.EgressIP = netip.Addr{}
	b.cfg.SourceAddr = netip.MustParseAddr(egress4)
	fs := Quick(context.Background(), b.cfg)
	if Failed(fs) {
		t.Fatalf("findings: %+v", fs)
	}
	for _, f := range fs {
		if f.Status != OK {
			t.Errorf("%s: %s %q", f.Check, f.Status, f.Summary)
		}
	}
	if b.dns.Count("mx.test", dns.TypeMX) != 0 {
		t.Error("Quick looked up an MX: it must send no SMTP")
	}
}

// The resolver is asked for the canary names' MX records: one that denies
// them fails the audit, one that does not answer warns, --dns-canary none
// skips.
func TestDNSCanary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		fault  func(*dnstest.Server)
		names  []string
		status Status
		want   string
	}{
		{"answers", nil, nil, OK, "answers the canary names (canary.test, canary2.test)"},
		{"NXDOMAIN for one", func(s *dnstest.Server) { s.SetRcode("canary2.test", dns.RcodeNameError) }, nil, Fail, "canary2.test: NXDOMAIN"},
		{"no MX records", func(s *dnstest.Server) { s.Set("canary.test", dnstest.A("192.0.2.1")) }, nil, Fail, "canary.test: no MX records"},
		{"SERVFAIL", func(s *dnstest.Server) { s.Fail("canary.test") }, nil, Warn, "did not answer"},
		{"denied beats unanswered", func(s *dnstest.Server) {
			s.Fail("canary.test")
			s.SetRcode("canary2.test", dns.RcodeNameError)
		}, nil, Fail, "canary2.test: NXDOMAIN"},
		{"none", nil, []string{}, Skip, "--dns-canary none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			if tt.fault != nil {
				tt.fault(b.dns)
			}
			if tt.names != nil {
				b.cfg.CanaryNames = tt.names
			}
			b.cfg.NoIdentity = true
			fs := Quick(context.Background(), b.cfg)
			if len(fs) != 1 {
				t.Fatalf("NoIdentity: %d findings, want the canary only: %+v", len(fs), fs)
			}
			wantFinding(t, fs[0], tt.status, tt.want)
		})
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"http proxy", func(c *Config) { c.ProxyURL = "http://127.0.0.1:3128" }, "only socks5"},
		{"proxy without port", func(c *Config) { c.ProxyURL = "socks5://127.0.0.1" }, "host:port"},
		{"bad port", func(c *Config) { c.SMTPPort = 70000 }, "out of range"},
		{"bad zone", func(c *Config) { c.DNSBLZones = []string{"localzone"} }, "DNSBL zone"},
		{"bad sender", func(c *Config) { c.MailFrom = "nobody" }, "local@domain"},
		{"bad DNS server", func(c *Config) { c.DNSServers = []string{"dns.example"} }, "want an IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{DNSServers: []string{"127.0.0.1:1"}}
			tt.mutate(&cfg)
			_, err := Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: %v, want an error containing %q", err, tt.want)
			}
			fs := Quick(context.Background(), cfg)
			if len(fs) != 1 || fs[0].Status != Fail {
				t.Errorf("Quick: %+v, want one failed finding", fs)
			}
		})
	}
}

// echoScript is an MX that echoes the client address in its EHLO reply, as
// Gmail does.
func echoScript(ip string) string {
	return `
		< 220 mx1.mx.test ESMTP
		> EHLO mail.example.test
		< 250-mx1.mx.test at your service, [` + ip + `]
		< 250 SIZE 35882577
		> QUIT
		< 221 2.0.0 bye
	`
}

func TestOutboundSMTP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		script     string // empty: a go-smtp server, which echoes nothing
		closed     bool
		domain     string
		egress     string // configured; empty learns it
		cmdTimeout time.Duration
		wantStatus Status
		wantIn     string
		wantEgress string // egress-ip finding status/summary part
		wantEgSt   Status
	}{
		{name: "open, echo gives egress", script: echoScript(echoIP), wantStatus: OK, wantIn: "port %d is open",
			wantEgSt: OK, wantEgress: "egress IP 198.51.100.7 (as mx1.mx.test sees it)"},
		{name: "open, echo confirms configured", script: echoScript(egress4), egress: egress4, wantStatus: OK, wantIn: "is open",
			wantEgSt: OK, wantEgress: "confirmed by mx1.mx.test"},
		{name: "echo contradicts configured", script: echoScript(echoIP), egress: egress4, wantStatus: OK, wantIn: "is open",
			wantEgSt: Warn, wantEgress: "but mx1.mx.test saw 198.51.100.7"},
		{name: "open, no echo, loopback local address", wantStatus: OK, wantIn: "is open",
			wantEgSt: Warn, wantEgress: "127.0.0.1 is private"},
		{name: "refused", closed: true, wantStatus: Fail, wantIn: "connection refused", wantEgSt: Warn, wantEgress: "unknown"},
		{name: "banner refusal", script: `
			< 554 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.spamhaus.org
			> QUIT
			< 221 bye`, wantStatus: Fail, wantIn: "refused us at the greeting: 554", wantEgSt: Warn, wantEgress: "unknown"},
		{name: "no greeting", script: "! hang", cmdTimeout: 200 * time.Millisecond, wantStatus: Fail, wantIn: "sent no SMTP greeting",
			wantEgSt: Warn, wantEgress: "private"},
		{name: "EHLO refused", script: `
			< 220 mx1.mx.test ESMTP
			> EHLO mail.example.test
			< 550 5.7.1 go away
			> QUIT
			< 221 bye`, wantStatus: Warn, wantIn: "was refused: 550", wantEgSt: Warn, wantEgress: "private"},
		{name: "domain without mail host", domain: "missing.test", wantStatus: Warn, wantIn: "no mail host", wantEgSt: Warn, wantEgress: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			var port int
			switch {
			case tt.closed:
				port = int(smtptest.ClosedPort(t).Port())
			case tt.script != "":
				port = smtptest.StartScript(t, tt.script).Port()
			default:
				port = smtptest.Start(t, smtptest.Options{}).Port()
			}
			b.cfg.Domain = "mx.test"
			if tt.domain != "" {
				b.cfg.Domain = tt.domain
			}
			b.cfg.SMTPPort = port
			b.cfg.EgressIP = netip.Addr{}
			if tt.egress != "" {
				b.cfg.EgressIP = netip.MustParseAddr(tt.egress)
			}
			if tt.cmdTimeout > 0 {
				b.cfg.CommandTimeout = tt.cmdTimeout
			}
			rep := run(t, b.cfg)
			want := tt.wantIn
			if strings.Contains(want, "%d") {
				want = fmt.Sprintf(want, port)
			}
			wantFinding(t, find(t, rep.Findings, "outbound-smtp"), tt.wantStatus, want)
			wantFinding(t, find(t, rep.Findings, "egress-ip"), tt.wantEgSt, tt.wantEgress)
		})
	}
}

func TestRunAllGood(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.cfg.Domain = "mx.test"
	b.cfg.SMTPPort = smtptest.StartScript(t, echoScript(egress4)).Port()
	rep := run(t, b.cfg)
	if rep.Egress != netip.MustParseAddr(egress4) {
		t.Errorf("Egress = %v", rep.Egress)
	}
	var checks []string
	for _, f := range rep.Findings {
		checks = append(checks, f.Check)
		if f.Status != OK {
			t.Errorf("%s: %s %q", f.Check, f.Status, f.Summary)
		}
	}
	want := "dns-canary outbound-smtp egress-ip fcrdns helo spf dnsbl:zen.spamhaus.org dnsbl:bl.spamcop.net"
	if got := strings.Join(checks, " "); got != want {
		t.Errorf("checks %q, want %q", got, want)
	}
}

func TestRunLearnsEgressFromEcho(t *testing.T) {
	t.Parallel()
	// The server says it sees 198.51.100.7, which has no PTR and is listed:
	// the identity checks must judge that address.
	b := setup(t, dnstest.Zone{"7.100.51.198.zen.spamhaus.org": {dnstest.A("127.0.0.2")}})
	b.cfg.Domain = "mx.test"
	b.cfg.EgressIP = netip.Addr{}
	b.cfg.SMTPPort = smtptest.StartScript(t, echoScript(echoIP)).Port()
	rep := run(t, b.cfg)
	wantFinding(t, find(t, rep.Findings, "fcrdns"), Fail, "198.51.100.7 has no reverse DNS")
	wantFinding(t, find(t, rep.Findings, "dnsbl:zen.spamhaus.org"), Fail, "198.51.100.7 is LISTED")
	wantFinding(t, find(t, rep.Findings, "spf"), Fail, "forbids 198.51.100.7")
	if !Failed(rep.Findings) {
		t.Error("Failed = false")
	}
}

func TestRunNoDomainSkipsSMTP(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	rep := run(t, b.cfg)
	wantFinding(t, find(t, rep.Findings, "outbound-smtp"), Skip, "no domain given")
	wantFinding(t, find(t, rep.Findings, "egress-ip"), OK, "192.0.2.10 (configured)")
	if Failed(rep.Findings) {
		t.Errorf("findings: %+v", rep.Findings)
	}
}

func TestProxy(t *testing.T) {
	t.Parallel()
	notSOCKS := smtptest.StartScript(t, "< 220 mx.test ESMTP\n! hang")
	tests := []struct {
		name       string
		user, pass string // of the proxy
		url        func(p *socksServer) string
		domain     bool
		egress     string
		wantStatus Status
		wantIn     string
		wantSMTP   Status
		wantEgress string
	}{
		{name: "answers, echo through proxy", domain: true, wantStatus: OK,
			wantIn: "probes leave from 198.51.100.7 (as mx1.mx.test sees it through the proxy)", wantSMTP: OK, wantEgress: "198.51.100.7"},
		{name: "answers with credentials", user: "u", pass: "secret", domain: true, wantStatus: OK,
			wantIn: "answers; probes leave from 198.51.100.7", wantSMTP: OK, wantEgress: "198.51.100.7"},
		{name: "answers, no domain, configured egress", egress: egress4, wantStatus: OK, wantIn: "leave from 192.0.2.10 (configured)", wantSMTP: Skip},
		{name: "answers, no domain, proxy on loopback", wantStatus: Warn, wantIn: "unknown (the proxy is at 127.0.0.1)", wantSMTP: Skip},
		{name: "wrong password", user: "u", pass: "secret", url: func(p *socksServer) string {
			return "socks5://u:wrong@" + p.ln.Addr().String()
		}, domain: true, wantStatus: Fail, wantIn: "rejected the username and password", wantSMTP: Fail},
		{name: "credentials missing", user: "u", pass: "secret", url: func(p *socksServer) string {
			return "socks5://" + p.ln.Addr().String()
		}, wantStatus: Fail, wantIn: "wants credentials", wantSMTP: Skip},
		{name: "proxy down", url: func(*socksServer) string {
			return "socks5://" + smtptest.ClosedPort(t).String()
		}, domain: true, wantStatus: Fail, wantIn: "refused the connection", wantSMTP: Fail},
		{name: "not a SOCKS5 proxy", url: func(*socksServer) string {
			return "socks5://" + notSOCKS.Addr().String()
		}, wantStatus: Fail, wantIn: "is not a SOCKS5 proxy", wantSMTP: Skip},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			p := startSOCKS(t, tt.user, tt.pass)
			b.cfg.ProxyURL = p.URL()
			if tt.url != nil {
				b.cfg.ProxyURL = tt.url(p)
			}
			b.cfg.EgressIP = netip.Addr{}
			if tt.egress != "" {
				b.cfg.EgressIP = netip.MustParseAddr(tt.egress)
			}
			if tt.domain {
				b.cfg.Domain = "mx.test"
				b.cfg.SMTPPort = smtptest.StartScript(t, echoScript(echoIP)).Port()
			}
			rep := run(t, b.cfg)
			f := find(t, rep.Findings, "proxy")
			wantFinding(t, f, tt.wantStatus, tt.wantIn)
			if strings.Contains(f.Summary+f.Detail, "secret") {
				t.Errorf("finding leaks the password: %+v", f)
			}
			if s := find(t, rep.Findings, "outbound-smtp"); s.Status != tt.wantSMTP {
				t.Errorf("outbound-smtp: %s %q, want %s", s.Status, s.Summary, tt.wantSMTP)
			}
			if tt.wantEgress != "" && rep.Egress.String() != tt.wantEgress {
				t.Errorf("Egress = %v, want %s", rep.Egress, tt.wantEgress)
			}
			if tt.domain && tt.wantSMTP == OK && p.connects.Load() != 1 {
				t.Errorf("proxy served %d CONNECTs, want 1 (the SMTP check goes through it)", p.connects.Load())
			}
		})
	}
}

func TestProxyCannotReachMX(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	p := startSOCKS(t, "", "")
	b.cfg.ProxyURL = p.URL()
	b.cfg.Domain = "mx.test"
	b.cfg.SMTPPort = int(smtptest.ClosedPort(t).Port())
	rep := run(t, b.cfg)
	wantFinding(t, find(t, rep.Findings, "proxy"), OK, "SOCKS5 proxy")
	wantFinding(t, find(t, rep.Findings, "outbound-smtp"), Fail, "the proxy could not reach port")
}

func TestDescribeDialErr(t *testing.T) {
	t.Parallel()
	timeout := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	tests := []struct {
		name     string
		err      error
		viaProxy bool
		want     string
		wantFix  string
	}{
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false, "connection refused", "firewall"},
		{"timeout", timeout, false, "timed out: outbound SMTP looks blocked", "--proxy"},
		{"context deadline", fmt.Errorf("dial: %w", context.DeadlineExceeded), false, "timed out", "block"},
		{"unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, false, "unreachable", "--ipv4"},
		{"other", errors.New("boom"), false, "connect failed: boom", "network"},
		{"proxy refused MX", errors.New("socks connect tcp 127.0.0.1:1080->127.0.0.1:25: unknown error connection refused"), true, "the proxy could not reach port 25", "proxy"},
		{"proxy down", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, true, "through the proxy", "proxy line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, fix := describeDialErr(tt.err, "25", tt.viaProxy)
			if !strings.Contains(got, tt.want) || !strings.Contains(fix, tt.wantFix) {
				t.Errorf("describeDialErr = %q / %q; want %q / %q", got, fix, tt.want, tt.wantFix)
			}
		})
	}
}

func TestEchoedAddr(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, text, want string }{
		{"gmail", "mx.google.com at your service, [203.0.113.5]\nSIZE 1", "203.0.113.5"},
		{"exim", "mx.example Hello host.example [203.0.113.5]", "203.0.113.5"},
		{"IPv6 literal", "mx Hello [IPv6:2001:db8::5]", "2001:db8::5"},
		{"none", "mx.example Hello host.example", "invalid IP"},
		{"only first line counts", "mx Hello\nX-FOO [203.0.113.5]", "invalid IP"},
		{"garbage in brackets", "mx Hello [not:an::ip::]", "invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := echoedAddr(tt.text).String(); got != tt.want {
				t.Errorf("echoedAddr(%q) = %s, want %s", tt.text, got, tt.want)
			}
		})
	}
}
