package lab

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// EximCache is where .ci/run unpacks Debian's exim4-daemon-light package
// (dpkg -x): Debian's exim4 conflicts with Postfix, so the lab runs the
// unpacked binary, never an installed system Exim. MXPROBE_E2E_EXIM names
// another binary.
const EximCache = "/var/cache/mxprobe-e2e/exim/root/usr/sbin/exim4"

// EximBinary returns the Exim binary the lab runs.
func EximBinary() string {
	if b := os.Getenv("MXPROBE_E2E_EXIM"); b != "" {
		return b
	}
	return EximCache
}

// EximConfig describes the lab's Exim instance.
type EximConfig struct {
	IP   netip.Addr
	Port int
	// Body is appended to the base configuration: domain lists, ACLs,
	// routers and transports. "{{dir}}" names the instance's directory.
	Body string
}

// Exim is a running lab Exim.
type Exim struct {
	Dir     string
	MainLog string
	Proc    *Proc
}

// eximBase keeps the instance to itself and to loopback: its own spool and
// logs, no reverse lookup or ident query of clients (both would leave
// loopback), and no DNS for routing: the body routes by manualroute to IP
// literals only.
const eximBase = `# Written by the mxprobe end-to-end lab; removed when the suite ends.
primary_hostname = exim.lab.test
spool_directory = {{dir}}/spool
log_file_path = {{dir}}/log/%slog
log_selector = +smtp_connection +smtp_protocol_error +smtp_syntax_error
local_interfaces = <; {{ip}}.{{port}}
daemon_smtp_ports = {{port}}
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
dns_again_means_nonexist = *
smtp_banner = exim.lab.test ESMTP lab
keep_environment =
`

// StartExim writes an Exim configuration under dir/exim and runs the
// daemon in the foreground (-bdf) with it (-C), as its own instance: no
// system configuration, spool or service is used.
func StartExim(t testing.TB, dir string, cfg EximConfig) *Exim {
	t.Helper()
	if !cfg.IP.IsLoopback() || !cfg.IP.Is4() {
		t.Fatalf("lab: Exim: %s is not an IPv4 loopback address", cfg.IP)
	}
	root := filepath.Join(dir, "exim")
	for _, d := range []string{filepath.Join(root, "spool"), filepath.Join(root, "log")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("lab: %v", err)
		}
		if err := chown(d, "Debian-exim"); err != nil {
			t.Fatalf("lab: Exim's %s must belong to Debian-exim: %v", d, err)
		}
		// Exim opens its log both as root (at start) and as Debian-exim;
		// root without CAP_DAC_OVERRIDE (containers) needs the mode.
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	r := strings.NewReplacer("{{dir}}", root, "{{ip}}", cfg.IP.String(), "{{port}}", fmt.Sprint(cfg.Port))
	conf := filepath.Join(root, "exim.conf")
	if err := os.WriteFile(conf, []byte(r.Replace(eximBase+cfg.Body)), 0o644); err != nil {
		t.Fatalf("lab: %v", err)
	}
	bin := EximBinary()
	if out, err := exec.Command(bin, "-C", conf, "-bV").CombinedOutput(); err != nil {
		t.Fatalf("lab: %s -C %s -bV: %v\n%s", bin, conf, err, out)
	}
	e := &Exim{Dir: root, MainLog: filepath.Join(root, "log", "mainlog")}
	// -bdf: daemon in the foreground; -q is not given, so no queue runner
	// (nothing is ever queued: the prober stops before DATA).
	e.Proc = Start(t, dir, "exim", []string{bin, "-C", conf, "-bdf"})
	if err := waitFile(e.MainLog, "exim", "daemon started", e.Proc.Done(), startTimeout); err != nil {
		t.Fatalf("lab: Exim did not start: %v\noutput:\n%s\nmainlog:\n%s", err, strings.Join(e.Proc.Lines(), "\n"), readTail(e.MainLog))
	}
	return e
}
