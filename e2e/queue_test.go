package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxprobe/mxprobe/e2e/internal/lab"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
)

// The queue-level lab: three workers on one Redis against a greylisting, a
// directory-harvest-limited (smtpd_hard_error_limit) and a rate-limited
// provider, with addresses whose names contain words the reply rules look
// for (docs/verdicts.md: text rules never read the echoed address).
var (
	ipGreyQ     = netip.MustParseAddr("127.0.0.41")
	ipDHA       = netip.MustParseAddr("127.0.0.42")
	ipRateLimit = netip.MustParseAddr("127.0.0.43")
	ipWords     = netip.MustParseAddr("127.0.0.44")
)

const (
	queueWorkers = 3
	// dhaErrorLimit is the DHA listener's smtpd_hard_error_limit: the
	// third refused RCPT of a session ends it with 421 4.7.0 too many errors.
	dhaErrorLimit = 3
	queueRate     = "ratelimit.test=1/5s:1:1"
	// queueDeadline bounds every address: the rate-limited provider needs
	// about 5 × 5 s, the greylisted domain one retry.
	queueDeadline = 60 * time.Second
)

func queueWants() []want {
	ws := []want{
		{name: "greylisted then valid", addr: "greg@greyq.test", verdict: "valid", reason: "mailbox_exists", minAttempts: 2},
		{name: "rule words in local part, greylisted, unknown", addr: "spam-blocked@greyq.test", verdict: "invalid", reason: "mailbox_not_found", minAttempts: 2},
		{name: "rule word in domain, unknown", addr: "ua@ratelimit.test", verdict: "invalid", reason: "mailbox_not_found", minAttempts: 1},
		{name: "rule words, existing", addr: "throttle@words.test", verdict: "valid", reason: "mailbox_exists", minAttempts: 1},
		{name: "rule words, existing (2)", addr: "blocked.by.sorbs@words.test", verdict: "valid", reason: "mailbox_exists", minAttempts: 1},
		{name: "rule words, unknown", addr: "rbl.listed@words.test", verdict: "invalid", reason: "mailbox_not_found", minAttempts: 1},
		{name: "rule words, unknown (2)", addr: "spamcop-blacklisted@words.test", verdict: "invalid", reason: "mailbox_not_found", minAttempts: 1},
		{name: "DHA listener, rule words, unknown", addr: "rbl.listed@dha.test", verdict: "invalid", reason: "mailbox_not_found", minAttempts: 1},
	}
	for i := 1; i <= 3; i++ {
		ws = append(ws, want{name: fmt.Sprintf("DHA listener, existing #%d", i), addr: fmt.Sprintf("dora%d@dha.test", i), verdict: "valid", reason: "mailbox_exists", minAttempts: 1})
	}
	for i := 1; i <= 6; i++ {
		ws = append(ws, want{name: fmt.Sprintf("DHA listener, unknown #%d", i), addr: fmt.Sprintf("nobody%d@dha.test", i), verdict: "invalid", reason: "mailbox_not_found", minAttempts: 1})
	}
	for i := 1; i <= 4; i++ {
		ws = append(ws, want{name: fmt.Sprintf("rate-limited provider #%d", i), addr: fmt.Sprintf("user%d@ratelimit.test", i), verdict: "valid", reason: "mailbox_exists", minAttempts: 1})
	}
	return ws
}

func queueMailboxes() []byte {
	boxes := []string{"greg@greyq.test", "throttle@words.test", "blocked.by.sorbs@words.test"}
	for i := 1; i <= 3; i++ {
		boxes = append(boxes, fmt.Sprintf("dora%d@dha.test", i))
	}
	for i := 1; i <= 4; i++ {
		boxes = append(boxes, fmt.Sprintf("user%d@ratelimit.test", i))
	}
	var b strings.Builder
	for _, a := range boxes {
		fmt.Fprintf(&b, "%s x/\n", a)
	}
	return []byte(b.String())
}

