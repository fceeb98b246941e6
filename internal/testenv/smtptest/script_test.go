package smtptest

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"testing"
)

func TestGlob(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"EHLO a.test", "EHLO a.test", true},
		{"EHLO a.test", "EHLO b.test", false},
		{"RCPT TO:<*@example.com>", "RCPT TO:<abc@example.com>", true},
		{"RCPT TO:<*@example.com>", "RCPT TO:<abc@example.org>", false},
		{"*", "", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxcyyb", false},
	}
	for _, tt := range tests {
		if got := glob(tt.pattern, tt.s); got != tt.want {
			t.Errorf("glob(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

// recordingTB catches the fake's complaints instead of failing this test.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestScriptMismatchFails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		send    string
		wantErr bool
	}{
		{name: "expected line", send: "EHLO a.test\r\n", wantErr: false},
		{name: "wrong line", send: "HELO a.test\r\n", wantErr: true},
		{name: "extra line after script", send: "EHLO a.test\r\nQUIT\r\n", wantErr: true},
		{name: "client leaves early", send: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &recordingTB{TB: t}
			done := make(chan struct{})
			t.Run("fake", func(t *testing.T) {
				rec.TB = t
				f := StartScript(rec, "< 220 hi\n> EHLO a.test\n< 250 ok")
				c, err := net.Dial("tcp", f.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				r := bufio.NewReader(c)
				if l, _ := r.ReadString('\n'); l != "220 hi\r\n" {
					t.Errorf("banner %q", l)
				}
				fmt.Fprint(c, tt.send)
				if tt.send != "" {
					r.ReadString('\n')
				}
				c.Close()
				close(done)
			})
			<-done
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if (len(rec.errs) > 0) != tt.wantErr {
				t.Errorf("fake complaints %q, want some = %v", rec.errs, tt.wantErr)
			}
		})
	}
}
