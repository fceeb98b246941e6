package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxprobe/mxprobe/tasks"
)

var (
	testSecret   = []byte("test-secret-0123456789abcdef0123")
	loopbackOnly = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
)

// newTestDeliverer builds a Deliverer that may reach 127.0.0.1 (where the
// httptest receivers live) and nothing else private.
func newTestDeliverer(t *testing.T, cfg CallbackConfig) *Deliverer {
	t.Helper()
	if cfg.Secret == nil {
		cfg.Secret = testSecret
	}
	d, err := NewDeliverer(cfg)
	if err != nil {
		t.Fatalf("NewDeliverer: %v", err)
	}
	t.Cleanup(d.Close)
	d.dialGuard = func(address string) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !ap.Addr().Unmap().IsLoopback() {
			t.Errorf("policy let the dialer connect to %s; refused by the test guard", address)
			return errors.New("test guard: off-host dial")
		}
		return nil
	}
	return d
}

// receiver starts a loopback HTTP server running h.
func receiver(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func asCallbackError(t *testing.T, err error) *CallbackError {
	t.Helper()
	var ce *CallbackError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *CallbackError", err, err)
	}
	return ce
}

func TestDeliverSignedAndVerified(t *testing.T) {
	t.Parallel()
	oldSecret := []byte("old-secret-0123456789abcdef01234")
	tests := []struct {
		name            string
		status          int
		previous        [][]byte
		receiverSecrets [][]byte
	}{
		{name: "200", status: 200, receiverSecrets: [][]byte{testSecret}},
		{name: "204", status: 204, receiverSecrets: [][]byte{testSecret}},
		{name: "202", status: 202, receiverSecrets: [][]byte{testSecret}},
		{name: "receiver still on the old secret", status: 200, previous: [][]byte{oldSecret}, receiverSecrets: [][]byte{oldSecret}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			type got struct {
				body        []byte
				verifyErr   error
				eventID     string
				contentType string
				userAgent   string
			}
			gotc := make(chan got, 1)
			srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
				body, err := tasks.VerifyRequest(r, tt.receiverSecrets, 0)
				gotc <- got{body, err, r.Header.Get(tasks.HeaderEventID), r.Header.Get("Content-Type"), r.Header.Get("User-Agent")}
				w.WriteHeader(tt.status)
			})
			d := newTestDeliverer(t, CallbackConfig{Allowlist: loopbackOnly, PreviousSecrets: tt.previous})
			body := []byte(`{"id":"task-1","verdict":"valid"}`)
			if err := d.Deliver(t.Context(), srv.URL+"/hook?token=x", "task-1/final", body); err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			g := <-gotc
			if g.verifyErr != nil {
				t.Fatalf("receiver could not verify: %v", g.verifyErr)
			}
			if string(g.body) != string(body) || g.eventID != "task-1/final" ||
				g.contentType != "application/json" || g.userAgent != DefaultCallbackUserAgent {
				t.Fatalf("receiver got body %q event %q type %q agent %q", g.body, g.eventID, g.contentType, g.userAgent)
			}
		})
	}
}

func TestDeliverStatusOutcomes(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name           string
		status         int
		retryAfter     string
		wantGone       bool
		wantRetryable  bool
		wantRetryAfter time.Duration
	}{
		{name: "410 gone", status: 410, wantGone: true},
		{name: "500", status: 500, wantRetryable: true},
		{name: "502", status: 502, wantRetryable: true},
		{name: "503 with HTTP-date Retry-After", status: 503, retryAfter: now.Add(90 * time.Second).Format(http.TimeFormat), wantRetryable: true, wantRetryAfter: 90 * time.Second},
		{name: "429 with Retry-After seconds", status: 429, retryAfter: "7", wantRetryable: true, wantRetryAfter: 7 * time.Second},
		{name: "429 with huge Retry-After is capped", status: 429, retryAfter: "99999999999999", wantRetryable: true, wantRetryAfter: maxRetryAfter},
		{name: "429 with garbage Retry-After", status: 429, retryAfter: "soon", wantRetryable: true},
		{name: "429 with past date", status: 429, retryAfter: now.Add(-time.Hour).Format(http.TimeFormat), wantRetryable: true},
		{name: "408", status: 408, wantRetryable: true},
		{name: "400", status: 400},
		{name: "401", status: 401},
		{name: "403", status: 403},
		{name: "404", status: 404},
		{name: "422", status: 422},
		{name: "304", status: 304},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
			})
			d := newTestDeliverer(t, CallbackConfig{Allowlist: loopbackOnly})
			d.now = func() time.Time { return now }
			err := d.Deliver(t.Context(), srv.URL, "e1", []byte(`{}`))
			if tt.wantGone {
				if !errors.Is(err, ErrCallbackGone) {
					t.Fatalf("Deliver: %v, want ErrCallbackGone", err)
				}
				return
			}
			ce := asCallbackError(t, err)
			if ce.Status != tt.status || ce.Retryable != tt.wantRetryable || ce.RetryAfter != tt.wantRetryAfter {
				t.Fatalf("got status %d retryable %v retryAfter %s, want %d %v %s (%v)",
					ce.Status, ce.Retryable, ce.RetryAfter, tt.status, tt.wantRetryable, tt.wantRetryAfter, err)
			}
		})
	}
}

