package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Listener is one smtpd service of the lab's Postfix: its own loopback
// address on the shared port, its own log tag and its own policy, given as
// master.cf "-o name=value" overrides of main.cf.
type Listener struct {
	// Name tags the listener's log lines: syslog_name = postfix-<Name>.
	Name string
	// IP is a loopback address (127.0.0.0/8 is all local on Linux, so no
	// interface needs configuring).
	IP netip.Addr
	// Options are main.cf parameters overridden for this listener only.
	// Values must not contain spaces (master.cf splits on them); Postfix
	// lists may use commas.
	Options []string
	// Postscreen puts postscreen(8) in front of the listener: postscreen
	// owns the address and hands clients that pass its tests to a private
	// smtpd ("pass" service smtpd-<Name>) that carries Options.
	Postscreen        bool
	PostscreenOptions []string
}

// PostfixConfig describes the lab's Postfix instance.
type PostfixConfig struct {
	// Port is the TCP port every listener binds on its own IP.
	Port int
	// Main is appended to the lab's base main.cf; "$config_directory"
	// names the instance's configuration directory in values.
	Main []string
	// Files are written into the configuration directory (maps,
	// certificates), name → content.
	Files     map[string][]byte
	Listeners []Listener
}

// Postfix is a running lab Postfix.
type Postfix struct {
	ConfDir string
	// MailLog is Postfix's own log file (maillog_file, written by postlogd).
	MailLog string
	Master  *Proc
}

// baseMain isolates the instance from the system: its own queue, data and
// log, loopback only, no DNS or NIS lookups (no traffic leaves loopback),
// no local delivery. Mail is never accepted: the prober stops before DATA.
const baseMain = `# Written by the mxprobe end-to-end lab; removed when the suite ends.
compatibility_level = 3.6
queue_directory = {{dir}}/queue
data_directory = {{dir}}/data
maillog_file = {{dir}}/log/maillog
maillog_file_prefixes = {{dir}}/log
myhostname = mx.lab.test
mydomain = lab.test
myorigin = lab.test
mydestination =
relay_domains =
# Not 127.0.0.0/8: the prober connects from 127.0.0.1 and must be treated
# as any outside client (no relay rights, no exemption from anvil limits).
mynetworks = 127.255.255.254/32
smtpd_client_event_limit_exceptions =
inet_interfaces = loopback-only
inet_protocols = ipv4
smtpd_peername_lookup = no
alias_maps =
alias_database =
local_recipient_maps =
biff = no
virtual_mailbox_base = {{dir}}/mail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtpd_banner = $myhostname ESMTP lab
# The smtp client (address-verification probes) and postscreen must not
# resolve anything: the lab's only next hops are [127.0.0.x]:port literals,
# and /etc/resolv.conf may name a server off loopback.
smtp_dns_support_level = disabled
smtp_host_lookup = native
postscreen_dnsbl_sites =
postscreen_cache_map = btree:$data_directory/postscreen_cache
`

// services are the internal Postfix services smtpd talks to while it
// checks a recipient (cleanup opens a queue file at MAIL FROM,
// trivial-rewrite resolves addresses, anvil counts connections, postlogd
// writes maillog_file). None is chrooted: the lab's paths are absolute.
const services = `cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
smtp      unix  -       -       n       -       -       smtp
dnsblog   unix  -       -       n       -       0       dnsblog
tlsproxy  unix  -       -       n       -       0       tlsproxy
`

func writeOptions(t testing.TB, w *strings.Builder, name string, opts []string) {
	t.Helper()
	for _, o := range opts {
		if strings.ContainsAny(o, " \t\n") || !strings.Contains(o, "=") {
			t.Fatalf("lab: listener %s: option %q: want name=value without spaces", name, o)
		}
		fmt.Fprintf(w, "  -o %s\n", o)
	}
}

