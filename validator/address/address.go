// Package address parses and normalises the mailbox an SMTP probe will put
// in "RCPT TO:<…>".
//
// The grammar is RFC 5321 §4.1.2 Mailbox, extended by RFC 6531 §3.3 for
// UTF-8 local parts, not RFC 5322: net/mail.ParseAddress accepts display
// names and comments, unquotes quoted local parts and checks no lengths
// (docs/smtp.md §9), so it is not used here.
//
// Parse works in these steps:
//
//  1. Trim leading and trailing spaces and tabs (pasted input often has
//     them). Everything else is strict.
//  2. Refuse, anywhere in the input and also inside quotes: invalid UTF-8,
//     C0 controls (CR, LF, NUL, TAB…), DEL, C1 controls, and '<' or '>'.
//     These are what would let an address break out of the single
//     "RCPT TO:<…>" line or end the path early.
//  3. Split the local part (Dot-string or Quoted-string) from the domain at
//     the '@' that follows it.
//  4. The domain is either an address literal ("[192.0.2.1]",
//     "[IPv6:2001:db8::1]") or a name. Names are converted to A-labels with
//     idna.Lookup (UTS #46 mapping and validation; idna.ToASCII alone does
//     no validation, docs/smtp.md §9), lower-cased and checked for LDH
//     labels of at most 63 octets.
//  5. Measure the canonical form in octets: local part ≤ 64, domain ≤ 255,
//     whole address ≤ 254 (RFC 5321 §4.5.3.1).
//
// Decisions where the RFCs leave room, each for a reason:
//
//   - A trailing dot on the domain ("a@example.com.") is rejected, not
//     stripped: RFC 5321's Domain has no root label, and an address that
//     differs from what the user typed should not be silently accepted.
//   - The empty local part ("\"\"@example.com") is rejected although the
//     Quoted-string grammar allows it: no mail system hosts such a mailbox
//     and Address.Local == "" would be ambiguous.
//   - '<' and '>' are refused even inside quotes: RFC 5321 allows them there,
//     but naive servers end the path at the first '>' and would read the rest
//     as ESMTP parameters.
//   - A top-level label that is all digits ("a@192.0.2.1") is rejected
//     (RFC 3696 §2); the user probably meant an address literal.
//   - Address literals use netip's canonical form; IPv4 octets with leading
//     zeros and IPv6 zones are rejected; tags other than "IPv6" (RFC 5321
//     General-address-literal) are not supported.
//   - The local part is not Unicode-normalised: the server owns its meaning.
//
// Dependencies: only the standard library and golang.org/x/net/idna, so the
// producer package tasks can check syntax without importing the prober.
package address

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits in octets, RFC 5321 §4.5.3.1. The 254-octet address comes from the
// 256-octet path limit minus the angle brackets.
const (
	MaxLocalLen   = 64
	MaxDomainLen  = 255
	MaxAddressLen = 254
	maxLabelLen   = 63
	// maxInputLen bounds the work done on hostile input. Normalisation can
	// shrink input (quoted-pairs, IDNA mapping), so it is looser than
	// MaxAddressLen, but nothing sane comes near it.
	maxInputLen = 1024
)

// ErrSyntax is matched by every error Parse returns.
var ErrSyntax = errors.New("bad address syntax")

// ParseError names the input and the exact problem found in it.
type ParseError struct {
	Input  string
	Reason string
}

func (e *ParseError) Error() string {
	in := e.Input
	if len(in) > 100 {
		in = in[:100] + "…"
	}
	// %q keeps control characters of hostile input out of log lines.
	return fmt.Sprintf("address %q: %s", in, e.Reason)
}

// Unwrap makes errors.Is(err, ErrSyntax) true.
func (e *ParseError) Unwrap() error { return ErrSyntax }