func TestDeliverTimeouts(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr bool
	}{
		{
			name: "no response headers",
			handler: func(w http.ResponseWriter, r *http.Request) {
				// net/http notices a client hang-up only once the
				// request body has been read.
				_, _ = io.Copy(io.Discard, r.Body)
				<-r.Context().Done() // hang until the client gives up
			},
			wantErr: true,
		},
		{
			// The receiver said 200, so the callback is delivered; the
			// stalled body only must not hold the attempt past the bound.
			name: "headers then a stalled body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(200)
				_, _ = w.Write([]byte("partial"))
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := receiver(t, tt.handler)
			d := newTestDeliverer(t, CallbackConfig{Allowlist: loopbackOnly, Timeout: timeout})
			start := time.Now()
			err := d.Deliver(t.Context(), srv.URL, "e1", []byte(`{}`))
			elapsed := time.Since(start)
			if elapsed < timeout || elapsed > timeout+5*time.Second {
				t.Fatalf("Deliver took %s, want about %s", elapsed, timeout)
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Deliver: %v, want nil", err)
				}
				return
			}
			ce := asCallbackError(t, err)
			if !ce.Retryable || ce.Status != 0 || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Deliver: %v (retryable %v status %d), want retryable deadline", err, ce.Retryable, ce.Status)
			}
		})
	}
}

func TestDeliverCallerCancelledIsRetryable(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{})
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		close(arrived)
		<-r.Context().Done()
	})
	d := newTestDeliverer(t, CallbackConfig{Allowlist: loopbackOnly})
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-arrived; cancel() }()
	err := d.Deliver(ctx, srv.URL, "e1", []byte(`{}`))
	if ce := asCallbackError(t, err); !ce.Retryable || !errors.Is(err, context.Canceled) {
		t.Fatalf("Deliver: %v, want retryable context.Canceled", err)
	}
}

func TestDeliverConnectionRefusedIsRetryable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	d := newTestDeliverer(t, CallbackConfig{Allowlist: loopbackOnly})
	err = d.Deliver(t.Context(), "http://"+addr+"/", "e1", []byte(`{}`))
	if ce := asCallbackError(t, err); !ce.Retryable || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Deliver: %v, want retryable ECONNREFUSED", err)
	}
}

// A receiver that answers with an endless body costs the worker
// MaxResponseBytes, not the body: the connection is dropped and the
// receiver's writes fail long before it has sent everything.
func TestDeliverHugeResponseIsCutOff(t *testing.T) {
	t.Parallel()
	const offered = 1 << 30
	written := make(chan int64, 1)
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		chunk := make([]byte, 64<<10)
		var n int64
		for n < offered {
			m, err := w.Write(chunk)
			n += int64(m)
			if err != nil {
				break
			}
		}
		written <- n
	})
	d := newTestDeliverer(t, CallbackConfig{Allowlist: loopbackOnly, MaxResponseBytes: 4 << 10})
	if err := d.Deliver(t.Context(), srv.URL, "e1", []byte(`{}`)); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	// Socket buffers absorb some megabytes; a client that read everything
	// would let the receiver write the whole gigabyte.
	if n := <-written; n >= 64<<20 {
		t.Fatalf("receiver wrote %d bytes before the client hung up", n)
	}
}

func TestDeliverDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	target := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(200)
	})
	tests := []struct {
		name   string
		status int
	}{
		{name: "302", status: http.StatusFound},
		{name: "307 keeps the POST", status: http.StatusTemporaryRedirect},
		{name: "308", status: http.StatusPermanentRedirect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			redirector := receiver(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.URL+"/internal", tt.status)
			})
			// The target is allowlisted, so a followed redirect would succeed.
			d := newTestDeliverer(t, CallbackConfig{Allowlist: loopbackOnly})
			err := d.Deliver(t.Context(), redirector.URL, "e1", []byte(`{}`))
			ce := asCallbackError(t, err)
			if ce.Status != tt.status || ce.Retryable || !strings.Contains(err.Error(), "not followed") {
				t.Fatalf("Deliver: %v, want non-retryable %d", err, tt.status)
			}
		})
	}
	t.Cleanup(func() {
		if n := hits.Load(); n != 0 {
			t.Errorf("redirect target received %d requests", n)
		}
	})
}

// sentinelListener is a raw loopback TCP listener that records whether
// anything connected to it before the test's own probe connection.
type sentinelListener struct {
	ln    net.Listener
	first chan net.Addr
}

func listenSentinel(t *testing.T, network, addr string) *sentinelListener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	s := &sentinelListener{ln: ln, first: make(chan net.Addr, 1)}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(s.first)
			return
		}
		s.first <- c.RemoteAddr()
		c.Close()
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func (s *sentinelListener) port() string {
	_, p, _ := net.SplitHostPort(s.ln.Addr().String())
	return p
}

// assertNothingAccepted connects to the listener itself; the accept queue is
// FIFO, so if the first connection accepted is not this probe, something
// else got through earlier.
func (s *sentinelListener) assertNothingAccepted(t *testing.T) {
	t.Helper()
	c, err := net.Dial(s.ln.Addr().Network(), s.ln.Addr().String())
	if err != nil {
		t.Fatalf("probe dial: %v", err)
	}
	defer c.Close()
	if got := <-s.first; got == nil || got.String() != c.LocalAddr().String() {
		t.Fatalf("listener first accepted %v, want only the probe %v", got, c.LocalAddr())
	}
}

func TestDeliverRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	v4 := listenSentinel(t, "tcp4", "127.0.0.1:0")
	v6 := listenSentinel(t, "tcp6", "[::1]:0")
	tests := []struct {
		name string
		url  string
	}{
		{name: "loopback v4", url: "http://127.0.0.1:" + v4.port() + "/"},
		{name: "loopback elsewhere in 127/8", url: "http://127.0.0.2:" + v4.port() + "/"},
		{name: "loopback v6", url: "http://[::1]:" + v6.port() + "/"},
		{name: "IPv4-mapped loopback", url: "http://[::ffff:127.0.0.1]:" + v4.port() + "/"},
		{name: "unspecified reaches the local host on Linux", url: "http://0.0.0.0:" + v4.port() + "/"},
		{name: "localhost by name", url: "http://localhost:" + v4.port() + "/"},
		{name: "RFC 1918", url: "http://10.0.0.1/"},
		{name: "cloud metadata", url: "http://169.254.169.254/latest/meta-data/"},
		{name: "CGNAT", url: "http://100.64.0.1/"},
		{name: "ULA", url: "http://[fd00::1]/"},
		{name: "IPv6 link-local with zone", url: "http://[fe80::1%25lo]/"},
		{name: "NAT64 of RFC 1918", url: "http://[64:ff9b::a00:1]/"},
	}
	t.Run("group", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				d := newTestDeliverer(t, CallbackConfig{})
				err := d.Deliver(t.Context(), tt.url, "e1", []byte(`{}`))
				if ce := asCallbackError(t, err); ce.Retryable || !errors.Is(err, ErrForbiddenAddress) {
					t.Fatalf("Deliver(%s): %v, want non-retryable ErrForbiddenAddress", tt.url, err)
				}
			})
		}
	})
	v4.assertNothingAccepted(t)
	v6.assertNothingAccepted(t)
}

