// Package smtptest starts SMTP peers on loopback for tests of the prober:
//
//   - Start: a real emersion/go-smtp server with a programmable backend
//     (a reply per recipient, SMTPUTF8, STARTTLS with a self-signed
//     certificate made in-process, or a STARTTLS whose handshake fails),
//     counting connections, sessions and commands.
//   - StartScript: a transcript-driven fake in the style of chasquid's tests,
//     for conversations go-smtp cannot hold (banner refusals, EHLO
//     rejection) and for hostile peers (no banner, endless lines, slow
//     bytes, close after accept).
//
// go-smtp is used because it is a complete, independent server: a probe that
// passes against it speaks SMTP, not just our own idea of it.
package smtptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Options programs a go-smtp server.
type Options struct {
	// Domain is the server's name in its banner; default "mx.test".
	Domain string
	// Rcpt maps a recipient (as sent, case-sensitive) to its reply; a
	// recipient not in the map gets RcptDefault. A nil reply accepts.
	Rcpt map[string]*smtp.SMTPError
	// RcptFunc, when set, answers every RCPT instead of Rcpt and
	// RcptDefault (nil accepts); it may block to hold a probe mid-flight.
	RcptFunc func(to string) *smtp.SMTPError
	// RcptDefault answers recipients not in Rcpt; nil accepts them all,
	// which makes the server a catch-all.
	RcptDefault *smtp.SMTPError
	// Mail, when set, is the reply to every MAIL FROM.
	Mail *smtp.SMTPError
	// SMTPUTF8 advertises SMTPUTF8 (RFC 6531).
	SMTPUTF8 bool
	// TLS advertises STARTTLS with a self-signed certificate for Domain.
	TLS bool
	// BrokenTLS advertises STARTTLS but fails every handshake.
	BrokenTLS bool
	// Listen is where to listen; zero means 127.0.0.1:0. The prober uses
	// one port for every MX host, so a second server for the same probe
	// listens on another loopback address (127.0.0.2) with the first's port.
	Listen netip.AddrPort
	// ReplyDelay holds back the server's answer to each batch of client
	// input (and the banner) by this long: network latency on loopback.
	// A pipelined group of commands arriving together costs one delay, as
	// it costs one round trip on a real network.
	ReplyDelay time.Duration
	// ErrorLimit, when positive, ends a session as Postfix's
	// smtpd_hard_error_limit does: once the server has sent that many 4yz
	// or 5yz replies in it, "421 4.7.0 <domain> Error: too many errors"
	// follows the reply that reached the limit at once, unasked, and the
	// connection is closed. Plaintext sessions only.
	ErrorLimit int
}

// Server is a running go-smtp server on 127.0.0.1.
type Server struct {
	srv  *smtp.Server
	addr netip.AddrPort
	opts Options
	cert *x509.Certificate

	// SessionStarted receives one value per new session (at EHLO/HELO),
	// without blocking the server: buffered, extra signals are dropped.
	SessionStarted chan struct{}
	// QuitReceived receives one value per QUIT the client sent, likewise.
	QuitReceived chan struct{}

	mu        sync.Mutex
	conns     int
	live      int         // connections open now
	maxLive   int         // most connections open at once
	connTimes []time.Time // when each connection was accepted
	sessions  int
	commands  map[string]int
	rcpts     []string
	froms     []string
	tlsUsed   int
	sent      map[string]int
	limited   int
}

// Start starts a server and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Domain == "" {
		opts.Domain = "mx.test"
	}
	s := &Server{opts: opts, commands: map[string]int{}, sent: map[string]int{},
		SessionStarted: make(chan struct{}, 64), QuitReceived: make(chan struct{}, 64)}
	srv := smtp.NewServer(backend{s})
	srv.Domain = opts.Domain
	srv.EnableSMTPUTF8 = opts.SMTPUTF8
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	switch {
	case opts.BrokenTLS:
		srv.TLSConfig = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return nil, errors.New("smtptest: broken TLS on purpose")
		}}
	case opts.TLS:
		cert, leaf := selfSigned(t, opts.Domain)
		s.cert = leaf
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	ln := listen(t, opts.Listen)
	s.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	s.srv = srv
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(countingListener{ln, s})
	}()
	t.Cleanup(func() {
		srv.Close()
		// Close can run before Serve registered the listener; close it
		// here too so Serve's Accept returns.
		ln.Close()
		<-done
	})
	return s
}

