// Package redact keeps secrets that live in URLs (passwords in user info:
// Redis, SOCKS5 proxies, list servers) out of error messages and logs.
package redact

import (
	"errors"
	"net/url"
	"strings"
)

// URL returns raw with its password hidden, for messages and logs, or
// "(unparsable URL)" when it does not parse (its text may hold the
// password where net/url could not find it).
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// URLError returns the cause of a net/url parse error without the URL
// that *url.Error quotes, and without the fragment of it that some causes
// quote in turn: a mistyped "redis://127.0.0.1:6379:secretpw" is reported
// as `invalid port ":secretpw"`, and a password holding an unescaped "/",
// "#" or "?" is cut there and shown in part. Causes that quote input become
// a plain "malformed URL"; others (missing scheme…) are kept.
func URLError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	if msg := ue.Err.Error(); strings.ContainsAny(msg, `"'`) {
		return errors.New("malformed URL (details withheld: they may contain a password)")
	}
	return ue.Err
}
