package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxprobe/mxprobe/e2e/internal/lab"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
)

// Sessions across workers, against Postfix: a provider limited to 4
// sessions a minute, one at a time, and eight addresses of which five do
// not exist. Three refusals end a session (--session-rejects), so two
// sessions are the least that can answer them; one worker and three worker
// processes must both need exactly two, as Postfix's log counts them
// (docs/design.md, "Sessions across workers"). The catch-all probe is off:
// its random RCPT is one more refusal in the first session, and which
// addresses then fall after a session's third refusal is chance.
var (
	ipSess1 = netip.MustParseAddr("127.0.0.51") // probed by one worker
	ipSess3 = netip.MustParseAddr("127.0.0.53") // probed by three
)

func sessionWants(domain string, n int, exists func(int) bool) []want {
	var ws []want
	for i := range n {
		w := want{name: fmt.Sprintf("%s #%d", domain, i), addr: fmt.Sprintf("user%d@%s", i, domain), minAttempts: 1}
		if exists(i) {
			w.verdict, w.reason = "valid", "mailbox_exists"
		} else {
			w.verdict, w.reason = "invalid", "mailbox_not_found"
		}
		ws = append(ws, w)
	}
	return ws
}

func TestSessionsAcrossWorkers(t *testing.T) {
	t.Parallel()
	runSessionsLab(t, 8, func(i int) bool { return i%3 == 0 }, 2)
}

// TestSessionsAcrossWorkersBenchmark is the same lab with 100 addresses
// that all exist: ten sessions at ten recipients are the fewest, 15 s
// apart. One worker and three run side by side, on their own listeners.
// Figures go to docs/benchmarks.md:
//
//	MXPROBE_BENCH=1 go test -count=1 -run TestSessionsAcrossWorkersBenchmark -v ./e2e/
func TestSessionsAcrossWorkersBenchmark(t *testing.T) {
	if os.Getenv("MXPROBE_BENCH") == "" {
		t.Skip("set MXPROBE_BENCH=1 to run the sessions benchmark against Postfix")
	}
	runSessionsLab(t, 100, func(int) bool { return true }, 10)
}

func runSessionsLab(t *testing.T, n int, exists func(int) bool, wantSessions int) {
	if err := lab.Require(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), suiteTimeout)
	t.Cleanup(cancel)
	dir := lab.Dir(t)
	bin := buildMxprobe(t, dir)

	zone := dnstest.Zone{canaryName: []dns.RR{dnstest.MX("mx."+canaryName, 10)}}
	var boxes strings.Builder
	for _, d := range []struct {
		domain string
		ip     netip.Addr
	}{{"sess1.test", ipSess1}, {"sess3.test", ipSess3}} {
		zone[d.domain] = []dns.RR{dnstest.MX("mx."+d.domain, 10)}
		zone["mx."+d.domain] = []dns.RR{dnstest.A(d.ip.String())}
		for _, w := range sessionWants(d.domain, n, exists) {
			if w.verdict == "valid" {
				fmt.Fprintf(&boxes, "%s x/\n", w.addr)
			}
		}
	}
	dnsSrv := dnstest.Start(t, zone)
	port, err := lab.FreePort(ipSess1, ipSess3)
	if err != nil {
		t.Fatal(err)
	}
	pf := lab.StartPostfix(t, dir, lab.PostfixConfig{
		Port: port,
		Main: []string{
			"virtual_mailbox_domains = sess1.test sess3.test",
			"virtual_mailbox_maps = texthash:$config_directory/mailboxes",
		},
		Files:     map[string][]byte{"mailboxes": []byte(boxes.String())},
		Listeners: []lab.Listener{{Name: "sess1", IP: ipSess1}, {Name: "sess3", IP: ipSess3}},
	})
	t.Logf("sessions lab up in %s: Postfix %s, port %d", time.Since(start).Round(time.Millisecond), pf.ConfDir, port)

	var wg sync.WaitGroup
	walls := map[string]time.Duration{}
	var mu sync.Mutex
	for _, run := range []struct {
		domain  string
		workers int
	}{{"sess1.test", 1}, {"sess3.test", 3}} {
		wg.Go(func() {
			redisURL := redistest.StartServer(t).URL()
			cb := newReceiver(t)
			for i := 1; i <= run.workers; i++ {
				w := lab.Start(t, dir, fmt.Sprintf("mxprobe-%s-worker-%d", run.domain, i),
					workerArgs(bin, redisURL, dnsSrv.Addr(), port, "--limits", run.domain+"=4/1m:1:1", "--no-catch-all"))
				w.WaitFor(t, "worker started", 30*time.Second)
			}
			var addrs []string
			for _, w := range sessionWants(run.domain, n, exists) {
				addrs = append(addrs, w.addr)
			}
			began := time.Now()
			res, stderr := enqueueWait(ctx, t, bin, redisURL, cb.url, 90*time.Second+time.Duration(n)*3*time.Second, addrs)
			mu.Lock()
			walls[run.domain] = time.Since(began)
			mu.Unlock()
			checkVerdicts(t, sessionWants(run.domain, n, exists), res, stderr)
		})
	}
	wg.Wait()
	t.Logf("producers done after %s; enqueue to last result: 1 worker %s, 3 workers %s (%.2f×)", time.Since(start).Round(time.Millisecond),
		walls["sess1.test"].Round(100*time.Millisecond), walls["sess3.test"].Round(100*time.Millisecond),
		walls["sess3.test"].Seconds()/walls["sess1.test"].Seconds())

	logb, err := os.ReadFile(pf.MailLog)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := lab.ParseMailLog(logb)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct {
		tag     string
		workers int
	}{{"postfix-sess1/smtpd", 1}, {"postfix-sess3/smtpd", 3}} {
		sessions := 0
		for _, e := range entries {
			if e.Tag == l.tag && strings.HasPrefix(e.Msg, "connect from") {
				sessions++
			}
		}
		if sessions != wantSessions {
			t.Errorf("%d worker(s): Postfix saw %d sessions for %d addresses, want %d:\n%s",
				l.workers, sessions, n, wantSessions, tagged(entries, strings.TrimSuffix(l.tag, "smtpd")))
		} else {
			t.Logf("%d worker(s): Postfix saw %d sessions for %d addresses", l.workers, sessions, n)
		}
	}
}
