// Package dnstest runs a small authoritative DNS server on 127.0.0.1 for
// tests: one zone given in Go, UDP and TCP on the same port, and knobs to make
// chosen names misbehave (SERVFAIL, truncation, silence, delay) so resolver
// code can be tested against real packets instead of mocks.
//
//	srv := dnstest.Start(t, dnstest.Zone{
//		"example.test.":     {dnstest.MX("mx1.example.test.", 10)},
//		"mx1.example.test.": {dnstest.A("127.0.0.1")},
//	})
//	srv.Fail("example.test.")        // SERVFAIL from now on
//	n := srv.Count("example.test.", dns.TypeMX)
//
// Behaviour follows an authoritative server: NXDOMAIN for names not in the
// zone (RFC 1034 §4.3.2), NODATA (NOERROR, empty answer) for names that exist
// without the asked type, with an SOA in the authority section whose minimum
// is the negative TTL (RFC 2308 §3). CNAMEs are returned as found and not
// chased, so the client under test has to follow them. UDP answers larger than
// the client's advertised size (512 without EDNS0) are truncated with the TC
// bit set, as a real server does.
//
// It is built on github.com/miekg/dns, the same library the validator's
// resolver uses, so client and server share one wire implementation and the
// module gains no extra dependency.
package dnstest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL the record constructors give; change one record's
// with TTL.
const DefaultTTL = 300

// All, given as the name to a behaviour method (Fail, Drop, …), applies it to
// every name the server is asked about.
const All = "*"

// Zone maps owner names to their records. Names may omit the trailing dot and
// are case-insensitive; each record's header name is set from its key, so the
// constructors below leave it empty.
type Zone map[string][]dns.RR

// A returns an A record; it panics on a malformed or non-IPv4 address, since
// a test zone with a typo is a bug in the test.
func A(ip string) dns.RR {
	a := mustAddr(ip)
	if !a.Is4() {
		panic(fmt.Sprintf("dnstest.A: %q is not an IPv4 address", ip))
	}
	return &dns.A{Hdr: hdr(dns.TypeA), A: net.IP(a.AsSlice())}
}

// AAAA returns an AAAA record. Any IP literal is accepted, including
// IPv4-mapped ones, so tests can serve hostile data.
func AAAA(ip string) dns.RR {
	a := mustAddr(ip)
	b := a.As16()
	return &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: net.IP(b[:])}
}

// MX returns an MX record pointing at host (made fully qualified).
func MX(host string, pref uint16) dns.RR {
	return &dns.MX{Hdr: hdr(dns.TypeMX), Preference: pref, Mx: dns.Fqdn(host)}
}

// NullMX returns the RFC 7505 "MX 0 ." record.
func NullMX() dns.RR { return MX(".", 0) }

// CNAME returns a CNAME record pointing at target.
func CNAME(target string) dns.RR {
	return &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(target)}
}

// TXT returns a TXT record with the given strings.
func TXT(s ...string) dns.RR {
	return &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: s}
}

// TTL sets rr's TTL in seconds and returns it, for use inside a Zone literal:
// dnstest.TTL(dnstest.A("127.0.0.1"), 60).
func TTL(rr dns.RR, seconds uint32) dns.RR {
	rr.Header().Ttl = seconds
	return rr
}

func hdr(t uint16) dns.RR_Header {
	return dns.RR_Header{Rrtype: t, Class: dns.ClassINET, Ttl: DefaultTTL}
}

func mustAddr(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		panic(fmt.Sprintf("dnstest: %v", err))
	}
	return a
}

// Query is one question the server received.
type Query struct {
	Name string // lower-case, fully qualified
	Type uint16
	Net  string // "udp" or "tcp"
	// UDPSize is the EDNS0 buffer size the client advertised, 0 without EDNS0.
	UDPSize uint16
}

// behaviour is how the server misbehaves for one name.
type behaviour struct {
	rcode    int // -1: answer normally
	truncate bool
	drop     bool
	delay    time.Duration
}

// Server is a running test DNS server. Its methods are safe for concurrent
// use, including while queries are being answered.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server
	done chan struct{} // closed on Close, releases dropped and delayed queries

	mu      sync.Mutex
	zone    map[string][]dns.RR
	behave  map[bkey]behaviour
	queries []Query
	waiters map[string][]chan struct{}
	negTTL  uint32
	noEDNS  bool
	closed  bool
}

