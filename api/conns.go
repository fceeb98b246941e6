package api

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Default body read deadlines: a JSON request is at most 64 KiB (seconds
// even on a poor link); a batch is up to 8 MiB. docs/reliability.md, "slow
// clients".
const (
	DefaultBodyTimeout      = 10 * time.Second
	DefaultBatchBodyTimeout = 2 * time.Minute
)

// writeMargin is the time a handler has to write its answer once its body
// is read and any wait has ended.
const writeMargin = 30 * time.Second

// isBatchUpload is the one route whose body may be large.
func isBatchUpload(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == "/v1/batches"
}

// bodyTimeout is how long a request may take to send its body.
func (s *Server) bodyTimeout(r *http.Request) time.Duration {
	if isBatchUpload(r) {
		return s.cfg.BatchBodyTimeout
	}
	return s.cfg.BodyTimeout
}

// writeTimeout is how long, from the start of a request, its answer may
// take: the body, then the longest wait the route allows, then writing.
func (s *Server) writeTimeout(r *http.Request) time.Duration {
	return s.bodyTimeout(r) + max(s.cfg.MaxWait, s.cfg.ValidateMaxWait) + writeMargin
}

// WriteTimeout is the longest answer time any route needs; a server's
// WriteTimeout set to it only backs up the per-request deadlines.
func (s *Server) WriteTimeout() time.Duration {
	return max(s.cfg.BodyTimeout, s.cfg.BatchBodyTimeout) + max(s.cfg.MaxWait, s.cfg.ValidateMaxWait) + writeMargin
}

// withDeadlines bounds every request's body read and answer on the
// connection itself, before authentication: net/http reads up to 256 KiB of
// an unread body after the handler answers, so without a read deadline a
// client trickling its body keeps the connection (and its descriptor) as
// long as it likes, even for a 401 or /healthz.
func (s *Server) withDeadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		// Errors mean the writer is not a connection (a recorder in a
		// test): there is then nothing to bound. Only a request with a
		// body gets a read deadline: net/http watches a connection
		// without one (or whose body is read to its end, which clears
		// the deadline) with a background read, and a deadline there
		// would cancel the request's context mid-wait.
		if r.Body != nil && r.Body != http.NoBody {
			_ = rc.SetReadDeadline(now.Add(s.bodyTimeout(r)))
		}
		_ = rc.SetWriteDeadline(now.Add(s.writeTimeout(r)))
		next.ServeHTTP(w, r)
	})
}

// ConnLimits caps a listener's open connections. Zero fields: no cap.
type ConnLimits struct {
	Total int // all clients together
	PerIP int // one client IP address
}

// LimitListener wraps ln so that at most lim connections are open at once,
// in total and per client IP. A connection over a cap is closed at once,
// without an HTTP answer: writing one would need the very resources the
// cap protects, and a client at its cap is already holding connections it
// could reuse. Refused counts such connections. docs/reliability.md, "slow
// clients".
func LimitListener(ln net.Listener, lim ConnLimits) *Listener {
	return &Listener{Listener: ln, lim: lim, perIP: map[string]int{}}
}

// Listener is a net.Listener with connection caps (LimitListener).
type Listener struct {
	net.Listener
	lim     ConnLimits
	mu      sync.Mutex
	total   int
	perIP   map[string]int
	refused atomic.Int64
}

// Refused is how many connections were closed for being over a cap.
func (l *Listener) Refused() int64 { return l.refused.Load() }

// Open is how many accepted connections are open.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Accept returns the next connection under the caps, closing those over.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := clientIP(c.RemoteAddr())
		if !l.take(ip) {
			l.refused.Add(1)
			c.Close()
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.give(ip) }}, nil
	}
}

func (l *Listener) take(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lim.Total > 0 && l.total >= l.lim.Total {
		return false
	}
	if l.lim.PerIP > 0 && l.perIP[ip] >= l.lim.PerIP {
		return false
	}
	l.total++
	l.perIP[ip]++
	return true
}

func (l *Listener) give(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

func clientIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// limitedConn gives its slot back once, on the first Close.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
