package validator

import (
	"encoding/json"
	"time"
)

// Verdict is the answer to "can this address receive mail?".
type Verdict string

const (
	// Valid: the recipient's own server accepted the mailbox at RCPT and the
	// domain does not accept every address.
	Valid Verdict = "valid"
	// Invalid: the address can never receive mail (bad syntax, no mail domain,
	// or a 5yz RCPT reply about the mailbox itself).
	Invalid Verdict = "invalid"
	// Risky: the address may exist, but the server's answer cannot be trusted
	// (catch-all domain, providers that accept everything at RCPT, full or
	// disposable mailboxes).
	Risky Verdict = "risky"
	// Unknown: no trustworthy answer was obtained (greylisted, blocked, rate
	// limited, timeouts, DNS failures). Never a statement about the mailbox.
	Unknown Verdict = "unknown"
)

// Reason is the machine-readable cause of a verdict. The set is part of the
// wire format: add to it, never rename.
type Reason string

const (
	ReasonMailboxExists    Reason = "mailbox_exists"
	ReasonMailboxNotFound  Reason = "mailbox_not_found"
	ReasonMailboxDisabled  Reason = "mailbox_disabled"
	ReasonMailboxFull      Reason = "mailbox_full"
	ReasonCatchAll         Reason = "catch_all"
	ReasonDisposable       Reason = "disposable"
	ReasonDenied           Reason = "denied"
	ReasonAcceptsAllAtRcpt Reason = "accepts_all_at_rcpt"
	ReasonNoMX             Reason = "no_mx"
	ReasonNullMX           Reason = "null_mx"
	ReasonDomainNotFound   Reason = "domain_not_found"
	ReasonDNSError         Reason = "dns_error"
	// ReasonNoUsableAddress: the MX hosts have addresses, but none our IP
	// family or address policy lets us dial (docs/verdicts.md "DNS answers").
	ReasonNoUsableAddress Reason = "no_usable_address"
	// ReasonMXIPLiteral: the domain's MX targets are IP addresses, which
	// RFC 5321 §5.1 does not allow (docs/verdicts.md "DNS answers").
	ReasonMXIPLiteral     Reason = "mx_ip_literal"
	ReasonBadSyntax       Reason = "bad_syntax"
	ReasonBlocked         Reason = "blocked"
	ReasonBlockedRDNS     Reason = "blocked_rdns"
	ReasonGreylisted      Reason = "greylisted"
	ReasonRateLimited     Reason = "rate_limited"
	ReasonTooManyRcpts    Reason = "too_many_recipients"
	ReasonTooManyErrors   Reason = "too_many_errors"
	ReasonSenderRejected  Reason = "sender_rejected"
	ReasonNoService       Reason = "no_smtp_service"
	ReasonPolicy          Reason = "policy"
	ReasonTimeout         Reason = "timeout"
	ReasonConnectFailed   Reason = "connect_failed"
	ReasonTLSError        Reason = "tls_error"
	ReasonSMTPError       Reason = "smtp_error"
	ReasonTempFailure     Reason = "temporary_failure"
	ReasonUnverifiableEAI Reason = "unverifiable_eai"
	ReasonSMTPSkipped     Reason = "smtp_skipped"
	ReasonAllowed         Reason = "allowed"
)

// Stage names the point of the SMTP conversation a reply answered. Only
// replies at StageRcpt judge the mailbox (docs/verdicts.md "Stages").
type Stage string

const (
	StageDNS      Stage = "dns"
	StageConnect  Stage = "connect"
	StageBanner   Stage = "banner"
	StageEHLO     Stage = "ehlo"
	StageHELO     Stage = "helo"
	StageSTARTTLS Stage = "starttls"
	StageMail     Stage = "mail"
	StageRcpt     Stage = "rcpt"
	// StageCatchAll is the RCPT for the random local part sent after the real
	// one; its reply decides catch-all, never the real mailbox.
	StageCatchAll Stage = "rcpt_catch_all"
	StageRset     Stage = "rset"
	StageQuit     Stage = "quit"
)