// Address is a parsed, normalised RFC 5321 mailbox. The zero value is not a
// valid address. Address values are comparable with ==.
type Address struct {
	// Local is the local part's content with its case preserved. Quotes and
	// quoted-pair backslashes are removed; String adds them back when needed.
	Local string
	// Domain is lower-case ASCII with A-labels, or an address literal in
	// canonical form: "[192.0.2.1]" or "[IPv6:2001:db8::1]".
	Domain string
	// UnicodeDomain is Domain with U-labels, for display. It equals Domain
	// for ASCII names and literals.
	UnicodeDomain string
	// Literal is set when Domain is an address literal.
	Literal netip.Addr
	// NeedsSMTPUTF8 is true when the local part has non-ASCII characters:
	// the server must advertise SMTPUTF8 before we may send it (RFC 6531).
	NeedsSMTPUTF8 bool
}

// IsLiteral reports whether the domain is an address literal.
func (a Address) IsLiteral() bool { return a.Literal.IsValid() }

// String returns the mailbox as sent in MAIL FROM / RCPT TO: the local part
// quoted minimally (RFC 5321 §4.1.2: only when it is not a Dot-string), '@',
// and Domain. It returns "" for the zero Address.
func (a Address) String() string {
	if a.Domain == "" {
		return ""
	}
	return quoteLocal(a.Local) + "@" + a.Domain
}

// LogValue redacts the local part ("a***@example.com") so production logs
// carry no full addresses.
func (a Address) LogValue() slog.Value {
	if a.Domain == "" {
		return slog.StringValue("")
	}
	r, _ := utf8.DecodeRuneInString(a.Local)
	return slog.StringValue(string(r) + "***@" + a.Domain)
}

// Parse checks s against RFC 5321 Mailbox syntax (with RFC 6531 UTF-8) and
// returns it normalised. Leading and trailing spaces and tabs are trimmed;
// any other deviation is an error wrapping ErrSyntax.
func Parse(s string) (Address, error) {
	in := s
	fail := func(format string, args ...any) (Address, error) {
		return Address{}, &ParseError{Input: in, Reason: fmt.Sprintf(format, args...)}
	}
	s = strings.Trim(s, " \t")
	if s == "" {
		return fail("empty address")
	}
	if len(s) > maxInputLen {
		return fail("input longer than %d octets", maxInputLen)
	}
	if reason := checkUnsafe(s); reason != "" {
		return fail("%s", reason)
	}

	local, rest, reason := splitLocal(s)
	if reason != "" {
		return fail("%s", reason)
	}
	if local == "" {
		return fail("local part is empty")
	}
	if rest == "" {
		return fail("domain is empty")
	}

	a := Address{Local: local, NeedsSMTPUTF8: !isASCII(local)}
	if rest[0] == '[' {
		lit, dom, reason := parseLiteral(rest)
		if reason != "" {
			return fail("%s", reason)
		}
		a.Literal, a.Domain, a.UnicodeDomain = lit, dom, dom
	} else {
		ascii, err := ParseDomain(rest)
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				return fail("%s", pe.Reason)
			}
			return fail("%v", err)
		}
		a.Domain = ascii
		a.UnicodeDomain = ascii
		if u, err := idna.Lookup.ToUnicode(ascii); err == nil {
			a.UnicodeDomain = u
		}
	}

	if n := len(quoteLocal(a.Local)); n > MaxLocalLen {
		return fail("local part longer than %d octets (%d)", MaxLocalLen, n)
	}
	if n := len(a.Domain); n > MaxDomainLen {
		return fail("domain longer than %d octets (%d)", MaxDomainLen, n)
	}
	if n := len(a.String()); n > MaxAddressLen {
		return fail("address longer than %d octets (%d)", MaxAddressLen, n)
	}
	return a, nil
}

