package validator

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The decision table of docs/verdicts.md, as data. ClassifyReply first
// takes the reply apart (docs/verdicts.md "Reading a reply"): basic code,
// enhanced code, the Postfix-style "<x>: Recipient address rejected:"
// prefix and the cause after it, with every echoed address, our identity
// and the server's own names replaced by markers. Then it walks the rules
// top-down and the first match wins. Only rules restricted to StageRcpt may
// give Invalid: banner, EHLO and MAIL replies speak about our IP and
// identity, never about the mailbox. The order, and when a cause text
// overrules a specific enhanced code, is docs/verdicts.md "Precedence".

// rule is one row of the table. Empty fields match anything. When both enh
// and text are set, either matching is enough unless both is set; us adds
// a third alternative: the reply is about our own sender or HELO.
type rule struct {
	name    string
	stages  []Stage
	codes   []int // exact basic codes
	classes []int // first digit of the basic code
	enh     []string
	text    []string // case-insensitive regexps, joined with |
	// cause: text runs on the cause after a Postfix-style prefix instead of
	// the whole (sanitised) reply.
	cause  bool
	both   bool     // require enh AND text
	us     bool     // also match when the reply names us, not the recipient
	notEnh []string // a matching enhanced code vetoes the rule
	notRe  string   // a matching text (whole reply) vetoes the rule
	// kinds restricts the rule to replies whose prefix is one of these.
	kinds []prefixKind
	out   Outcome

	textRe *regexp.Regexp
	vetoRe *regexp.Regexp
	hint   bool          // parse a retry hint from the text
	after  time.Duration // fixed retry hint when the text names none
}

var preRcpt = []Stage{StageBanner, StageEHLO, StageHELO, StageSTARTTLS, StageMail}

