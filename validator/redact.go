package validator

import (
	"errors"
	"net/url"
)

// urlErrorCause drops the URL that net/url quotes in its parse errors: a
// mistyped "socks5://user:pass@host:port" would otherwise put the password
// in the start-up error and the logs (issue 8).
func urlErrorCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
