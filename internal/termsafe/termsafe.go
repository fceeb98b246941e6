// Package termsafe makes untrusted text (SMTP replies, DNS names, inputs)
// safe to show on a terminal or in a spreadsheet: control characters that a
// terminal acts on (ESC starts colour, cursor and title sequences; NUL, BEL,
// backspace and CR rewrite what the operator sees) are shown as escapes
// instead. JSON output needs none of this: encoding/json escapes them.
// docs/reliability.md, section 6.
package termsafe

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// unsafe reports runes a terminal may act on: C0 (U+0000–U+001F), DEL and
// C1 (U+0080–U+009F; U+009B is CSI on terminals that read C1 controls).
func unsafe(r rune) bool {
	return r < 0x20 || r >= 0x7f && r <= 0x9f
}

// String escapes every control character of s, tab included (it breaks
// table columns), and every byte that is not UTF-8 (a lone 0x9b is CSI to
// an 8-bit terminal). Escapes read \x1b, \u009b.
func String(s string) string {
	return escape(s, false)
}

// Line is String but keeps tabs, for free text such as a transcript.
func Line(s string) string {
	return escape(s, true)
}

func escape(s string, keepTab bool) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unsafe(r) && !(keepTab && r == '\t') {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case keepTab && r == '\t':
			b.WriteByte('\t')
		case r < 0x80 && unsafe(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafe(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Writer escapes what is written to it as Line does, keeping line breaks
// (LF; a CR before it is escaped like any other). Each Write is escaped on
// its own: writers that write whole lines (a transcript, a log) are safe;
// a rune split across two Writes is escaped byte by byte, never passed raw.
type Writer struct{ w io.Writer }

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write escapes p and writes it; it reports len(p) on success.
func (w *Writer) Write(p []byte) (int, error) {
	lines := strings.SplitAfter(string(p), "\n")
	var b strings.Builder
	for _, l := range lines {
		body, nl := strings.CutSuffix(l, "\n")
		b.WriteString(Line(body))
		if nl {
			b.WriteByte('\n')
		}
	}
	if _, err := io.WriteString(w.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Cell makes s safe as a CSV cell: String, and a leading ' when s (past
// leading spaces, which spreadsheets may trim on import) starts with one of
// = + - @ or a tab, CR or LF, which a spreadsheet reads as a formula (OWASP
// "CSV Injection").
func Cell(s string) string {
	if t := strings.TrimLeft(s, " "); t != "" && strings.ContainsRune("=+-@\t\r\n", rune(t[0])) {
		s = "'" + s
	}
	return String(s)
}
