package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxprobe/mxprobe/e2e/internal/lab"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/tasks"
)

// The strict servers' lab (docs/verdicts.md: strict servers' refusals of
// the client are never about the mailbox): its own Postfix instance, an
// Exim instance, DNS and worker, so that it runs beside TestEndToEnd.
var (
	ipPostscreen = netip.MustParseAddr("127.0.0.21")
	ipVerify     = netip.MustParseAddr("127.0.0.22")
	ipNoHost     = netip.MustParseAddr("127.0.0.24")
	// ipSenders answers for the prober's own MAIL FROM domain, lab.test,
	// with no mailbox for it: Exim's sender callout lands here. It is not
	// in the prober's DNS; Exim routes lab.test to it by manualroute.
	ipSenders = netip.MustParseAddr("127.0.0.25")
	ipExim    = netip.MustParseAddr("127.0.0.31")
)

// eximBody routes without DNS: lab.test (the prober's MAIL FROM domain) to
// the senders' listener for the callout, and accepts a few local parts of
// its own domains. verify.test is also the next hop of Postfix's
// reject_unverified_recipient probes.
const eximBody = `qualify_domain = lab.test
pid_file_path = {{dir}}/exim.pid
acl_smtp_rcpt = acl_rcpt

begin acl
acl_rcpt:
  deny    domains = eximsv.test
          !verify = sender/callout=10s
  accept  domains = verify.test
          local_parts = vera
  deny    domains = verify.test
          message = 5.1.1 <$local_part@$domain>: User unknown
  deny    domains = exim.test : eximsv.test
          !verify = recipient
  accept  domains = exim.test : eximsv.test
  deny    message = relay not permitted

begin routers
labsender:
  driver = manualroute
  domains = lab.test
  transport = remote_smtp
  route_list = * {{senders}}
  self = send
local_users:
  driver = accept
  domains = exim.test : eximsv.test
  local_parts = bob : carl
  transport = devnull

begin transports
remote_smtp:
  driver = smtp
  port = {{port}}
  hosts_avoid_tls = *
devnull:
  driver = appendfile
  file = /dev/null
`

func strictWants() []want {
	return []want{
		// postscreen's deep-protocol (pipelining) test answers the first
		// contact's RCPT with 450 4.3.2; a new connection passes to smtpd
		// (within the same attempt or on the retry; the log check below
		// proves the 450 happened).
		{name: "postscreen first contact, then valid", addr: "pat@ps.test", verdict: "valid", reason: "mailbox_exists", minAttempts: 1},
		// reject_unverified_recipient: 450 4.1.1 … Address verification in
		// progress, then the verify daemon's cached answer.
		{name: "unverified recipient, then valid", addr: "vera@verify.test", verdict: "valid", reason: "mailbox_exists", minAttempts: 2},
		{name: "unverified recipient, then 550", addr: "nobody@verify.test", verdict: "invalid", reason: "mailbox_not_found", minAttempts: 2},
		// reject_unknown_client_hostname refuses OUR host: never invalid.
		{name: "unknown client hostname 450 4.7.25", addr: "nina@nohost.test", verdict: "unknown", reason: "blocked_rdns", minAttempts: 1},
		{name: "Exim valid user", addr: "bob@exim.test", verdict: "valid", reason: "mailbox_exists", minAttempts: 1},
		{name: "Exim 550 Unrouteable address", addr: "nobody@exim.test", verdict: "invalid", reason: "mailbox_not_found", minAttempts: 1},
		// Exim's callout to our MAIL FROM domain fails; the reply quotes
		// the callout's "User unknown" — about OUR sender, never invalid.
		{name: "Exim sender callout failed", addr: "carl@eximsv.test", verdict: "unknown", reason: "sender_rejected", minAttempts: 1},
	}
}

// strictDeadline bounds the addresses whose refusal repeats on every
// attempt (our host name, our sender): their final verdict comes from the
// producer's deadline.
const strictDeadline = 25 * time.Second

