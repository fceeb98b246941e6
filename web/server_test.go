package web_test

// The browser test's server is the real one, wired as `mxprobe serve` wires
// it: api.Server with web.FS as its page, a private redis-server, and a real
// worker whose validator asks a dnstest DNS server and probes a go-smtp
// server (smtptest), all on loopback. Only the clocks are shorter.

import (
	"bytes"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/web"
	"github.com/mxprobe/mxprobe/worker"
)

// testKey is the one API key the server accepts ("id:secret", api.KeySet).
const testKey = "web:web-secret-0123456789abcdef"

// The mailboxes of the fixture. Every domain's MX is mx1.example.net, which
// resolves to the go-smtp server on 127.0.0.1.
//
//   - nobody@…: 550 5.1.1 (mailbox_not_found);
//   - mallory@…: 550 5.1.1 with markup in the reply text, which the page
//     must show as text (a hostile mail server chooses that text);
//   - greylist…@…: 450 4.2.0 greylisted on the first RCPT, accepted on the
//     retry (postgrey's behaviour, docs/smtp.md);
//   - anything else is accepted.
var (
	replyNotFound = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	replyMarkup   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<img src=x id=pwned> is not a user here"}
	replyGreylist = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Recipient address rejected: Greylisted, please try again later"}
)

// mailboxes answers RCPT for the fixture and counts RCPTs per recipient.
type mailboxes struct {
	mu    sync.Mutex
	rcpts map[string]int
}

func (m *mailboxes) rcpt(to string) *smtp.SMTPError {
	to = strings.ToLower(to)
	m.mu.Lock()
	m.rcpts[to]++
	n := m.rcpts[to]
	m.mu.Unlock()
	local, _, _ := strings.Cut(to, "@")
	switch {
	case local == "nobody":
		return replyNotFound
	case local == "mallory":
		return replyMarkup
	case strings.HasPrefix(local, "greylist") && n == 1:
		return replyGreylist
	}
	return nil
}

func (m *mailboxes) count(to string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rcpts[strings.ToLower(to)]
}

// exchange is one POST /v1/validations as the server saw it.
type exchange struct {
	wait, body string
	status     int
}

// recorder notes every POST /v1/validations: the browser test checks the
// page's wait parameter and which answers were 202.
type recorder struct {
	mu        sync.Mutex
	exchanges []exchange
}

func (rec *recorder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/validations" {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		rec.mu.Lock()
		rec.exchanges = append(rec.exchanges, exchange{wait: r.URL.Query().Get("wait"), body: string(body), status: sw.status})
		rec.mu.Unlock()
	})
}

func (rec *recorder) list() []exchange {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]exchange(nil), rec.exchanges...)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// realServer is the system under test.
type realServer struct {
	url   string
	mail  *mailboxes
	posts *recorder
}

func startRealServer(t *testing.T) *realServer {
	t.Helper()
	rdb := redistest.StartServer(t).Client(t)
	log := slog.New(slog.DiscardHandler)
	rs := &realServer{mail: &mailboxes{rcpts: map[string]int{}}, posts: &recorder{}}

	mx := smtptest.Start(t, smtptest.Options{Domain: "mx1.example.net", RcptFunc: rs.mail.rcpt})
	dns := dnstest.Start(t, dnstest.Zone{
		"example.com.":     {dnstest.MX("mx1.example.net.", 10)},
		"example.org.":     {dnstest.MX("mx1.example.net.", 10)},
		"example.net.":     {dnstest.MX("mx1.example.net.", 10)},
		"mx1.example.net.": {dnstest.A("127.0.0.1")},
	})
	workertest.Start(t, rdb, workertest.Options{SMTPPort: mx.Port(), DNS: dns.Addr(),
		CallbackSecret: []byte("web-test-callback-secret"),
		Adjust: func(wc *worker.Config, _ *validator.Config) {
			// Greylisting is retried after 2 s instead of six minutes:
			// asynq schedules retries in whole seconds, rounding down, so
			// a 1 s delay can come back within milliseconds, inside
			// MaxWait; 2 s keeps the retry at least a second away.
			wc.Retry = worker.RetryPolicy{FirstDelay: 2 * time.Second, Multiplier: 2, MaxDelay: 4 * time.Second, GiveUpAfter: 20 * time.Second, Jitter: 0.1}
		}})

	// The API's own limiter, on the worker's keys, for /v1/providers.
	lcfg := ratelimit.DefaultConfig()
	lcfg.Default = ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 100, Sessions: 20}
	limiter, err := ratelimit.New(rdb, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := api.ParseKeys(testKey)
	if err != nil {
		t.Fatal(err)
	}
	static, err := fs.Sub(web.FS, "static") // as `mxprobe serve` does
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{
		Redis: rdb, Keys: keys, Static: static, Logger: log,
		Limiter: limiter, Limits: lcfg,
		// Shorter than the greylisting retry above, so a greylisted
		// address takes the path it takes in production (first retry after
		// minutes): 202 at once, then the page polls until the verdict is
		// final.
		MaxWait: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs := httptest.NewServer(rs.posts.wrap(srv.Handler()))
	t.Cleanup(hs.Close)
	rs.url = hs.URL
	return rs
}
