package address

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	t.Parallel()
	local64 := strings.Repeat("a", 64)
	// 64 + 1 + 189 = 254 octets: the longest address allowed.
	dom189 := strings.Repeat("d", 63) + "." + strings.Repeat("e", 63) + "." + strings.Repeat("f", 57) + ".com"
	tests := []struct {
		name       string
		in         string
		wantString string
		wantLocal  string
		wantDomain string
		wantUni    string
		wantLit    string
		wantUTF8   bool
	}{
		{name: "simple", in: "alice@example.com", wantString: "alice@example.com", wantLocal: "alice", wantDomain: "example.com"},
		{name: "local case kept, domain lowered", in: "Alice.Smith@Example.COM", wantString: "Alice.Smith@example.com", wantLocal: "Alice.Smith", wantDomain: "example.com"},
		{name: "all atext specials", in: "!#$%&'*+-/=?^_`{|}~@x.org", wantString: "!#$%&'*+-/=?^_`{|}~@x.org", wantLocal: "!#$%&'*+-/=?^_`{|}~", wantDomain: "x.org"},
		{name: "subaddress", in: "bob+tag@mail.example.co.uk", wantString: "bob+tag@mail.example.co.uk", wantLocal: "bob+tag", wantDomain: "mail.example.co.uk"},
		{name: "surrounding spaces trimmed", in: " \talice@example.com\t ", wantString: "alice@example.com", wantLocal: "alice", wantDomain: "example.com"},
		{name: "single label domain", in: "root@localhost", wantString: "root@localhost", wantLocal: "root", wantDomain: "localhost"},
		{name: "digit labels", in: "a@123.example.com", wantString: "a@123.example.com", wantLocal: "a", wantDomain: "123.example.com"},
		{name: "IDN domain", in: "user@bücher.de", wantString: "user@xn--bcher-kva.de", wantLocal: "user", wantDomain: "xn--bcher-kva.de", wantUni: "bücher.de"},
		{name: "IDN upper case mapped", in: "user@BÜCHER.DE", wantString: "user@xn--bcher-kva.de", wantLocal: "user", wantDomain: "xn--bcher-kva.de", wantUni: "bücher.de"},
		{name: "A-label input", in: "user@XN--BCHER-KVA.de", wantString: "user@xn--bcher-kva.de", wantLocal: "user", wantDomain: "xn--bcher-kva.de", wantUni: "bücher.de"},
		{name: "ideographic full stop mapped", in: "a@example。com", wantString: "a@example.com", wantLocal: "a", wantDomain: "example.com"},
		{name: "UTF-8 local part", in: "用户@例子.广告", wantString: "用户@xn--fsqu00a.xn--4rr70v", wantLocal: "用户", wantDomain: "xn--fsqu00a.xn--4rr70v", wantUni: "例子.广告", wantUTF8: true},
		{name: "UTF-8 local part ASCII domain", in: "josé@example.com", wantString: "josé@example.com", wantLocal: "josé", wantDomain: "example.com", wantUTF8: true},
		{name: "quoted with spaces", in: `"john doe"@x.org`, wantString: `"john doe"@x.org`, wantLocal: "john doe", wantDomain: "x.org"},
		{name: "quoted consecutive dots", in: `"john..doe"@x.org`, wantString: `"john..doe"@x.org`, wantLocal: "john..doe", wantDomain: "x.org"},
		{name: "quoted leading dot", in: `".john"@x.org`, wantString: `".john"@x.org`, wantLocal: ".john", wantDomain: "x.org"},
		{name: "needless quotes removed", in: `"john.doe"@x.org`, wantString: "john.doe@x.org", wantLocal: "john.doe", wantDomain: "x.org"},
		{name: "needless quoted-pair removed", in: `"j\ohn"@x.org`, wantString: "john@x.org", wantLocal: "john", wantDomain: "x.org"},
		{name: "quoted at sign", in: `"a@b"@x.org`, wantString: `"a@b"@x.org`, wantLocal: "a@b", wantDomain: "x.org"},
		{name: "escaped quote and backslash", in: `"a\"b\\c"@x.org`, wantString: `"a\"b\\c"@x.org`, wantLocal: `a"b\c`, wantDomain: "x.org"},
		{name: "quoted comma and parens", in: `"a,b(c)"@x.org`, wantString: `"a,b(c)"@x.org`, wantLocal: "a,b(c)", wantDomain: "x.org"},
		{name: "quoted UTF-8", in: `"jo sé"@x.org`, wantString: `"jo sé"@x.org`, wantLocal: "jo sé", wantDomain: "x.org", wantUTF8: true},
		{name: "IPv4 literal", in: "postmaster@[192.0.2.1]", wantString: "postmaster@[192.0.2.1]", wantLocal: "postmaster", wantDomain: "[192.0.2.1]", wantLit: "192.0.2.1"},
		{name: "IPv6 literal canonicalised", in: "a@[ipv6:2001:DB8:0:0::1]", wantString: "a@[IPv6:2001:db8::1]", wantLocal: "a", wantDomain: "[IPv6:2001:db8::1]", wantLit: "2001:db8::1"},
		{name: "IPv4-mapped IPv6 literal", in: "a@[IPv6:::ffff:192.0.2.1]", wantString: "a@[IPv6:::ffff:192.0.2.1]", wantLocal: "a", wantDomain: "[IPv6:::ffff:192.0.2.1]", wantLit: "::ffff:192.0.2.1"},
		{name: "64-octet local part", in: local64 + "@x.org", wantString: local64 + "@x.org", wantLocal: local64, wantDomain: "x.org"},
		{name: "254-octet address", in: local64 + "@" + dom189, wantString: local64 + "@" + dom189, wantLocal: local64, wantDomain: dom189},
		{name: "63-octet label", in: "a@" + strings.Repeat("l", 63) + ".com", wantString: "a@" + strings.Repeat("l", 63) + ".com", wantLocal: "a", wantDomain: strings.Repeat("l", 63) + ".com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got.String() != tt.wantString {
				t.Errorf("String() = %q, want %q", got.String(), tt.wantString)
			}
			if got.Local != tt.wantLocal {
				t.Errorf("Local = %q, want %q", got.Local, tt.wantLocal)
			}
			if got.Domain != tt.wantDomain {
				t.Errorf("Domain = %q, want %q", got.Domain, tt.wantDomain)
			}
			wantUni := tt.wantUni
			if wantUni == "" {
				wantUni = tt.wantDomain
			}
			if got.UnicodeDomain != wantUni {
				t.Errorf("UnicodeDomain = %q, want %q", got.UnicodeDomain, wantUni)
			}
			var wantLit netip.Addr
			if tt.wantLit != "" {
				wantLit = netip.MustParseAddr(tt.wantLit)
			}
			if got.Literal != wantLit || got.IsLiteral() != (tt.wantLit != "") {
				t.Errorf("Literal = %v (IsLiteral %v), want %v", got.Literal, got.IsLiteral(), wantLit)
			}
			if got.NeedsSMTPUTF8 != tt.wantUTF8 {
				t.Errorf("NeedsSMTPUTF8 = %v, want %v", got.NeedsSMTPUTF8, tt.wantUTF8)
			}
			again, err := Parse(got.String())
			if err != nil || again != got {
				t.Errorf("Parse(String()) = %+v, %v; want %+v", again, err, got)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		in         string
		wantReason string // substring of ParseError.Reason
	}{
		{name: "empty", in: "", wantReason: "empty address"},
		{name: "only spaces", in: "   ", wantReason: "empty address"},
		{name: "no at", in: "alice.example.com", wantReason: "missing '@'"},
		{name: "empty local", in: "@example.com", wantReason: "local part is empty"},
		{name: "empty quoted local", in: `""@example.com`, wantReason: "local part is empty"},
		{name: "empty domain", in: "alice@", wantReason: "domain is empty"},
		{name: "two ats", in: "a@b@c.com", wantReason: "more than one '@'"},
		{name: "leading dot", in: ".alice@x.org", wantReason: "local part starts with a dot"},
		{name: "trailing dot", in: "alice.@x.org", wantReason: "local part ends with a dot"},
		{name: "consecutive dots", in: "john..doe@x.org", wantReason: "consecutive dots"},
		{name: "space in local", in: "john doe@x.org", wantReason: "whitespace outside quotes"},
		{name: "nbsp in local", in: "john\u00a0doe@x.org", wantReason: "whitespace outside quotes"},
		{name: "comma in local", in: "a,b@x.org", wantReason: `invalid character ','`},
		{name: "comment", in: "john(comment)@x.org", wantReason: "comments are not allowed"},
		{name: "comment in domain", in: "john@x.org(comment)", wantReason: "comments are not allowed"},
		{name: "stray quote", in: `jo"hn@x.org`, wantReason: "quote inside an unquoted local part"},
		{name: "text after quoted local", in: `"john"doe@x.org`, wantReason: "must be '@'"},
		{name: "unterminated quote", in: `"john@x.org`, wantReason: "unterminated quoted local part"},
		{name: "quoted without domain", in: `"john"`, wantReason: "missing '@'"},
		{name: "quoted-pair of non-ASCII", in: `"\é"@x.org`, wantReason: "backslash in quoted local part"},
		{name: "display name", in: "Bob <bob@example.com>", wantReason: "display-name form"},
		{name: "angle brackets", in: "<bob@example.com>", wantReason: "angle brackets are not allowed"},
		{name: "angle bracket inside quotes", in: `"a>b"@x.org`, wantReason: "angle brackets are not allowed"},
		{name: "RCPT injection", in: "a@b.com>\r\nRCPT TO:<c@d.com", wantReason: "line break"},
		{name: "LF only", in: "a@b.com\nDATA", wantReason: "line break"},
		{name: "trailing CRLF not trimmed", in: "a@b.com\r\n", wantReason: "line break"},
		{name: "CR inside quotes", in: "\"a\rb\"@x.org", wantReason: "line break"},
		{name: "NUL", in: "a\x00b@x.org", wantReason: "NUL"},
		{name: "NUL inside quotes", in: "\"a\x00b\"@x.org", wantReason: "NUL"},
		{name: "tab inside quotes", in: "\"a\tb\"@x.org", wantReason: "control character U+0009"},
		{name: "DEL", in: "a\x7fb@x.org", wantReason: "control character U+007F"},
		{name: "C1 NEL", in: "a\u0085b@x.org", wantReason: "control character U+0085"},
		{name: "escape", in: "a\x1b[31m@x.org", wantReason: "control character U+001B"},
		{name: "invalid UTF-8", in: "a\xff@x.org", wantReason: "not valid UTF-8"},
		{name: "65-octet local", in: strings.Repeat("a", 65) + "@x.org", wantReason: "local part longer than 64 octets"},
		{name: "64 content but quoted is 66", in: `"` + strings.Repeat("a", 62) + ` b"@x.org`, wantReason: "local part longer than 64 octets"},
		{name: "UTF-8 local over 64 octets", in: strings.Repeat("é", 33) + "@x.org", wantReason: "local part longer than 64 octets"},
		{name: "256-octet domain", in: "a@" + longDomain(256), wantReason: "domain longer than 255 octets"},
		{name: "255-octet domain", in: "a@" + longDomain(255), wantReason: "address longer than 254 octets"},
		{name: "255-octet address", in: strings.Repeat("a", 64) + "@" + longDomain(190), wantReason: "address longer than 254 octets"},
		{name: "huge input", in: strings.Repeat("a", 2000) + "@x.org", wantReason: "input longer than 1024 octets"},
		{name: "64-octet label", in: "a@" + strings.Repeat("l", 64) + ".com", wantReason: "domain label longer than 63 octets"},
		{name: "label leading hyphen", in: "a@-example.com", wantReason: "domain label starts with a hyphen"},
		{name: "label trailing hyphen", in: "a@example-.com", wantReason: "domain label ends with a hyphen"},
		{name: "hyphens in 3rd and 4th position", in: "a@ab--cd.com", wantReason: "not a valid internationalized name"},
		{name: "bad punycode", in: "a@xn--zz.com", wantReason: "not a valid internationalized name"},
		{name: "underscore", in: "a@foo_bar.com", wantReason: `invalid character '_'`},
		{name: "space in domain", in: "a@foo bar.com", wantReason: "whitespace in the domain"},
		{name: "domain trailing dot", in: "a@example.com.", wantReason: "domain ends with a dot"},
		{name: "domain leading dot", in: "a@.example.com", wantReason: "domain starts with a dot"},
		{name: "empty label", in: "a@example..com", wantReason: "empty label"},
		{name: "numeric TLD", in: "a@192.0.2.1", wantReason: "top-level domain is all digits"},
		{name: "NUL in IDN domain", in: "a@☃\u0000.com", wantReason: "NUL"},
		{name: "IDN fullwidth less-than", in: "a@ex\uff1cample.com", wantReason: "not a valid internationalized name"},
		{name: "IDN leading hyphen", in: "a@-bücher.de", wantReason: "not a valid internationalized name"},
		{name: "unclosed literal", in: "a@[192.0.2.1", wantReason: "must end with ']'"},
		{name: "empty literal", in: "a@[]", wantReason: "address literal is empty"},
		{name: "bad IPv4 literal", in: "a@[192.0.2.256]", wantReason: "invalid IPv4 address literal"},
		{name: "IPv4 literal leading zero", in: "a@[192.0.2.01]", wantReason: "invalid IPv4 address literal"},
		{name: "IPv6 without tag", in: "a@[2001:db8::1]", wantReason: "needs the \"IPv6:\" tag"},
		{name: "IPv6 tag with IPv4", in: "a@[IPv6:192.0.2.1]", wantReason: "invalid IPv6 address literal"},
		{name: "IPv6 zone", in: "a@[IPv6:fe80::1%eth0]", wantReason: "must not have a zone"},
		{name: "general literal tag", in: "a@[x400:c=us]", wantReason: "unsupported address literal tag"},
		{name: "nested bracket", in: "a@[[192.0.2.1]]", wantReason: "contains a bracket"},
		{name: "text after literal", in: "a@[192.0.2.1]x", wantReason: "must end with ']'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want error containing %q", tt.in, got.String(), tt.wantReason)
			}
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("errors.Is(err, ErrSyntax) = false for %v", err)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not *ParseError", err)
			}
			if pe.Input != tt.in {
				t.Errorf("Input = %q, want %q", pe.Input, tt.in)
			}
			if !strings.Contains(pe.Reason, tt.wantReason) {
				t.Errorf("Reason = %q, want it to contain %q", pe.Reason, tt.wantReason)
			}
			if got != (Address{}) {
				t.Errorf("got non-zero Address %+v with error", got)
			}
			if strings.ContainsAny(err.Error(), "\r\n\x00") {
				t.Errorf("error message carries raw control characters: %q", err.Error())
			}
		})
	}
}

