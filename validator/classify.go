package validator

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The decision table of smtp-probing.md §1.2, as data. Classify walks the
// rules top-down and the first match wins. Only rules restricted to
// StageRcpt may give Invalid: banner, EHLO and MAIL replies speak about our
// IP and identity, never about the mailbox (design.md "Temporary ≠ invalid").
//
// Deviations from the document's row order, each for a reason:
//   - rDNS (row 8) comes before blocks (row 7): Postfix's
//     "450 4.7.25 Client host rejected: cannot find your hostname" would
//     otherwise match row 7's "client host rejected".
//   - Blocks and rate limits come before "no SMTP service" (row 1): a banner
//     "554 5.7.1 ... blocked using zen.spamhaus.org" is about our IP and asks
//     for a cool-down, not for the next MX host.
//   - Row 13 is split by its alternatives (13a–13e), and its free-text
//     alternative ignores replies with a 5.7.x code: "550 5.7.1 Recipient
//     address rejected: Access denied" is an operator's policy, unlike M365's
//     "5.4.1 ... Access denied" (§1.3).

// rule is one row of the table. Empty fields match anything. When both enh
// and text are set, either matching is enough unless both is set.
type rule struct {
	name    string
	stages  []Stage
	codes   []int // exact basic codes
	classes []int // first digit of the basic code
	enh     []string
	text    []string // case-insensitive regexps, joined with |
	both    bool     // require enh AND text
	notEnh  []string // a matching enhanced code vetoes the rule
	out     Outcome

	textRe *regexp.Regexp
	hint   bool // parse a retry hint from the text
}

var preRcpt = []Stage{StageBanner, StageEHLO, StageHELO, StageSTARTTLS, StageMail}

