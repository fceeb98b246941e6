package validator

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// strayServer is a hostile SMTP peer that answers every RCPT with 550 and,
// delay later, sends an extra "250" nobody asked for (delay 0: in the same
// write; delay < 0: just before its answer to the next command, 20 ms
// ahead of it, the worst timing for a client). strays receives one value
// each time an extra reply is written.
type strayServer struct {
	ln     net.Listener
	delay  time.Duration
	accept bool // answer RCPT with 250 (and then the stray) instead of 550
	// hold, when set, replaces the delay: one stray only, after the first
	// RCPT, sent once hold is closed, so a test decides when it arrives.
	hold     chan struct{}
	holdOnce atomic.Bool
	conns    atomic.Int32
	strays   chan struct{}
	wg       sync.WaitGroup
}

func startStrayServer(t *testing.T, delay time.Duration, accept bool) *strayServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &strayServer{ln: ln, delay: delay, accept: accept, strays: make(chan struct{}, 100)}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *strayServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *strayServer) serve(c net.Conn) {
	defer c.Close()
	var mu sync.Mutex
	write := func(lines ...string) {
		mu.Lock()
		defer mu.Unlock()
		c.Write([]byte(strings.Join(lines, "")))
	}
	write("220 mx.example.com ESMTP\r\n")
	br := bufio.NewReader(c)
	var timers []*time.Timer
	pending := false
	defer func() {
		for _, t := range timers {
			t.Stop()
		}
	}()
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(line)), " ")
		if pending {
			pending = false
			write("250 2.1.5 Ok\r\n")
			s.strays <- struct{}{}
			time.Sleep(20 * time.Millisecond)
		}
		switch verb {
		case "EHLO":
			write("250-mx.example.com\r\n250 8BITMIME\r\n")
		case "MAIL", "RSET", "NOOP":
			write("250 2.0.0 Ok\r\n")
		case "RCPT":
			first := "550 5.1.1 No such user\r\n"
			if s.accept {
				first = "250 2.1.5 Ok\r\n"
			}
			if s.delay < 0 {
				write(first)
				pending = true
				continue
			}
			if s.delay == 0 {
				write(first, "250 2.1.5 Ok\r\n")
				s.strays <- struct{}{}
				continue
			}
			write(first)
			if s.hold != nil {
				if s.holdOnce.Swap(true) {
					continue
				}
				s.wg.Go(func() {
					<-s.hold
					write("250 2.1.5 Ok\r\n")
					s.strays <- struct{}{}
				})
				continue
			}
			timers = append(timers, time.AfterFunc(s.delay, func() {
				write("250 2.1.5 Ok\r\n")
				s.strays <- struct{}{}
			}))
		case "QUIT":
			write("221 2.0.0 Bye\r\n")
			return
		default:
			write("502 5.5.2 Error: command not recognized\r\n")
		}
	}
}

// A server that answers RCPT with 550 and then with a stray 250 must never
// make an address valid: a verdict comes only from the reply that provably
// answers its RCPT (a desync ends the session without a verdict).
func TestStrayReplyNeverMakesValid(t *testing.T) {
	t.Parallel()
	for _, delay := range []time.Duration{0, 50 * time.Millisecond, -1} {
		name := fmt.Sprintf("stray %v after the 550", delay)
		if delay < 0 {
			name = "stray just before the next reply"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := startStrayServer(t, delay, false)
			p := newTestProber(t, srv.port(), nil, func(c *ProbeConfig) { c.CatchAllProbe = false; c.Transcript = false })
			mx := mxSet(netip.MustParseAddr("127.0.0.1"))
			valid := 0
			for i := range 12 {
				rcpt := fmt.Sprintf("user%02d@example.com", i)
				got := p.Probe(t.Context(), mx, rcpt, false)
				if got.Outcome.Verdict == Valid || got.Outcome.Verdict == Risky {
					valid++
					t.Errorf("%s: %+v from a stray reply", rcpt, got.Outcome)
				}
			}
			if valid > 0 {
				t.Errorf("%d of 12 addresses valid", valid)
			}
		})
	}
}

// The stray arrives while the session is parked: the next probe must not
// read it as its answer; it is asked on a new session.
func TestStrayReplyWhileParked(t *testing.T) {
	t.Parallel()
	srv := startStrayServer(t, time.Hour, false)
	srv.hold = make(chan struct{})
	p := newTestProber(t, srv.port(), nil, func(c *ProbeConfig) { c.CatchAllProbe = false; c.Transcript = false })
	mx := mxSet(netip.MustParseAddr("127.0.0.1"))
	if got := p.Probe(t.Context(), mx, "alice@example.com", false); got.Outcome.Verdict != Invalid {
		t.Fatalf("alice: %+v err %v, want invalid", got.Outcome, got.Err)
	}
	if p.pool.parked() != 1 {
		t.Fatalf("parked sessions = %d, want 1", p.pool.parked())
	}
	close(srv.hold)
	<-srv.strays // the stray 250 was written to the parked session
	// It may still be in flight on loopback; the parked check peeks the
	// socket, so give the kernel the chance to deliver it. Waiting on a
	// read from our side would consume it.
	waitReadable(t, p)
	got := p.Probe(t.Context(), mx, "bob@example.com", false)
	if got.Outcome.Verdict != Invalid {
		t.Errorf("bob: %+v err %v, want invalid (from a new session)", got.Outcome, got.Err)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("connections = %d, want 2: the parked session that spoke must be dropped", n)
	}
}

// waitReadable waits until the only parked session has unread octets in
// its socket, without consuming them.
func waitReadable(t *testing.T, p *Prober) {
	t.Helper()
	p.pool.mu.Lock()
	var s *smtpSession
	for _, l := range p.pool.idle {
		s = l[0]
	}
	p.pool.mu.Unlock()
	s.c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.c.br.Peek(1); err != nil {
		t.Fatalf("parked session: %v", err)
	}
	s.c.conn.SetReadDeadline(time.Time{})
}
