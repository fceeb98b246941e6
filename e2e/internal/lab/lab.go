// Package lab starts the real mail software the end-to-end suite probes:
// Postfix with its own configuration directory, queue and log file, and
// postgrey as its greylisting policy service, plus any other program the
// suite runs (the mxprobe worker). Everything is started as a child process
// of the test, its PID written to a file under the lab directory, and
// stopped by that PID (SIGTERM to its process group, SIGKILL if it lingers)
// — never by a name pattern, so a system Postfix or another suite running on
// the same machine is left alone.
//
// The lab needs root (Postfix's master binds ports and drops privileges to
// the postfix user; postgrey drops to the postgrey user) and the Debian
// packages postfix, postgrey and redis-server. Require reports everything
// that is missing at once, so a CI log says what to install.
//
// Why child processes and not "postfix start": postfix start daemonizes the
// master, so the suite would learn its PID only from Postfix's own pid file
// and could not see it die. master -d stays in the foreground; with its own
// process group, master's SIGTERM handler, which signals its group, reaches
// every smtpd it spawned.
package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a daemon may take to say it is ready: Postfix
// and postgrey need well under a second, a loaded CI machine a few.
const startTimeout = 30 * time.Second

// stopTimeout is how long a process may take to exit after SIGTERM.
const stopTimeout = 10 * time.Second

// Packages lists the Debian packages the lab needs, for messages.
const Packages = "postfix postgrey redis-server"

// Require returns nil when this machine can run the lab, else an error that
// names everything missing (privilege, programs, system users).
func Require() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root privileges (Postfix's master must start as root; run the suite as root, e.g. in CI or a container)")
	}
	for _, prog := range []string{"postconf", "postfix", "postgrey", "redis-server", "go"} {
		if _, err := exec.LookPath(prog); err != nil {
			missing = append(missing, fmt.Sprintf("program %q on PATH", prog))
		}
	}
	if d, err := DaemonDir(); err != nil {
		missing = append(missing, err.Error())
	} else if _, err := os.Stat(filepath.Join(d, "master")); err != nil {
		missing = append(missing, "Postfix master daemon: "+err.Error())
	}
	for _, u := range []string{"postfix", "postgrey"} {
		if _, err := user.Lookup(u); err != nil {
			missing = append(missing, fmt.Sprintf("system user %q (created by the %s package)", u, u))
		}
	}
	if _, err := os.Stat(EximBinary()); err != nil {
		missing = append(missing, "Exim binary unpacked from Debian's exim4-daemon-light (.ci/run does it; e2e/README.md): "+err.Error())
	}
	if _, err := user.Lookup("Debian-exim"); err != nil {
		missing = append(missing, `system user "Debian-exim" (compiled into Debian's exim4; .ci/run creates it)`)
	}
	if _, err := user.LookupGroup("postdrop"); err != nil {
		missing = append(missing, `system group "postdrop" (created by the postfix package)`)
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("the end-to-end lab cannot start; missing:\n  - %s\ninstall with: DEBIAN_FRONTEND=noninteractive apt-get install -y %s",
		strings.Join(missing, "\n  - "), Packages)
}

// DaemonDir returns Postfix's daemon_directory (where master lives): the
// system main.cf's value, else the compiled-in default. Debian's "No
// configuration" install (what .ci/run does, so no system mail server
// starts) has no /etc/postfix/main.cf, and plain `postconf -h` fails there.
func DaemonDir() (string, error) {
	out, err := exec.Command("postconf", "-h", "daemon_directory").Output()
	if err != nil {
		var derr error
		if out, derr = exec.Command("postconf", "-d", "-h", "daemon_directory").Output(); derr != nil {
			return "", fmt.Errorf("postconf -h daemon_directory: %v; postconf -d: %v", err, derr)
		}
	}
	return strings.TrimSpace(string(out)), nil
}

// Dir creates the lab directory: world-traversable (0755), because
// Postfix's and postgrey's unprivileged processes must reach files in it,
// which t.TempDir's 0700 directories forbid. It is removed at cleanup.
func Dir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "mxprobe-e2e-")
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("MXPROBE_E2E_KEEP") != "" {
			t.Logf("lab: kept %s for inspection (MXPROBE_E2E_KEEP is set)", d)
			return
		}
		_ = os.RemoveAll(d)
	})
	return d
}

