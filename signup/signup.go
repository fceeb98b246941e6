// Package signup turns a verdict into what a sign-up form needs: a
// decision (accept, reject or suggest), a message fit to show under the
// e-mail field, and a corrected address when the domain looks mistyped.
//
// The rule is the sign-up team's: never turn a real customer away on our
// uncertainty. Only a mailbox the recipient's server refused, a domain that
// cannot receive mail, or what the operator's Policy rejects is "reject";
// "risky", "unknown" and a check still running are "accept". A domain one
// slip from a big provider's gets its suggestion (package suggest); if that
// domain receives mail it is a typo-squat, and "reject". docs/signup.md has
// the whole table.
package signup

import (
	"strings"

	"github.com/mxprobe/mxprobe/suggest"
	"github.com/mxprobe/mxprobe/tasks"
)

// Decision is what the form should do with the address.
type Decision string

const (
	// Accept: let the user through (the verdict, if any, still reaches
	// the callback).
	Accept Decision = "accept"
	// Reject: ask the user for another address.
	Reject Decision = "reject"
	// Suggest: show DidYouMean; the user may take it or keep theirs.
	Suggest Decision = "suggest"
)

// Policy is the operator's: which addresses that do receive mail are
// still refused at sign-up.
type Policy struct {
	RejectDisposable bool // throw-away mailboxes (on by default)
	RejectRole       bool // info@, admin@, sales@ … (off by default)
	RejectFree       bool // free consumer providers, for B2B sign-ups (off by default)
}

// DefaultPolicy rejects disposable addresses only.
func DefaultPolicy() Policy { return Policy{RejectDisposable: true} }

// Answer is the decision with its reason and message.
type Answer struct {
	Decision Decision `json:"decision"`
	// Reason is the machine reason: the verdict's reason, or one of
	// "pending", "typo", "typo_squat", "disposable", "role_account",
	// "free_provider".
	Reason string `json:"decision_reason"`
	// Message is English text to show under the field; empty for accept.
	Message string `json:"message,omitempty"`
	// DidYouMean is the corrected address, when there is one.
	DidYouMean string `json:"did_you_mean,omitempty"`
}

// Decide answers for the address as typed. c is the latest result (nil
// while none exists) and final says whether it is the last one.
func Decide(typed string, c *tasks.Check, final bool, p Policy) Answer {
	local, domain := split(typed)
	var fix string
	s, hasFix := suggest.Default().Domain(domain)
	if hasFix && local != "" {
		fix = local + "@" + s.Domain
	} else {
		hasFix = false
	}
	if c == nil || !final {
		if hasFix && s.Confidence == suggest.Sure && (c == nil || !c.Flags.Allowlisted) {
			return Answer{Decision: Suggest, Reason: "typo", Message: didYouMean(fix), DidYouMean: fix}
		}
		if c != nil {
			// Facts from lists are known before any probe ends.
			if a, refused := byPolicy(c.Flags, p); refused {
				return a
			}
		}
		return Answer{Decision: Accept, Reason: "pending"}
	}

	if c.Verdict == tasks.VerdictInvalid && c.Reason == "denied" {
		// The operator's deny list: no suggestion changes that.
		return Answer{Decision: Reject, Reason: c.Reason, Message: invalidMessages[c.Reason]}
	}
	broken := c.Verdict == tasks.VerdictInvalid && domainBroken[c.Reason]
	if hasFix && !c.Flags.Allowlisted && (s.Confidence == suggest.Sure || broken) {
		if receivesMail(c) && s.Confidence == suggest.Sure {
			return Answer{Decision: Reject, Reason: "typo_squat",
				Message:    "This looks like a mistyped " + s.Domain + " address. Did you mean " + fix + "?",
				DidYouMean: fix}
		}
		return Answer{Decision: Suggest, Reason: reasonOr(c.Reason, "typo"), Message: didYouMean(fix), DidYouMean: fix}
	}
	if c.Verdict == tasks.VerdictInvalid {
		msg, ok := invalidMessages[c.Reason]
		if !ok {
			msg = "This email address cannot receive mail. Please check it."
		}
		return Answer{Decision: Reject, Reason: c.Reason, Message: msg}
	}
	if a, refused := byPolicy(c.Flags, p); refused {
		return a
	}
	return Answer{Decision: Accept, Reason: c.Reason}
}

// byPolicy applies the operator's policy to the address's flags.
func byPolicy(f tasks.Flags, p Policy) (Answer, bool) {
	switch {
	case f.Allowlisted:
		return Answer{}, false
	case p.RejectDisposable && f.Disposable:
		return Answer{Decision: Reject, Reason: "disposable", Message: "Please use a permanent email address, not a disposable one."}, true
	case p.RejectRole && f.RoleAccount:
		return Answer{Decision: Reject, Reason: "role_account", Message: "Please use your own email address, not a shared one such as info@ or sales@."}, true
	case p.RejectFree && f.FreeProvider:
		return Answer{Decision: Reject, Reason: "free_provider", Message: "Please use your work email address."}, true
	}
	return Answer{}, false
}

// receivesMail: the domain's server took the address (or takes every
// address) — what a typo-squat does.
func receivesMail(c *tasks.Check) bool {
	return c.Verdict == tasks.VerdictValid || c.Verdict == tasks.VerdictRisky
}

// domainBroken are the invalid reasons that say the domain, not the
// mailbox, cannot receive mail: there a slip is the likely cause.
var domainBroken = map[string]bool{
	"domain_not_found": true, "no_mx": true, "null_mx": true, "bad_syntax": true,
}

// invalidMessages are the messages shown for an invalid verdict, by reason.
var invalidMessages = map[string]string{
	"mailbox_not_found": "This email address does not exist. Please check it.",
	"mailbox_disabled":  "This mailbox is disabled. Please use another address.",
	"domain_not_found":  "This email domain does not exist. Please check it.",
	"no_mx":             "This domain does not receive email. Please check it.",
	"null_mx":           "This domain does not receive email. Please check it.",
	"bad_syntax":        "This is not a valid email address.",
	"denied":            "This email address is not accepted here. Please use another one.",
}

func didYouMean(fix string) string { return "Did you mean " + fix + "?" }

func reasonOr(r, def string) string {
	if r == "" {
		return def
	}
	return r
}

// split cuts an address at its last '@' (a quoted local part may hold
// one), trimming space the way a form field holds it.
func split(a string) (local, domain string) {
	a = strings.TrimSpace(a)
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 {
		return "", ""
	}
	return a[:i], a[i+1:]
}
