package validator

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"testing"
)

// corpusEntry is one line of testdata/replies.tsv (docs/verdicts.md
// "Corpus"): a real reply with the addresses it echoes as placeholders.
type corpusEntry struct {
	line    int
	stage   Stage
	wire    string
	verdict Verdict
	reason  Reason
	source  string
}

func loadCorpus(t *testing.T) []corpusEntry {
	t.Helper()
	f, err := os.Open("testdata/replies.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []corpusEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		p := strings.Split(l, "\t")
		if len(p) != 5 {
			t.Fatalf("replies.tsv:%d: %d fields, want 5", n, len(p))
		}
		e := corpusEntry{line: n, stage: Stage(p[0]), wire: strings.ReplaceAll(p[1], `\n`, "\n"),
			verdict: Verdict(p[2]), reason: Reason(p[3]), source: p[4]}
		switch e.verdict {
		case Valid, Invalid, Risky, Unknown:
		default:
			t.Fatalf("replies.tsv:%d: bad verdict %q", n, p[2])
		}
		if e.source == "" {
			t.Fatalf("replies.tsv:%d: no source note", n)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// identity is one set of values for the corpus placeholders.
type identity struct {
	rcpt, from, helo, mx string
}

func (id identity) ctx() ReplyContext {
	return ReplyContext{MailFrom: id.from, Rcpt: id.rcpt, Helo: id.helo, ServerNames: []string{id.mx}}
}

func (id identity) fill(wire string) string {
	return strings.NewReplacer(
		"{rcpt}", id.rcpt, "{from}", id.from, "{rdom}", domainOf(id.rcpt),
		"{fdom}", domainOf(id.from), "{helo}", id.helo, "{mx}", id.mx,
	).Replace(wire)
}

var plainIdentity = identity{
	rcpt: "alice@recipient.example", from: "probe@sender.example",
	helo: "out1.sender.example", mx: "mx1.recipient.example",
}

// classifyWire parses a wire reply as ReadReply would see it.
func classifyWire(t *testing.T, stage Stage, wire string, rc ReplyContext) Outcome {
	t.Helper()
	return ClassifyReply(stage, reply(t, wire), rc)
}

// TestCorpus runs every labelled real reply (docs/verdicts.md "Corpus")
// and reports the false-invalid rate and the recall of invalid.
func TestCorpus(t *testing.T) {
	t.Parallel()
	corpus := loadCorpus(t)
	wires := map[string]bool{}
	var wantInvalid, gotInvalidOfThose, notInvalid, falseInvalid, mismatches int
	for _, e := range corpus {
		wires[e.wire] = true
		got := classifyWire(t, e.stage, plainIdentity.fill(e.wire), plainIdentity.ctx())
		if e.verdict == Invalid {
			wantInvalid++
			if got.Verdict == Invalid {
				gotInvalidOfThose++
			}
		} else {
			notInvalid++
			if got.Verdict == Invalid {
				falseInvalid++
			}
		}
		if got.Verdict != e.verdict || got.Reason != e.reason {
			mismatches++
			t.Errorf("replies.tsv:%d (%s): %s %q\n got %s/%s (rule %q), want %s/%s",
				e.line, e.source, e.stage, e.wire, got.Verdict, got.Reason, got.Rule, e.verdict, e.reason)
		}
	}
	if len(wires) < 300 {
		t.Errorf("corpus has %d distinct replies, want at least 300", len(wires))
	}
	t.Logf("corpus: %d entries, %d distinct replies", len(corpus), len(wires))
	t.Logf("false-invalid rate: %d/%d = %.2f %%", falseInvalid, notInvalid, pct(falseInvalid, notInvalid))
	t.Logf("recall of invalid: %d/%d = %.2f %%", gotInvalidOfThose, wantInvalid, pct(gotInvalidOfThose, wantInvalid))
	t.Logf("exact verdict+reason mismatches: %d", mismatches)
	if falseInvalid > 0 {
		t.Errorf("false-invalid: %d replies that must not be invalid were", falseInvalid)
	}
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// ruleWords are words and phrases that text rules look for. An address,
// HELO or host name built from them must not change any verdict.
var ruleWords = []string{
	"spam", "blocked", "block", "rbl", "dnsbl", "listed", "blacklist", "blocklist", "throttle", "throttled",
	"sorbs", "spamcop", "spamhaus", "your-ip", "yourip", "ratelimit", "rate-limit", "greylist", "graylist",
	"quota", "overquota", "full", "disabled", "inactive", "suspended", "policy", "sender", "relay", "denied",
	"unknown", "user-unknown", "nosuchuser", "invalid", "reputation", "barracuda", "proofpoint", "spf", "helo",
	"rdns", "ptr", "reverse", "toomanyerrors", "too-many", "errors", "verify", "callout", "frequency", "limit",
	"unrouteable", "unroutable", "accepted", "exists", "discontinued", "closed", "dialup", "dynamic", "residential",
	"postgrey", "retry", "later", "deferred", "abuse", "tss04", "bl21", "s3150",
}

// TestCorpusEchoedNamesChangeNothing is the property of docs/verdicts.md
// "Reading a reply": for every corpus reply, rcpt, sender, HELO and MX
// names built from rule words give the outcome the plain names give.
func TestCorpusEchoedNamesChangeNothing(t *testing.T) {
	t.Parallel()
	corpus := loadCorpus(t)
	rng := rand.New(rand.NewSource(13))
	word := func() string { return ruleWords[rng.Intn(len(ruleWords))] }
	var ids []identity
	for i, w := range ruleWords {
		// Each word once in each position, plus random mixes.
		ids = append(ids,
			identity{rcpt: w + "@recipient.example", from: plainIdentity.from, helo: plainIdentity.helo, mx: plainIdentity.mx},
			identity{rcpt: "alice@" + w + "-r.example", from: plainIdentity.from, helo: plainIdentity.helo, mx: "mx1." + w + "-r.example"},
			identity{rcpt: plainIdentity.rcpt, from: w + "@sender.example", helo: plainIdentity.helo, mx: plainIdentity.mx},
			identity{rcpt: plainIdentity.rcpt, from: "probe@" + w + "-s.example", helo: "out." + w + "-s.example", mx: plainIdentity.mx},
			identity{rcpt: plainIdentity.rcpt, from: plainIdentity.from, helo: w + "-" + ruleWords[(i+1)%len(ruleWords)] + ".example", mx: w + ".mx.example"},
		)
	}
	for range 200 {
		ids = append(ids, identity{
			rcpt: word() + "." + word() + "@" + word() + "-" + word() + ".rcpt.test",
			from: word() + "@" + word() + ".from.test",
			helo: word() + "." + word() + ".test",
			mx:   word() + "." + word() + "-" + word() + ".test",
		})
	}
	// Each reply meets perReply identities, rotating, so that across the
	// corpus every identity meets many replies and the test stays fast
	// under -race.
	const perReply = 24
	checked := 0
	for i, e := range corpus {
		want := classifyWire(t, e.stage, plainIdentity.fill(e.wire), plainIdentity.ctx())
		for k := range perReply {
			id := ids[(i*perReply+k)%len(ids)]
			got := classifyWire(t, e.stage, id.fill(e.wire), id.ctx())
			checked++
			if got != want {
				t.Errorf("replies.tsv:%d: with rcpt=%s from=%s helo=%s mx=%s\n %q\n got %s/%s (rule %q), plain names give %s/%s (rule %q)",
					e.line, id.rcpt, id.from, id.helo, id.mx, id.fill(e.wire), got.Verdict, got.Reason, got.Rule, want.Verdict, want.Reason, want.Rule)
				break
			}
		}
	}
	t.Logf("%d corpus replies, %d identities, %d classifications compared", len(corpus), len(ids), checked)
	if len(corpus)*perReply < 2*len(ids) {
		t.Errorf("corpus too small for every identity to meet at least two replies")
	}
}

// TestClassifyContextFreeStripsAddresses: without a context, any echoed
// <...> or @-token still cannot trigger a rule.
func TestClassifyContextFreeStripsAddresses(t *testing.T) {
	t.Parallel()
	for _, w := range ruleWords {
		for _, tmpl := range []string{
			"550 5.1.1 <%s@x.example>: Recipient address rejected: User unknown in virtual mailbox table",
			"550 5.1.1 <ua@%s.test>: Recipient address rejected: User unknown in virtual mailbox table",
			"550 5.1.1 %s@%s.example... User unknown",
		} {
			wire := fmt.Sprintf(tmpl, w, w)
			if strings.Count(tmpl, "%s") == 1 {
				wire = fmt.Sprintf(tmpl, w)
			}
			if got := Classify(StageRcpt, reply(t, wire)); got.Verdict != Invalid || got.Reason != ReasonMailboxNotFound {
				t.Errorf("Classify(%q) = %s/%s (rule %q), want invalid/mailbox_not_found", wire, got.Verdict, got.Reason, got.Rule)
			}
		}
	}
}

// TestClassifyReplyHostileInput: a hostile server or a bad context gives
// a safe answer, never a panic, and never Invalid from names alone.
func TestClassifyReplyHostileInput(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("blocked ", 2000)
	ctxs := []ReplyContext{
		{},
		{MailFrom: "(.*)@[a-z]+", Rcpt: "\\", Helo: "*", ServerNames: []string{"", ".", "..", "{rcpt}"}},
		{MailFrom: "@", Rcpt: "@@", Helo: strings.Repeat("a.", 500), ServerNames: []string{long}},
		{MailFrom: "p@x", Rcpt: "p@x", Helo: "x", ServerNames: []string{"x"}},
	}
	replies := []Reply{
		{Code: 0}, {Code: -1, Enhanced: "5.1.1"}, {Code: 999, Text: "user unknown"},
		{Code: 550, Enhanced: "5.1.1.1", Text: "<<<>>>"}, {Code: 550, Enhanced: "x.y.z", Text: long},
		{Code: 550, Text: "{rcpt} {from} {fdom} <" + long + ">"},
		{Code: 550, Text: "(#5.1.1"}, {Code: 450, Text: "(#5.1.1)"}, {Code: 550, Text: "[[[[]]]] \n\n\n"},
		{Code: 250, Text: "\x00\xff\xfe"},
	}
	for _, rc := range ctxs {
		for _, r := range replies {
			for _, s := range []Stage{StageBanner, StageMail, StageRcpt, StageCatchAll} {
				got := ClassifyReply(s, r, rc)
				if got.Verdict == Invalid && (s != StageRcpt || r.Code/100 != 5) {
					t.Errorf("ClassifyReply(%s, %d %q) = invalid by %q", s, r.Code, r.Enhanced, got.Rule)
				}
				if got.Rule == "" {
					t.Errorf("ClassifyReply(%s, %d) matched no rule name", s, r.Code)
				}
			}
		}
	}
	// A 4yz with a 5.x.x code written into the text must not borrow it.
	if got := ClassifyReply(StageRcpt, Reply{Code: 450, Text: "no such user (#5.1.1)"}, ReplyContext{}); got.Verdict == Invalid {
		t.Errorf("450 with (#5.1.1) gave invalid by %q", got.Rule)
	}
}
