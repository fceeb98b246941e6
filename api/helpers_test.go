package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/emersion/go-smtp"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

func TestMain(m *testing.M) { redistest.Main(m) }

const (
	keyA = "alice:alice-secret-0123456789"
	keyB = "bob:bob-secret-0123456789abcd"
	// keyOps is an admin key, configured as keyOps + ";admin".
	keyOps = "ops:ops-secret-0123456789abcd"
)

// bundle is one test's world: a private Redis (asynq's keys cannot be
// prefixed, so tests that enqueue must not share one), the API on an
// httptest server, and optionally a real worker behind dnstest + smtptest.
type bundle struct {
	redis  *redistest.Server
	rdb    *redis.Client
	api    *api.Server
	srv    *httptest.Server
	client *tasks.Client
	smtp   *smtptest.Server
}

type opts struct {
	cfg    func(*api.Config)
	worker bool
	smtp   smtptest.Options
	// aof starts Redis with the append-only file fsynced on every write,
	// as production runs it, for tests that kill and restart it.
	aof bool
	// workerCfg adjusts the worker's and its validator's configuration.
	workerCfg func(*worker.Config, *validator.Config)
}

var notFound = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}

func setup(t testing.TB, o opts) *bundle {
	t.Helper()
	b := &bundle{}
	if o.aof {
		b.redis = redistest.StartServerAOF(t)
	} else {
		b.redis = redistest.StartServer(t)
	}
	b.rdb = b.redis.Client(t)
	keys, err := api.ParseKeys(keyA + "," + keyB + "," + keyOps + ";admin")
	if err != nil {
		t.Fatal(err)
	}
	cfg := api.Config{
		Redis: b.rdb, Keys: keys, Logger: slog.New(slog.DiscardHandler),
		Static: fstest.MapFS{"index.html": {Data: []byte("<!doctype html><title>t</title>")}, "app.js": {Data: []byte("1")}},
		Limits: ratelimit.DefaultConfig(), SkipWorkerCheck: !o.worker,
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	if b.api, err = api.New(cfg); err != nil {
		t.Fatal(err)
	}
	b.srv = httptest.NewServer(b.api.Handler())
	t.Cleanup(b.srv.Close)
	t.Cleanup(func() { b.api.Close() }) // runs before srv.Close: LIFO
	b.client = tasks.NewClient(b.rdb)
	if o.worker {
		b.startWorker(t, o.smtp, o.workerCfg)
	}
	return b
}

func (b *bundle) startWorker(t testing.TB, so smtptest.Options, adjust func(*worker.Config, *validator.Config)) {
	t.Helper()
	b.smtp = smtptest.Start(t, so)
	dns := dnstest.Start(t, dnstest.Zone{
		"example.test.":    {dnstest.MX("mx.example.test.", 10)},
		"mx.example.test.": {dnstest.A("127.0.0.1")},
	})
	workertest.Start(t, b.rdb, workertest.Options{SMTPPort: b.smtp.Port(), DNS: dns.Addr(), CallbackSecret: []byte("s"), Adjust: adjust})
}

// do sends a request with key (none when "") and returns the response with
// its body read.
func (b *bundle) do(t testing.TB, method, path, key, ctype string, body any) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(v)
	case []byte:
		r = bytes.NewReader(v)
	default:
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, out
}

type errorShape struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

func decodeError(t *testing.T, body []byte) errorShape {
	t.Helper()
	var e errorShape
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("not the error shape: %s (%v)", body, err)
	}
	return e
}

func mustJSON[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	return v
}

var _ = os.Getenv

func newLimiter(b *bundle) (*ratelimit.Limiter, error) {
	return ratelimit.New(b.rdb, ratelimit.DefaultConfig())
}