// Addr is the server's loopback address and port.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Port is the server's port.
func (s *Server) Port() int { return int(s.addr.Port()) }

// CertPool trusts the server's self-signed certificate (Options.TLS).
func (s *Server) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	if s.cert != nil {
		p.AddCert(s.cert)
	}
	return p
}

// Conns counts accepted TCP connections.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// MaxLiveConns is the most sessions that were open at once: each from its
// accept until the client's QUIT or end of stream (or the server's close).
func (s *Server) MaxLiveConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxLive
}

// ConnTimes returns when each TCP connection was accepted, in order.
func (s *Server) ConnTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.connTimes...)
}

// Sessions counts SMTP sessions (go-smtp opens one at EHLO/HELO, and again
// after STARTTLS).
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// Commands counts MAIL, RCPT and DATA commands that reached the backend.
func (s *Server) Commands(verb string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commands[strings.ToUpper(verb)]
}

// Rcpts returns the recipients asked for, in order.
func (s *Server) Rcpts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.rcpts...)
}

// Sent counts the command lines with this verb (EHLO, RSET, QUIT...) that
// clients sent, as read off the wire before any STARTTLS.
func (s *Server) Sent(verb string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent[strings.ToUpper(verb)]
}

// Froms returns the senders given in MAIL FROM, in order.
func (s *Server) Froms() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.froms...)
}

// ErrorLimitHits counts the sessions ended by Options.ErrorLimit.
func (s *Server) ErrorLimitHits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limited
}

// TLSSessions counts sessions that ran over TLS.
func (s *Server) TLSSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tlsUsed
}

type countingListener struct {
	net.Listener
	s *Server
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.mu.Lock()
	l.s.conns++
	l.s.live++
	l.s.maxLive = max(l.s.maxLive, l.s.live)
	l.s.connTimes = append(l.s.connTimes, time.Now())
	l.s.mu.Unlock()
	return &wireConn{Conn: c, s: l.s, owed: true}, nil
}

// wireConn reads the client's command verbs off the wire and delays replies
// by Options.ReplyDelay.
type wireConn struct {
	net.Conn
	s *Server

	closeOnce sync.Once

	mu      sync.Mutex
	owed    bool // input arrived (or the banner is due) since the last write
	partial []byte
	tls     bool // after STARTTLS the bytes are ciphertext: stop reading verbs
	errors  int  // 4yz/5yz replies sent, for Options.ErrorLimit
}

// Close counts the connection as no longer open, once.
func (c *wireConn) Close() error {
	c.ended()
	return c.Conn.Close()
}

// ended counts the session as no longer open, once: when the client's QUIT
// or end of stream arrives, or the server closes. Not when the server gets
// round to closing after a QUIT: with ReplyDelay that is a delay later, and
// a client that does not wait for the 221 (ours does not) has by then
// ended the session and may have opened the next one, which would count
// as one session more at once than the client ever held.
func (c *wireConn) ended() {
	c.closeOnce.Do(func() {
		c.s.mu.Lock()
		c.s.live--
		c.s.mu.Unlock()
	})
}

