package validator

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/validator/address"
)

// goodLines returns n distinct valid list lines.
func goodLines(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "d%d.example\n", i)
	}
	return b.String()
}

func TestParseDomainList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []string // checked when wantErr == ""
		wantLen int      // checked when want == nil and wantErr == ""
		wantErr string
	}{
		{
			name: "comments blanks case duplicates",
			in:   "# header\n\nMailinator.COM\n  trashmail.de  # trailing comment\r\nmailinator.com\nbücher.example\n",
			want: []string{"mailinator.com", "trashmail.de", "xn--bcher-kva.example"},
		},
		{name: "no trailing newline", in: "a.example", want: []string{"a.example"}},
		{name: "one bad line in 100 tolerated", in: goodLines(100) + "bad domain.example\n", wantLen: 100},
		{name: "empty", in: "", wantErr: "no entries"},
		{name: "only comments", in: "# nothing\n\n#x\n", wantErr: "no entries"},
		{name: "NUL byte", in: "a.example\n\x00\x01\x02", wantErr: "binary content"},
		{name: "invalid UTF-8", in: "a.example\n\xff\xfe", wantErr: "binary content"},
		{name: "two bad lines in 100", in: goodLines(100) + "bad domain.example\nx_y.example\n", wantErr: `2 invalid lines for 100 valid ones (first: line 101 "bad domain.example")`},
		{name: "html error page", in: "<!DOCTYPE html>\n<html><body>\n<h1>Rate limit exceeded</h1>\na.example\n</body></html>\n", wantErr: "invalid lines"},
		{name: "single label counts as bad", in: "com\na.example\n", wantErr: `first: line 1 "com"`},
		{name: "over-long line", in: "a.example\n" + strings.Repeat("x", 5000) + "\n", wantErr: "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseDomainList([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrMalformedList) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDomainList = %d entries, %v; want error containing %q", len(got), err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != nil && strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if tt.want == nil && len(got) != tt.wantLen {
				t.Errorf("got %d entries, want %d", len(got), tt.wantLen)
			}
		})
	}
}

func TestEmbeddedDisposableList(t *testing.T) {
	t.Parallel()
	l := EmbeddedDisposableList()
	if l.Len() < 5000 {
		t.Errorf("embedded list has %d entries, want thousands", l.Len())
	}
	for _, d := range []string{"mailinator.com", "yopmail.com", "guerrillamail.com", "0-mail.com"} {
		if !l.Contains(d) {
			t.Errorf("embedded list lacks %s", d)
		}
	}
	for _, d := range []string{"gmail.com", "outlook.com", "example.com"} {
		if l.Contains(d) {
			t.Errorf("embedded list contains %s", d)
		}
	}
	if EmbeddedDisposableList() == l {
		t.Error("EmbeddedDisposableList returned a shared list; an update to one would change the other")
	}
}

func TestDisposableContains(t *testing.T) {
	t.Parallel()
	l, err := NewDisposableList([]byte("mailinator.com\nsub.example.org\nxn--bcher-kva.example\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		domain string
		want   bool
	}{
		{name: "exact", domain: "mailinator.com", want: true},
		{name: "subdomain", domain: "a.mailinator.com", want: true},
		{name: "deep subdomain", domain: "x.y.z.mailinator.com", want: true},
		{name: "upper case", domain: "MAILINATOR.com", want: true},
		{name: "trailing dot", domain: "mailinator.com.", want: true},
		{name: "A-label entry", domain: "xn--bcher-kva.example", want: true},
		{name: "listed subdomain only", domain: "sub.example.org", want: true},
		{name: "parent of listed subdomain", domain: "example.org", want: false},
		{name: "sibling of listed subdomain", domain: "other.example.org", want: false},
		{name: "suffix that is not a label", domain: "notmailinator.com", want: false},
		{name: "listed name as prefix", domain: "mailinator.com.evil.example", want: false},
		{name: "tld", domain: "com", want: false},
		{name: "empty", domain: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := l.Contains(tt.domain); got != tt.want {
				t.Errorf("Contains(%q) = %v, want %v", tt.domain, got, tt.want)
			}
		})
	}
}