// Proc is a child process the lab started, with its PID in a file.
type Proc struct {
	Name    string
	PIDFile string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited

	mu      sync.Mutex
	lines   []string
	waiters []waiter
	exitErr error
}

type waiter struct {
	substr string
	ch     chan string
}

// Start runs argv as a child in its own process group, writes its PID to
// dir/run/<name>.pid, copies its stdout and stderr to dir/log/<name>.log,
// and stops it at cleanup. env is added to the inherited environment.
func Start(t testing.TB, dir, name string, argv []string, env ...string) *Proc {
	t.Helper()
	for _, sub := range []string{"run", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	logf, err := os.Create(filepath.Join(dir, "log", name+".log"))
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	p := &Proc{Name: name, PIDFile: filepath.Join(dir, "run", name+".pid"), done: make(chan struct{})}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	// Own process group: stopping it reaches its children, and a Ctrl-C
	// meant for the test does not race the suite's orderly stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("lab: start %s (%s): %v", name, argv[0], err)
	}
	p.cmd = cmd
	if err := os.WriteFile(p.PIDFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("lab: %v", err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			p.line(line)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-copied
		logf.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(p.Stop)
	return p
}

func (p *Proc) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, s)
	kept := p.waiters[:0]
	for _, w := range p.waiters {
		if strings.Contains(s, w.substr) {
			w.ch <- s
			continue
		}
		kept = append(kept, w)
	}
	p.waiters = kept
}

// Lines returns what the process has printed so far.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Seen returns a channel that receives the first output line containing
// substr, including lines printed before the call.
func (p *Proc) Seen(substr string) <-chan string {
	ch := make(chan string, 1)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if strings.Contains(l, substr) {
			ch <- l
			return ch
		}
	}
	p.waiters = append(p.waiters, waiter{substr, ch})
	return ch
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// WaitFor waits until the process prints a line containing substr. It fails
// with the process's output when the process exits first or the wait times
// out.
func (p *Proc) WaitFor(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case l := <-p.Seen(substr):
		return l
	case <-p.done:
		// The line may have come just before the exit.
		select {
		case l := <-p.Seen(substr):
			return l
		default:
		}
		t.Fatalf("lab: %s exited (%v) before printing %q; its output:\n%s", p.Name, p.err(), substr, strings.Join(p.Lines(), "\n"))
	case <-timer.C:
		t.Fatalf("lab: %s did not print %q within %s; its output:\n%s", p.Name, substr, timeout, strings.Join(p.Lines(), "\n"))
	}
	return ""
}

func (p *Proc) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Stop sends SIGTERM to the process group of the PID in the PID file,
// waits, and sends SIGKILL to the group if the process lingers. It is safe
// to call more than once.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		_ = os.Remove(p.PIDFile)
		return
	default:
	}
	pid, err := readPID(p.PIDFile)
	if err != nil || pid != p.cmd.Process.Pid {
		// The file is ours; if it was changed, trust the process handle.
		pid = p.cmd.Process.Pid
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
	_ = os.Remove(p.PIDFile)
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// FreePort returns a TCP port free on every one of ips at the moment of the
// call. The prober uses one SMTP port for every MX host, so all listeners
// must share it. The port is drawn below Linux's ephemeral range (32768 and
// up by default): a port from that range, as Listen(":0") hands out, can be
// taken at any moment by some process's outgoing connection, which a port
// below it never is. Another process may still bind it explicitly before
// the daemon does; the daemon then fails to start and says so.
func FreePort(ips ...netip.Addr) (int, error) {
	for range 50 {
		port := 20000 + rand.IntN(12000)
		ok := true
		var held []net.Listener
		for _, ip := range ips {
			l, err := net.Listen("tcp", netip.AddrPortFrom(ip, uint16(port)).String())
			if err != nil {
				ok = false
				break
			}
			held = append(held, l)
		}
		for _, l := range held {
			l.Close()
		}
		if ok {
			return port, nil
		}
	}
	return 0, errors.New("lab: no TCP port free on every listener address")
}

// chown gives path to the named system user (and its primary group).
func chown(path, userName string) error {
	u, err := user.Lookup(userName)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}
