package main

import (
	"errors"
	"net/url"
)

// urlErrorCause drops the URL that net/url (and redis.ParseURL through it)
// quotes in parse errors: a mistyped "redis://:password@host:port" would
// otherwise print the password on the terminal and in logs (issue 8).
func urlErrorCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