// StartPostfix writes a Postfix instance under dir/postfix, creates its
// queue with "postfix -c DIR check", runs master in the foreground and
// returns once master has logged that it started (after binding every
// listener). It is stopped at cleanup.
func StartPostfix(t testing.TB, dir string, cfg PostfixConfig) *Postfix {
	t.Helper()
	root := filepath.Join(dir, "postfix")
	conf := filepath.Join(root, "conf")
	for _, d := range []string{conf, filepath.Join(root, "queue"), filepath.Join(root, "data"), filepath.Join(root, "log"), filepath.Join(root, "mail")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	if err := chown(filepath.Join(root, "data"), "postfix"); err != nil {
		t.Fatalf("lab: data_directory must belong to postfix: %v", err)
	}
	main := strings.ReplaceAll(baseMain, "{{dir}}", root) + strings.Join(cfg.Main, "\n") + "\n"
	var master strings.Builder
	for _, l := range cfg.Listeners {
		if !l.IP.IsLoopback() || !l.IP.Is4() {
			t.Fatalf("lab: listener %s: %s is not an IPv4 loopback address", l.Name, l.IP)
		}
		smtpdOpts := l.Options
		if l.Postscreen {
			fmt.Fprintf(&master, "%s:%d inet n - n - 1 postscreen\n  -o syslog_name=postfix-%s\n  -o smtpd_service_name=smtpd-%s\n", l.IP, cfg.Port, l.Name, l.Name)
			writeOptions(t, &master, l.Name, l.PostscreenOptions)
			fmt.Fprintf(&master, "smtpd-%s pass - - n - - smtpd\n  -o syslog_name=postfix-%s\n", l.Name, l.Name)
		} else {
			fmt.Fprintf(&master, "%s:%d inet n - n - - smtpd\n  -o syslog_name=postfix-%s\n", l.IP, cfg.Port, l.Name)
		}
		writeOptions(t, &master, l.Name, smtpdOpts)
	}
	master.WriteString(services)
	files := map[string][]byte{"main.cf": []byte(main), "master.cf": []byte(master.String())}
	for name, b := range cfg.Files {
		if strings.ContainsRune(name, '/') || name == "main.cf" || name == "master.cf" {
			t.Fatalf("lab: bad Postfix file name %q", name)
		}
		files[name] = b
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(conf, name), b, 0o644); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	// "postfix check" creates the queue's subdirectories with the owners
	// and modes Postfix insists on, and reports configuration errors.
	if out, err := exec.Command("postfix", "-c", conf, "check").CombinedOutput(); err != nil {
		t.Fatalf("lab: postfix -c %s check: %v\n%s", conf, err, out)
	}
	daemons, err := DaemonDir()
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	p := &Postfix{ConfDir: conf, MailLog: filepath.Join(root, "log", "maillog")}
	p.Master = Start(t, dir, "postfix-master", []string{filepath.Join(daemons, "master"), "-c", conf, "-d"})
	// master binds every inet listener while it reads master.cf, before it
	// logs "daemon started"; it has no other readiness signal. Dialling a
	// listener instead would count against the very anvil limits the suite
	// measures.
	if err := waitFile(p.MailLog, "postfix/master", "daemon started", p.Master.Done(), startTimeout); err != nil {
		t.Fatalf("lab: Postfix did not start: %v\nmaster output:\n%s\nmaillog:\n%s", err, strings.Join(p.Master.Lines(), "\n"), readTail(p.MailLog))
	}
	return p
}

// waitFile waits until a line of path contains both tag and substr. A log
// file is written by another process, so there is no channel to wait on:
// it is read again on a short tick until the line shows, the process exits
// or the timeout passes.
func waitFile(path, tag, substr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, tag) && strings.Contains(line, substr) {
					return nil
				}
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("the process exited before %s logged %q", tag, substr)
		case <-deadline.C:
			return fmt.Errorf("no %q from %s in %s within %s", substr, tag, path, timeout)
		case <-tick.C:
		}
	}
}

func readTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// LogEntry is one line of Postfix's maillog_file.
type LogEntry struct {
	// Time has no year (the log format has none) and second precision.
	Time time.Time
	// Tag is the program, e.g. "postfix-rate/smtpd" (syslog_name/daemon).
	Tag string
	PID int
	Msg string
}

// ParseMailLog reads Postfix's maillog_file format,
// "Mon _2 15:04:05 host tag[pid]: message". Lines in another form are an
// error: the suite's assertions depend on reading every line.
func ParseMailLog(b []byte) ([]LogEntry, error) {
	var out []LogEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if line == "" {
			continue
		}
		e, err := parseLogLine(line)
		if err != nil {
			return nil, fmt.Errorf("maillog line %d: %v: %q", n, err, line)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

func parseLogLine(line string) (LogEntry, error) {
	var e LogEntry
	const stamp = "Jan _2 15:04:05"
	if len(line) < len(stamp)+1 {
		return e, fmt.Errorf("too short")
	}
	ts, err := time.Parse(stamp, line[:len(stamp)])
	if err != nil {
		return e, err
	}
	rest := strings.TrimPrefix(line[len(stamp):], " ")
	_, rest, ok := strings.Cut(rest, " ") // host name
	if !ok {
		return e, fmt.Errorf("no host name")
	}
	prog, msg, ok := strings.Cut(rest, ": ")
	if !ok {
		return e, fmt.Errorf("no program tag")
	}
	tag, pid, ok := strings.Cut(prog, "[")
	if !ok || !strings.HasSuffix(pid, "]") {
		return e, fmt.Errorf("no [pid] in %q", prog)
	}
	e.PID, err = strconv.Atoi(strings.TrimSuffix(pid, "]"))
	if err != nil {
		return e, fmt.Errorf("pid: %v", err)
	}
	e.Time, e.Tag, e.Msg = ts, tag, msg
	return e, nil
}

// MaxInWindow returns the largest number of times that fall in one window
// [t, t+window], both ends included, over every start t. Postfix's anvil
// counts a client's connections per anvil_rate_time_unit from the first
// one, resetting only when a connection comes strictly after the unit has
// passed, on whole seconds; a count over every such closed window is at
// least the count anvil saw, so a maximum within the limit proves anvil
// never refused.
func MaxInWindow(times []time.Time, window time.Duration) int {
	ts := slices.Clone(times)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) > window {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