func TestStrictServers(t *testing.T) {
	t.Parallel()
	if err := lab.Require(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lab.EximBinary()); err != nil {
		t.Fatalf("Exim binary: %v (.ci/run unpacks Debian's exim4-daemon-light there; see e2e/README.md)", err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), suiteTimeout)
	t.Cleanup(cancel)
	dir := lab.Dir(t)
	bin := buildMxprobe(t, dir)

	zone := dnstest.Zone{}
	for _, d := range []struct {
		domain string
		ip     netip.Addr
	}{{"ps.test", ipPostscreen}, {"verify.test", ipVerify}, {"nohost.test", ipNoHost}, {"exim.test", ipExim}, {"eximsv.test", ipExim}} {
		zone[d.domain] = []dns.RR{dnstest.MX("mx."+d.domain, 10)}
		zone["mx."+d.domain] = []dns.RR{dnstest.A(d.ip.String())}
	}
	zone[canaryName] = []dns.RR{dnstest.MX("mx."+canaryName, 10)}
	dnsSrv := dnstest.Start(t, zone)

	port, err := lab.FreePort(ipPostscreen, ipVerify, ipNoHost, ipSenders, ipExim)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.NewReplacer("{{senders}}", ipSenders.String()).Replace(eximBody)
	ex := lab.StartExim(t, dir, lab.EximConfig{IP: ipExim, Port: port, Body: body})
	pf := lab.StartPostfix(t, dir, lab.PostfixConfig{
		Port: port,
		Main: []string{
			"virtual_mailbox_domains = ps.test nohost.test lab.test",
			"virtual_mailbox_maps = texthash:$config_directory/mailboxes",
			"relay_domains = verify.test",
			"relay_recipient_maps =",
			"transport_maps = texthash:$config_directory/transport",
		},
		Files: map[string][]byte{
			"mailboxes": []byte("pat@ps.test x/\nnina@nohost.test x/\n"),
			"transport": fmt.Appendf(nil, "verify.test smtp:[%s]:%d\n", ipExim, port),
		},
		Listeners: []lab.Listener{
			{Name: "ps", IP: ipPostscreen, Postscreen: true, PostscreenOptions: []string{
				"postscreen_pipelining_enable=yes",
				"postscreen_greet_wait=1s",
			}},
			{Name: "verify", IP: ipVerify, Options: []string{
				"smtpd_recipient_restrictions=reject_unauth_destination,reject_unverified_recipient",
				// One poll: the first RCPT meets "verification in
				// progress" however fast the probe is.
				"address_verify_poll_count=1",
				"unverified_recipient_reject_code=550",
			}},
			{Name: "nohost", IP: ipNoHost, Options: []string{
				"smtpd_client_restrictions=reject_unknown_client_hostname",
			}},
			{Name: "senders", IP: ipSenders},
		},
	})
	t.Logf("strict lab up in %s: Postfix %s, Exim %s, DNS %s, port %d", time.Since(start).Round(time.Millisecond), pf.ConfDir, ex.Dir, dnsSrv.Addr(), port)

	redisURL := redistest.StartServer(t).URL()
	cb := newReceiver(t)
	worker := lab.Start(t, dir, "mxprobe-worker", workerArgs(bin, redisURL, dnsSrv.Addr(), port, "--limits", "verify.test=100/1s:50:10"))
	worker.WaitFor(t, "worker started", 30*time.Second)

	var addrs []string
	for _, w := range strictWants() {
		addrs = append(addrs, w.addr)
	}
	res, stderr := enqueueWait(ctx, t, bin, redisURL, cb.url, strictDeadline, addrs)
	t.Logf("producer done after %s", time.Since(start).Round(time.Millisecond))
	checkVerdicts(t, strictWants(), res, stderr)

	logb, err := os.ReadFile(pf.MailLog)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := lab.ParseMailLog(logb)
	if err != nil {
		t.Fatal(err)
	}
	// Each scenario must have met its server's refusal; else it would pass
	// without the strict behaviour ever happening.
	for _, c := range []struct{ tag, text string }{
		{"postfix-ps/postscreen", "450 4.3.2 Service currently unavailable"},
		{"postfix-verify/smtpd", "Address verification in progress"},
		{"postfix-nohost/smtpd", "cannot find your hostname"},
		{"postfix-senders/smtpd", "<probe@lab.test>"},
	} {
		var seen bool
		for _, e := range entries {
			if e.Tag == c.tag && strings.Contains(e.Msg, c.text) {
				seen = true
			}
		}
		if !seen {
			t.Errorf("Postfix's log has no %q from %s:\n%s", c.text, c.tag, tagged(entries, strings.SplitN(c.tag, "/", 2)[0]+"/"))
		}
	}
	eximLog, _ := os.ReadFile(ex.MainLog)
	if !strings.Contains(string(eximLog), "Sender verify failed") && !strings.Contains(string(eximLog), "sender verify fail") {
		t.Errorf("Exim's log shows no failed sender verification:\n%s", eximLog)
	}
	ids := map[string]string{}
	for addr, r := range res {
		ids[r.TaskID] = addr
	}
	cb.waitAll(t, ids, 60*time.Second)
}