// Phrases shared by rows. They run on sanitised text (no addresses, no
// host names of ours or the server's), lower-cased.
var (
	// A cause that says the mailbox does not exist (docs/verdicts.md
	// "Unknown user").
	unknownUserText = []string{
		`(user|addressee|recipient|mailbox) unknown`, `unknown (user|recipient|mailbox|account|e-?mail address|local.?part)`,
		`no such (user|recipient|mailbox|account|address|person|local user)`,
		`(user|mailbox|recipient|account|address|addressee|e-?mail account|email address)( name)?( that you tried to reach)? (does ?n[o']t|doesn't|do not|not) exists?`,
		`(mailbox|user|recipient|account|address|addressee) (was |is )?not found`,
		`(invalid|unknown|bad|non-?existent|nonexisting|illegal) (recipient|mailbox|user|address|addressee|destination address)`,
		`recipient (unknown|not found|invalid|does not exist)`, `not a valid (recipient|user|mailbox)`,
		`unrouteable address`, `unroutable address`, `unknown or illegal alias`,
		`(doesn'?t|does not) have an? (\S+ )?account`, `not our user`, `not a known user`,
		`no mailbox here`, `mailbox (does not exist|not found|unknown|is unknown)`,
		`not listed in (public name|domino directory)`, `address (is )?(invalid|unknown|not found)`,
		`no (valid )?(recipient|mailbox|account) (by|with) that name`, `not in my validrcptto list`,
		`destinataire (inconnu|invalide)`, `adresse (inconnue|invalide)`, `destinataire invalide`, `invalid recipient`,
		`empf\S* unbekannt`,
		`(mailbox|user|recipient|address|account) \{(rcpt|addr)\}:? (does ?n[o']t exist|doesn't exist|not found|unknown|is unknown)`, `no such address`, `user not exist`,
	}
	// A cause that says the mailbox exists but is closed for good.
	disabledText = []string{
		`(account|mailbox|user|address)\b[^.\n]{0,40}?\b(is|has been|was|been) (disabled|discontinued|deactivated|suspended|inactive|expired|closed|terminated|locked)`,
		`(account|mailbox|user|address) (disabled|discontinued|deactivated|suspended|inactive|expired|closed|terminated|locked)`,
		`(recipient|user|destination|target|destinataire)('s)? (account|mailbox) (is |has been |was )?(blocked|bloque|disabled|suspended|deactivated|inactive|closed|locked)`,
		`(compte|boite) (du destinataire )?(est )?(bloque|desactive|suspendu|ferme)`,
		`(disabled|inactive|suspended|deactivated|expired|closed) (account|mailbox|user)`, `disabled or discontinued`, `unavailable or disabled`,
		`user suspended`, `no longer (active|valid|in use|available)`,
	}
	// Phrases naming our own sender (docs/verdicts.md "About us").
	senderText = []string{
		`sender address rejected`, `sender verif`, `verification failed for`, `domain of sender`,
		`sender domain`, `sender (is )?(rejected|denied|refused|blocked|unknown|invalid|not allowed)`, `invalid sender`,
		`unroute?able sender`, `sender address (is )?(invalid|unknown|unroute?able|not)`, `envelope sender`,
		`(from|return.?path|reverse.?path|mail from) (address )?(rejected|refused|denied|invalid)`,
		`\bspf\b`, `not allowed to send from`, `not authori[sz]ed to send (mail )?(from|on behalf)`,
		`\{from\}\W{0,3}(does ?n[o']t exist|doesn't exist|not found|unknown|is unknown|invalid)`,
		`domain \{f?dom\}\W{0,3}(does ?n[o']t exist|doesn't exist|not found)`,
		`\{fdom\}\W{0,3}(does ?n[o']t exist|doesn't exist|not found)`,
		`invalid dns mx or a/aaaa`, `openspf`, `(required|invalid) for sender`, `for sender address`, `sender mx`, `sender host`, `bad outbound sender`, `\bthe sender (address|domain|is)\b`, `real domain name required for sender`,
	}
	// Phrases naming our HELO argument.
	heloText = []string{
		`helo command rejected`, `(helo|ehlo)(/ehlo)? (address|name|hostname|host|argument|command|greeting)\b[^.\n]{0,20}(rejected|invalid|refused|denied|not)`,
		`invalid (helo|ehlo)`, `bad (helo|ehlo)`, `(helo|ehlo) (is )?(invalid|not valid|forged|required)`,
		`\{helo\}\W{0,3}(host not found|does not exist|invalid|not found)`,
	}
)