// The parse-time check is only a first line: this test calls the
// transport's dialer directly, as it would be called for a name that
// resolved to these addresses, and shows the Control hook refusing each one
// before connect(2). No packet leaves the host: the socket is never
// connected.
func TestDialRefusesBeforeConnect(t *testing.T) {
	t.Parallel()
	v4 := listenSentinel(t, "tcp4", "127.0.0.1:0")
	v6 := listenSentinel(t, "tcp6", "[::1]:0")
	tests := []struct {
		name string
		addr string
	}{
		{name: "loopback v4", addr: "127.0.0.1:" + v4.port()},
		{name: "loopback v6", addr: "[::1]:" + v6.port()},
		{name: "localhost resolved from /etc/hosts", addr: "localhost:" + v4.port()},
		{name: "RFC 1918", addr: "10.0.0.1:80"},
		{name: "cloud metadata", addr: "169.254.169.254:80"},
		{name: "documentation range", addr: "192.0.2.1:80"},
	}
	t.Run("group", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				d := newTestDeliverer(t, CallbackConfig{})
				c, err := d.dialContext(t.Context(), "tcp", tt.addr)
				if err == nil {
					c.Close()
					t.Fatalf("dial %s succeeded", tt.addr)
				}
				if !errors.Is(err, ErrForbiddenAddress) {
					t.Fatalf("dial %s: %v, want ErrForbiddenAddress", tt.addr, err)
				}
			})
		}
	})
	v4.assertNothingAccepted(t)
	v6.assertNothingAccepted(t)
}

// dnsServer runs an authoritative miekg/dns server on loopback answering A
// queries from records and nothing else.
func dnsServer(t *testing.T, records map[string]string) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		name := strings.ToLower(q.Question[0].Name)
		ip, ok := records[name]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Question[0].Qtype == dns.TypeA:
			rr, err := dns.NewRR(fmt.Sprintf("%s 60 IN A %s", name, ip))
			if err != nil {
				t.Errorf("NewRR: %v", err)
			}
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	// Every query goes to this server, whatever resolv.conf says.
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", pc.LocalAddr().String())
		},
	}
}

