package validator_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/validator"
)

// socks5 is a small RFC 1928/1929 SOCKS5 server on loopback (CONNECT only,
// optional username/password), enough to prove the prober really tunnels
// through a proxy: it records every target it was asked to connect to.
type socks5 struct {
	ln         net.Listener
	user, pass string
	mu         sync.Mutex
	targets    []string
	authFails  int
}

func startSOCKS5(t *testing.T, user, pass string) *socks5 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &socks5{ln: ln, user: user, pass: pass}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *socks5) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != 5 {
		return
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return
	}
	want := byte(0) // no authentication
	if s.user != "" {
		want = 2 // username/password, RFC 1929
	}
	found := false
	for _, m := range methods {
		found = found || m == want
	}
	if !found {
		c.Write([]byte{5, 0xff})
		return
	}
	c.Write([]byte{5, want})
	if want == 2 {
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		u := make([]byte, b[1])
		io.ReadFull(c, u)
		pl := make([]byte, 1)
		io.ReadFull(c, pl)
		p := make([]byte, pl[0])
		io.ReadFull(c, p)
		if string(u) != s.user || string(p) != s.pass {
			s.mu.Lock()
			s.authFails++
			s.mu.Unlock()
			c.Write([]byte{1, 1})
			return
		}
		c.Write([]byte{1, 0})
	}
	req := make([]byte, 4)
	if _, err := io.ReadFull(c, req); err != nil || req[1] != 1 {
		return
	}
	var host string
	switch req[3] {
	case 1:
		ip := make([]byte, 4)
		io.ReadFull(c, ip)
		host = netip.AddrFrom4([4]byte(ip)).String()
	case 4:
		ip := make([]byte, 16)
		io.ReadFull(c, ip)
		host = netip.AddrFrom16([16]byte(ip)).String()
	case 3:
		l := make([]byte, 1)
		io.ReadFull(c, l)
		name := make([]byte, l[0])
		io.ReadFull(c, name)
		host = string(name)
	default:
		return
	}
	pb := make([]byte, 2)
	io.ReadFull(c, pb)
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(pb))))
	s.mu.Lock()
	s.targets = append(s.targets, target)
	s.mu.Unlock()
	up, err := net.Dial("tcp", target)
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // connection refused
		return
	}
	defer up.Close()
	c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0})
	c.SetDeadline(time.Time{})
	go io.Copy(up, c)
	io.Copy(c, up)
}

func (s *socks5) seen() ([]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.targets...), s.authFails
}

func TestProbeThroughSOCKS5(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, user, pass, url string
		wantVerdict           validator.Verdict
	}{
		{"no auth", "", "", "socks5://%s", validator.Valid},
		{"user and password", "probe", "s3cret", "socks5://probe:s3cret@%s", validator.Valid},
		{"wrong password", "probe", "s3cret", "socks5://probe:guess@%s", validator.Unknown},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			proxy := startSOCKS5(t, tt.user, tt.pass)
			srv := smtptest.Start(t, smtptest.Options{Rcpt: map[string]*smtp.SMTPError{"alice@example.test": nil},
				RcptDefault: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "unknown"}})
			p, err := validator.NewProber(validator.ProbeConfig{HeloName: "probe.mxprobe.test", MailFrom: "verify@mxprobe.test",
				Port: srv.Port(), ProxyURL: fmt.Sprintf(tt.url, proxy.ln.Addr().String()), CatchAllProbe: true,
				ConnectTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second}, nil)
			if err != nil {
				t.Fatal(err)
			}
			mx := validator.MXSet{Domain: "example.test", Hosts: []validator.MXHost{{Name: "mx.example.test", Pref: 10,
				Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}}}
			res := p.Probe(context.Background(), mx, "alice@example.test", false)
			if res.Outcome.Verdict != tt.wantVerdict {
				t.Fatalf("verdict %s/%s (err %v), want %s", res.Outcome.Verdict, res.Outcome.Reason, res.Err, tt.wantVerdict)
			}
			targets, fails := proxy.seen()
			want := net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port()))
			if tt.wantVerdict == validator.Valid {
				if len(targets) == 0 || targets[0] != want {
					t.Errorf("proxy was asked for %q, want %q: the probe did not go through the proxy", targets, want)
				}
				return
			}
			if fails == 0 || srv.Conns() != 0 {
				t.Errorf("auth failures %d, server connections %d: a refused proxy must stop the probe", fails, srv.Conns())
			}
			if res.Outcome.Verdict == validator.Invalid || res.Err == nil || errors.Is(res.Err, context.Canceled) {
				t.Errorf("proxy refusal gave %s/%s err %v", res.Outcome.Verdict, res.Outcome.Reason, res.Err)
			}
		})
	}
}