// rules is the decision table; docs/verdicts.md describes each row.
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
		enh:   []string{"4.5.3", "5.5.3"},
		text:  []string{`too many recipients`, `domain policy size per transaction exceeded`, `recipient limit`},
		notRe: `(this|per|an|every|last) (hour|minute|day)|has sent to too many|recipients from`,
		out:   Outcome{Verdict: Unknown, Reason: ReasonTooManyRcpts, Retryable: true, Action: ActionNewSession},
	},
	{
		name: "10 exists, throttled", stages: []Stage{StageRcpt}, codes: []int{450, 451, 452, 550},
		enh:  []string{"4.2.1", "5.2.1"},
		text: []string{`receiving mail at a rate`, `too quickly`},
		both: true,
		out:  Outcome{Verdict: Valid, Reason: ReasonMailboxExists},
	},
	{
		// A server's error limit (Postfix smtpd_hard_error_limit, Exim's
		// rcpt_fail limits) ends the session after a number of refusals:
		// it is about our session, not the mailbox that happened to be
		// asked last, and not a rate limit that pauses the provider.
		name: "6e too many errors", classes: []int{4, 5},
		text: []string{`too many errors`, `too many (invalid|bad|unknown|failed|rejected) (recipients|rcpts?|addresses)`, `too many (rcpt|recipient) (errors|failures)`, `excessive unknown recipients`},
		out:  Outcome{Verdict: Unknown, Reason: ReasonTooManyErrors, Retryable: true, Action: ActionLowerRejectBudget},
	},
	{
		// Exim's sender callout quotes the answer our own domain's server
		// gave; whatever that quote says, the verdict is about our sender.
		name: "3c sender callout failed", stages: []Stage{StageRcpt, StageCatchAll}, classes: []int{4, 5},
		text: []string{`sender verify failed`, `verification failed for \{from\}`, `could not complete sender verify`},
		out:  Outcome{Verdict: Unknown, Reason: ReasonSenderRejected, Action: ActionFixSender},
	},
	{
		name: "6 rate limited", classes: []int{4, 5},
		enh: []string{"4.7.28", "5.7.28", "4.7.652"},
		text: []string{
			`unusual rate`, `rate.?limit`, `too many connections`, `too many concurrent`, `too many simultaneous`,
			`exceeded the maximum number of connections`, `try again later, closing connection`,
			`\bs3115\b`, `\[tss0[14]\]`, `\[ts0[12]\]`, `temporarily deferred due to unexpected volume`,
			`too many (messages|mails|sessions|emails)`, `throttl`, `has sent to too many`, `sent too many`,
			`too many recipients (this|per|an|every|in the last) (hour|minute|day)`, `frequency limit`, `\bfrequency\b`,
			`(connection|sending|message|recipient) (rate|limit) (exceeded|reached)`, `rate (exceeded|overlimit)`,
			`limit (exceeded|reached) for`, `\(dyn:t1\)`, `server busy`, `\bmi:(cel|dmc)\b`, `\brp:(qrc|cel|trc)\b`,
			`maximum number of concurrent`, `overlimit`, `too much mail`, `too many (recipients|messages|mails|connections|sessions) from`,
			`too many (open )?connections`, `(messages|mails|recipients) (can be )?sent per (hour|day)`, `limits for how many`,
			`exceeded the configured limit`, `rate for this client`, `quota of (messages|connections|recipients)`,
		},
		out: Outcome{Verdict: Unknown, Reason: ReasonRateLimited, Retryable: true, Action: ActionCoolDown},
	},
	{
		name: "8 rDNS", classes: []int{4, 5},
		enh: []string{"4.7.25", "5.7.25"},
		text: []string{
			`reverse hostname`, `reverse dns`, `ptr record`, `reverse lookup`, `\brdns\b`, `no ptr`,
			`cannot find your hostname`, `cannot find your reverse hostname`, `ip name lookup failed`, `\bptr\b`, `reverse (dns )?mapping`, `rev(erse)?-?dns`,
		},
		out: Outcome{Verdict: Unknown, Reason: ReasonBlockedRDNS, Retryable: true, Action: ActionCoolDown},
	},
	{
		name: "7 blocked", classes: []int{4, 5},
		enh: []string{"5.7.606-649", "5.7.511"},
		text: []string{
			`spamhaus`, `blocked using`, `block ?list`, `black ?list`, `blacklisted`, `dnsbl`, `\brbl\b`, `\bdnsbl\b`,
			`banned sending ip`, `banned sender`, `\bs3150\b`, `poor reputation`, `reputation`, `proofpoint`, `barracuda`,
			`client host rejected`, `client host \S* ?blocked`, `not in whitelist`, `\[bl2[0-9]\]`, `\[ts03\]`, `\(rtr:b[l0-9]\)`, `\(rly:`,
			`\bis listed\b`, `\blisted (at|on|by)\b`, `sorbs`, `spamcop`, `\bip:rbl\b`, `\bhl:(rep|ihu|ifc|icc)\b`,
			`\bdeny ?(table|list)\b`, `\byour ip\b`, `the ip you're using`, `your (ip )?address (is|has been) (blocked|listed|banned)`,
			`mail from your (location|ip|host|network)`, `(ip|host|network|connection)( address)?s? (is |are |has been )?(blocked|banned|blacklisted)`,
			`traffic not accepted from this ip`, `connections (will )?not (be )?accepted from`, `dnsbl-lookup`,
			`(access|connection) (denied|refused|rejected) (for|from) (your )?(ip|host|network)`, `dynamic (ip|address|pool)`,
			`dial-?up`, `\bcbl\b`, `abuseat`, `permanently deferred`, `block(ed)? for spam`, `dynamically[- ]assigned`, `client blocked`, `residential`, `spam blocked`, `spam source`, `suspected spam`, `spammer`,
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
		// Our HELO argument refused at RCPT (Postfix's
		// reject_unknown_helo_hostname delays to RCPT like every
		// restriction): about our identity, never the mailbox.
		name: "3h HELO rejected at RCPT (permanent)", stages: []Stage{StageRcpt, StageCatchAll}, classes: []int{5},
		text: heloText, kinds: []prefixKind{prefixNone, prefixHelo},
		out: Outcome{Verdict: Unknown, Reason: ReasonPolicy, Action: ActionFixSender},
	},
	{
		name: "3h HELO rejected at RCPT (temporary)", stages: []Stage{StageRcpt, StageCatchAll}, classes: []int{4},
		text: heloText, kinds: []prefixKind{prefixNone, prefixHelo},
		out: Outcome{Verdict: Unknown, Reason: ReasonPolicy, Retryable: true, Action: ActionFixSender},
	},
	{
		// Many servers judge the sender only at RCPT (Postfix's default
		// smtpd_delay_reject, Exim's sender verification), so a refusal of
		// OUR MAIL FROM arrives as the reply to RCPT. It says nothing about
		// the recipient and must never make it invalid (docs/verdicts.md
		// "About us").
		name: "3r sender rejected at RCPT (permanent)", stages: []Stage{StageRcpt, StageCatchAll}, classes: []int{5},
		enh: []string{"5.1.7", "5.1.8", "5.7.23-26"}, text: senderText, us: true,
		out: Outcome{Verdict: Unknown, Reason: ReasonSenderRejected, Action: ActionFixSender},
	},
	{
		name: "3r sender rejected at RCPT (temporary)", stages: []Stage{StageRcpt, StageCatchAll}, classes: []int{4},
		enh: []string{"4.1.7", "4.1.8", "4.7.23-26"}, text: senderText, us: true,
		out: Outcome{Verdict: Unknown, Reason: ReasonSenderRejected, Retryable: true, Action: ActionFixSender},
	},
	{
		// Postfix's reject_unverified_recipient answers while its own probe
		// is under way; the real answer follows within seconds.
		name: "9v verification in progress", stages: []Stage{StageRcpt, StageCatchAll}, classes: []int{4},
		text:  []string{`verification in progress`, `address verification`, `verify in progress`},
		after: 10 * time.Second,
		out:   Outcome{Verdict: Unknown, Reason: ReasonTempFailure, Retryable: true},
	},
	{
		name: "9 greylisted", stages: []Stage{StageRcpt}, classes: []int{4},
		text: []string{
			`gr[ae]y.?list`, `postgrey`, `try again later`, `please retry later`, `retry later`, `try later`,
			`temporarily deferred`, `deferred for`, `try again in`,
		},
		hint: true,
		out:  Outcome{Verdict: Unknown, Reason: ReasonGreylisted, Retryable: true},
	},
	{
		name: "11 mailbox full", stages: []Stage{StageRcpt}, classes: []int{4, 5},
		enh:   []string{"4.2.2", "5.2.2"},
		text:  []string{`over ?quota`, `quota exceeded`, `mailbox (is )?full`, `out of storage space`, `inbox is full`, `exceeded (the|its) (storage|quota)`, `insufficient (storage|space) (for|in) (the )?(user|mailbox|recipient)`, `boite (du destinataire )?pleine`, `overquota`, `mailbox size limit`},
		cause: true, notRe: `sending (quota|limit)|daily (user )?sending|send(ing)? quota`,
		out: Outcome{Verdict: Risky, Reason: ReasonMailboxFull},
	},
	{
		name: "12 disabled", stages: []Stage{StageRcpt}, classes: []int{5},
		enh:  []string{"5.2.1"},
		text: disabledText, cause: true,
		both: true,
		out:  Outcome{Verdict: Invalid, Reason: ReasonMailboxDisabled},
	},
	{
		// RFC 3463 registry: 5.7.13 "User Account Disabled".
		name: "12b disabled (5.7.13)", stages: []Stage{StageRcpt}, classes: []int{5},
		enh: []string{"5.7.13"},
		out: Outcome{Verdict: Invalid, Reason: ReasonMailboxDisabled},
	},
	{
		// A closed-account cause overrules a generic code (5.5.0, 5.7.1,
		// none): docs/verdicts.md "Precedence".
		name: "12c disabled (text)", stages: []Stage{StageRcpt}, classes: []int{5},
		text: disabledText, cause: true, notRe: `\byour (own )?(account|mailbox|ip|address|server|host)\b`,
		kinds: []prefixKind{prefixNone, prefixRecipient},
		out:   Outcome{Verdict: Invalid, Reason: ReasonMailboxDisabled},
	},
	{
		name: "13a unknown user (enhanced)", stages: []Stage{StageRcpt}, classes: []int{5},
		enh: []string{"5.1.1", "5.1.0", "5.1.3", "5.1.6"}, kinds: []prefixKind{prefixNone, prefixRecipient},
		out: Outcome{Verdict: Invalid, Reason: ReasonMailboxNotFound},
	},
	{
		// Exchange Online's RESOLVER.ADR.RecipientNotFound; 556 + 5.1.10 was
		// taken by row 2 as null MX (docs/verdicts.md "Null MX").
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
		// The cause, never the prefix: "Recipient address rejected:" alone
		// is what Postfix writes for every recipient restriction.
		name: "13e unknown user (text)", stages: []Stage{StageRcpt}, classes: []int{5},
		text: unknownUserText, cause: true, kinds: []prefixKind{prefixNone, prefixRecipient},
		notRe: `(not found|unavailable) or (access denied|blocked|refused)`,
		out:   Outcome{Verdict: Invalid, Reason: ReasonMailboxNotFound},
	},
	{
		name: "14 policy", stages: []Stage{StageRcpt}, classes: []int{5},
		enh: []string{"5.7.*"},
		text: []string{`relay(ing)? (access )?(denied|not permitted|not allowed|prohibited)`, `policy`, `allowed rcpthosts`,
			`not permitted to relay`, `permitted to relay`, `administrative prohibition`, `envelope blocked`, `not authori[sz]ed`, `access denied`, `relay not permitted`, `unable to relay`},
		out: Outcome{Verdict: Unknown, Reason: ReasonPolicy},
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
		if r.notRe != "" {
			r.vetoRe = regexp.MustCompile(`(?i)` + r.notRe)
		}
		for _, p := range append(append([]string(nil), r.enh...), r.notEnh...) {
			if _, ok := parseEnhPattern(p); !ok {
				panic("validator: bad enhanced-code pattern " + p + " in rule " + r.name)
			}
		}
	}
}