// ParseDomain checks a domain name (not an address literal) and returns its
// lower-case A-label form. Errors wrap ErrSyntax. Lists of domains use it so
// that entries and addresses are normalised the same way.
func ParseDomain(s string) (string, error) {
	in := s
	fail := func(format string, args ...any) (string, error) {
		return "", &ParseError{Input: in, Reason: fmt.Sprintf(format, args...)}
	}
	if s == "" {
		return fail("domain is empty")
	}
	if len(s) > maxInputLen {
		return fail("domain input longer than %d octets", maxInputLen)
	}
	if !utf8.ValidString(s) {
		return fail("domain is not valid UTF-8")
	}
	// Check the ASCII characters first so that common mistakes get an exact
	// message rather than an IDNA error.
	for _, r := range s {
		if r >= utf8.RuneSelf {
			if isControl(r) {
				return fail("domain contains control character %U", r)
			}
			continue
		}
		switch {
		case isLDH(byte(r)) || r == '.':
		case r == ' ' || r == '\t':
			return fail("whitespace in the domain")
		case r == '(' || r == ')':
			return fail("comments are not allowed")
		case r == '@':
			return fail("more than one '@' outside quotes")
		case isControl(r):
			return fail("domain contains control character %U", r)
		default:
			return fail("domain contains invalid character %q", r)
		}
	}
	ascii := s
	if isASCII(s) {
		ascii = strings.ToLower(s)
		if reason := checkLDH(ascii); reason != "" {
			return fail("%s", reason)
		}
	}
	// Lookup also validates ASCII names: xn-- labels must decode to valid
	// U-labels and "ab--" in positions 3–4 is reserved (RFC 5891 §4.2.3.1).
	out, err := idna.Lookup.ToASCII(ascii)
	if err != nil {
		return fail("domain is not a valid internationalized name: %v", err)
	}
	if reason := checkLDH(out); reason != "" {
		return fail("%s", reason)
	}
	// A name must survive its own normalisation, or Parse(a.String()) would
	// give a different Address.
	if again, err := idna.Lookup.ToASCII(out); err != nil || again != out {
		return fail("domain does not survive IDNA normalisation")
	}
	return out, nil
}

// checkUnsafe refuses what could leak out of an "RCPT TO:<…>" argument,
// wherever it is, quotes included.
func checkUnsafe(s string) string {
	if !utf8.ValidString(s) {
		return "not valid UTF-8"
	}
	for _, r := range s {
		switch {
		case r == '\r' || r == '\n':
			return "contains a line break (CR or LF)"
		case r == 0:
			return "contains a NUL byte"
		case isControl(r):
			return fmt.Sprintf("contains control character %U", r)
		}
	}
	if strings.ContainsAny(s, "<>") {
		if i := strings.IndexByte(s, '<'); i > 0 && strings.HasSuffix(s, ">") {
			return "display-name form (\"Name <addr>\") is not accepted; give the bare address"
		}
		return "angle brackets are not allowed"
	}
	return ""
}

// splitLocal returns the local part's content (unquoted) and the text after
// the '@' that ends it.
func splitLocal(s string) (local, rest, reason string) {
	if s[0] == '"' {
		return splitQuoted(s)
	}
	at := strings.IndexByte(s, '@')
	if at < 0 {
		return "", "", "missing '@'"
	}
	local, rest = s[:at], s[at+1:]
	if local == "" {
		return "", "", "local part is empty"
	}
	if r := checkDotString(local); r != "" {
		return "", "", r
	}
	return local, rest, ""
}

// splitQuoted parses a Quoted-string (RFC 5321 §4.1.2, qtextSMTP extended by
// RFC 6531 §3.3) at the start of s.
func splitQuoted(s string) (local, rest, reason string) {
	var b strings.Builder
	for i := 1; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"':
			after := s[i+1:]
			if after == "" {
				return "", "", "missing '@'"
			}
			if after[0] != '@' {
				return "", "", "text after the quoted local part must be '@'"
			}
			return b.String(), after[1:], ""
		case r == '\\':
			// quoted-pairSMTP = %d92 %d32-126: printable ASCII only.
			if i+1 >= len(s) {
				return "", "", "unterminated quoted local part"
			}
			c := s[i+1]
			if c < 32 || c > 126 {
				return "", "", "backslash in quoted local part must precede a printable ASCII character"
			}
			b.WriteByte(c)
			i += 2
			continue
		default:
			// Controls were refused by checkUnsafe; everything else
			// printable is qtextSMTP.
			b.WriteRune(r)
		}
		i += size
	}
	return "", "", "unterminated quoted local part"
}