// rules is the decision table; see the comment above for its order.
var rules = []*rule{
	{
		name: "4 accepted", stages: []Stage{StageRcpt}, codes: []int{250, 251},
		out: Outcome{Verdict: Valid, Reason: ReasonMailboxExists},
	},
	{
		// Only at RCPT: a 556 to MAIL FROM is about our own sender domain.
		name: "2 null MX", stages: []Stage{StageRcpt}, codes: []int{556},
		out: Outcome{Verdict: Invalid, Reason: ReasonNullMX},
	},
	{
		name: "5 too many recipients", stages: []Stage{StageRcpt, StageCatchAll}, codes: []int{452, 552},
		enh:  []string{"4.5.3", "5.5.3"},
		text: []string{`too many recipients`, `domain policy size per transaction exceeded`},
		out:  Outcome{Verdict: Unknown, Reason: ReasonTooManyRcpts, Retryable: true, Action: ActionNewSession},
	},
	{
		name: "10 exists, throttled", stages: []Stage{StageRcpt}, codes: []int{450, 451, 452},
		enh:  []string{"4.2.1"},
		text: []string{`receiving mail at a rate`, `too quickly`},
		both: true,
		out:  Outcome{Verdict: Valid, Reason: ReasonMailboxExists},
	},
	{
		name: "6 rate limited", classes: []int{4, 5},
		enh: []string{"4.7.28", "5.7.28", "4.7.652"},
		text: []string{
			`unusual rate`, `rate.?limit`, `too many connections`, `too many concurrent`,
			`exceeded the maximum number of connections`, `try again later, closing connection`,
			`too many errors`, `\bs3115\b`, `\[tss0[14]\]`, `temporarily deferred due to unexpected volume`,
			`too many (messages|mails|sessions)`, `throttl`,
		},
		out: Outcome{Verdict: Unknown, Reason: ReasonRateLimited, Retryable: true, Action: ActionCoolDown},
	},
	{
		name: "8 rDNS", classes: []int{4, 5},
		enh: []string{"4.7.25", "5.7.25"},
		text: []string{
			`reverse hostname`, `reverse dns`, `ptr record`, `reverse lookup`, `\brdns\b`,
			`cannot find your hostname`, `cannot find your reverse hostname`,
		},
		out: Outcome{Verdict: Unknown, Reason: ReasonBlockedRDNS, Retryable: true, Action: ActionCoolDown},
	},
	{
		name: "7 blocked", classes: []int{4, 5},
		enh: []string{"5.7.606-649"},
		text: []string{
			`spamhaus`, `blocked using`, `block ?list`, `black ?list`, `dnsbl`, `\brbl\b`,
			`banned sending ip`, `\bs3150\b`, `poor reputation`, `proofpoint`, `barracuda`,
			`client host rejected`, `not in whitelist`, `\[bl2[13]\]`,
			`\bis listed\b`, `\blisted (at|on|by)\b`, `sorbs`, `spamcop`,
			`\bdeny ?(table|list)\b`, `\byour ip\b`,
		},
		out: Outcome{Verdict: Unknown, Reason: ReasonBlocked, Retryable: true, Action: ActionCoolDown},
	},
	{
		name: "1 no SMTP service", stages: []Stage{StageBanner}, codes: []int{521, 554},
		out: Outcome{Verdict: Unknown, Reason: ReasonNoService, Action: ActionNextMX},
	},
	{
		// RFC 7504: 521 at any point means this host accepts no mail.
		name: "1 no SMTP service (521)", stages: preRcpt, codes: []int{521},
		out: Outcome{Verdict: Unknown, Reason: ReasonNoService, Action: ActionNextMX},
	},
	{
		name: "3 sender rejected (permanent)", stages: []Stage{StageMail}, classes: []int{5},
		out: Outcome{Verdict: Unknown, Reason: ReasonSenderRejected, Action: ActionFixSender},
	},
	{
		name: "3 sender rejected (temporary)", stages: []Stage{StageMail}, classes: []int{4},
		enh:  []string{"4.1.7", "4.1.8", "4.7.24", "4.7.23-26"},
		text: []string{`sender`, `\bspf\b`, `from domain`, `reverse.?path`, `return.?path`},
		out:  Outcome{Verdict: Unknown, Reason: ReasonSenderRejected, Retryable: true, Action: ActionFixSender},
	},
	{
		// Many servers judge the sender only at RCPT (Postfix's default
		// smtpd_delay_reject, Exim's sender verification), so a refusal of
		// OUR MAIL FROM arrives as the reply to RCPT. It says nothing about
		// the recipient and must never make it invalid (smtp-probing.md §6).
		name: "3r sender rejected at RCPT (permanent)", stages: []Stage{StageRcpt, StageCatchAll}, classes: []int{5},
		enh: []string{"5.1.7", "5.1.8", "5.7.23-26"},
		text: []string{
			`sender address rejected`, `sender verif`, `verification failed for`, `domain of sender`,
			`sender domain`, `sender rejected`, `callout verification`, `sender (is )?unknown`, `invalid sender`,
		},
		out: Outcome{Verdict: Unknown, Reason: ReasonSenderRejected, Action: ActionFixSender},
	},
	{
		name: "3r sender rejected at RCPT (temporary)", stages: []Stage{StageRcpt, StageCatchAll}, classes: []int{4},
		enh: []string{"4.1.7", "4.1.8", "4.7.23-26"},
		text: []string{
			`sender address rejected`, `sender verif`, `verification failed for`, `domain of sender`,
			`sender domain`, `callout verification`,
		},
		out: Outcome{Verdict: Unknown, Reason: ReasonSenderRejected, Retryable: true, Action: ActionFixSender},
	},
	{
		name: "9 greylisted", stages: []Stage{StageRcpt}, classes: []int{4},
		text: []string{
			`gr[ae]y.?list`, `postgrey`, `try again later`, `please retry later`, `retry later`,
			`temporarily deferred`, `deferred for`, `try again in`,
		},
		hint: true,
		out:  Outcome{Verdict: Unknown, Reason: ReasonGreylisted, Retryable: true},
	},
	{
		name: "11 mailbox full", stages: []Stage{StageRcpt}, classes: []int{4, 5},
		enh:  []string{"4.2.2", "5.2.2"},
		text: []string{`over ?quota`, `quota exceeded`, `mailbox (is )?full`, `out of storage space`},
		out:  Outcome{Verdict: Risky, Reason: ReasonMailboxFull},
	},
	{
		name: "12 disabled", stages: []Stage{StageRcpt}, classes: []int{5},
		enh:  []string{"5.2.1"},
		text: []string{`disabled`, `inactive`, `suspended`, `no longer valid`, `discontinued`, `deactivated`},
		both: true,
		out:  Outcome{Verdict: Invalid, Reason: ReasonMailboxDisabled},
	},
	{
		name: "13a unknown user (enhanced)", stages: []Stage{StageRcpt}, classes: []int{5},
		enh: []string{"5.1.1", "5.1.0", "5.1.3", "5.1.6"},
		out: Outcome{Verdict: Invalid, Reason: ReasonMailboxNotFound},
	},
	{
		// Exchange Online's RESOLVER.ADR.RecipientNotFound; 556 + 5.1.10 was
		// taken by row 2 as null MX (§1.1 "5.1.10 is overloaded").
		name: "13b unknown user (Microsoft 5.1.10)", stages: []Stage{StageRcpt}, codes: []int{550},
		enh: []string{"5.1.10"},
		out: Outcome{Verdict: Invalid, Reason: ReasonMailboxNotFound},
	},
	{
		name: "13c unknown user (M365 DBEB)", stages: []Stage{StageRcpt}, classes: []int{5},
		enh: []string{"5.4.1"}, text: []string{`recipient address rejected: access denied`}, both: true,
		out: Outcome{Verdict: Invalid, Reason: ReasonMailboxNotFound},
	},
	{
		name: "13d unknown user (outlook.com)", stages: []Stage{StageRcpt}, classes: []int{5},
		enh: []string{"5.5.0"}, text: []string{`mailbox unavailable`}, both: true,
		out: Outcome{Verdict: Invalid, Reason: ReasonMailboxNotFound},
	},
	{
		name: "13e unknown user (text)", stages: []Stage{StageRcpt}, classes: []int{5},
		notEnh: []string{"5.7.*"},
		text: []string{
			`user unknown`, `unknown user`, `no such (user|recipient|mailbox|account)`, `does ?n[o']t exist`,
			`mailbox not found`, `(unknown|invalid) (recipient|mailbox|address)`, `recipient (unknown|not found)`,
			`recipient rejected`, `address rejected`, `unroute?able`, `dd this user doesn't have a`,
			`user not found`, `not listed in public name`, `no mailbox here`,
		},
		out: Outcome{Verdict: Invalid, Reason: ReasonMailboxNotFound},
	},
	{
		name: "14 policy", stages: []Stage{StageRcpt}, classes: []int{5},
		enh:  []string{"5.7.*"},
		text: []string{`relay(ing)? (access )?(denied|not permitted)`, `policy`},
		out:  Outcome{Verdict: Unknown, Reason: ReasonPolicy},
	},
	{
		name: "15 temporary", classes: []int{4},
		hint: true,
		out:  Outcome{Verdict: Unknown, Reason: ReasonTempFailure, Retryable: true},
	},
	{
		name: "16 other 5yz", classes: []int{5},
		out: Outcome{Verdict: Unknown, Reason: ReasonSMTPError},
	},
	{
		// A positive reply outside RCPT (or 252 "cannot VRFY") says nothing
		// about the mailbox.
		name: "no verdict", classes: []int{2, 3},
		out: Outcome{Verdict: Unknown, Reason: ReasonSMTPError},
	},
}