// Start serves zone on 127.0.0.1 (UDP and TCP, one port) until the test ends.
// It returns once both listeners are serving.
func Start(tb testing.TB, zone Zone) *Server {
	tb.Helper()
	s := &Server{
		done:    make(chan struct{}),
		zone:    make(map[string][]dns.RR),
		behave:  make(map[bkey]behaviour),
		waiters: make(map[string][]chan struct{}),
		negTTL:  60,
	}
	for name, rrs := range zone {
		s.Set(name, rrs...)
	}

	pc, ln, err := listenPair()
	if err != nil {
		tb.Fatalf("dnstest: %v", err)
	}
	s.addr = pc.LocalAddr().String()

	h := dns.HandlerFunc(s.serve)
	udpUp, tcpUp := make(chan struct{}), make(chan struct{})
	s.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(udpUp) }}
	s.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: func() { close(tcpUp) }}
	errc := make(chan error, 2)
	go func() { errc <- s.udp.ActivateAndServe() }()
	go func() { errc <- s.tcp.ActivateAndServe() }()
	for _, up := range []chan struct{}{udpUp, tcpUp} {
		select {
		case <-up:
		case err := <-errc:
			tb.Fatalf("dnstest: server did not start: %v", err)
		}
	}
	tb.Cleanup(s.Close)
	return s
}

// listenPair binds UDP on an ephemeral loopback port and TCP on the same
// port. Another process may hold the TCP side of the port the kernel chose
// for UDP, so it tries a few ports.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("no free UDP+TCP port pair on 127.0.0.1: %w", lastErr)
}

// Addr is the server's "127.0.0.1:port", for both UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// Close stops the server and releases queries held by Drop or Delay. Start
// registers it with t.Cleanup; calling it earlier simulates a dead server.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.done)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.udp.ShutdownContext(ctx)
	_ = s.tcp.ShutdownContext(ctx)
}

func key(name string) string {
	if name == All {
		return All
	}
	return strings.ToLower(dns.Fqdn(name))
}

// Set replaces the records of name. With no records the name still exists,
// so queries for it get NODATA rather than NXDOMAIN.
func (s *Server) Set(name string, rrs ...dns.RR) {
	k := key(name)
	cp := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		rr = dns.Copy(rr)
		rr.Header().Name = k
		if rr.Header().Class == 0 {
			rr.Header().Class = dns.ClassINET
		}
		cp = append(cp, rr)
	}
	s.mu.Lock()
	s.zone[k] = cp
	s.mu.Unlock()
}

// Add appends records to name.
func (s *Server) Add(name string, rrs ...dns.RR) {
	s.mu.Lock()
	old := slices.Clone(s.zone[key(name)])
	s.mu.Unlock()
	s.Set(name, append(old, rrs...)...)
}

// Remove deletes name: queries for it get NXDOMAIN from now on.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	delete(s.zone, key(name))
	s.mu.Unlock()
}

// SetNegativeTTL sets the SOA minimum (and SOA TTL) sent with NXDOMAIN and
// NODATA answers; the default is 60 seconds.
func (s *Server) SetNegativeTTL(seconds uint32) {
	s.mu.Lock()
	s.negTTL = seconds
	s.mu.Unlock()
}

// bkey selects the queries a behaviour applies to; qtype 0 means any type.
type bkey struct {
	name  string
	qtype uint16
}

// Faults sets misbehaviour for queries of one type; see Server.Only.
type Faults struct {
	s     *Server
	qtype uint16
}

// NoEDNS0 makes the server answer FORMERR to every query carrying an EDNS0
// OPT record, as pre-EDNS servers do (RFC 6891 §7).
func (s *Server) NoEDNS0() {
	s.mu.Lock()
	s.noEDNS = true
	s.mu.Unlock()
}

// Only returns a view whose methods make only queries of type qtype
// misbehave, e.g. srv.Only(dns.TypeAAAA).Fail("mx1.example.test."): the MX
// and A answers stay good while AAAA gets SERVFAIL. A type-specific setting
// wins over one for every type.
func (s *Server) Only(qtype uint16) *Faults { return &Faults{s: s, qtype: qtype} }

func (f *Faults) update(name string, fn func(*behaviour)) {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	k := bkey{key(name), f.qtype}
	b, ok := s.behave[k]
	if !ok {
		b = behaviour{rcode: -1}
	}
	fn(&b)
	s.behave[k] = b
}

// SetRcode makes matching queries for name (or All) answer with rcode and no
// records, e.g. dns.RcodeRefused.
func (f *Faults) SetRcode(name string, rcode int) {
	f.update(name, func(b *behaviour) { b.rcode = rcode })
}

// Fail makes matching queries for name answer SERVFAIL.
func (f *Faults) Fail(name string) { f.SetRcode(name, dns.RcodeServerFailure) }

// Truncate makes UDP answers for name empty with the TC bit set; TCP answers
// stay complete, so a client must retry over TCP (RFC 7766 §5).
func (f *Faults) Truncate(name string) {
	f.update(name, func(b *behaviour) { b.truncate = true })
}

// Drop makes the server never answer matching queries, so clients time out.
func (f *Faults) Drop(name string) {
	f.update(name, func(b *behaviour) { b.drop = true })
}

// Delay holds each matching answer for d (released early by Close).
func (f *Faults) Delay(name string, d time.Duration) {
	f.update(name, func(b *behaviour) { b.delay = d })
}