// ReplyContext is what we know about the conversation a reply answers: our
// envelope sender and HELO name, the recipient asked, and the server's own
// host names (the MX host name, names from its banner or EHLO). The
// classifier takes every one of them out of the text before a text rule
// runs, so an address like ratelimit@example.com cannot look like a rate
// limit (docs/verdicts.md "Reading a reply").
type ReplyContext struct {
	MailFrom, Rcpt, Helo string
	ServerNames          []string
}

// Classify is ClassifyReply with no context: echoed <...> and @-tokens are
// still removed, but our identity is unknown.
func Classify(stage Stage, r Reply) Outcome {
	return ClassifyReply(stage, r, ReplyContext{})
}

// ClassifyReply looks reply r, received at stage, up in the decision table
// and returns what it means. It never returns Invalid for a stage other
// than StageRcpt.
func ClassifyReply(stage Stage, r Reply, rc ReplyContext) Outcome {
	v := readReply(r, rc)
	for _, ru := range rules {
		if ru.match(stage, &v) {
			out := ru.out
			if ru.hint {
				out.RetryHint = ParseRetryHint(v.full)
			}
			if ru.after > 0 && out.RetryHint == 0 {
				out.RetryHint = ru.after
			}
			return out
		}
	}
	// Unreachable for codes 200–599; malformed input gets the safe answer.
	return Outcome{Verdict: Unknown, Reason: ReasonSMTPError, Rule: "unmatched"}
}

