package validator

import (
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/dns"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
)

// Hostile DNS answers not covered by dns_test.go (docs/reliability.md §2): MX
// targets whose labels carry bytes no host name has — spaces, CR/LF, angle
// brackets, NUL, sent as escapes on the wire — and a target with a huge
// address set.
func TestResolveMXGarbageTargets(t *testing.T) {
	t.Parallel()
	garbage := []string{
		`mx\032evil.test.`,     // space
		`mx\013\010rcpt.test.`, // CR LF
		`mx\000.test.`,         // NUL
		`\<mx\>.test.`,         // angle brackets
		`mx.test\032garbage.`,  // trailing garbage after a valid-looking name
		`m\195\188x.test.`,     // raw UTF-8 (not an A-label)
		`mx\@example.test.`,    // '@'
		`127.0.0.1.`,           // an IP literal as a name (dns_test.go covers this too)
		`mx..test.`,            // not even a valid wire name: dropped by the server or refused
	}
	z := baseZone()
	tests := []struct {
		name      string
		domain    string
		wantHosts string
		wantErr   error
	}{}
	for i, g := range garbage {
		if _, ok := dns.IsDomainName(g); !ok {
			continue
		}
		only, plus := fmt.Sprintf("g%d.test.", i), fmt.Sprintf("gp%d.test.", i)
		z[only] = []dns.RR{dnstest.MX(g, 10)}
		z[plus] = []dns.RR{dnstest.MX(g, 5), dnstest.MX("a.mx.test.", 10)}
		tests = append(tests,
			struct {
				name      string
				domain    string
				wantHosts string
				wantErr   error
			}{name: g + " alone", domain: only, wantErr: aloneErr(g)},
			struct {
				name      string
				domain    string
				wantHosts string
				wantErr   error
			}{name: g + " skipped", domain: plus, wantHosts: "a.mx.test/10"})
	}
	if len(tests) < 2*(len(garbage)-1) {
		t.Fatalf("only %d cases built; the zone lost its hostile names", len(tests))
	}
	b := setupDNS(t, z, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, err := b.r.ResolveMX(t.Context(), tt.domain)
			if !errors.Is(err, tt.wantErr) || hostNames(set) != tt.wantHosts {
				t.Fatalf("got %q, %v; want %q, %v", hostNames(set), err, tt.wantHosts, tt.wantErr)
			}
		})
	}
	t.Cleanup(func() { // after the parallel subtests
		// Garbage is refused before any address query: only a.mx.test is asked.
		for _, q := range b.srv.Queries() {
			if q.Type != dns.TypeMX && q.Name != "a.mx.test." {
				t.Errorf("asked %s about %q", dns.TypeToString[q.Type], q.Name)
			}
		}
	})
}

func TestResolveMXHugeAddressSetCapped(t *testing.T) {
	t.Parallel()
	z := dnstest.Zone{"example.test.": {dnstest.MX("big.mx.test.", 10)}}
	var as []dns.RR
	for i := range 1000 { // ~16 kB: truncated over UDP, read over TCP
		as = append(as, dnstest.A(fmt.Sprintf("127.1.%d.%d", i/250, i%250+1)))
	}
	z["big.mx.test."] = as
	b := setupDNS(t, z, func(c *DNSConfig) { c.MaxRecords = 5 })
	set, err := b.r.ResolveMX(t.Context(), "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Hosts) != 1 || len(set.Hosts[0].Addrs) != 5 {
		t.Errorf("got %s, want one host with MaxRecords (5) addresses", hostAddrs(set))
	}
}

// aloneErr is what a domain whose only MX target is g gives: an IP address
// is the domain's own misconfiguration, anything else no mail host.
func aloneErr(g string) error {
	if isAddressLiteral(g) {
		return ErrMXAddressLiteral
	}
	return ErrNoMailHost
}
