// Package redistest gives tests a real Redis: one private redis-server per
// test package (started from TestMain), isolated key prefixes per test, and
// private per-test servers that a test may kill and restart.
//
// Why a real server and not miniredis: the rate limiter's Lua scripts call
// TIME and rely on EVALSHA/NOSCRIPT semantics, key expiry and ZSET scoring
// exactly as Redis implements them; an emulation would test the emulation.
//
// Set MXPROBE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/15) to use an
// existing server instead; every test then works under its own Prefix and
// deletes its keys at cleanup, so a shared server stays clean.
//
// The private server is started with persistence off (--save "" and
// --appendonly no) in a temporary directory, listens on loopback only and is
// stopped by its PID, never by name, so parallel packages and other users
// of the machine are unaffected.
package redistest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvURL names the environment variable that points the tests at an existing
// Redis instead of a private redis-server.
const EnvURL = "MXPROBE_TEST_REDIS_URL"

// startTimeout bounds how long we wait for redis-server to report that it is
// ready; a healthy server needs milliseconds, a loaded CI box a few seconds.
const startTimeout = 20 * time.Second

var (
	mu     sync.Mutex
	pkgURL string // set by Main
)

// Main runs the package's tests against a private redis-server (or the server
// named by MXPROBE_TEST_REDIS_URL) and exits with m.Run's code. Call it from
// TestMain:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if u := os.Getenv(EnvURL); u != "" {
		if _, err := redis.ParseURL(u); err != nil {
			fmt.Fprintf(os.Stderr, "redistest: %s=%q is not a Redis URL: %v\n", EnvURL, u, err)
			return 2
		}
		mu.Lock()
		pkgURL = u
		mu.Unlock()
		return m.Run()
	}
	s, err := start(0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "redistest: %v\n", err)
		return 2
	}
	defer s.stop()
	mu.Lock()
	pkgURL = s.URL()
	mu.Unlock()
	return m.Run()
}

// URL returns the Redis URL of the package's server (redis://127.0.0.1:port/0).
// It fails the test when Main was not called from TestMain.
func URL(t testing.TB) string {
	t.Helper()
	mu.Lock()
	u := pkgURL
	mu.Unlock()
	if u == "" {
		t.Fatal("redistest: no Redis: call redistest.Main(m) from TestMain")
	}
	return u
}

// Client returns a new client for the package's server, closed at cleanup.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	return clientFor(t, URL(t))
}

func clientFor(t testing.TB, u string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Prefix returns a key prefix unique to this test ("t:<TestName>:<random>:")
// and deletes every key under it when the test ends, so tests sharing one
// server never see each other's keys.
func Prefix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	p := "t:" + sanitize(t.Name()) + ":" + hex.EncodeToString(b[:]) + ":"
	u := URL(t)
	t.Cleanup(func() {
		opt, err := redis.ParseURL(u)
		if err != nil {
			return
		}
		c := redis.NewClient(opt)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Best effort: a test that killed the server has nothing to clean.
		it := c.Scan(ctx, 0, p+"*", 1000).Iterator()
		for it.Next(ctx) {
			c.Del(ctx, it.Val())
		}
	})
	return p
}

// sanitize keeps the prefix free of glob metacharacters (so the cleanup SCAN
// matches exactly this test's keys) and of braces (which would turn part of
// it into a Redis Cluster hash tag).
func sanitize(name string) string {
	var sb strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '/', r == '.':
			sb.WriteRune(r)
		default:
			sb.WriteByte('_')
		}
	}
	return sb.String()
}

