package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// TestEnqueueWaitStreamsThenReportsTheRest: enqueue --wait prints a result
// the moment it is final, not behind a slower address given before it, and
// at the timeout prints the greylisted one's latest state (final false,
// its reason) and exits 5.
func TestEnqueueWaitStreamsThenReportsTheRest(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	s := smtptest.Start(t, smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
		if strings.HasPrefix(to, "grey@") {
			return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try again later"}
		}
		return nil
	}})
	d := dnstest.Start(t, dnstest.Zone{
		"example.test.":    {dnstest.MX("mx.example.test.", 10)},
		"mx.example.test.": {dnstest.A("127.0.0.1")},
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		run(ctx, []string{"worker", "--redis-url", srv.URL(), "--callback-secret", "s3cret", "--log-level", "error",
			"--dns", d.Addr(), "--dns-canary", "example.test", "--smtp-port", strconv.Itoa(s.Port()), "--allow-private",
			"--helo", "probe.mxprobe.test", "--from", "verify@mxprobe.test", "--no-catch-all"}, strings.NewReader(""), io.Discard, io.Discard)
	}()
	t.Cleanup(func() { cancel(); <-workerDone })

	pr, pw := io.Pipe()
	ended := make(chan int, 1)
	var errOut strings.Builder
	go func() {
		code := run(ctx, []string{"enqueue", "--redis-url", srv.URL(), "--wait", "--wait-timeout", "4s",
			"grey@example.test", "alice@example.test"}, strings.NewReader(""), pw, &errOut)
		ended <- code
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var lines []map[string]any
	aliceBeforeEnd := false
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if m["input"] == "alice@example.test" && len(ended) == 0 {
			aliceBeforeEnd = true
		}
		lines = append(lines, m)
	}
	var code int
	select {
	case code = <-ended:
	case <-time.After(time.Minute):
		t.Fatal("enqueue --wait did not end")
	}
	if code != exitNotFinal {
		t.Errorf("exit %d, want %d (some not final)\n%v\n%s", code, exitNotFinal, lines, errOut.String())
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %v", len(lines), lines)
	}
	if lines[0]["input"] != "alice@example.test" || lines[0]["verdict"] != "valid" || lines[0]["final"] != true || !aliceBeforeEnd {
		t.Errorf("first line %v (printed before the end: %v), want alice's final valid result while grey's was still waiting", lines[0], aliceBeforeEnd)
	}
	if g := lines[1]; g["input"] != "grey@example.test" || g["final"] != false || g["reason"] != "greylisted" || g["task_id"] == "" || g["next_attempt_at"] == nil {
		t.Errorf("second line %v, want grey's provisional state: final false, greylisted, its next attempt", g)
	}
}

// TestEnqueueWaitInterrupted: an interrupt during --wait is an operational
// failure (exit 4), not "some not final", and the tasks' states are still
// printed.
func TestEnqueueWaitInterrupted(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t) // no worker: nothing becomes final
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut strings.Builder
	done := make(chan int, 1)
	pr, pw := io.Pipe()
	go func() {
		done <- run(ctx, []string{"enqueue", "--redis-url", srv.URL(), "--wait", "--wait-timeout", "1m", "a@example.test"},
			strings.NewReader(""), pw, &errOut)
		pw.Close()
	}()
	// Cancel once the task is queued: its key exists in Redis.
	rdb := srv.Client(t)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if n, _ := rdb.Keys(context.Background(), "asynq:{default}:t:*").Result(); len(n) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no task queued")
		}
	}
	cancel()
	b, _ := io.ReadAll(pr)
	out.Write(b)
	if code := <-done; code != exitFailure {
		t.Errorf("exit %d after an interrupt, want %d\n%s\n%s", code, exitFailure, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), `"final":false`) {
		t.Errorf("no provisional state printed: %q", out.String())
	}
}
