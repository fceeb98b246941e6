package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestCheckProgressOnATerminal runs check with stdout on a pseudo-terminal:
// a status line is drawn and redrawn in place (done of total, counts by
// verdict) and erased at the end; with stdout on a pipe there is none.
func TestCheckProgressOnATerminal(t *testing.T) {
	t.Parallel()
	flags, addrs, _ := checkListLab(t)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var mu sync.Mutex
	var screen bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, append(append([]string{"check"}, flags...), "-"), strings.NewReader(strings.Join(addrs, "\n")), tty, tty)
	tty.Close()
	<-read
	if code != exitUnsure {
		t.Errorf("exit %d", code)
	}
	mu.Lock()
	out := screen.String()
	mu.Unlock()
	for _, want := range []string{"[1/200] ", "[200/200] 195 valid, 0 invalid, 0 risky, 5 unknown", "\r\x1b[K"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output lacks %q", want)
		}
	}
	if !strings.HasSuffix(strings.TrimRight(out, "\n"), "\r\x1b[K") && !strings.HasSuffix(out, "\x1b[K") {
		t.Errorf("the status line is not erased at the end: %q", out[max(0, len(out)-120):])
	}

	// On a pipe: results only.
	_, piped, _ := runCmd(t, strings.Join(addrs[:10], "\n"), append(append([]string{"check"}, flags...), "-")...)
	if strings.Contains(piped, "\x1b[") || strings.Contains(piped, "/10]") {
		t.Errorf("status line written to a pipe: %q", piped)
	}
}
