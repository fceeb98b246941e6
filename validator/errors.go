package validator

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors returned (wrapped in *CheckError) by Validator.Check, for
// callers that want py3-validate-email's validate_email_or_fail style:
//
//	if err := v.Check(ctx, addr); errors.Is(err, validator.ErrMailboxNotFound) { … }
//
// Each verdict other than valid maps to exactly one of them.
var (
	ErrBadSyntax       = errors.New("address is not a valid RFC 5321 mailbox")
	ErrDisposable      = errors.New("address belongs to a disposable mail provider")
	ErrDenied          = errors.New("address is on the operator's deny list")
	ErrNoMailDomain    = errors.New("domain does not accept mail")
	ErrMailboxNotFound = errors.New("mailbox does not exist")
	ErrMailboxDisabled = errors.New("mailbox is disabled")
	ErrMailboxFull     = errors.New("mailbox is full")
	ErrCatchAll        = errors.New("domain accepts every address; the mailbox cannot be confirmed")
	ErrAcceptsAll      = errors.New("provider accepts every address at RCPT; the mailbox cannot be confirmed")
	// ErrUnverifiable covers every unknown verdict: greylisting, blocks of
	// our IP, rate limits, timeouts, DNS failures. It never means invalid.
	ErrUnverifiable = errors.New("mailbox could not be verified")
)

// CheckError is the typed error of Validator.Check. It carries the whole
// Result, so errors.As gives the SMTP details (code, enhanced code, text, MX
// host) of the reply that decided it.
type CheckError struct {
	Result Result
	// Err is one of the sentinels above; errors.Is matches through Unwrap.
	Err error
}

func (e *CheckError) Error() string {
	var b strings.Builder
	addr := e.Result.Address
	if addr == "" {
		addr = e.Result.Input
	}
	fmt.Fprintf(&b, "%s: %s (%s/%s)", addr, e.Err, e.Result.Verdict, e.Result.Reason)
	if s := e.Result.SMTP; s != nil && s.Code != 0 {
		fmt.Fprintf(&b, ": %s replied %d", e.Result.MXHost, s.Code)
		if s.Enhanced != "" {
			fmt.Fprintf(&b, " %s", s.Enhanced)
		}
		if s.Text != "" {
			fmt.Fprintf(&b, " %q", firstLine(s.Text))
		}
	} else if e.Result.Error != "" {
		fmt.Fprintf(&b, ": %s", e.Result.Error)
	}
	return b.String()
}

func (e *CheckError) Unwrap() error { return e.Err }

// Temporary reports whether asking again later may give another answer.
func (e *CheckError) Temporary() bool { return e.Result.Retryable }

// errorFor maps a non-valid Result to its Check error; nil for valid.
func errorFor(r Result) error {
	if r.Verdict == Valid {
		return nil
	}
	return &CheckError{Result: r, Err: sentinelFor(r)}
}

func sentinelFor(r Result) error {
	switch r.Reason {
	case ReasonBadSyntax:
		return ErrBadSyntax
	case ReasonDisposable:
		return ErrDisposable
	case ReasonDenied:
		return ErrDenied
	case ReasonNullMX, ReasonNoMX, ReasonDomainNotFound:
		return ErrNoMailDomain
	case ReasonMailboxNotFound:
		return ErrMailboxNotFound
	case ReasonMailboxDisabled:
		return ErrMailboxDisabled
	case ReasonMailboxFull:
		return ErrMailboxFull
	case ReasonCatchAll:
		return ErrCatchAll
	case ReasonAcceptsAllAtRcpt:
		return ErrAcceptsAll
	}
	if r.Verdict == Invalid {
		// An invalid verdict with a reason added later still fails closed
		// as "not found" rather than pretending to be unverifiable.
		return ErrMailboxNotFound
	}
	return ErrUnverifiable
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