// checkDotString explains why s is not an RFC 5321 Dot-string, or returns "".
func checkDotString(s string) string {
	if s[0] == '.' {
		return "local part starts with a dot"
	}
	if s[len(s)-1] == '.' {
		return "local part ends with a dot"
	}
	if strings.Contains(s, "..") {
		return "local part has consecutive dots (quote it to use them)"
	}
	for _, r := range s {
		switch {
		case r == '.' || isAtext(r):
		case unicode.IsSpace(r):
			return "whitespace outside quotes"
		case r == '(' || r == ')':
			return "comments are not allowed"
		case r == '"':
			return "quote inside an unquoted local part"
		default:
			return fmt.Sprintf("local part contains invalid character %q (quote the local part to use it)", r)
		}
	}
	return ""
}

func isDotString(s string) bool { return s != "" && checkDotString(s) == "" }

// quoteLocal renders a local part's content minimally: as is when it is a
// Dot-string, else as a Quoted-string with '"' and '\' escaped.
func quoteLocal(s string) string {
	if isDotString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// isAtext reports RFC 5321 atext, plus UTF8-non-ascii (RFC 6531 §3.3)
// except Unicode whitespace, which would look like a separator.
func isAtext(r rune) bool {
	if r >= utf8.RuneSelf {
		return !unicode.IsSpace(r) && !isControl(r) && r != utf8.RuneError
	}
	c := byte(r)
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isControl covers C0, DEL and C1.
func isControl(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f }

func isLDH(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-'
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// checkLDH checks an ASCII name against RFC 5321 §4.1.2 sub-domain (RFC 1035
// LDH labels, RFC 1123 §2.1 leading digits allowed).
func checkLDH(s string) string {
	if s == "" {
		return "domain is empty"
	}
	if s[0] == '.' {
		return "domain starts with a dot"
	}
	if s[len(s)-1] == '.' {
		return "domain ends with a dot (a trailing dot is not accepted)"
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return "domain has an empty label (consecutive dots)"
		case len(l) > maxLabelLen:
			return fmt.Sprintf("domain label longer than %d octets", maxLabelLen)
		case l[0] == '-':
			return "domain label starts with a hyphen"
		case l[len(l)-1] == '-':
			return "domain label ends with a hyphen"
		}
		for i := 0; i < len(l); i++ {
			if !isLDH(l[i]) {
				return fmt.Sprintf("domain contains invalid character %q", l[i])
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "top-level domain is all digits (write an IP address as a literal: [192.0.2.1])"
	}
	return ""
}

// parseLiteral parses an RFC 5321 §4.1.3 address literal.
func parseLiteral(s string) (netip.Addr, string, string) {
	if s[len(s)-1] != ']' {
		return netip.Addr{}, "", "address literal must end with ']'"
	}
	if len(s) < 3 {
		return netip.Addr{}, "", "address literal is empty"
	}
	body := s[1 : len(s)-1]
	if strings.ContainsAny(body, "[]") {
		return netip.Addr{}, "", "address literal contains a bracket"
	}
	if len(body) >= 5 && strings.EqualFold(body[:5], "IPv6:") {
		ip, err := netip.ParseAddr(body[5:])
		if err != nil || !ip.Is6() {
			return netip.Addr{}, "", "invalid IPv6 address literal"
		}
		if ip.Zone() != "" {
			return netip.Addr{}, "", "IPv6 address literal must not have a zone"
		}
		return ip, "[IPv6:" + ip.String() + "]", ""
	}
	if i := strings.IndexByte(body, ':'); i >= 0 {
		if _, err := netip.ParseAddr(body); err == nil {
			return netip.Addr{}, "", "IPv6 address literal needs the \"IPv6:\" tag"
		}
		return netip.Addr{}, "", fmt.Sprintf("unsupported address literal tag %q", body[:i])
	}
	ip, err := netip.ParseAddr(body)
	if err != nil || !ip.Is4() {
		return netip.Addr{}, "", "invalid IPv4 address literal"
	}
	return ip, "[" + ip.String() + "]", ""
}
