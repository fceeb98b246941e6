package api_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/api"
)

// slowClients is how many slow clients TestSlowClientsCannotHoldTheAPI
// connects: modest by default, MXPROBE_SLOW_CLIENTS for the load figure in
// docs/reliability.md ("slow clients").
func slowClients(t *testing.T) int {
	n := 1000
	if v := os.Getenv("MXPROBE_SLOW_CLIENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("MXPROBE_SLOW_CLIENTS=%q: want a positive count", v)
		}
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Both ends of every connection are in this process, plus Redis and
	// the test's own descriptors.
	if need := uint64(2*n + 200); lim.Cur < need {
		t.Skipf("ulimit -n is %d; %d slow clients need %d", lim.Cur, n, need)
	}
	return n
}

// TestSlowClientsCannotHoldTheAPI connects thousands of clients that send
// headers announcing a 200 kB body and then nothing: /healthz answers while
// they are connected, each is cut off after the body deadline, and clients
// over the per-IP cap are closed at once.
func TestSlowClientsCannotHoldTheAPI(t *testing.T) {
	t.Parallel()
	n := slowClients(t)
	const perIP = 100
	bodyTimeout := 2 * time.Second
	b := setup(t, opts{cfg: func(c *api.Config) { c.BodyTimeout = bodyTimeout }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := api.LimitListener(ln, api.ConnLimits{Total: n + 100, PerIP: perIP})
	srv := &http.Server{Handler: b.api.Handler(), ReadHeaderTimeout: 10 * time.Second, WriteTimeout: b.api.WriteTimeout()}
	go srv.Serve(lim)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().(*net.TCPAddr)

	// Clients come from 127.0.0.2, .3, …, perIP each (Linux routes all of
	// 127.0.0.0/8 to lo), so that the per-IP cap admits them.
	dialFrom := func(i int) (net.Conn, error) {
		src := net.IPv4(127, 0, byte(i/perIP/250), byte(2+i/perIP%250))
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
		return d.Dial("tcp", addr.String())
	}
	const head = "POST /v1/validations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{\"address\":"
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := dialFrom(i)
		if err != nil {
			t.Fatalf("slow client %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatalf("slow client %d: %v", i, err)
		}
		conns[i] = c
	}
	start := time.Now()

	// One more from the first client's address is over its cap: closed
	// without a byte.
	extra, err := dialFrom(0)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(30 * time.Second))
	if k, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("connection over the per-IP cap: read %d bytes, %v; want EOF at once", k, err)
	}

	hc := &http.Client{Timeout: 30 * time.Second}
	t0 := time.Now()
	resp, err := hc.Get("http://" + addr.String() + "/healthz")
	if err != nil {
		t.Fatalf("/healthz with %d slow clients connected: %v", n, err)
	}
	resp.Body.Close()
	healthz := time.Since(t0)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz with %d slow clients connected: %s", n, resp.Status)
	}
	open := lim.Open()

	// Every slow client is cut off once its body deadline passes; the 60 s
	// bound only keeps a broken build from hanging the test.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				errs <- fmt.Errorf("slow client %d still connected: %v", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 3 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d slow clients were not cut off", failed, n)
	}
	t.Logf("%d slow clients (%d per IP): /healthz answered in %v with %d connections open; all cut off %v after connecting (body deadline %v); %d refused over the cap",
		n, perIP, healthz, open, time.Since(start).Round(time.Millisecond), bodyTimeout, lim.Refused())
}
