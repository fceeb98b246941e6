package dnstest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
)

func ask(t *testing.T, srv *dnstest.Server, netw, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: netw, Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(context.Background(), m, srv.Addr())
	if err != nil {
		t.Fatalf("%s %s %s: %v", netw, name, dns.TypeToString[qtype], err)
	}
	return r
}

func zone() dnstest.Zone {
	return dnstest.Zone{
		"example.test.":      {dnstest.MX("mx1.example.test", 10), dnstest.TTL(dnstest.MX("mx2.example.test.", 20), 42)},
		"mx1.example.test.":  {dnstest.A("127.0.0.1"), dnstest.AAAA("::1")},
		"alias.example.test": {dnstest.CNAME("mx1.example.test.")},
		"a.b.example.test.":  {dnstest.A("127.0.0.2")},
	}
}

func TestAnswers(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, zone())
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		wantRcode int
		wantN     int
		wantSOA   bool
	}{
		{name: "mx", qname: "example.test.", qtype: dns.TypeMX, wantRcode: dns.RcodeSuccess, wantN: 2},
		{name: "case-insensitive", qname: "EXAMPLE.Test.", qtype: dns.TypeMX, wantRcode: dns.RcodeSuccess, wantN: 2},
		{name: "a", qname: "mx1.example.test.", qtype: dns.TypeA, wantRcode: dns.RcodeSuccess, wantN: 1},
		{name: "aaaa", qname: "mx1.example.test.", qtype: dns.TypeAAAA, wantRcode: dns.RcodeSuccess, wantN: 1},
		{name: "nodata", qname: "example.test.", qtype: dns.TypeA, wantRcode: dns.RcodeSuccess, wantSOA: true},
		{name: "nxdomain", qname: "nope.example.test.", qtype: dns.TypeA, wantRcode: dns.RcodeNameError, wantSOA: true},
		{name: "empty non-terminal", qname: "b.example.test.", qtype: dns.TypeA, wantRcode: dns.RcodeSuccess, wantSOA: true},
		{name: "cname not chased", qname: "alias.example.test.", qtype: dns.TypeA, wantRcode: dns.RcodeSuccess, wantN: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := ask(t, srv, "udp", tt.qname, tt.qtype)
			if r.Rcode != tt.wantRcode || len(r.Answer) != tt.wantN || (len(r.Ns) == 1) != tt.wantSOA {
				t.Fatalf("got rcode %s, %d answers, %d authority; want %s, %d, soa=%v\n%v",
					dns.RcodeToString[r.Rcode], len(r.Answer), len(r.Ns), dns.RcodeToString[tt.wantRcode], tt.wantN, tt.wantSOA, r)
			}
			if !r.Authoritative {
				t.Error("answer not authoritative")
			}
		})
	}
}

func TestTTLsAsGiven(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, zone())
	srv.SetNegativeTTL(7)
	r := ask(t, srv, "udp", "example.test.", dns.TypeMX)
	got := map[string]uint32{}
	for _, rr := range r.Answer {
		got[rr.(*dns.MX).Mx] = rr.Header().Ttl
	}
	want := map[string]uint32{"mx1.example.test.": dnstest.DefaultTTL, "mx2.example.test.": 42}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("TTLs = %v, want %v", got, want)
	}
	r = ask(t, srv, "udp", "nope.example.test.", dns.TypeMX)
	if soa := r.Ns[0].(*dns.SOA); soa.Minttl != 7 {
		t.Errorf("SOA minimum = %d, want 7", soa.Minttl)
	}
}

func TestBehaviours(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		setup     func(*dnstest.Server)
		qname     string // default example.test.
		netw      string
		wantRcode int
		wantTC    bool
		wantN     int
	}{
		{name: "fail", setup: func(s *dnstest.Server) { s.Fail("example.test") }, netw: "udp", wantRcode: dns.RcodeServerFailure},
		{name: "fail all", setup: func(s *dnstest.Server) { s.Fail(dnstest.All) }, netw: "tcp", wantRcode: dns.RcodeServerFailure},
		{name: "refused", setup: func(s *dnstest.Server) { s.SetRcode("example.test.", dns.RcodeRefused) }, netw: "udp", wantRcode: dns.RcodeRefused},
		{name: "truncate udp", setup: func(s *dnstest.Server) { s.Truncate("example.test.") }, netw: "udp", wantTC: true},
		{name: "truncate tcp complete", setup: func(s *dnstest.Server) { s.Truncate("example.test.") }, netw: "tcp", wantN: 2},
		{name: "healed", setup: func(s *dnstest.Server) { s.Fail("example.test."); s.Heal("example.test.") }, netw: "udp", wantN: 2},
		{name: "set replaces", setup: func(s *dnstest.Server) { s.Set("example.test.", dnstest.NullMX()) }, netw: "udp", wantN: 1},
		{name: "add appends", setup: func(s *dnstest.Server) { s.Add("example.test.", dnstest.MX("mx3.example.test.", 5)) }, netw: "udp", wantN: 3},
		{name: "remove", setup: func(s *dnstest.Server) { s.Remove("example.test."); s.Set("example.test.") }, netw: "udp"},
		{name: "remove leaf", setup: func(s *dnstest.Server) { s.Remove("mx1.example.test.") }, qname: "mx1.example.test.", netw: "udp", wantRcode: dns.RcodeNameError},
		{name: "only other type fails", setup: func(s *dnstest.Server) { s.Only(dns.TypeA).Fail("example.test.") }, netw: "udp", wantN: 2},
		{name: "only this type fails", setup: func(s *dnstest.Server) { s.Only(dns.TypeMX).Fail(dnstest.All) }, netw: "udp", wantRcode: dns.RcodeServerFailure},
		{name: "type-specific wins", setup: func(s *dnstest.Server) {
			s.Fail("example.test.")
			s.Only(dns.TypeMX).SetRcode("example.test.", dns.RcodeRefused)
		}, netw: "udp", wantRcode: dns.RcodeRefused},
		{name: "only healed", setup: func(s *dnstest.Server) {
			s.Only(dns.TypeMX).Drop("example.test.")
			s.Only(dns.TypeMX).Heal("example.test.")
		}, netw: "udp", wantN: 2},
		{name: "delay", setup: func(s *dnstest.Server) { s.Delay("example.test.", time.Millisecond) }, netw: "udp", wantN: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := dnstest.Start(t, zone())
			tt.setup(srv)
			if tt.qname == "" {
				tt.qname = "example.test."
			}
			r := ask(t, srv, tt.netw, tt.qname, dns.TypeMX)
			if r.Rcode != tt.wantRcode || r.Truncated != tt.wantTC || len(r.Answer) != tt.wantN {
				t.Fatalf("got rcode %s tc=%v %d answers, want %s tc=%v %d",
					dns.RcodeToString[r.Rcode], r.Truncated, len(r.Answer), dns.RcodeToString[tt.wantRcode], tt.wantTC, tt.wantN)
			}
		})
	}
}

