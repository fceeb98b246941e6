package redact_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/internal/redact"
)

func TestURLError(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		"redis://127.0.0.1:6379:secretpw",
		"redis://:Xy7/secretpw@127.0.0.1:6379/0",
		"socks5://user:se%zzcret@127.0.0.1:1080",
		"http://user:secret pw@[::1/list",
	} {
		_, err := url.Parse(raw)
		if err == nil {
			t.Fatalf("%q parsed; want a parse error for this test", raw)
		}
		msg := redact.URLError(err).Error()
		for _, secret := range []string{"secret", "Xy7", "se%zz"} {
			if strings.Contains(msg, secret) {
				t.Errorf("%q: error %q shows %q", raw, msg, secret)
			}
		}
	}
	_, err := url.Parse("://no-scheme")
	if got := redact.URLError(err).Error(); !strings.Contains(got, "missing protocol scheme") {
		t.Errorf("a cause that quotes nothing is kept: got %q", got)
	}
}

func TestURL(t *testing.T) {
	t.Parallel()
	if got := redact.URL("http://user:secret@example.test/list"); strings.Contains(got, "secret") || !strings.Contains(got, "example.test/list") {
		t.Errorf("URL = %q", got)
	}
	if got := redact.URL("http://user:sec ret@[::1/list"); strings.Contains(got, "sec") {
		t.Errorf("unparsable URL shown: %q", got)
	}
}
