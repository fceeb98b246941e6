package termsafe

import (
	"bytes"
	"testing"
)

func TestString(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want, line string }{
		{"250 OK", "250 OK", "250 OK"},
		{"héllo ✓ 日本", "héllo ✓ 日本", "héllo ✓ 日本"},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`, `\x1b[31mred\x1b[0m`},
		{"a\x00b", `a\x00b`, `a\x00b`},
		{"over\rwrite", `over\x0dwrite`, `over\x0dwrite`},
		{"bell\a back\b", `bell\x07 back\x08`, `bell\x07 back\x08`},
		{"tab\there", `tab\x09here`, "tab\there"},
		{"new\nline", `new\x0aline`, `new\x0aline`},
		{"del\x7f", `del\x7f`, `del\x7f`},
		{"c1 \u009b31m", `c1 \u009b31m`, `c1 \u009b31m`},
		{"raw \x9b31m", `raw \x9b31m`, `raw \x9b31m`},
		{"bad \xff\xfe", `bad \xff\xfe`, `bad \xff\xfe`},
		{"\u0085nel", `\u0085nel`, `\u0085nel`},
	} {
		if got := String(tt.in); got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := Line(tt.in); got != tt.line {
			t.Errorf("Line(%q) = %q, want %q", tt.in, got, tt.line)
		}
	}
}

func TestWriterKeepsLines(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, s := range []string{"< 220 \x1b]0;pwned\x07 ESMTP\r\n", "> EHLO x\n", "partial \x1b", "[2J\n"} {
		if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	want := "< 220 \\x1b]0;pwned\\x07 ESMTP\\x0d\n> EHLO x\npartial \\x1b[2J\n"
	if b.String() != want {
		t.Errorf("wrote %q, want %q", b.String(), want)
	}
}

func FuzzStringHasNoControls(f *testing.F) {
	f.Add("\x1b[31m\x00\u009b\xff")
	f.Fuzz(func(t *testing.T, s string) {
		for _, out := range []string{String(s), Line(s)} {
			for i := 0; i < len(out); i++ {
				if c := out[i]; c < 0x20 && c != '\t' || c == 0x7f {
					t.Fatalf("%q escaped to %q: byte %#x left", s, out, c)
				}
			}
			for _, r := range out {
				if r >= 0x80 && r <= 0x9f || r == 0xfffd && !bytes.ContainsRune([]byte(s), 0xfffd) {
					t.Fatalf("%q escaped to %q: %U left", s, out, r)
				}
			}
		}
	})
}
