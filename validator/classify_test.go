package validator

import (
	"bufio"
	"strings"
	"testing"
	"time"
)

// reply parses one wire-format reply, so test rows read like the replies
// servers send (docs/smtp.md §1).
func reply(t *testing.T, wire string) Reply {
	t.Helper()
	r, _, err := ReadReply(bufio.NewReader(strings.NewReader(strings.ReplaceAll(wire, "\n", "\r\n")+"\r\n")), 0, 0)
	if err != nil {
		t.Fatalf("bad test reply %q: %v", wire, err)
	}
	return r
}

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		stage         Stage
		wire          string
		wantVerdict   Verdict
		wantReason    Reason
		wantRule      string
		wantRetryable bool
		wantAction    Action
		wantHint      time.Duration
	}{
		// Our own sender refused in the reply to RCPT (Postfix delays
		// sender restrictions to RCPT; Exim verifies senders there): never
		// a verdict about the recipient.
		{name: "postfix unknown sender domain at RCPT", stage: StageRcpt, wire: "550 5.1.8 <probe@ours.example>: Sender address rejected: Domain not found",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3r sender rejected at RCPT (permanent)", wantAction: ActionFixSender},
		{name: "postfix unknown sender user at RCPT", stage: StageRcpt, wire: "550 5.1.0 <probe@ours.example>: Sender address rejected: User unknown in local recipient table",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3r sender rejected at RCPT (permanent)", wantAction: ActionFixSender},
		{name: "sender domain does not exist", stage: StageRcpt, wire: "553 5.1.8 Domain of sender address probe@ours.example does not exist",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3r sender rejected at RCPT (permanent)", wantAction: ActionFixSender},
		{name: "exim sender callout", stage: StageRcpt, wire: "550-Verification failed for <probe@ours.example>\n550-Called:   192.0.2.1\n550-Sent:     RCPT TO:<probe@ours.example>\n550-Response: 550 5.1.1 User unknown\n550 Sender verify failed",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3c sender callout failed", wantAction: ActionFixSender},
		{name: "exim unrouteable sender", stage: StageRcpt, wire: "550-Verification failed for <probe@ours.example>\n550-Unrouteable address\n550 Sender verify failed",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3c sender callout failed", wantAction: ActionFixSender},
		{name: "temporary sender domain failure at RCPT", stage: StageRcpt, wire: "450 4.1.8 <probe@ours.example>: Sender address rejected: Domain not found",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3r sender rejected at RCPT (temporary)", wantRetryable: true, wantAction: ActionFixSender},
		{name: "IP on a local deny table", stage: StageRcpt, wire: "550 Address rejected: your IP 192.0.2.9 is on our local deny table",
			wantVerdict: Unknown, wantReason: ReasonBlocked, wantRule: "7 blocked", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "556 to MAIL is about our sender", stage: StageMail, wire: "556 5.1.10 Sender domain has a null MX",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3 sender rejected (permanent)", wantAction: ActionFixSender},
		// Row 1.
		{name: "banner 554 no service", stage: StageBanner, wire: "554 No SMTP service here",
			wantVerdict: Unknown, wantReason: ReasonNoService, wantRule: "1 no SMTP service", wantAction: ActionNextMX},
		{name: "banner 521", stage: StageBanner, wire: "521 5.3.2 mx.example.com does not accept mail",
			wantVerdict: Unknown, wantReason: ReasonNoService, wantRule: "1 no SMTP service", wantAction: ActionNextMX},
		{name: "521 at EHLO", stage: StageEHLO, wire: "521 5.3.2 does not accept mail",
			wantVerdict: Unknown, wantReason: ReasonNoService, wantRule: "1 no SMTP service (521)", wantAction: ActionNextMX},
		// Row 2.
		{name: "556 null MX", stage: StageRcpt, wire: "556 5.1.10 <a@nullmx.example>: Recipient address rejected: Domain does not accept mail",
			wantVerdict: Invalid, wantReason: ReasonNullMX, wantRule: "2 null MX"},
		// Row 3.
		{name: "MAIL 550 5.7.1 SPF", stage: StageMail, wire: "550 5.7.23 SPF validation failed for sender",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3 sender rejected (permanent)", wantAction: ActionFixSender},
		{name: "MAIL Yahoo unresolvable from domain", stage: StageMail, wire: "553 5.1.8 Sender address rejected: unresolvable from domain",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3 sender rejected (permanent)", wantAction: ActionFixSender},
		{name: "MAIL 450 4.1.8 sender domain not found", stage: StageMail, wire: "450 4.1.8 <p@sender.test>: Sender address rejected: Domain not found",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3 sender rejected (temporary)", wantRetryable: true, wantAction: ActionFixSender},
		// Row 4.
		{name: "RCPT 250", stage: StageRcpt, wire: "250 2.1.5 OK x1si123.4 - gsmtp",
			wantVerdict: Valid, wantReason: ReasonMailboxExists, wantRule: "4 accepted"},
		{name: "RCPT 251", stage: StageRcpt, wire: "251 User not local; will forward",
			wantVerdict: Valid, wantReason: ReasonMailboxExists, wantRule: "4 accepted"},
		// Row 5.
		{name: "452 4.5.3 too many recipients", stage: StageRcpt, wire: "452 4.5.3 Too many recipients",
			wantVerdict: Unknown, wantReason: ReasonTooManyRcpts, wantRule: "5 too many recipients", wantRetryable: true, wantAction: ActionNewSession},
		{name: "Gmail domain policy size", stage: StageRcpt, wire: "452 4.5.3 Domain policy size per transaction exceeded, please try this recipient in a separate transaction",
			wantVerdict: Unknown, wantReason: ReasonTooManyRcpts, wantRule: "5 too many recipients", wantRetryable: true, wantAction: ActionNewSession},
		{name: "552 5.5.3 too many recipients", stage: StageRcpt, wire: "552 5.5.3 Too many recipients",
			wantVerdict: Unknown, wantReason: ReasonTooManyRcpts, wantRule: "5 too many recipients", wantRetryable: true, wantAction: ActionNewSession},
		// Row 6.
		{name: "421 too many connections at banner", stage: StageBanner, wire: "421 4.7.0 mx.example.com Error: too many connections from 192.0.2.1",
			wantVerdict: Unknown, wantReason: ReasonRateLimited, wantRule: "6 rate limited", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Gmail 421 try again later closing", stage: StageEHLO, wire: "421 4.7.0 Try again later, closing connection. (EHLO) x - gsmtp",
			wantVerdict: Unknown, wantReason: ReasonRateLimited, wantRule: "6 rate limited", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Gmail 4.7.28 unusual rate", stage: StageRcpt, wire: "421 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address.",
			wantVerdict: Unknown, wantReason: ReasonRateLimited, wantRule: "6 rate limited", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Microsoft S3115", stage: StageRcpt, wire: "451 4.7.652 The mail server [192.0.2.1] has exceeded the maximum number of connections. (S3115)",
			wantVerdict: Unknown, wantReason: ReasonRateLimited, wantRule: "6 rate limited", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Yahoo TSS04", stage: StageMail, wire: "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1",
			wantVerdict: Unknown, wantReason: ReasonRateLimited, wantRule: "6 rate limited", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Postfix too many errors", stage: StageRcpt, wire: "421 4.7.0 mx.example.com Error: too many errors",
			wantVerdict: Unknown, wantReason: ReasonTooManyErrors, wantRule: "6e too many errors", wantRetryable: true, wantAction: ActionLowerRejectBudget},
		// Row 7.
		{name: "Spamhaus at RCPT is blocked, never invalid", stage: StageRcpt, wire: "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1",
			wantVerdict: Unknown, wantReason: ReasonBlocked, wantRule: "7 blocked", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "banner 554 blocked using", stage: StageBanner, wire: "554 5.7.1 mx.example.com: Client host [192.0.2.1] blocked using b.barracudacentral.org",
			wantVerdict: Unknown, wantReason: ReasonBlocked, wantRule: "7 blocked", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Microsoft banned sending IP", stage: StageRcpt, wire: "550 5.7.606 Access denied, banned sending IP [192.0.2.1].",
			wantVerdict: Unknown, wantReason: ReasonBlocked, wantRule: "7 blocked", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Microsoft 5.7.6xx without text", stage: StageRcpt, wire: "550 5.7.649 x",
			wantVerdict: Unknown, wantReason: ReasonBlocked, wantRule: "7 blocked", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Microsoft S3150", stage: StageRcpt, wire: "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. (S3150)",
			wantVerdict: Unknown, wantReason: ReasonBlocked, wantRule: "7 blocked", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "client host rejected access denied", stage: StageRcpt, wire: "554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied",
			wantVerdict: Unknown, wantReason: ReasonBlocked, wantRule: "7 blocked", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Yahoo BL21", stage: StageBanner, wire: "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in Spamhaus's list",
			wantVerdict: Unknown, wantReason: ReasonBlocked, wantRule: "7 blocked", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Proofpoint", stage: StageRcpt, wire: "554 Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.1",
			wantVerdict: Unknown, wantReason: ReasonBlocked, wantRule: "7 blocked", wantRetryable: true, wantAction: ActionCoolDown},
		// Row 8.
		{name: "Postfix unknown client hostname", stage: StageRcpt, wire: "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.1]",
			wantVerdict: Unknown, wantReason: ReasonBlockedRDNS, wantRule: "8 rDNS", wantRetryable: true, wantAction: ActionCoolDown},
		{name: "Gmail no PTR", stage: StageMail, wire: "550-5.7.25 [192.0.2.1] The IP address sending this message does not have a\n550 5.7.25 PTR record setup, or the corresponding forward DNS entry does not point to the sending IP.",
			wantVerdict: Unknown, wantReason: ReasonBlockedRDNS, wantRule: "8 rDNS", wantRetryable: true, wantAction: ActionCoolDown},
		// Row 9.
		{name: "postgrey 450 4.2.0", stage: StageRcpt, wire: "450 4.2.0 <bob@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html",
			wantVerdict: Unknown, wantReason: ReasonGreylisted, wantRule: "9 greylisted", wantRetryable: true},
		{name: "greylisted 4.7.1 with hint", stage: StageRcpt, wire: "450 4.7.1 Greylisted, please try again in 360 seconds",
			wantVerdict: Unknown, wantReason: ReasonGreylisted, wantRule: "9 greylisted", wantRetryable: true, wantHint: 6 * time.Minute},
		{name: "try again later with minutes", stage: StageRcpt, wire: "451 4.7.1 Please try again later (4 minutes)",
			wantVerdict: Unknown, wantReason: ReasonGreylisted, wantRule: "9 greylisted", wantRetryable: true, wantHint: 4 * time.Minute},
		{name: "deferred for", stage: StageRcpt, wire: "451 Temporarily deferred for 1 minute",
			wantVerdict: Unknown, wantReason: ReasonGreylisted, wantRule: "9 greylisted", wantRetryable: true, wantHint: time.Minute},
		// Row 10.
		{name: "Gmail 4.2.1 receiving at a rate", stage: StageRcpt, wire: "450-4.2.1 The user you are trying to contact is receiving mail at a rate that\n450 4.2.1 prevents additional messages from being delivered. Please resend your message at a later time.",
			wantVerdict: Valid, wantReason: ReasonMailboxExists, wantRule: "10 exists, throttled"},
		// Row 11.
		{name: "452 4.2.2 over quota", stage: StageRcpt, wire: "452 4.2.2 The email account that you tried to reach is over quota.",
			wantVerdict: Risky, wantReason: ReasonMailboxFull, wantRule: "11 mailbox full"},
		{name: "552 5.2.2 mailbox full", stage: StageRcpt, wire: "552 5.2.2 <bob@example.com>: Mailbox full",
			wantVerdict: Risky, wantReason: ReasonMailboxFull, wantRule: "11 mailbox full"},
		{name: "4.3.1 system full is temporary", stage: StageRcpt, wire: "452 4.3.1 Insufficient system storage",
			wantVerdict: Unknown, wantReason: ReasonTempFailure, wantRule: "15 temporary", wantRetryable: true},
		// Row 12.
		{name: "550 5.2.1 disabled", stage: StageRcpt, wire: "550 5.2.1 The email account that you tried to reach is disabled.",
			wantVerdict: Invalid, wantReason: ReasonMailboxDisabled, wantRule: "12 disabled"},
		{name: "Yahoo no longer valid", stage: StageRcpt, wire: "554 5.2.1 The email account that you tried to reach is no longer valid",
			wantVerdict: Invalid, wantReason: ReasonMailboxDisabled, wantRule: "12 disabled"},
		{name: "5.2.1 without text is not invalid (Exchange quarantine)", stage: StageRcpt, wire: "550 5.2.1 Message held for review",
			wantVerdict: Unknown, wantReason: ReasonSMTPError, wantRule: "16 other 5yz"},
		// Row 13.
		{name: "Gmail 5.1.1", stage: StageRcpt, wire: "550-5.1.1 The email account that you tried to reach does not exist. Please try\n550 5.1.1 double-checking the recipient's email address for typos. - gsmtp",
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound, wantRule: "13a unknown user (enhanced)"},
		{name: "Postfix user unknown", stage: StageRcpt, wire: "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound, wantRule: "13a unknown user (enhanced)"},
		{name: "Microsoft 550 5.1.10", stage: StageRcpt, wire: "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound, wantRule: "13b unknown user (Microsoft 5.1.10)"},
		{name: "M365 DBEB 5.4.1", stage: StageRcpt, wire: "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [x.prod.protection.outlook.com]",
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound, wantRule: "13c unknown user (M365 DBEB)"},
		{name: "outlook.com 5.5.0", stage: StageRcpt, wire: "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). [x.eop-EUR03.prod.protection.outlook.com]",
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound, wantRule: "13d unknown user (outlook.com)"},
		{name: "bare 550 no such user", stage: StageRcpt, wire: "550 No such user here",
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound, wantRule: "13e unknown user (text)"},
		{name: "Yahoo dd", stage: StageRcpt, wire: "554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - mta1.mail.ne1.yahoo.com",
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound, wantRule: "13e unknown user (text)"},
		{name: "Domino not listed", stage: StageRcpt, wire: "550 5.0.0 User not listed in public Name & Address Book",
			wantVerdict: Invalid, wantReason: ReasonMailboxNotFound, wantRule: "13e unknown user (text)"},
		// Row 14.
		{name: "relay access denied", stage: StageRcpt, wire: "554 5.7.1 <bob@other.example>: Relay access denied",
			wantVerdict: Unknown, wantReason: ReasonPolicy, wantRule: "14 policy"},
		{name: "5.7.1 recipient address rejected is policy, not invalid", stage: StageRcpt, wire: "550 5.7.1 <bob@example.com>: Recipient address rejected: Access denied",
			wantVerdict: Unknown, wantReason: ReasonPolicy, wantRule: "14 policy"},
		// Rows 15/16.
		{name: "other 4yz at RCPT", stage: StageRcpt, wire: "451 4.3.0 Temporary lookup failure",
			wantVerdict: Unknown, wantReason: ReasonTempFailure, wantRule: "15 temporary", wantRetryable: true},
		{name: "4yz at EHLO", stage: StageEHLO, wire: "451 4.3.2 System not accepting network messages",
			wantVerdict: Unknown, wantReason: ReasonTempFailure, wantRule: "15 temporary", wantRetryable: true},
		{name: "other 5yz at RCPT", stage: StageRcpt, wire: "550 Requested action not taken: mailbox unavailable",
			wantVerdict: Unknown, wantReason: ReasonSMTPError, wantRule: "16 other 5yz"},
		{name: "5yz at HELO", stage: StageHELO, wire: "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
			wantVerdict: Unknown, wantReason: ReasonSMTPError, wantRule: "16 other 5yz"},
		{name: "2yz outside RCPT", stage: StageMail, wire: "250 2.1.0 Ok",
			wantVerdict: Unknown, wantReason: ReasonSMTPError, wantRule: "no verdict"},
		{name: "252 cannot VRFY", stage: StageRcpt, wire: "252 2.5.0 Cannot VRFY user",
			wantVerdict: Unknown, wantReason: ReasonSMTPError, wantRule: "no verdict"},
		// Only RCPT judges the mailbox: the same words elsewhere never give invalid.
		{name: "5.1.1 at MAIL is about the sender", stage: StageMail, wire: "550 5.1.1 User unknown",
			wantVerdict: Unknown, wantReason: ReasonSenderRejected, wantRule: "3 sender rejected (permanent)", wantAction: ActionFixSender},
		{name: "5.1.1 at banner", stage: StageBanner, wire: "550 5.1.1 User unknown",
			wantVerdict: Unknown, wantReason: ReasonSMTPError, wantRule: "16 other 5yz"},
		{name: "user unknown on 4yz is not invalid", stage: StageRcpt, wire: "450 4.1.1 <bob@example.com>: Recipient address rejected: User unknown in local recipient table",
			wantVerdict: Unknown, wantReason: ReasonTempFailure, wantRule: "15 temporary", wantRetryable: true},
		{name: "catch-all RCPT never invalid", stage: StageCatchAll, wire: "550 5.1.1 User unknown",
			wantVerdict: Unknown, wantReason: ReasonSMTPError, wantRule: "16 other 5yz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Classify(tt.stage, reply(t, tt.wire))
			want := Outcome{Verdict: tt.wantVerdict, Reason: tt.wantReason, Retryable: tt.wantRetryable,
				RetryHint: tt.wantHint, Action: tt.wantAction, Rule: tt.wantRule}
			if got != want {
				t.Errorf("Classify(%s, %q)\n got %+v\nwant %+v", tt.stage, tt.wire, got, want)
			}
		})
	}
}

// TestClassifyEveryRuleTested fails when a rule is added without a row above.
func TestClassifyEveryRuleTested(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, r := range rules {
		if seen[r.name] {
			t.Errorf("duplicate rule name %q", r.name)
		}
		seen[r.name] = true
	}
	// Probe every rule with a reply that only it should match first.
	hits := map[string]bool{}
	for _, s := range []Stage{StageBanner, StageEHLO, StageHELO, StageSTARTTLS, StageMail, StageRcpt, StageCatchAll} {
		for _, code := range probeCodes {
			for _, text := range []string{"x", "too many recipients", "receiving mail at a rate", "greylisted", "disabled", "over quota",
				"blocked using zen.spamhaus.org", "too many connections", "too many errors", "ptr record", "sender", "relay access denied", "mailbox unavailable",
				"recipient address rejected: access denied", "user unknown", "sender address rejected: domain not found",
				"helo command rejected: host not found", "address verification in progress", "account disabled", "sender verify failed"} {
				for _, enh := range []string{"", "5.1.1", "5.1.10", "5.2.1", "5.4.1", "5.5.0", "4.2.1", "5.7.1", "5.1.8", "4.1.8", "5.7.13"} {
					r := Reply{Code: code, Enhanced: enh, Text: text}
					if enh != "" && int(enh[0]-'0') != code/100 {
						continue
					}
					hits[Classify(s, r).Rule] = true
				}
			}
		}
	}
	for _, r := range rules {
		if !hits[r.name] {
			t.Errorf("rule %q is unreachable (shadowed by an earlier rule)", r.name)
		}
	}
}

// probeCodes are the basic codes servers really send, for exhaustive tests.
var probeCodes = []int{211, 220, 221, 250, 251, 252, 354, 421, 450, 451, 452, 454, 500, 501, 502, 503, 504, 521, 550, 551, 552, 553, 554, 556}

// TestClassifyPrecedence pins the order of rows where two could match.
func TestClassifyPrecedence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		stage    Stage
		wire     string
		wantRule string
	}{
		{name: "too many recipients beats rate limit", stage: StageRcpt, wire: "452 4.5.3 Too many recipients, rate limited", wantRule: "5 too many recipients"},
		{name: "throttled-exists beats rate limit text", stage: StageRcpt, wire: "450 4.2.1 receiving mail at a rate that is throttled", wantRule: "10 exists, throttled"},
		{name: "rate limit beats greylisting", stage: StageRcpt, wire: "421 4.7.0 Try again later, closing connection.", wantRule: "6 rate limited"},
		{name: "rDNS beats client host rejected", stage: StageRcpt, wire: "450 4.7.25 Client host rejected: cannot find your hostname", wantRule: "8 rDNS"},
		{name: "block beats no service at banner", stage: StageBanner, wire: "554 5.7.1 blocked using zen.spamhaus.org", wantRule: "7 blocked"},
		{name: "block beats unknown user text", stage: StageRcpt, wire: "550 5.7.1 Recipient address rejected: client host rejected by spamhaus", wantRule: "7 blocked"},
		{name: "block beats sender at MAIL", stage: StageMail, wire: "554 5.7.1 sender rejected: blocked using bl.spamcop.net", wantRule: "7 blocked"},
		{name: "null MX beats Microsoft 5.1.10", stage: StageRcpt, wire: "556 5.1.10 Recipient address rejected: domain does not accept mail", wantRule: "2 null MX"},
		{name: "full beats unknown-user text", stage: StageRcpt, wire: "552 5.2.2 Mailbox full, address rejected", wantRule: "11 mailbox full"},
		{name: "disabled beats unknown-user text", stage: StageRcpt, wire: "550 5.2.1 account disabled, user unknown", wantRule: "12 disabled"},
		{name: "greylisting beats temporary", stage: StageRcpt, wire: "450 4.2.0 Recipient address rejected: Greylisted", wantRule: "9 greylisted"},
		{name: "Domino 'not listed' is not a block listing", stage: StageRcpt, wire: "550 5.0.0 User not listed in public Name & Address Book", wantRule: "13e unknown user (text)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Classify(tt.stage, reply(t, tt.wire)); got.Rule != tt.wantRule {
				t.Errorf("rule = %q (%s/%s), want %q", got.Rule, got.Verdict, got.Reason, tt.wantRule)
			}
		})
	}
}

func TestClassifyNeverInvalidOutsideRcpt(t *testing.T) {
	t.Parallel()
	for _, s := range []Stage{StageBanner, StageEHLO, StageHELO, StageSTARTTLS, StageMail, StageCatchAll, StageQuit} {
		for _, code := range probeCodes {
			for _, enh := range []string{"", "5.1.1", "5.1.10", "5.2.1", "5.4.1"} {
				if got := Classify(s, Reply{Code: code, Enhanced: enh, Text: "user unknown, disabled, Recipient address rejected: Access denied"}); got.Verdict == Invalid && got.Reason != ReasonNullMX {
					t.Fatalf("Classify(%s, %d %s) = invalid by rule %q", s, code, enh, got.Rule)
				}
			}
		}
	}
	for code := 400; code < 500; code++ {
		if got := Classify(StageRcpt, Reply{Code: code, Enhanced: "4.1.1", Text: "user unknown"}); got.Verdict == Invalid {
			t.Fatalf("4yz %d gave invalid by rule %q", code, got.Rule)
		}
	}
}

func TestParseRetryHint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text string
		want time.Duration
	}{
		{"Greylisted, please try again in 360 seconds", 6 * time.Minute},
		{"try again in 4 minutes", 4 * time.Minute},
		{"deferred for 1 minute", time.Minute},
		{"retry in 2 hours", 2 * time.Hour},
		{"come back in 300s", 5 * time.Minute},
		{"retry after 99999 hours", 24 * time.Hour},
		{"Greylisted, see http://postgrey.schweikert.ch/help/example.com.html", 0},
		{"", 0},
	}
	for _, tt := range tests {
		if got := ParseRetryHint(tt.text); got != tt.want {
			t.Errorf("ParseRetryHint(%q) = %v, want %v", tt.text, got, tt.want)
		}
	}
}

func TestEnhancedPatterns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, code string
		want          bool
	}{
		{"5.7.606-649", "5.7.606", true},
		{"5.7.606-649", "5.7.649", true},
		{"5.7.606-649", "5.7.650", false},
		{"5.7.*", "5.7.1", true},
		{"5.7.*", "5.1.1", false},
		{"5.1.1", "5.1.10", false},
		{"5.1.1", "", false},
		{"5.1.1", "garbage", false},
	}
	for _, tt := range tests {
		if got := matchEnhanced([]string{tt.pattern}, tt.code); got != tt.want {
			t.Errorf("matchEnhanced(%q, %q) = %v, want %v", tt.pattern, tt.code, got, tt.want)
		}
	}
	for _, bad := range []string{"5.7", "5.x.1", "5.7.9-1", ""} {
		if _, ok := parseEnhPattern(bad); ok {
			t.Errorf("parseEnhPattern(%q) accepted", bad)
		}
	}
}