// longDomain builds an LDH name of exactly n octets.
func longDomain(n int) string {
	d := "com"
	for len(d) < n {
		rest := n - len(d) - 1 // octets left for the next label
		l := min(rest, 63)
		if rest-l == 1 { // would leave a single octet: no room for "x."
			l--
		}
		d = strings.Repeat("x", l) + "." + d
	}
	return d
}

func TestLongDomainHelper(t *testing.T) {
	t.Parallel()
	for _, n := range []int{190, 255, 256} {
		if got := len(longDomain(n)); got != n {
			t.Errorf("len(longDomain(%d)) = %d", n, got)
		}
		if _, err := ParseDomain(longDomain(n)); n <= 255 && err != nil {
			t.Errorf("ParseDomain(longDomain(%d)): %v", n, err)
		}
	}
}

func TestParseDomain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr string
	}{
		{name: "ascii", in: "Example.COM", want: "example.com"},
		{name: "idn", in: "Bücher.de", want: "xn--bcher-kva.de"},
		{name: "literal refused", in: "[192.0.2.1]", wantErr: `invalid character '['`},
		{name: "at sign", in: "a@b.com", wantErr: "more than one '@'"},
		{name: "empty", in: "", wantErr: "domain is empty"},
		{name: "control", in: "a\nb.com", wantErr: "control character"},
		{name: "bad utf8", in: "a\xffb.com", wantErr: "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseDomain(tt.in)
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDomain(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseDomain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestLogValueRedacts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "ascii", in: "alice@example.com", want: "a***@example.com"},
		{name: "utf8 first rune whole", in: "élodie@example.com", want: "é***@example.com"},
		{name: "quoted", in: `"john doe"@x.org`, want: "j***@x.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			slog.New(slog.NewTextHandler(&buf, nil)).Info("probe", "rcpt", a)
			if !strings.Contains(buf.String(), "rcpt="+tt.want) {
				t.Errorf("log line %q lacks rcpt=%s", buf.String(), tt.want)
			}
			if strings.Contains(buf.String(), a.Local) {
				t.Errorf("log line %q leaks the local part", buf.String())
			}
		})
	}
}

func TestZeroAddress(t *testing.T) {
	t.Parallel()
	var a Address
	if a.String() != "" || a.IsLiteral() || a.LogValue().String() != "" {
		t.Errorf("zero Address: String %q IsLiteral %v LogValue %q", a.String(), a.IsLiteral(), a.LogValue())
	}
}

func TestParseErrorMessage(t *testing.T) {
	t.Parallel()
	_, err := Parse(strings.Repeat("x", 300) + "\r\n")
	want := `address "` + strings.Repeat("x", 100) + `…": contains a line break (CR or LF)`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}