// A public-looking name that resolves to loopback (or is rebound to it
// after enqueue) passes CheckURL and is stopped at dial time. The same name
// reaches the receiver when the policy allows its address or its name,
// which shows the test's resolver is really the one in use.
func TestDeliverChecksResolvedAddress(t *testing.T) {
	t.Parallel()
	resolver := dnsServer(t, map[string]string{"hooks.rebind.test.": "127.0.0.1"})

	var hits atomic.Int32
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(204)
	})
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	url := "http://hooks.rebind.test:" + port + "/cb"

	tests := []struct {
		name          string
		cfg           CallbackConfig
		wantForbidden bool
	}{
		{name: "default policy", cfg: CallbackConfig{}, wantForbidden: true},
		{name: "allowlisted address", cfg: CallbackConfig{Allowlist: loopbackOnly}},
		{name: "allowed host", cfg: CallbackConfig{AllowHosts: []string{"HOOKS.rebind.test."}}},
		{name: "allowed by wildcard", cfg: CallbackConfig{AllowHosts: []string{"*.rebind.test"}}},
		{name: "wildcard does not cover a sibling", cfg: CallbackConfig{AllowHosts: []string{"*.other.test"}}, wantForbidden: true},
		{name: "allow private", cfg: CallbackConfig{AllowPrivate: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: each case reads the shared hit counter.
			d := newTestDeliverer(t, tt.cfg)
			d.resolver = resolver
			if err := d.CheckURL(url); err != nil {
				t.Fatalf("CheckURL(%s): %v; names are only checked at dial time", url, err)
			}
			before := hits.Load()
			err := d.Deliver(t.Context(), url, "e1", []byte(`{}`))
			reached := hits.Load() != before
			if tt.wantForbidden {
				if !errors.Is(err, ErrForbiddenAddress) || reached {
					t.Fatalf("Deliver: %v (reached %v), want ErrForbiddenAddress before any connection", err, reached)
				}
				return
			}
			if err != nil || !reached {
				t.Fatalf("Deliver: %v (reached %v), want delivered", err, reached)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	strict := CallbackConfig{}
	tests := []struct {
		name    string
		url     string
		cfg     CallbackConfig
		wantErr error
	}{
		{name: "https", url: "https://hooks.example.com/mxprobe?token=abc"},
		{name: "http with port", url: "http://hooks.example.com:8080/cb"},
		{name: "trailing dot", url: "https://hooks.example.com./cb"},
		{name: "underscore label", url: "https://my_hooks.example.com/"},
		{name: "public IPv4", url: "https://93.184.216.34/cb"},
		{name: "public IPv6", url: "https://[2606:4700::1111]/cb"},
		{name: "NAT64 of a public address", url: "https://[64:ff9b::808:808]/"},
		{name: "punycode host", url: "https://xn--bcher-kva.example/"},
		{name: "loopback allowlisted", url: "http://127.0.0.1:8080/", cfg: CallbackConfig{Allowlist: loopbackOnly}},
		{name: "localhost allowlisted", url: "http://localhost:8080/", cfg: CallbackConfig{Allowlist: loopbackOnly}},
		{name: "private with AllowPrivate", url: "http://10.0.0.1/", cfg: CallbackConfig{AllowPrivate: true}},
		{name: "private host allowed by name", url: "http://10.0.0.1/", cfg: CallbackConfig{AllowHosts: []string{"10.0.0.1"}}},

		{name: "empty", url: "", wantErr: ErrBadCallbackURL},
		{name: "relative", url: "/callback", wantErr: ErrBadCallbackURL},
		{name: "ftp", url: "ftp://example.com/", wantErr: ErrBadCallbackURL},
		{name: "file", url: "file:///etc/passwd", wantErr: ErrBadCallbackURL},
		{name: "javascript", url: "javascript:alert(1)", wantErr: ErrBadCallbackURL},
		{name: "opaque", url: "http:example.com", wantErr: ErrBadCallbackURL},
		{name: "no host", url: "http:///cb", wantErr: ErrBadCallbackURL},
		{name: "port only", url: "http://:8080/cb", wantErr: ErrBadCallbackURL},
		{name: "userinfo", url: "https://user:pass@example.com/", wantErr: ErrBadCallbackURL},
		{name: "user only", url: "https://good.example.com@evil.example/", wantErr: ErrBadCallbackURL},
		{name: "space in path", url: "https://example.com/a b", wantErr: ErrBadCallbackURL},
		{name: "space in host", url: "https://exa mple.com/", wantErr: ErrBadCallbackURL},
		{name: "CRLF", url: "https://example.com/\r\nX-Injected: 1", wantErr: ErrBadCallbackURL},
		{name: "raw non-ASCII host", url: "https://bücher.example/", wantErr: ErrBadCallbackURL},
		{name: "too long", url: "https://example.com/" + strings.Repeat("a", MaxCallbackURLLength), wantErr: ErrBadCallbackURL},
		{name: "port 0", url: "http://example.com:0/", wantErr: ErrBadCallbackURL},
		{name: "port too big", url: "http://example.com:70000/", wantErr: ErrBadCallbackURL},
		{name: "empty port", url: "http://example.com:/", wantErr: ErrBadCallbackURL},
		{name: "SMTP port", url: "http://example.com:25/", wantErr: ErrBadCallbackURL},
		{name: "Redis port", url: "http://example.com:6379/", wantErr: ErrBadCallbackURL},
		{name: "decimal IPv4", url: "http://2130706433/", wantErr: ErrBadCallbackURL},
		{name: "short IPv4", url: "http://127.1/", wantErr: ErrBadCallbackURL},
		{name: "hex IPv4", url: "http://0x7f.0x0.0x0.0x1/", wantErr: ErrBadCallbackURL},
		{name: "octal IPv4", url: "http://0177.0.0.01/", wantErr: ErrBadCallbackURL},
		{name: "empty label", url: "http://hooks..example.com/", wantErr: ErrBadCallbackURL},
		{name: "label too long", url: "http://" + strings.Repeat("a", 64) + ".example.com/", wantErr: ErrBadCallbackURL},

		{name: "loopback", url: "http://127.0.0.1/", wantErr: ErrForbiddenAddress},
		{name: "loopback v6", url: "http://[::1]/", wantErr: ErrForbiddenAddress},
		{name: "mapped private", url: "http://[::ffff:10.0.0.1]/", wantErr: ErrForbiddenAddress},
		{name: "6to4 of private", url: "http://[2002:a00:1::]/", wantErr: ErrForbiddenAddress},
		{name: "RFC 1918", url: "http://192.168.1.1/", wantErr: ErrForbiddenAddress},
		{name: "metadata", url: "http://169.254.169.254/", wantErr: ErrForbiddenAddress},
		{name: "localhost", url: "http://localhost/", wantErr: ErrForbiddenAddress},
		{name: "localhost subdomain", url: "http://api.LOCALHOST./", wantErr: ErrForbiddenAddress},
		{name: "allowlist elsewhere does not cover", url: "http://10.0.0.1/", cfg: CallbackConfig{Allowlist: loopbackOnly}, wantErr: ErrForbiddenAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			if cfg.Allowlist == nil && cfg.AllowHosts == nil && !cfg.AllowPrivate {
				cfg = strict
			}
			err := CheckURL(tt.url, cfg)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("CheckURL(%q): %v, want nil", tt.url, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("CheckURL(%q): %v, want %v", tt.url, err, tt.wantErr)
			}
		})
	}
}

func TestForbiddenReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr       string
		wantRefuse bool
	}{
		{"8.8.8.8", false},
		{"93.184.216.34", false},
		{"2606:4700::1111", false},
		{"::ffff:8.8.8.8", false},
		{"64:ff9b::808:808", false},
		{"2002:808:808::1", false},
		{"100.63.255.255", false},
		{"100.128.0.0", false},
		{"172.32.0.1", false},

		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"127.0.0.1", true},
		{"127.255.255.254", true},
		{"10.0.0.1", true},
		{"172.16.0.1", true},
		{"172.31.255.255", true},
		{"192.168.0.1", true},
		{"100.64.0.1", true},
		{"100.100.100.200", true},
		{"169.254.169.254", true},
		{"192.0.0.8", true},
		{"198.18.0.1", true},
		{"224.0.0.1", true},
		{"239.255.255.250", true},
		{"240.0.0.1", true},
		{"255.255.255.255", true},
		{"::", true},
		{"::1", true},
		{"::127.0.0.1", true},
		{"::ffff:127.0.0.1", true},
		{"::ffff:169.254.169.254", true},
		{"fc00::1", true},
		{"fd00:ec2::254", true},
		{"fe80::1", true},
		{"fec0::1", true},
		{"ff02::1", true},
		{"64:ff9b::7f00:1", true},
		{"64:ff9b:1::1", true},
		{"2002:7f00:1::", true},
		{"2001:db8::1", true},
		{"2001:0:4136:e378::1", true},
		{"100::1", true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			t.Parallel()
			why := forbiddenReason(netip.MustParseAddr(tt.addr))
			if (why != "") != tt.wantRefuse {
				t.Fatalf("forbiddenReason(%s) = %q, want refused=%v", tt.addr, why, tt.wantRefuse)
			}
		})
	}
}

func TestNewDelivererRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  CallbackConfig
	}{
		{name: "no secret", cfg: CallbackConfig{}},
		{name: "negative timeout", cfg: CallbackConfig{Secret: testSecret, Timeout: -time.Second}},
		{name: "negative response cap", cfg: CallbackConfig{Secret: testSecret, MaxResponseBytes: -1}},
		{name: "zero prefix", cfg: CallbackConfig{Secret: testSecret, Allowlist: []netip.Prefix{{}}}},
		{name: "empty host", cfg: CallbackConfig{Secret: testSecret, AllowHosts: []string{" "}}},
		{name: "bare wildcard", cfg: CallbackConfig{Secret: testSecret, AllowHosts: []string{"*"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := NewDeliverer(tt.cfg); err == nil {
				t.Fatalf("NewDeliverer accepted %+v", tt.cfg)
			}
		})
	}
}

func TestDeliverRejectsBadEventID(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	})
	d := newTestDeliverer(t, CallbackConfig{Allowlist: loopbackOnly})
	for _, id := range []string{"", "a\r\nX-Injected: 1"} {
		err := d.Deliver(t.Context(), srv.URL, id, []byte(`{}`))
		if ce := asCallbackError(t, err); ce.Retryable {
			t.Fatalf("Deliver with event ID %q: %v, want non-retryable", id, err)
		}
	}
	if hits.Load() != 0 {
		t.Fatal("a request with a bad event ID reached the receiver")
	}
}
