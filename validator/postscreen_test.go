package validator

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// screenServer plays a postscreen-like screen: its first refuse connections
// (-1: all) answer "450 4.3.2 Service currently unavailable" at the given
// stage (banner or RCPT); later ones reach a mail server on which only
// alice@ exists.
type screenServer struct {
	ln     net.Listener
	refuse int32
	stage  Stage
	conns  atomic.Int32
	wg     sync.WaitGroup
}

func startScreenServer(t *testing.T, refuse int32, stage Stage) *screenServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &screenServer{ln: ln, refuse: refuse, stage: stage}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := s.conns.Add(1)
			refused := s.refuse < 0 || n <= s.refuse
			s.wg.Go(func() { s.serve(c, refused) })
		}
	})
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *screenServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *screenServer) serve(c net.Conn, refused bool) {
	defer c.Close()
	const unavailable = "450 4.3.2 Service currently unavailable\r\n"
	if refused && s.stage == StageBanner {
		c.Write([]byte(unavailable))
		return
	}
	c.Write([]byte("220 mx.example.com ESMTP\r\n"))
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
		reply := "250 2.0.0 Ok\r\n"
		switch strings.ToUpper(verb) {
		case "EHLO":
			reply = "250 mx.example.com\r\n"
		case "RCPT":
			switch {
			case refused:
				reply = unavailable
			case !strings.Contains(arg, "<alice@"):
				reply = "550 5.1.1 No such user\r\n"
			}
		case "QUIT":
			c.Write([]byte("221 2.0.0 Bye\r\n"))
			return
		}
		c.Write([]byte(reply))
	}
}

// A screen's first-contact 450 4.3.2 is followed by one new connection,
// admitted by the Gate, whose answer decides; a screen that never lets us
// through costs exactly one extra connection and answers unknown.
func TestFirstContactRefusalConnectsAgainOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		refuse    int32
		stage     Stage
		rcpt      string
		want      Verdict
		wantConns int32
	}{
		{name: "450 at RCPT, then valid", refuse: 1, stage: StageRcpt, rcpt: "alice@example.com", want: Valid, wantConns: 2},
		{name: "450 at RCPT, then invalid", refuse: 1, stage: StageRcpt, rcpt: "bob@example.com", want: Invalid, wantConns: 2},
		{name: "450 banner, then valid", refuse: 1, stage: StageBanner, rcpt: "alice@example.com", want: Valid, wantConns: 2},
		{name: "always refused: bounded", refuse: -1, stage: StageRcpt, rcpt: "alice@example.com", want: Unknown, wantConns: 2},
		{name: "always refused at the banner: bounded", refuse: -1, stage: StageBanner, rcpt: "alice@example.com", want: Unknown, wantConns: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startScreenServer(t, tt.refuse, tt.stage)
			g := &recordingGate{}
			p := newTestProber(t, srv.port(), g, func(c *ProbeConfig) { c.CatchAllProbe = false })
			got := p.Probe(t.Context(), mxSet(netip.MustParseAddr("127.0.0.1")), tt.rcpt, false)
			if got.Outcome.Verdict != tt.want {
				t.Errorf("got %+v at %s, err %v; want %s", got.Outcome, got.Stage, got.Err, tt.want)
			}
			if tt.want == Unknown && !got.Outcome.Retryable {
				t.Errorf("unknown but not retryable: %+v", got.Outcome)
			}
			p.Close()
			if n := srv.conns.Load(); n != tt.wantConns {
				t.Errorf("connections = %d, want %d", n, tt.wantConns)
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			if len(g.admitted) != int(tt.wantConns) {
				t.Errorf("gate admitted %d sessions, want %d (a reconnect is a new session)", len(g.admitted), tt.wantConns)
			}
		})
	}
}