// Reply is one complete SMTP reply. Text joins the lines of a multi-line reply
// with "\n" after stripping the code and separator from each.
type Reply struct {
	Code     int    `json:"code"`
	Enhanced string `json:"enhanced_code,omitempty"`
	Text     string `json:"text"`
}

// Flags are facts about an address that do not by themselves decide the
// verdict.
type Flags struct {
	Disposable   bool `json:"disposable"`
	CatchAll     bool `json:"catch_all"`
	RoleAccount  bool `json:"role_account"`
	FreeProvider bool `json:"free_provider"`
	SMTPUTF8     bool `json:"smtputf8"`
	// Allowlisted and Denylisted record operator lists that matched.
	Allowlisted bool `json:"allowlisted,omitempty"`
	Denylisted  bool `json:"denylisted,omitempty"`
	// CatchAllState says what the catch-all test found; empty when it was
	// not run. CatchAll is true exactly when it is CatchAllYes.
	CatchAllState CatchAllState `json:"catch_all_state,omitempty"`
}

// CatchAllState is the outcome of the catch-all test (docs/reliability.md).
type CatchAllState string

const (
	// CatchAllYes: the random recipient was accepted too.
	CatchAllYes CatchAllState = "yes"
	// CatchAllNo: the random recipient was refused as unknown.
	CatchAllNo CatchAllState = "no"
	// CatchAllUnknown: the test ran but proved nothing (the random RCPT
	// was dropped, reset, timed out or got a 4yz or a refusal not about
	// the mailbox). A verdict carrying it is cached only briefly and the
	// domain's catch-all status is not remembered, so the next request
	// tests again.
	CatchAllUnknown CatchAllState = "unknown"
)

// SMTPDetail is the reply that decided the verdict, with where it came from.
type SMTPDetail struct {
	Stage    Stage  `json:"stage"`
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced_code,omitempty"`
	Text     string `json:"text,omitempty"`
}

// TranscriptLine is one line of the SMTP conversation. Dir is ">" for what
// we sent and "<" for what the server sent, as in chasquid's transcripts.
type TranscriptLine struct {
	At   time.Time `json:"at"`
	Host string    `json:"host,omitempty"`
	Dir  string    `json:"dir"`
	Line string    `json:"line"`
}

// Result is the full answer for one address. Its JSON form is the wire format
// of the API, the task results and the callbacks: field names are stable.
type Result struct {
	// Input is the address as given; Address its normalised form (domain in
	// lower-case A-labels, local part untouched), empty when it did not parse.
	Input   string  `json:"input"`
	Address string  `json:"address,omitempty"`
	Verdict Verdict `json:"verdict"`
	Reason  Reason  `json:"reason"`
	// Retryable is true when asking again later may give a better answer
	// (greylisting, temporary failures, rate limits, DNS SERVFAIL).
	Retryable bool `json:"retryable"`
	// RetryAfter is a lower bound for that retry, when the server hinted one.
	RetryAfter Duration `json:"retry_after,omitempty"`
	Flags      Flags    `json:"flags"`
	// MXHost and MXAddr identify the server whose reply decided the verdict.
	MXHost string `json:"mx_host,omitempty"`
	MXAddr string `json:"mx_addr,omitempty"`
	// Provider is the rate-limit group of MXHost (registrable domain).
	Provider   string           `json:"provider,omitempty"`
	SMTP       *SMTPDetail      `json:"smtp,omitempty"`
	TLS        bool             `json:"tls"`
	CheckedAt  time.Time        `json:"checked_at"`
	Duration   Duration         `json:"duration"`
	Transcript []TranscriptLine `json:"transcript,omitempty"`
	// Error is a human-readable account of an operational failure that led
	// to an unknown verdict (timeout, connection refused, TLS failure).
	Error string `json:"error,omitempty"`
}

// Duration marshals as a Go duration string ("1.5s") and accepts either that
// or a number of nanoseconds, so JSON stays readable to people.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*d = Duration(n)
	return nil
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