// Heal clears what was set for name through this view (with All, what was
// set for All; names set one by one keep theirs).
func (f *Faults) Heal(name string) {
	f.s.mu.Lock()
	delete(f.s.behave, bkey{key(name), f.qtype})
	f.s.mu.Unlock()
}

// SetRcode makes every query for name (or All) answer with rcode and no
// records, e.g. dns.RcodeRefused.
func (s *Server) SetRcode(name string, rcode int) { s.Only(0).SetRcode(name, rcode) }

// Fail makes queries for name answer SERVFAIL.
func (s *Server) Fail(name string) { s.Only(0).Fail(name) }

// Truncate makes UDP answers for name empty with the TC bit set; TCP answers
// stay complete, so a client must retry over TCP (RFC 7766 §5).
func (s *Server) Truncate(name string) { s.Only(0).Truncate(name) }

// Drop makes the server never answer queries for name, so clients time out.
func (s *Server) Drop(name string) { s.Only(0).Drop(name) }

// Delay holds each answer for name for d (released early by Close).
func (s *Server) Delay(name string, d time.Duration) { s.Only(0).Delay(name, d) }

// Heal clears the behaviour set for name for every type (with All, the one
// set for All; names set one by one keep theirs). Settings made through Only
// are cleared through Only.
func (s *Server) Heal(name string) { s.Only(0).Heal(name) }

// Queries returns a copy of every question received so far, in order.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.queries)
}

// Count is the number of questions received for name (all names when name is
// "" or All) of type qtype (all types when qtype is 0, dns.TypeNone).
func (s *Server) Count(name string, qtype uint16) int {
	k := ""
	if name != "" && name != All {
		k = key(name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, q := range s.queries {
		if (k == "" || q.Name == k) && (qtype == dns.TypeNone || q.Type == qtype) {
			n++
		}
	}
	return n
}

// Seen returns a channel that is closed once a query for name (any name with
// All) has arrived, at once if one already has. Tests wait on it instead of
// sleeping, e.g. to know a dropped query is being held.
func (s *Server) Seen(name string) <-chan struct{} {
	k := key(name)
	c := make(chan struct{})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.queries {
		if k == All || q.Name == k {
			close(c)
			return c
		}
	}
	s.waiters[k] = append(s.waiters[k], c)
	return c
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcodeFormatError(req)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	netw := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		netw = "tcp"
	}

	s.mu.Lock()
	var udpSize uint16
	if opt := req.IsEdns0(); opt != nil {
		udpSize = opt.UDPSize()
	}
	s.queries = append(s.queries, Query{Name: name, Type: q.Qtype, Net: netw, UDPSize: udpSize})
	for _, k := range []string{name, All} {
		for _, c := range s.waiters[k] {
			close(c)
		}
		delete(s.waiters, k)
	}
	b := behaviour{rcode: -1}
	for _, k := range []bkey{{name, q.Qtype}, {name, 0}, {All, q.Qtype}, {All, 0}} {
		if v, ok := s.behave[k]; ok {
			b = v
			break
		}
	}
	m := s.answer(req, name, q.Qtype)
	if s.noEDNS && req.IsEdns0() != nil {
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
	}
	s.mu.Unlock()

	if b.drop {
		return
	}
	if b.delay > 0 {
		t := time.NewTimer(b.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.done:
			return
		}
	}
	if b.rcode >= 0 {
		m = new(dns.Msg)
		m.SetRcode(req, b.rcode)
	}
	if netw == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		if b.truncate {
			m.Answer, m.Ns, m.Extra = nil, nil, nil
			m.Truncated = true
		} else {
			m.Truncate(size) // sets TC when the answer does not fit
		}
	}
	_ = w.WriteMsg(m)
}

// answer builds the authoritative answer from the zone; s.mu is held.
func (s *Server) answer(req *dns.Msg, name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	rrs, exists := s.zone[name]
	if !exists {
		// An empty non-terminal (a name with descendants but no records)
		// exists too: NODATA, not NXDOMAIN (RFC 8020 §2).
		for n := range s.zone {
			if strings.HasSuffix(n, "."+name) {
				exists = true
				break
			}
		}
	}
	if !exists {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{s.soa(name)}
		return m
	}
	for _, rr := range rrs {
		t := rr.Header().Rrtype
		if t == qtype || qtype == dns.TypeANY || (t == dns.TypeCNAME && qtype != dns.TypeCNAME) {
			m.Answer = append(m.Answer, dns.Copy(rr))
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{s.soa(name)}
	}
	return m
}

// soa is the authority record of negative answers. The server pretends to be
// authoritative for the parent of every name, which is all a resolver needs
// for negative caching (RFC 2308 §5).
func (s *Server) soa(name string) dns.RR {
	owner := "."
	if i := strings.IndexByte(name, '.'); i >= 0 && i+1 < len(name) {
		owner = name[i+1:]
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: owner, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.negTTL},
		Ns:      "ns.dnstest.",
		Mbox:    "hostmaster.dnstest.",
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.negTTL,
	}
}
