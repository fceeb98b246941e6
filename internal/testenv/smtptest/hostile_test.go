package smtptest

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestResetStepSendsRST(t *testing.T) {
	t.Parallel()
	// The client speaks first: a reset racing the handshake would fail
	// the dial itself.
	f := StartScript(t, "< 220 hi\n> NOOP\n! reset")
	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "NOOP\r\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	var rerr error
	for rerr == nil {
		_, rerr = c.Read(buf)
	}
	if !errors.Is(rerr, syscall.ECONNRESET) {
		t.Errorf("read after reset: %v, want ECONNRESET (a FIN would give io.EOF)", rerr)
	}
}

func TestBurstStepIsOneWrite(t *testing.T) {
	t.Parallel()
	f := StartScript(t, "! burst 250 a || 250 b\n! close")
	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "250 a\r\n250 b\r\n" {
		t.Errorf("got %q", got)
	}
}