// workerArgs is the worker command line the lab's tests share.
func workerArgs(bin, redisURL, dnsAddr string, port int, extra ...string) []string {
	return append([]string{bin, "worker",
		"--redis-url", redisURL,
		"--dns", dnsAddr,
		"--dns-canary", canaryName,
		"--smtp-port", fmt.Sprint(port),
		"--allow-private",
		"--helo", "probe.lab.test",
		"--from", "probe@lab.test",
		"--callback-secret", callbackSecret,
		"--callback-allow", "127.0.0.1/32",
		"--retry-first", retryFirst.String(),
		"--retry-max-delay", "10s",
		"--retry-give-up", "2m",
		"--limit-default", "100/1s:50:10",
		"--concurrency", "16",
		"--connect-timeout", "5s",
		"--command-timeout", "20s",
		"--timeout", "60s",
		"--log-level", "debug",
	}, extra...)
}

// enqueueWait runs one "mxprobe enqueue --wait" and returns its results by
// input address, and its stderr.
func enqueueWait(ctx context.Context, t *testing.T, bin, redisURL, cbURL string, deadline time.Duration, addrs []string) (map[string]tasks.Result, string) {
	t.Helper()
	args := []string{"enqueue", "--redis-url", redisURL, "--wait", "--wait-timeout", max(2*time.Minute, deadline+30*time.Second).String(),
		"--callback", cbURL, "--metadata", `{"suite":"e2e"}`, "--deadline", deadline.String()}
	cmd := exec.CommandContext(ctx, bin, append(args, addrs...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	out := map[string]tasks.Result{}
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var r tasks.Result
		if err := dec.Decode(&r); err != nil {
			t.Errorf("decoding enqueue's results: %v", err)
			break
		}
		out[r.Input] = r
	}
	return out, stderr.String()
}

func checkVerdicts(t *testing.T, ws []want, results map[string]tasks.Result, stderr string) {
	t.Helper()
	for _, w := range ws {
		r, ok := results[w.addr]
		if !ok {
			t.Errorf("%s: %s: no result printed by enqueue --wait; stderr:\n%s", w.name, w.addr, stderr)
			continue
		}
		if !r.Final || r.Verdict != w.verdict || r.Reason != w.reason {
			t.Errorf("%s: %s: got final=%v %s/%s (smtp %+v, error %q), want final %s/%s", w.name, w.addr, r.Final, r.Verdict, r.Reason, r.SMTP, r.Error, w.verdict, w.reason)
		} else {
			t.Logf("%s: %s: %s/%s after %d attempts (smtp %+v)", w.name, w.addr, r.Verdict, r.Reason, r.Attempts, r.SMTP)
		}
		if r.Attempts < w.minAttempts {
			t.Errorf("%s: %s: %d attempts, want at least %d", w.name, w.addr, r.Attempts, w.minAttempts)
		}
	}
}