func (c *wireConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.ended()
	}
	if n > 0 {
		c.mu.Lock()
		c.owed = true
		if !c.tls {
			c.scan(p[:n])
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *wireConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	owed := c.owed
	c.owed = false
	c.mu.Unlock()
	if owed && c.s.opts.ReplyDelay > 0 {
		// Simulated latency, not a wait for an event.
		time.Sleep(c.s.opts.ReplyDelay)
	}
	if lim := c.s.opts.ErrorLimit; lim > 0 && !c.tls {
		for _, line := range strings.Split(string(p), "\n") {
			if len(line) >= 4 && (line[0] == '4' || line[0] == '5') && line[3] == ' ' && !strings.HasPrefix(line, "421") {
				c.errors++
			}
		}
		if c.errors >= lim {
			// Postfix writes the 421 and flushes both replies together
			// as it disconnects.
			out := append(append([]byte{}, p...), "421 4.7.0 "+c.s.opts.Domain+" Error: too many errors\r\n"...)
			_, err := c.Conn.Write(out)
			c.s.mu.Lock()
			c.s.limited++
			c.s.mu.Unlock()
			c.Conn.Close()
			return len(p), err
		}
	}
	n, err := c.Conn.Write(p)
	return n, err
}

// scan counts complete lines by verb; c.mu is held.
func (c *wireConn) scan(b []byte) {
	c.partial = append(c.partial, b...)
	for {
		i := strings.IndexByte(string(c.partial), '\n')
		if i < 0 {
			if len(c.partial) > 4096 {
				c.partial = c.partial[:0]
			}
			return
		}
		line := strings.TrimRight(string(c.partial[:i]), "\r")
		c.partial = c.partial[i+1:]
		verb, _, _ := strings.Cut(line, " ")
		verb, _, _ = strings.Cut(verb, ":")
		verb = strings.ToUpper(verb)
		c.s.mu.Lock()
		c.s.sent[verb]++
		c.s.mu.Unlock()
		switch verb {
		case "QUIT":
			c.ended()
			select {
			case c.s.QuitReceived <- struct{}{}:
			default:
			}
		case "STARTTLS":
			c.tls = true
			c.partial = nil
			return
		}
	}
}

type backend struct{ s *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.s.mu.Lock()
	b.s.sessions++
	if _, ok := c.TLSConnectionState(); ok {
		b.s.tlsUsed++
	}
	b.s.mu.Unlock()
	select {
	case b.s.SessionStarted <- struct{}{}:
	default:
	}
	return &session{s: b.s}, nil
}

type session struct{ s *Server }

func (x *session) count(verb string) {
	x.s.mu.Lock()
	x.s.commands[verb]++
	x.s.mu.Unlock()
}

func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	x.count("MAIL")
	x.s.mu.Lock()
	x.s.froms = append(x.s.froms, from)
	x.s.mu.Unlock()
	if x.s.opts.Mail != nil {
		return x.s.opts.Mail
	}
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.count("RCPT")
	x.s.mu.Lock()
	x.s.rcpts = append(x.s.rcpts, to)
	x.s.mu.Unlock()
	if f := x.s.opts.RcptFunc; f != nil {
		if e := f(to); e != nil {
			return e
		}
		return nil
	}
	if e, ok := x.s.opts.Rcpt[to]; ok {
		if e == nil {
			return nil
		}
		return e
	}
	if x.s.opts.RcptDefault != nil {
		return x.s.opts.RcptDefault
	}
	return nil
}

func (x *session) Data(r io.Reader) error {
	// The prober must never send DATA; count it so tests can assert that.
	x.count("DATA")
	io.Copy(io.Discard, r)
	return nil
}

func (x *session) Reset()        {}
func (x *session) Logout() error { return nil }

// selfSigned makes an ECDSA certificate for name, valid for an hour.
func selfSigned(t testing.TB, name string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("smtptest: key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("smtptest: certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("smtptest: parse certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

// ClosedPort returns a loopback address where nothing listens: it listens
// on a free port and closes it at once.
func ClosedPort(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return ap
}

func listen(t testing.TB, at netip.AddrPort) net.Listener {
	t.Helper()
	addr := "127.0.0.1:0"
	if at.IsValid() {
		addr = at.String()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("smtptest: listen on %s: %v", addr, err)
	}
	return ln
}
