package smtptest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fake is a transcript-driven SMTP peer. Every accepted connection plays the
// same script, one line at a time:
//
//	< 220 mx.test ESMTP          the fake sends this line (CRLF added)
//	> EHLO helo.test             the client must send exactly this line;
//	                             '*' in it matches any run of characters
//	! close                      close the connection now
//	! hang                       send nothing more; read and discard until
//	                             the client gives up and closes
//	! endless 250-               send the prefix, then 'x' without end
//	! slow 50ms 220 hi           send the line one byte per interval
//	! pause 50ms                 send nothing for that long
//	! repeat 10000 250-x         send the line that many times
//	! reset, ! burst             see hostile.go
//
// Blank lines and lines starting with '#' are ignored; leading blanks are
// trimmed so scripts can be indented in raw strings. A mismatch, a client
// that closes while the script expects a line, or a line after the script
// ended fails the test.
type Fake struct {
	t      testing.TB
	ln     net.Listener
	script []string
	addr   netip.AddrPort

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns int
	open  map[net.Conn]struct{}
}

// StartScript starts a fake on 127.0.0.1:0 (or at, if valid) playing script.
func StartScript(t testing.TB, script string, at ...netip.AddrPort) *Fake {
	t.Helper()
	var where netip.AddrPort
	if len(at) > 0 {
		where = at[0]
	}
	f := &Fake{t: t, script: parseScript(script), open: map[net.Conn]struct{}{}}
	f.ln = listen(t, where)
	f.addr = f.ln.Addr().(*net.TCPAddr).AddrPort()
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(func() {
		f.ln.Close()
		f.mu.Lock()
		for c := range f.open {
			// Unblock a play stuck on a client that never closes, after a
			// grace: a client that QUITs without awaiting the 221 may be
			// done before the play has read its last line (a deadline in
			// the past fails even a read of data already received).
			c.SetDeadline(time.Now().Add(time.Second))
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

// Addr is the fake's loopback address and port.
func (f *Fake) Addr() netip.AddrPort { return f.addr }

// Port is the fake's port.
func (f *Fake) Port() int { return int(f.addr.Port()) }

// Conns counts accepted connections.
func (f *Fake) Conns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

func parseScript(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimLeft(strings.TrimRight(l, "\r"), " \t")
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	return out
}

func (f *Fake) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns++
		f.open[c] = struct{}{}
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() {
				f.mu.Lock()
				delete(f.open, c)
				f.mu.Unlock()
				c.Close()
			}()
			f.play(c)
		}()
	}
}

func (f *Fake) play(c net.Conn) {
	// A safety net so a broken test cannot hang the package.
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	for i, step := range f.script {
		switch {
		case strings.HasPrefix(step, "< "):
			if _, err := io.WriteString(c, step[2:]+"\r\n"); err != nil {
				f.t.Errorf("smtptest: step %d %q: write: %v", i+1, step, err)
				return
			}
		case strings.HasPrefix(step, "> "):
			got, err := r.ReadString('\n')
			if err != nil {
				f.t.Errorf("smtptest: step %d: want client line %q, got error %v", i+1, step[2:], err)
				return
			}
			got = strings.TrimRight(got, "\r\n")
			if !glob(step[2:], got) {
				f.t.Errorf("smtptest: step %d: client sent %q, want %q", i+1, got, step[2:])
				return
			}
		case step == "! close":
			return
		case step == "! reset":
			reset(c)
			return
		case strings.HasPrefix(step, "! burst "):
			if burst(c, step[len("! burst "):]) != nil {
				return
			}
		case step == "! hang":
			io.Copy(io.Discard, r)
			return
		case strings.HasPrefix(step, "! endless "):
			f.endless(c, step[len("! endless "):])
			return
		case strings.HasPrefix(step, "! pause "):
			d, err := time.ParseDuration(step[len("! pause "):])
			if err != nil {
				f.t.Errorf("smtptest: bad pause step %q", step)
				return
			}
			time.Sleep(d) // the peer's silence is what the script describes
		case strings.HasPrefix(step, "! slow "):
			if !f.slow(c, step[len("! slow "):]) {
				return
			}
		case strings.HasPrefix(step, "! repeat "):
			n, line, _ := strings.Cut(step[len("! repeat "):], " ")
			count, err := strconv.Atoi(n)
			if err != nil {
				f.t.Errorf("smtptest: bad step %q", step)
				return
			}
			w := bufio.NewWriter(c)
			for range count {
				w.WriteString(line + "\r\n")
			}
			if w.Flush() != nil {
				return // the client gave up; that is the point
			}
		default:
			f.t.Errorf("smtptest: bad step %q", step)
			return
		}
	}
	// The script is over: the client may only close.
	if got, err := r.ReadString('\n'); err == nil || got != "" {
		f.t.Errorf("smtptest: client sent %q after the script ended", strings.TrimRight(got, "\r\n"))
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		var ne net.Error
		if !errors.As(err, &ne) {
			f.t.Errorf("smtptest: after the script: %v", err)
		}
	}
}

func (f *Fake) endless(c net.Conn, prefix string) {
	if _, err := io.WriteString(c, prefix); err != nil {
		return
	}
	chunk := []byte(strings.Repeat("x", 4096))
	for {
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

func (f *Fake) slow(c net.Conn, arg string) bool {
	iv, line, _ := strings.Cut(arg, " ")
	d, err := time.ParseDuration(iv)
	if err != nil {
		f.t.Errorf("smtptest: bad slow step %q", arg)
		return false
	}
	tick := time.NewTicker(d)
	defer tick.Stop()
	b := []byte(line + "\r\n")
	for i := range b {
		if _, err := c.Write(b[i : i+1]); err != nil {
			return false
		}
		<-tick.C
	}
	return true
}

// glob matches s against pattern, where '*' matches any run of characters.
func glob(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}