// prefixKind is whom a Postfix-style "X rejected:" prefix names.
type prefixKind int

const (
	prefixNone prefixKind = iota
	prefixRecipient
	prefixSender
	prefixHelo
	prefixClient
	prefixOther
)

// view is a reply taken apart for the rules.
type view struct {
	code  int
	enh   string
	full  string // sanitised, lower-cased whole text
	cause string // full after the first prefix, or full
	kind  prefixKind
	us    bool // names our sender or HELO and not the recipient
}

var (
	angleRe   = regexp.MustCompile(`<[^<>\n]*>`)
	atTokenRe = regexp.MustCompile(`[^\s<>()\[\],;"']*@[^\s<>()\[\],;"']*`)
	// Bracketed host names, IP literals and paths; short tags such as
	// [#102], [BL21] or [TSS04] carry meaning and stay.
	bracketRe = regexp.MustCompile(`\[[^\[\]\n]*[.:=/][^\[\]\n]*\]`)
	hashEnhRe = regexp.MustCompile(`#([245])\.(\d{1,3})\.(\d{1,3})\b`)
	prefixRe  = regexp.MustCompile(`(?i)\b(recipient|sender|from|return-?path|reverse-?path|mail from|envelope sender|helo command|helo/ehlo|helo|ehlo|client host|client|data command|etrn command)( address)? rejected\s*:\s*`)
)

