package validator

import "time"

// Action tells the prober (and, through the worker, the rate limiter) what a
// reply asks of us beyond the verdict.
type Action int

const (
	// ActionNone: the verdict stands.
	ActionNone Action = iota
	// ActionNextMX: this host gave no answer about the mailbox (connection
	// failure, banner refusal, 4xx/421 before RCPT); try the next MX host.
	// Never taken after a 5yz RCPT reply.
	ActionNextMX
	// ActionNewSession: the server limits recipients per session (452 "too
	// many recipients"); close and put the remaining addresses in a new one.
	ActionNewSession
	// ActionCoolDown: the server throttles or blocks our IP; the provider must
	// be paused for every worker (docs/verdicts.md "Blocks and rate limits").
	ActionCoolDown
	// ActionFixSender: MAIL FROM was refused; the sender identity needs work
	// (docs/verdicts.md "About us"). No retry will help until it is fixed.
	ActionFixSender
	// ActionLowerRejectBudget: the server ended the session because of the
	// refusals it gave ("421 4.7.0 Error: too many errors", Postfix's
	// smtpd_hard_error_limit). Verdicts already answered in the session
	// stand; the address that got this reply is asked again later, and the
	// refused-RCPT budget of later sessions to this MX host drops so they
	// stay below the server's limit.
	ActionLowerRejectBudget
)

func (a Action) String() string {
	switch a {
	case ActionNone:
		return "none"
	case ActionNextMX:
		return "next_mx"
	case ActionNewSession:
		return "new_session"
	case ActionCoolDown:
		return "cool_down"
	case ActionFixSender:
		return "fix_sender"
	case ActionLowerRejectBudget:
		return "lower_reject_budget"
	}
	return "unknown"
}

// Outcome is what one SMTP reply means: the result of looking it up in the
// decision table of docs/verdicts.md.
type Outcome struct {
	Verdict   Verdict
	Reason    Reason
	Retryable bool
	// RetryHint is the delay the server asked for ("try again in 5 minutes"),
	// zero when it named none.
	RetryHint time.Duration
	Action    Action
	// Rule is the row of the decision table that matched, for tests and logs.
	Rule string
}