func TestQueue(t *testing.T) {
	t.Parallel()
	if err := lab.Require(); err != nil {
		t.Fatal(err)
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
	}{{"greyq.test", ipGreyQ}, {"dha.test", ipDHA}, {"ratelimit.test", ipRateLimit}, {"words.test", ipWords}} {
		zone[d.domain] = []dns.RR{dnstest.MX("mx."+d.domain, 10)}
		zone["mx."+d.domain] = []dns.RR{dnstest.A(d.ip.String())}
	}
	zone[canaryName] = []dns.RR{dnstest.MX("mx."+canaryName, 10)}
	dnsSrv := dnstest.Start(t, zone)
	grey := lab.StartPostgrey(t, dir, greyDelay)
	port, err := lab.FreePort(ipGreyQ, ipDHA, ipRateLimit, ipWords)
	if err != nil {
		t.Fatal(err)
	}
	pf := lab.StartPostfix(t, dir, lab.PostfixConfig{
		Port: port,
		Main: []string{
			"virtual_mailbox_domains = greyq.test dha.test ratelimit.test words.test",
			"virtual_mailbox_maps = texthash:$config_directory/mailboxes",
			"anvil_rate_time_unit = " + fmt.Sprintf("%ds", int(anvilUnit/time.Second)),
		},
		Files: map[string][]byte{"mailboxes": queueMailboxes()},
		Listeners: []lab.Listener{
			{Name: "greyq", IP: ipGreyQ, Options: []string{
				"smtpd_recipient_restrictions=reject_unauth_destination,check_policy_service,inet:" + grey.Addr,
			}},
			{Name: "dha", IP: ipDHA, Options: []string{
				fmt.Sprintf("smtpd_hard_error_limit=%d", dhaErrorLimit),
			}},
			{Name: "ratelimit", IP: ipRateLimit, Options: []string{
				fmt.Sprintf("smtpd_client_connection_rate_limit=%d", anvilLimit),
			}},
			{Name: "words", IP: ipWords},
		},
	})
	t.Logf("queue lab up in %s: Postfix %s, postgrey %s, DNS %s, port %d", time.Since(start).Round(time.Millisecond), pf.ConfDir, grey.Addr, dnsSrv.Addr(), port)

	redisURL := redistest.StartServer(t).URL()
	cb := newReceiver(t)
	for i := 1; i <= queueWorkers; i++ {
		w := lab.Start(t, dir, fmt.Sprintf("mxprobe-worker-%d", i), workerArgs(bin, redisURL, dnsSrv.Addr(), port, "--limits", queueRate))
		w.WaitFor(t, "worker started", 30*time.Second)
	}

	var addrs []string
	for _, w := range queueWants() {
		addrs = append(addrs, w.addr)
	}
	res, stderr := enqueueWait(ctx, t, bin, redisURL, cb.url, queueDeadline, addrs)
	t.Logf("producer done after %s", time.Since(start).Round(time.Millisecond))
	checkVerdicts(t, queueWants(), res, stderr)

	logb, err := os.ReadFile(pf.MailLog)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := lab.ParseMailLog(logb)
	if err != nil {
		t.Fatal(err)
	}
	tooManyErrors := map[string]int{}
	var greylisted, dhaRefused bool
	for _, e := range entries {
		if strings.Contains(e.Msg, "too many connections") || strings.Contains(e.Msg, "rate limit exceeded") {
			t.Errorf("Postfix refused a connection: %s %s", e.Tag, e.Msg)
		}
		if strings.Contains(e.Msg, "too many errors") {
			tooManyErrors[e.Tag]++
		}
		if e.Tag == "postfix-greyq/smtpd" && strings.Contains(e.Msg, "Greylisted") {
			greylisted = true
		}
		if e.Tag == "postfix-dha/smtpd" && strings.Contains(e.Msg, "User unknown") {
			dhaRefused = true
		}
	}
	// At most one "too many errors" per MX host: the one that teaches the
	// shared budget (docs/reliability.md).
	for tag, n := range tooManyErrors {
		if n > 1 {
			t.Errorf("%s logged %d × too many errors, want at most 1:\n%s", tag, n, tagged(entries, strings.SplitN(tag, "/", 2)[0]+"/"))
		}
	}
	if !greylisted {
		t.Errorf("postgrey never greylisted:\n%s", tagged(entries, "postfix-greyq/"))
	}
	if !dhaRefused {
		t.Errorf("the DHA listener refused no unknown user:\n%s", tagged(entries, "postfix-dha/"))
	}
	ids := map[string]string{}
	for addr, r := range res {
		ids[r.TaskID] = addr
	}
	cb.waitAll(t, ids, 60*time.Second)
}