func TestDisposableZeroValue(t *testing.T) {
	t.Parallel()
	var l DisposableList
	if l.Contains("mailinator.com") || l.Len() != 0 || l.Sum() != [32]byte{} {
		t.Error("zero DisposableList is not empty")
	}
}

func TestDisposableReplace(t *testing.T) {
	t.Parallel()
	l, err := NewDisposableList([]byte("old.example\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		data        string
		wantChanged bool
		wantErr     bool
		wantOld     bool
		wantNew     bool
	}{
		{name: "same bytes", data: "old.example\n", wantChanged: false, wantOld: true},
		{name: "malformed keeps old", data: "\x00", wantErr: true, wantOld: true},
		{name: "empty keeps old", data: "", wantErr: true, wantOld: true},
		{name: "new content", data: "new.example\n", wantChanged: true, wantNew: true},
	}
	for _, tt := range tests { // sequential: each step builds on the last
		changed, err := l.Replace([]byte(tt.data))
		if changed != tt.wantChanged || (err != nil) != tt.wantErr {
			t.Errorf("%s: Replace = %v, %v; want changed %v, error %v", tt.name, changed, err, tt.wantChanged, tt.wantErr)
		}
		if l.Contains("old.example") != tt.wantOld || l.Contains("new.example") != tt.wantNew {
			t.Errorf("%s: old %v new %v; want %v %v", tt.name, l.Contains("old.example"), l.Contains("new.example"), tt.wantOld, tt.wantNew)
		}
	}
}

func TestNewListsRefusesBadEntries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     ListsConfig
		wantErr []string
	}{
		{name: "bad allow domain", cfg: ListsConfig{AllowDomains: []string{"ok.example", "bad_domain.example"}}, wantErr: []string{`allow domain entry "bad_domain.example"`}},
		{name: "address as deny domain", cfg: ListsConfig{DenyDomains: []string{"bob@example.com"}}, wantErr: []string{`deny domain entry "bob@example.com"`}},
		{name: "bad allow address", cfg: ListsConfig{AllowAddresses: []string{"no-at-sign"}}, wantErr: []string{`allow address entry "no-at-sign"`, "missing '@'"}},
		{name: "every bad entry named", cfg: ListsConfig{DenyAddresses: []string{"a@b.example", "Bob <b@c.example>", "x@-y.example"}}, wantErr: []string{`"Bob <b@c.example>"`, `"x@-y.example"`}},
		{name: "empty domain entry", cfg: ListsConfig{DenyDomains: []string{""}}, wantErr: []string{`deny domain entry ""`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := NewLists(tt.cfg, nil)
			if err == nil {
				t.Fatalf("NewLists = %v, nil; want error", l)
			}
			if !errors.Is(err, address.ErrSyntax) {
				t.Errorf("error %v does not wrap address.ErrSyntax", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestListsCheck(t *testing.T) {
	t.Parallel()
	disposable, err := NewDisposableList([]byte("mailinator.com\n"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLists(ListsConfig{
		AllowDomains:   []string{"Partner.example", "bücher.example"},
		AllowAddresses: []string{"vip@mailinator.com"},
		DenyDomains:    []string{"competitor.example"},
		DenyAddresses:  []string{"Troll@Forum.example", `"odd one"@forum.example`},
	}, disposable)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		addr string
		want ListMatch
	}{
		{name: "on no list", addr: "alice@example.com", want: ListMatch{}},
		{name: "allowed domain", addr: "a@partner.example", want: ListMatch{Allowed: true}},
		{name: "allowed subdomain", addr: "a@eu.Partner.example", want: ListMatch{Allowed: true}},
		{name: "allowed IDN domain", addr: "a@BÜCHER.example", want: ListMatch{Allowed: true}},
		{name: "denied domain", addr: "a@competitor.example", want: ListMatch{Denied: true}},
		{name: "denied subdomain", addr: "a@mx.competitor.example", want: ListMatch{Denied: true}},
		{name: "not a label suffix", addr: "a@notcompetitor.example", want: ListMatch{}},
		{name: "denied address", addr: "troll@forum.example", want: ListMatch{Denied: true}},
		{name: "denied address other case", addr: "TROLL@FORUM.EXAMPLE", want: ListMatch{Denied: true}},
		{name: "denied quoted address", addr: `"odd one"@forum.example`, want: ListMatch{Denied: true}},
		{name: "same domain other mailbox", addr: "friend@forum.example", want: ListMatch{}},
		{name: "disposable", addr: "x@mailinator.com", want: ListMatch{Disposable: true}},
		{name: "disposable subdomain", addr: "x@inbox.mailinator.com", want: ListMatch{Disposable: true}},
		{name: "allowed disposable address", addr: "vip@mailinator.com", want: ListMatch{Allowed: true, Disposable: true}},
		{name: "literal", addr: "a@[192.0.2.1]", want: ListMatch{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := address.Parse(tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got := l.Check(a); got != tt.want {
				t.Errorf("Check(%s) = %+v, want %+v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestListsWithoutDisposable(t *testing.T) {
	t.Parallel()
	l, err := NewLists(ListsConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := address.Parse("x@mailinator.com")
	if got := l.Check(a); got != (ListMatch{}) {
		t.Errorf("Check = %+v, want no match", got)
	}
}

func TestIsRoleAccount(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		local string
		want  bool
	}{
		{name: "postmaster", local: "postmaster", want: true},
		{name: "upper case", local: "Info", want: true},
		{name: "hyphenated noreply", local: "no-reply", want: true},
		{name: "underscored", local: "do_not_reply", want: true},
		{name: "dotted", local: "mailer.daemon", want: true},
		{name: "subaddress", local: "support+ticket123", want: true},
		{name: "person", local: "alice", want: false},
		{name: "role as prefix only", local: "salesforce", want: false},
		{name: "person with tag", local: "alice+sales", want: false},
		{name: "empty", local: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := IsRoleAccount(tt.local); got != tt.want {
				t.Errorf("IsRoleAccount(%q) = %v, want %v", tt.local, got, tt.want)
			}
		})
	}
}

func TestIsFreeProvider(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		domain string
		want   bool
	}{
		{name: "gmail", domain: "gmail.com", want: true},
		{name: "upper case", domain: "Outlook.COM", want: true},
		{name: "web.de", domain: "web.de", want: true},
		{name: "proton", domain: "proton.me", want: true},
		{name: "subdomain does not match", domain: "corp.gmail.com", want: false},
		{name: "company", domain: "example.com", want: false},
		{name: "lookalike", domain: "gmail.co", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := IsFreeProvider(tt.domain); got != tt.want {
				t.Errorf("IsFreeProvider(%q) = %v, want %v", tt.domain, got, tt.want)
			}
		})
	}
}

// The curated tables must hold the form the lookups use, or an entry can
// never match.
func TestCuratedTablesNormalised(t *testing.T) {
	t.Parallel()
	for r := range roleAccounts() {
		if r != strings.ToLower(r) || strings.ContainsAny(r, ".-_+ ") {
			t.Errorf("role entry %q is not squeezed lower case", r)
		}
	}
	for d := range freeProviders() {
		if n, err := address.ParseDomain(d); err != nil || n != d {
			t.Errorf("free provider entry %q: normalises to %q, %v", d, n, err)
		}
	}
}

func BenchmarkDisposableContains(b *testing.B) {
	l := EmbeddedDisposableList()
	domains := []string{"mailinator.com", "a.b.c.mailinator.com", "gmail.com", "mail.corp.example.co.uk"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		l.Contains(domains[i%len(domains)])
	}
}
