package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// resolver asks the configured recursive servers directly with miekg/dns.
// The validator's DNSResolver only answers MX and address questions; the
// audit also needs PTR and TXT, and must see NXDOMAIN apart from SERVFAIL
// (a DNSBL's "not listed" is an NXDOMAIN).
type resolver struct {
	servers  []string
	udp, tcp *dns.Client
}

// ednsUDPSize is the EDNS0 buffer advertised (DNS flag day 2020), as the
// validator does.
const ednsUDPSize = 1232

func newResolver(servers []string, timeout time.Duration) (*resolver, error) {
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("no DNS servers given and /etc/resolv.conf unusable: %w", err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, errors.New("no DNS servers given and none in /etc/resolv.conf")
		}
	}
	var out []string
	for _, s := range servers {
		if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
			out = append(out, ap.String())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("DNS server %q: want an IP address, optionally with :port", s)
		}
		out = append(out, netip.AddrPortFrom(a, 53).String())
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &resolver{
		servers: out,
		udp:     &dns.Client{Net: "udp", Timeout: timeout, UDPSize: ednsUDPSize},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
	}, nil
}

// lookupError is a failed query. NotFound is NXDOMAIN; Temporary is
// SERVFAIL, REFUSED, a timeout or a network error.
type lookupError struct {
	Name, Type string
	Rcode      string
	NotFound   bool
	Temporary  bool
	Err        error
}

func (e *lookupError) Error() string {
	s := fmt.Sprintf("DNS %s %s", e.Type, strings.TrimSuffix(e.Name, "."))
	switch {
	case e.NotFound:
		return s + ": no such name (NXDOMAIN)"
	case e.Rcode != "":
		s += ": " + e.Rcode
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *lookupError) Unwrap() error { return e.Err }

func isNotFound(err error) bool {
	var le *lookupError
	return errors.As(err, &le) && le.NotFound
}

// query returns the answer records of type qtype for name (any owner, so a
// recursive server's CNAME chain is followed for us). NODATA is an empty
// slice and no error. Each server is tried in turn while the failure is
// temporary.
func (r *resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	name = dns.Fqdn(name)
	tname := dns.TypeToString[qtype]
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, &lookupError{Name: name, Type: tname, Err: errors.New("not a valid DNS name")}
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(ednsUDPSize, false)
	var last error
	for _, srv := range r.servers {
		if err := ctx.Err(); err != nil {
			return nil, &lookupError{Name: name, Type: tname, Temporary: true, Err: err}
		}
		resp, _, err := r.udp.ExchangeContext(ctx, m, srv)
		if err == nil && resp.Truncated {
			// RFC 7766 §5: a truncated UDP answer is retried over TCP.
			resp, _, err = r.tcp.ExchangeContext(ctx, m, srv)
		}
		if err != nil {
			last = &lookupError{Name: name, Type: tname, Temporary: true, Err: fmt.Errorf("server %s: %w", srv, err)}
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
			var out []dns.RR
			for _, rr := range resp.Answer {
				if rr.Header().Rrtype == qtype {
					out = append(out, rr)
				}
			}
			return out, nil
		case dns.RcodeNameError:
			return nil, &lookupError{Name: name, Type: tname, Rcode: "NXDOMAIN", NotFound: true}
		default:
			last = &lookupError{Name: name, Type: tname, Rcode: dns.RcodeToString[resp.Rcode], Temporary: true,
				Err: fmt.Errorf("from %s", srv)}
		}
	}
	return nil, last
}

// addrs returns the A and AAAA addresses of host. NXDOMAIN on both is
// NotFound; a temporary failure of either is returned unless the other gave
// addresses.
func (r *resolver) addrs(ctx context.Context, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, host, qt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range rrs {
			switch v := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(v.A); ok {
					out = append(out, a.Unmap())
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA); ok {
					out = append(out, a)
				}
			}
		}
	}
	if len(out) > 0 || len(errs) == 0 {
		return out, nil
	}
	for _, err := range errs {
		if !isNotFound(err) {
			return nil, err
		}
	}
	return nil, errs[0]
}

// ptr returns the PTR names of ip, lower-case without the trailing dot.
func (r *resolver) ptr(ctx context.Context, ip netip.Addr) ([]string, error) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return nil, err
	}
	rrs, err := r.query(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		out = append(out, hostname(rr.(*dns.PTR).Ptr))
	}
	return out, nil
}

// txt returns each TXT record as one string: a record's character-strings
// are concatenated without separator (RFC 7208 §3.3).
func (r *resolver) txt(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

func hostname(s string) string { return strings.ToLower(strings.TrimSuffix(s, ".")) }

// spfResolver adapts resolver to blitiri.com.ar/go/spf, which expects the
// errors of *net.Resolver: an unwrapped *net.DNSError whose IsNotFound and
// IsTemporary fields tell NXDOMAIN from a failure.
type spfResolver struct {
	r *resolver
	// record is called with the SPF record of each domain evaluated, so
	// the finding can show what was read.
	record func(domain string, txts []string)
}

func netErr(err error) error {
	var le *lookupError
	if errors.As(err, &le) {
		return &net.DNSError{Err: le.Error(), Name: strings.TrimSuffix(le.Name, "."), IsNotFound: le.NotFound, IsTemporary: le.Temporary}
	}
	return &net.DNSError{Err: err.Error(), IsTemporary: true}
}

func (s spfResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, err := s.r.txt(ctx, name)
	if err != nil {
		return nil, netErr(err)
	}
	if s.record != nil {
		s.record(name, txts)
	}
	return txts, nil
}

func (s spfResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := s.r.query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, netErr(err)
	}
	var out []*net.MX
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

func (s spfResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	as, err := s.r.addrs(ctx, host)
	if err != nil {
		return nil, netErr(err)
	}
	out := make([]net.IPAddr, 0, len(as))
	for _, a := range as {
		out = append(out, net.IPAddr{IP: a.AsSlice()})
	}
	return out, nil
}

func (s spfResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: addr}
	}
	names, err := s.r.ptr(ctx, a)
	if err != nil {
		return nil, netErr(err)
	}
	for i, n := range names {
		names[i] = n + "."
	}
	return names, nil
}