func TestLargeAnswerTruncatedOverUDP(t *testing.T) {
	t.Parallel()
	var mxs []dns.RR
	for i := range 100 {
		mxs = append(mxs, dnstest.MX(fmt.Sprintf("mx%03d.example.test.", i), uint16(i)))
	}
	srv := dnstest.Start(t, dnstest.Zone{"big.test.": mxs})
	if r := ask(t, srv, "udp", "big.test.", dns.TypeMX); !r.Truncated {
		t.Errorf("UDP answer of 100 MX not truncated (%d records)", len(r.Answer))
	}
	if r := ask(t, srv, "tcp", "big.test.", dns.TypeMX); r.Truncated || len(r.Answer) != 100 {
		t.Errorf("TCP answer: tc=%v, %d records; want complete 100", r.Truncated, len(r.Answer))
	}
}

func TestDropTimesOut(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, zone())
	srv.Drop("example.test.")
	m := new(dns.Msg)
	m.SetQuestion("example.test.", dns.TypeMX)
	c := &dns.Client{Timeout: 50 * time.Millisecond}
	if _, _, err := c.Exchange(m, srv.Addr()); err == nil {
		t.Fatal("dropped query was answered")
	}
}

func TestNoEDNS0(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, zone())
	srv.NoEDNS0()
	m := new(dns.Msg)
	m.SetQuestion("example.test.", dns.TypeMX)
	m.SetEdns0(1232, false)
	r, _, err := (&dns.Client{}).Exchange(m, srv.Addr())
	if err != nil || r.Rcode != dns.RcodeFormatError {
		t.Fatalf("with EDNS0: %v, %v; want FORMERR", r, err)
	}
	if r := ask(t, srv, "udp", "example.test.", dns.TypeMX); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("without EDNS0: %v", r)
	}
}

func TestSeen(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, zone())
	before := srv.Seen("example.test.")
	anyName := srv.Seen(dnstest.All)
	select {
	case <-before:
		t.Fatal("Seen closed before any query")
	default:
	}
	ask(t, srv, "udp", "example.test.", dns.TypeMX)
	<-before
	<-anyName
	<-srv.Seen("EXAMPLE.test") // already seen: closed at once
}

func TestQueryLog(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, zone())
	ask(t, srv, "udp", "example.test.", dns.TypeMX)
	m := new(dns.Msg)
	m.SetQuestion("Example.test.", dns.TypeMX)
	m.SetEdns0(1232, false)
	if _, _, err := (&dns.Client{Net: "tcp"}).Exchange(m, srv.Addr()); err != nil {
		t.Fatal(err)
	}
	ask(t, srv, "udp", "mx1.example.test.", dns.TypeA)
	tests := []struct {
		name  string
		qname string
		qtype uint16
		want  int
	}{
		{name: "all", want: 3},
		{name: "all names", qname: dnstest.All, want: 3},
		{name: "by name", qname: "example.test", want: 2},
		{name: "by name and type", qname: "mx1.example.test.", qtype: dns.TypeA, want: 1},
		{name: "by type", qtype: dns.TypeAAAA, want: 0},
	}
	for _, tt := range tests {
		if got := srv.Count(tt.qname, tt.qtype); got != tt.want {
			t.Errorf("%s: Count = %d, want %d", tt.name, got, tt.want)
		}
	}
	q := srv.Queries()
	if len(q) != 3 || q[1] != (dnstest.Query{Name: "example.test.", Type: dns.TypeMX, Net: "tcp", UDPSize: 1232}) || q[0].UDPSize != 0 {
		t.Errorf("Queries = %+v", q)
	}
}

func TestCloseReleasesDroppedQueries(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, zone())
	srv.Drop(dnstest.All)
	srv.Delay("mx1.example.test.", time.Hour)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m := new(dns.Msg)
		m.SetQuestion("mx1.example.test.", dns.TypeA)
		c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
		_, _, _ = c.Exchange(m, srv.Addr())
	}()
	// Once the server holds the query, Close must not hang on it.
	select {
	case <-srv.Seen("mx1.example.test."):
	case <-done:
		t.Fatal("query ended before it reached the server")
	}
	srv.Close()
	<-done
}