func init() {
	for _, r := range rules {
		r.out.Rule = r.name
		if len(r.text) > 0 {
			r.textRe = regexp.MustCompile(`(?i)` + strings.Join(r.text, "|"))
		}
		for _, p := range append(append([]string(nil), r.enh...), r.notEnh...) {
			if _, ok := parseEnhPattern(p); !ok {
				panic("validator: bad enhanced-code pattern " + p + " in rule " + r.name)
			}
		}
	}
}

// Classify looks reply r, received at stage, up in the decision table and
// returns what it means. It never returns Invalid for a stage other than
// StageRcpt.
func Classify(stage Stage, r Reply) Outcome {
	for _, ru := range rules {
		if ru.match(stage, r) {
			out := ru.out
			if ru.hint {
				out.RetryHint = ParseRetryHint(r.Text)
			}
			return out
		}
	}
	// Unreachable for codes 200–599; malformed input gets the safe answer.
	return Outcome{Verdict: Unknown, Reason: ReasonSMTPError, Rule: "unmatched"}
}

func (ru *rule) match(stage Stage, r Reply) bool {
	if len(ru.stages) > 0 && !slices.Contains(ru.stages, stage) {
		return false
	}
	if len(ru.codes) > 0 && !slices.Contains(ru.codes, r.Code) {
		return false
	}
	if len(ru.classes) > 0 && !slices.Contains(ru.classes, r.Code/100) {
		return false
	}
	if len(ru.notEnh) > 0 && matchEnhanced(ru.notEnh, r.Enhanced) {
		return false
	}
	hasEnh, hasText := len(ru.enh) > 0, ru.textRe != nil
	if !hasEnh && !hasText {
		return true
	}
	enhOK := hasEnh && matchEnhanced(ru.enh, r.Enhanced)
	textOK := hasText && ru.textRe.MatchString(r.Text)
	if ru.both {
		return enhOK && textOK
	}
	return enhOK || textOK
}

// enhPattern is "C.S.D" where each part is "*", "n" or "n-m".
type enhPattern [3][2]int

func parseEnhPattern(p string) (enhPattern, bool) {
	var ep enhPattern
	parts := strings.Split(p, ".")
	if len(parts) != 3 {
		return ep, false
	}
	for i, part := range parts {
		if part == "*" {
			ep[i] = [2]int{0, 999}
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return ep, false
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return ep, false
			}
		}
		ep[i] = [2]int{a, b}
	}
	return ep, true
}

func matchEnhanced(patterns []string, code string) bool {
	if code == "" {
		return false
	}
	parts := strings.Split(code, ".")
	if len(parts) != 3 {
		return false
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil {
			return false
		}
		n[i] = v
	}
	for _, p := range patterns {
		ep, _ := parseEnhPattern(p)
		if n[0] >= ep[0][0] && n[0] <= ep[0][1] && n[1] >= ep[1][0] && n[1] <= ep[1][1] && n[2] >= ep[2][0] && n[2] <= ep[2][1] {
			return true
		}
	}
	return false
}

var hintRe = regexp.MustCompile(`(?i)\b(\d{1,6})\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b`)

// ParseRetryHint returns the delay a temporary reply asks for ("try again in
// 5 minutes", "greylisted for 360 seconds"), or zero when it names none.
// The floor of smtp-probing.md §2 (at least 300 s before a greylisting
// retry) is the worker's business, not this function's. Hints above a day
// are capped: no greylister means that, and a typo must not park a task.
func ParseRetryHint(text string) time.Duration {
	m := hintRe.FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return 0
	}
	var unit time.Duration
	switch strings.ToLower(m[2])[0] {
	case 's':
		unit = time.Second
	case 'm':
		unit = time.Minute
	default:
		unit = time.Hour
	}
	d := time.Duration(n) * unit
	if d > 24*time.Hour {
		d = 24 * time.Hour
	}
	return d
}
