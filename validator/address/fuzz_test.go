package address

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse proves the promise the prober relies on: whatever Parse
// accepts renders as a single-line "RCPT TO:<…>" argument that cannot
// inject a command, fits the RFC 5321 limits, and parses back to itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"alice@example.com",
		"Alice.Smith@Example.COM",
		"user@bücher.de",
		"用户@例子.广告",
		`"john doe"@x.org`,
		`"john..doe"@x.org`,
		`"a\"b\\c"@x.org`,
		`"\a"@x.org`,
		"a@[192.0.2.1]",
		"a@[IPv6:2001:db8::1]",
		"a@[IPv6:::ffff:192.0.2.1]",
		"a@b.com>\r\nRCPT TO:<c@d.com",
		"Bob <bob@example.com>",
		"a\x00b@x.org",
		"a@xn--bcher-kva.de",
		"a@ex\uff1cample.com",
		"a@example\u3002com",
		"a@ß.de",
		"a@\u00ad.com",
		" a@b.c ",
		strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + ".com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		a, err := Parse(in)
		if err != nil {
			if a != (Address{}) {
				t.Fatalf("error %v with non-zero Address %+v", err, a)
			}
			return
		}
		s := a.String()
		if !utf8.ValidString(s) {
			t.Fatalf("String() %q is not valid UTF-8", s)
		}
		for _, r := range s {
			if r < 0x20 || r >= 0x7f && r <= 0x9f {
				t.Fatalf("String() %q contains control %U", s, r)
			}
		}
		// Stricter than "outside quotes": Parse refuses angle brackets
		// everywhere.
		if strings.ContainsAny(s, "<>") {
			t.Fatalf("String() %q contains an angle bracket", s)
		}
		if len(s) > MaxAddressLen {
			t.Fatalf("String() %q is %d octets", s, len(s))
		}
		if a.Local == "" || a.Domain == "" {
			t.Fatalf("accepted %q with empty part: %+v", in, a)
		}
		if a.Domain != strings.ToLower(a.Domain) && !a.IsLiteral() {
			t.Fatalf("domain %q not lower case", a.Domain)
		}
		for i := 0; i < len(a.Domain); i++ {
			if a.Domain[i] >= utf8.RuneSelf {
				t.Fatalf("domain %q not ASCII", a.Domain)
			}
		}
		if a.NeedsSMTPUTF8 == isASCII(a.Local) {
			t.Fatalf("NeedsSMTPUTF8 = %v for local %q", a.NeedsSMTPUTF8, a.Local)
		}
		line := "RCPT TO:<" + s + ">\r\n"
		if strings.Count(line, "\r\n") != 1 || strings.IndexAny(line, "\r\n") != len(line)-2 {
			t.Fatalf("RCPT line %q is not a single line", line)
		}
		b, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) accepted, but its String() %q fails: %v", in, s, err)
		}
		if b != a {
			t.Fatalf("round trip of %q: %+v, want %+v", in, b, a)
		}
	})
}