// Server is a private redis-server for one test, for tests that kill or
// restart Redis under a client.
type Server struct {
	port  int
	dir   string
	extra []string // more redis-server arguments
	// sentinelConf, when set, runs this server as a Sentinel with that
	// configuration file.
	sentinelConf string

	logMu   sync.Mutex
	waiters []logWaiter

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartServer starts a private redis-server for this test, stopped at cleanup.
func StartServer(t testing.TB) *Server {
	t.Helper()
	s, err := start(0)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

// StartCluster starts a private one-node Redis Cluster holding all 16384
// slots, stopped at cleanup. One node is enough to test cluster rules: a
// node in cluster mode refuses a script or transaction whose keys lie in
// different slots (CROSSSLOT) even when it owns them all.
func StartCluster(t testing.TB) *Server {
	t.Helper()
	// The cluster bus defaults to port+10000, which may be taken or beyond
	// 65535: give it a free port of its own.
	bus, err := freePort()
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s, err := start(0, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", strconv.Itoa(bus))
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(s.stop)
	ok := s.waitLog("cluster state changed: ok")
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	if err := c.Do(context.Background(), "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatalf("redistest: assign slots: %v", err)
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-ok:
	case <-timer.C:
		t.Fatal("redistest: cluster state did not become ok")
	}
	return s
}

// ClusterClient returns a cluster client for this server, closed at cleanup.
func (s *Server) ClusterClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{s.Addr()}})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type logWaiter struct {
	substr string
	ch     chan struct{}
}

// waitLog returns a channel closed when the server logs a line containing
// substr (case-insensitive); register before causing the event.
func (s *Server) waitLog(substr string) <-chan struct{} {
	ch := make(chan struct{})
	s.logMu.Lock()
	s.waiters = append(s.waiters, logWaiter{strings.ToLower(substr), ch})
	s.logMu.Unlock()
	return ch
}

func (s *Server) logLine(line string) {
	line = strings.ToLower(line)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	kept := s.waiters[:0]
	for _, w := range s.waiters {
		if strings.Contains(line, w.substr) {
			close(w.ch)
			continue
		}
		kept = append(kept, w)
	}
	s.waiters = kept
}

// URL returns the server's URL (redis://127.0.0.1:port/0).
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Client returns a new client for this server, closed at cleanup.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	return clientFor(t, s.URL())
}

// Kill ends the server with SIGKILL, as a crash would, and waits for it to
// exit. Its data is lost (persistence is off).
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts the server again on the same port after Kill, empty.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.launch(); err != nil {
		t.Fatalf("redistest: restart: %v", err)
	}
}

// start picks a free loopback port and launches redis-server on it. Between
// closing our probe listener and redis-server binding the port another
// process may take it; then redis-server exits early and we try a new port.
func start(port int, extra ...string) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server not found on PATH (install the redis-server package, or set %s to an existing Redis): %w", EnvURL, err)
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 {
		p := port
		if p == 0 {
			if p, err = freePort(); err != nil {
				return nil, err
			}
		}
		s := &Server{port: p, dir: dir, extra: extra}
		if lastErr = s.launch(); lastErr == nil {
			return s, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// launch runs redis-server in the foreground, logging to stdout, and waits
// for its "ready to accept connections" line instead of polling with PING.
func (s *Server) launch() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "",
		"--loglevel", "notice",
	}
	readyLine := "ready to accept connections"
	if s.sentinelConf != "" {
		// A sentinel reads (and rewrites) a configuration file, named
		// first, and logs no "ready" line: it is serving once it
		// monitors its master.
		args = append([]string{s.sentinelConf, "--sentinel"}, args...)
		readyLine = "+monitor master"
	} else {
		args = append(args, "--save", "", "--appendonly", "no")
	}
	cmd := exec.Command("redis-server", args...)
	cmd.Args = append(cmd.Args, s.extra...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	ready := make(chan struct{})
	done := make(chan struct{})
	var logTail []string
	var logMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			s.logLine(line)
			logMu.Lock()
			logTail = append(logTail, line)
			if len(logTail) > 20 {
				logTail = logTail[1:]
			}
			logMu.Unlock()
			if !signalled && strings.Contains(strings.ToLower(line), readyLine) {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(done)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		s.mu.Lock()
		s.cmd, s.done = cmd, done
		s.mu.Unlock()
		return nil
	case <-done:
		logMu.Lock()
		defer logMu.Unlock()
		return fmt.Errorf("redis-server on port %d exited before it was ready:\n%s", s.port, strings.Join(logTail, "\n"))
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-done
		return errors.New("redis-server did not become ready in " + startTimeout.String())
	}
}

// stop ends the server by its PID (SIGTERM, then SIGKILL if it lingers) and
// removes its directory.
func (s *Server) stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(os.Interrupt)
		timer := time.NewTimer(10 * time.Second)
		select {
		case <-done:
		case <-timer.C:
			_ = cmd.Process.Kill()
			<-done
		}
		timer.Stop()
	}
	_ = os.RemoveAll(s.dir)
}
