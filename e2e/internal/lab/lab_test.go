package lab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.Parse(time.TimeOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestMaxInWindow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		times  []string
		window time.Duration
		want   int
	}{
		{name: "none", want: 0, window: 10 * time.Second},
		{name: "one", times: []string{"10:00:00"}, window: 10 * time.Second, want: 1},
		{name: "same second", times: []string{"10:00:00", "10:00:00", "10:00:00"}, window: 10 * time.Second, want: 3},
		// anvil resets only when a connection comes strictly after the
		// unit: both ends of the window count.
		{name: "window end included", times: []string{"10:00:00", "10:00:05", "10:00:10"}, window: 10 * time.Second, want: 3},
		{name: "just past the window", times: []string{"10:00:00", "10:00:05", "10:00:11"}, window: 10 * time.Second, want: 2},
		{name: "unsorted input", times: []string{"10:00:20", "10:00:00", "10:00:21", "10:00:19"}, window: 10 * time.Second, want: 3},
		{name: "spread out", times: []string{"10:00:00", "10:00:05", "10:00:10", "10:00:15", "10:00:20"}, window: 10 * time.Second, want: 3},
		{name: "burst later", times: []string{"10:00:00", "10:00:30", "10:00:31", "10:00:32", "10:00:33"}, window: 10 * time.Second, want: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ts []time.Time
			for _, s := range tt.times {
				ts = append(ts, at(s))
			}
			if got := MaxInWindow(ts, tt.window); got != tt.want {
				t.Errorf("MaxInWindow(%v, %s) = %d, want %d", tt.times, tt.window, got, tt.want)
			}
		})
	}
}

func TestParseMailLog(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []LogEntry
		wantErr string
	}{
		{
			name: "postlogd lines",
			in: "Nov 22 15:55:20 mx postfix-rate/smtpd[8756]: connect from unknown[127.0.0.1]\n" +
				"Nov  2 09:05:01 mx postfix/master[81]: daemon started -- version 3.7.11, configuration /x\n",
			want: []LogEntry{
				{Time: time.Date(0, 11, 22, 15, 55, 20, 0, time.UTC), Tag: "postfix-rate/smtpd", PID: 8756, Msg: "connect from unknown[127.0.0.1]"},
				{Time: time.Date(0, 11, 2, 9, 5, 1, 0, time.UTC), Tag: "postfix/master", PID: 81, Msg: "daemon started -- version 3.7.11, configuration /x"},
			},
		},
		{name: "empty lines skipped", in: "\n\n", want: nil},
		{name: "message with colons", in: "Jan  1 00:00:00 h postfix-grey/smtpd[1]: NOQUEUE: reject: RCPT from x: 450 4.2.0 <a@b>: Greylisted\n",
			want: []LogEntry{{Time: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), Tag: "postfix-grey/smtpd", PID: 1, Msg: "NOQUEUE: reject: RCPT from x: 450 4.2.0 <a@b>: Greylisted"}}},
		{name: "bad timestamp", in: "Foo 22 15:55:20 mx postfix/smtpd[1]: x\n", wantErr: "line 1"},
		{name: "no pid", in: "Nov 22 15:55:20 mx postfix/smtpd: x\n", wantErr: "no [pid]"},
		{name: "bad pid", in: "Nov 22 15:55:20 mx postfix/smtpd[x]: hello\n", wantErr: "pid"},
		{name: "no tag", in: "Nov 22 15:55:20 mx\n", wantErr: "no"},
		{name: "too short", in: "Nov 22\n", wantErr: "too short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseMailLog([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseMailLog error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d entries %+v, want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				if !got[i].Time.Equal(tt.want[i].Time) || got[i].Tag != tt.want[i].Tag || got[i].PID != tt.want[i].PID || got[i].Msg != tt.want[i].Msg {
					t.Errorf("entry %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestProcStop checks the PID-file discipline on a harmless child: the
// PID file holds the child's PID while it runs, Stop ends it and its
// process group, and the file is gone afterwards.
func TestProcStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := Start(t, dir, "sleeper", []string{"sh", "-c", "echo ready; sleep 300 & wait"})
	p.WaitFor(t, "ready", 10*time.Second)
	pid, err := readPID(p.PIDFile)
	if err != nil {
		t.Fatal(err)
	}
	if pid != p.cmd.Process.Pid {
		t.Fatalf("PID file says %d, child is %d", pid, p.cmd.Process.Pid)
	}
	p.Stop()
	select {
	case <-p.Done():
	default:
		t.Fatal("process still running after Stop")
	}
	if _, err := os.Stat(p.PIDFile); !os.IsNotExist(err) {
		t.Errorf("PID file left behind: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "log", "sleeper.log")); err != nil || !strings.Contains(string(b), "ready") {
		t.Errorf("output log: %q, %v", b, err)
	}
	p.Stop() // idempotent
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.21"), netip.MustParseAddr("127.0.0.22")}
	// A port free when FreePort returns may be taken by another package's
	// test a moment later: that race, not FreePort, fails one try, so the
	// test fails only if three tries in a row find the port taken.
	var lastErr error
	for range 3 {
		port, err := FreePort(ips...)
		if err != nil {
			t.Fatal(err)
		}
		lastErr = nil
		for _, ip := range ips {
			l, err := net.Listen("tcp", netip.AddrPortFrom(ip, uint16(port)).String())
			if err != nil {
				lastErr = fmt.Errorf("port %d is not free on %s: %w", port, ip, err)
				break
			}
			l.Close()
		}
		if lastErr == nil {
			return
		}
	}
	t.Fatal(lastErr)
}

func TestRequireNamesPackages(t *testing.T) {
	t.Parallel()
	// Whatever this machine has, the error (if any) must say how to fix it.
	if err := Require(); err != nil && !strings.Contains(err.Error(), "apt-get install -y "+Packages) {
		t.Errorf("Require error does not name the packages: %v", err)
	}
}