func readReply(r Reply, rc ReplyContext) view {
	v := view{code: r.Code, enh: r.Enhanced}
	t := strings.ToLower(r.Text)
	if v.enh == "" {
		// qmail and IronPort write the enhanced code into the text:
		// "(#5.1.1)", "550 #5.1.0 Address rejected".
		if m := hashEnhRe.FindStringSubmatch(t); m != nil && int(m[1][0]-'0') == r.Code/100 {
			v.enh = m[1] + "." + m[2] + "." + m[3]
		}
	}
	from, rcpt := strings.ToLower(strings.TrimSpace(rc.MailFrom)), strings.ToLower(strings.TrimSpace(rc.Rcpt))
	fdom, rdom := domainOf(from), domainOf(rcpt)
	type sub struct{ tok, mark string }
	var subs []sub
	add := func(tok, mark string) {
		tok = strings.TrimSuffix(tok, ".")
		if len(tok) >= 3 {
			subs = append(subs, sub{tok, mark})
		}
	}
	add(rcpt, "{rcpt}")
	add(from, "{from}")
	if rdom == fdom {
		add(rdom, "{dom}")
	} else {
		add(rdom, "{rdom}")
		add(fdom, "{fdom}")
	}
	add(strings.ToLower(rc.Helo), "{helo}")
	for _, n := range rc.ServerNames {
		add(strings.ToLower(n), "{mx}")
	}
	// Longest first: a server name may contain the recipient domain.
	slices.SortStableFunc(subs, func(a, b sub) int { return len(b.tok) - len(a.tok) })
	for _, s := range subs {
		if strings.Contains(s.tok, "@") {
			t = strings.ReplaceAll(t, s.tok, s.mark)
		} else {
			t = replaceHost(t, s.tok, s.mark)
		}
	}
	t = angleRe.ReplaceAllStringFunc(t, func(m string) string {
		if strings.Contains(m, "{") {
			return m[1 : len(m)-1]
		}
		return "{addr}"
	})
	t = atTokenRe.ReplaceAllString(t, "{addr}")
	t = bracketRe.ReplaceAllString(t, "[]")
	// Multi-line replies wrap phrases anywhere: match them as one line.
	t = strings.Join(strings.Fields(t), " ")
	v.full, v.cause = t, t
	if loc := prefixRe.FindStringSubmatchIndex(t); loc != nil {
		v.cause = t[loc[1]:]
		switch w := t[loc[2]:loc[3]]; {
		case w == "recipient":
			v.kind = prefixRecipient
		case strings.HasPrefix(w, "helo") || w == "ehlo":
			v.kind = prefixHelo
		case strings.HasPrefix(w, "client"):
			v.kind = prefixClient
		case w == "data command" || w == "etrn command":
			v.kind = prefixOther
		default:
			v.kind = prefixSender
		}
	}
	ours := strings.Contains(t, "{from}") || strings.Contains(t, "{fdom}") || strings.Contains(t, "{helo}")
	theirs := strings.Contains(t, "{rcpt}") || strings.Contains(t, "{rdom}")
	v.us = v.kind == prefixSender || (ours && !theirs)
	return v
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// replaceHost replaces tok in t where it stands as a host name or as the
// tail of one (mx1.tok), with mark.
func replaceHost(t, tok, mark string) string {
	hostByte := func(c byte) bool {
		return c == '.' || c == '-' || c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
	}
	var b strings.Builder
	for {
		i := strings.Index(t, tok)
		if i < 0 {
			b.WriteString(t)
			return b.String()
		}
		end := i + len(tok)
		// A dot may follow: the name ends a sentence or sits in a URL
		// path ("help/example.com.html").
		if end < len(t) && hostByte(t[end]) && t[end] != '.' {
			b.WriteString(t[:end])
			t = t[end:]
			continue
		}
		start := i
		if start > 0 && hostByte(t[start-1]) {
			if t[start-1] != '.' {
				b.WriteString(t[:end])
				t = t[end:]
				continue
			}
			for start > 0 && hostByte(t[start-1]) {
				start--
			}
		}
		b.WriteString(t[:start])
		b.WriteString(mark)
		t = t[end:]
	}
}

func (ru *rule) match(stage Stage, v *view) bool {
	if len(ru.stages) > 0 && !slices.Contains(ru.stages, stage) {
		return false
	}
	if len(ru.codes) > 0 && !slices.Contains(ru.codes, v.code) {
		return false
	}
	if len(ru.classes) > 0 && !slices.Contains(ru.classes, v.code/100) {
		return false
	}
	if len(ru.kinds) > 0 && !slices.Contains(ru.kinds, v.kind) {
		return false
	}
	if len(ru.notEnh) > 0 && matchEnhanced(ru.notEnh, v.enh) {
		return false
	}
	if ru.vetoRe != nil && ru.vetoRe.MatchString(v.full) {
		return false
	}
	hasEnh, hasText := len(ru.enh) > 0, ru.textRe != nil
	if !hasEnh && !hasText && !ru.us {
		return true
	}
	text := v.full
	if ru.cause {
		text = v.cause
	}
	enhOK := hasEnh && matchEnhanced(ru.enh, v.enh)
	textOK := hasText && ru.textRe.MatchString(text)
	if ru.both {
		return enhOK && textOK
	}
	return enhOK || textOK || (ru.us && v.us)
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
// The floor of docs/verdicts.md "Greylisting" (at least 300 s before a
// greylisting retry) is the worker's business, not this function's. Hints above a day
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
