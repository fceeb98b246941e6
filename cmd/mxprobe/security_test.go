package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/tasks"
)

// signalWriter collects a command's stderr and closes seen once a line
// containing want has been written.
type signalWriter struct {
	mu   sync.Mutex
	b    bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.b.Write(p)
	if strings.Contains(w.b.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestWorkerLogsNoSecrets runs the worker command at debug level, in text
// and JSON, with a Redis password, a callback secret and a SOCKS5 proxy
// password, and has it fail a probe through the (dead) proxy: none of the
// secrets may appear in what it logs (docs/reliability.md §5).
func TestWorkerLogsNoSecrets(t *testing.T) {
	t.Parallel()
	const (
		redisPW  = "r3dis-pw-secret"
		cbSecret = "callb4ck-hmac-secret"
		proxyPW  = "pr0xy-pw-secret"
	)
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			srv := redistest.StartServerArgs(t, "--requirepass", redisPW)
			redisURL := "redis://:" + redisPW + "@" + srv.Addr() + "/0"
			deadProxy := smtptest.ClosedPort(t)
			stderr := &signalWriter{want: "will retry", seen: make(chan struct{})}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan int)
			go func() {
				var out bytes.Buffer
				done <- run(ctx, append([]string{"worker", "--redis-url", redisURL, "--callback-secret", cbSecret,
					"--proxy", "socks5://user:" + proxyPW + "@" + deadProxy.String(),
					"--log-level", "debug", "--log-format", format}, lab(t)...), strings.NewReader(""), &out, stderr)
			}()
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: redisPW})
			defer rdb.Close()
			if _, err := tasks.NewClient(rdb).Enqueue(ctx, tasks.Request{Address: "alice@example.test"}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-stderr.seen:
			case code := <-done:
				t.Fatalf("worker exited %d before probing:\n%s", code, stderr)
			case <-time.After(30 * time.Second):
				t.Fatalf("no failed probe logged in 30 s:\n%s", stderr)
			}
			cancel()
			<-done
			logs := stderr.String()
			if !strings.Contains(logs, "worker started") {
				t.Fatalf("start-up not logged; the test proves nothing:\n%s", logs)
			}
			for _, s := range []string{redisPW, cbSecret, proxyPW} {
				if strings.Contains(logs, s) {
					t.Errorf("log shows secret %q:\n%s", s, logs)
				}
			}
		})
	}
}

// TestRedisURLErrorsHideThePassword: a mistyped or wrong Redis URL fails at
// start-up with a message that names the URL without its password.
func TestRedisURLErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	const pw = "s3cret-in-url"
	srv := redistest.StartServerArgs(t, "--requirepass", "the-real-one")
	tests := []struct {
		name string
		url  string
	}{
		{name: "port is not a number", url: "redis://:" + pw + "@127.0.0.1:port/0"},
		{name: "bad escape in the password", url: "redis://user:" + pw + "%zz@127.0.0.1:6379/0"},
		{name: "bad database", url: "redis://:" + pw + "@127.0.0.1:6379/abc"},
		{name: "wrong password", url: "redis://:" + pw + "@" + srv.Addr() + "/0"},
		{name: "nobody listening", url: "redis://:" + pw + "@" + smtptest.ClosedPort(t).String() + "/0"},
		{name: "sentinel with bad port", url: "redis-sentinel://:" + pw + "@127.0.0.1:x/master"},
		{name: "password typed as a port", url: "redis://127.0.0.1:6379:" + pw},
		{name: "unescaped slash in the password", url: "redis://:ab/" + pw + "@127.0.0.1:6379/0"},
	}
	for _, tt := range tests {
		for _, cmd := range []string{"worker", "enqueue"} {
			t.Run(tt.name+"/"+cmd, func(t *testing.T) {
				t.Parallel()
				args := []string{cmd, "--redis-url", tt.url}
				if cmd == "worker" {
					args = append(args, "--callback-secret", "x")
				} else {
					args = append(args, "a@example.test")
				}
				code, out, errOut := runCmd(t, "", args...)
				if code == exitOK {
					t.Fatalf("exit 0 with %s", tt.url)
				}
				if !strings.Contains(errOut, "redis") {
					t.Errorf("message does not name Redis:\n%s", errOut)
				}
				if strings.Contains(errOut+out, pw) {
					t.Errorf("output shows the password:\n%s%s", out, errOut)
				}
			})
		}
	}
}
