package suggest

import (
	"bufio"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

func TestDomain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typed string
		want  string // "" = no suggestion
		conf  Confidence
	}{
		{"gmial.com", "gmail.com", Sure},
		{"gmai.com", "gmail.com", Sure},
		{"gnail.com", "gmail.com", Sure},
		{"GMAIL.CON", "gmail.com", Sure},
		{"gmail.co", "gmail.com", IfBroken}, // .co is delegated: shown if gmail.co takes no mail
		{"gmail.cmo", "gmail.com", Sure},
		{"gmial.con", "gmail.com", Sure},    // a slip in the label and one in the TLD
		{"gmailcom", "gmail.com", IfBroken}, // cannot receive mail: shown
		{"hotmial.com", "hotmail.com", Sure},
		{"hotmail.cmo", "hotmail.com", Sure},
		{"yaho.com", "yahoo.com", Sure},
		{"orange.fe", "orange.fr", Sure}, // not orange.de, though "de" is more common
		{"outlok.com", "outlook.com", Sure},
		{"googlmail.com", "googlemail.com", Sure},
		{"gogglemial.com", "googlemail.com", Sure}, // two slips in a long label
		{"aol.con", "aol.com", Sure},               // the TLD does not exist
		{"mycompany.con", "mycompany.com", Sure},
		{"live.co", "live.com", IfBroken}, // short label: could be real
		{"msm.com", "msn.com", IfBroken},
		// Known, real or too far: nothing.
		{"gmail.com", "", 0},
		{"ymail.com", "", 0}, // one slip from gmail.com, and Yahoo's own
		{"gmx.de", "", 0},
		{"yahoo.ca", "", 0},
		{"gmail.de", "", 0},
		{"example.com", "", 0},
		{"mxprobe.test", "", 0},
		{"", "", 0},
		{".", "", 0},
		{"com", "", 0},
		{strings.Repeat("a", 300) + ".com", "", 0},
		{"gmäil.com", "", 0}, // not ASCII: not a slip we guess at
	}
	for _, tt := range tests {
		got, ok := Default().Domain(tt.typed)
		if tt.want == "" {
			if ok {
				t.Errorf("Domain(%q) = %+v, want no suggestion", tt.typed, got)
			}
			continue
		}
		if !ok || got.Domain != tt.want || got.Confidence != tt.conf {
			t.Errorf("Domain(%q) = %+v %v, want %s (confidence %d)", tt.typed, got, ok, tt.want, tt.conf)
		}
	}
}

func TestDistance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b  string
		limit int
		want  int
	}{
		{"gmail", "gmail", 2, 0},
		{"gmial", "gmail", 2, 1}, // transposition
		{"gmai", "gmail", 2, 1},
		{"gmaill", "gmail", 2, 1},
		{"gnail", "gmail", 2, 1},
		{"ca", "abc", 3, 3}, // OSA, not full Damerau: 3
		{"abcdef", "uvwxyz", 2, 3},
		{"", "abc", 5, 3},
	}
	for _, tt := range tests {
		if got := distance(tt.a, tt.b, tt.limit); got != tt.want {
			t.Errorf("distance(%q, %q, %d) = %d, want %d", tt.a, tt.b, tt.limit, got, tt.want)
		}
	}
}

func TestTablesParse(t *testing.T) {
	t.Parallel()
	d, tl := parseList(domainsTxt), parseList(tldsTxt)
	if len(d) < 50 || len(tl) < 10 {
		t.Fatalf("%d domains, %d TLDs embedded", len(d), len(tl))
	}
	seen := map[string]bool{}
	for _, line := range d {
		f := strings.Fields(line)
		x := f[0]
		if x != normalise(x) || !strings.Contains(x, ".") || seen[x] {
			t.Errorf("domains.txt: %q is not a lower-case domain given once", x)
		}
		if len(f) > 2 || len(f) == 2 && f[1] != "big" && f[1] != "real" {
			t.Errorf("domains.txt: %q: want a domain and at most one tag, big or real", line)
		}
		seen[x] = true
	}
}

// TestProvidersOtherDomains: a big provider's domains under other TLDs,
// listed or not, are never taken for sure typos: real customers use them.
func TestProvidersOtherDomains(t *testing.T) {
	t.Parallel()
	for _, d := range []string{
		// Listed as real.
		"hotmail.se", "outlook.be", "yahoo.com.ar", "yahoo.co.id", "protonmail.ch", "fastmail.fm", "email.com", "online.de", "cloud.com",
		// Not listed: the suffix rule alone keeps them apart.
		"hotmail.fi", "outlook.hu", "yahoo.com.pe", "yahoo.cz", "live.fi", "gmx.li", "protonmail.de", "icloud.de", "googlemail.de",
	} {
		if got, ok := Default().Domain(d); ok && got.Confidence == Sure {
			t.Errorf("Domain(%q) = %+v: a sure suggestion for a provider's own domain", d, got)
		}
	}
}

// keyboard is the QWERTY neighbourhood of each key a domain uses.
var keyboard = map[byte]string{
	'q': "wa", 'w': "qes", 'e': "wrd", 'r': "etf", 't': "ryg", 'y': "tuh", 'u': "yij", 'i': "uok", 'o': "ipl", 'p': "o",
	'a': "qsz", 's': "adwx", 'd': "sfex", 'f': "dgrc", 'g': "fhtv", 'h': "gjyb", 'j': "hkun", 'k': "jlim", 'l': "ko",
	'z': "xa", 'x': "zcs", 'c': "xvd", 'v': "cbf", 'b': "vng", 'n': "bmh", 'm': "nj",
	'1': "2q", '2': "13w", '3': "24e", '4': "35r", '5': "46t", '6': "57y", '7': "68u", '8': "79i", '9': "80o", '0': "9p",
	'-': "0p", '.': ",",
}

// slip makes one keyboard slip in d: a key dropped, doubled, swapped with
// its neighbour in the word, hit next to, or added beside its neighbour.
func slip(r *rand.Rand, d string) string {
	for {
		i := r.IntN(len(d))
		c := d[i]
		switch r.IntN(5) {
		case 0: // dropped (also the dot: "gmailcom")
			return d[:i] + d[i+1:]
		case 1: // doubled
			if c == '.' {
				continue
			}
			return d[:i] + string(c) + d[i:]
		case 2: // swapped with the next
			if i == len(d)-1 || d[i+1] == c {
				continue
			}
			return d[:i] + string(d[i+1]) + string(c) + d[i+2:]
		case 3: // a neighbouring key instead
			n := keyboard[c]
			if n == "" || c == '.' {
				continue
			}
			return d[:i] + string(n[r.IntN(len(n))]) + d[i+1:]
		case 4: // a neighbouring key as well
			n := keyboard[c]
			if n == "" || c == '.' {
				continue
			}
			return d[:i+1] + string(n[r.IntN(len(n))]) + d[i+1:]
		}
	}
}

// TestTypoSet makes 1,000 typos of the well-known domains (one keyboard
// slip each, the domains weighted towards the most common as sign-ups
// are) and counts how many get the domain they came from, another one,
// or none. docs/signup.md records the figures:
//
//	go test -run 'TestTypoSet|TestRealDomains' -v ./suggest/
func TestTypoSet(t *testing.T) {
	t.Parallel()
	s := Default()
	r := rand.New(rand.NewPCG(2026, 12))
	const n = 1000
	right, wrong, none, sure := 0, 0, 0, 0
	var wrongs, nones []string
	for made := 0; made < n; {
		// Half the typos from the ten most common domains, half from all.
		pool := s.list
		if r.IntN(2) == 0 {
			pool = s.list[:10]
		}
		orig := pool[r.IntN(len(pool))]
		typo := slip(r, orig)
		if s.Known(typo) || typo == orig {
			continue // a slip that lands on another real domain is no typo
		}
		made++
		got, ok := s.Domain(typo)
		switch {
		case !ok:
			none++
			nones = append(nones, typo+" ("+orig+")")
		case got.Domain == orig:
			right++
			if got.Confidence == Sure {
				sure++
			}
		default:
			wrong++
			wrongs = append(wrongs, typo+" → "+got.Domain+" ("+orig+")")
		}
	}
	t.Logf("%d typos: %d suggested right (%.1f %%; %d of them sure, shown even if the domain takes mail), %d wrong (%.1f %%), %d none",
		n, right, 100*float64(right)/n, sure, wrong, 100*float64(wrong)/n, none)
	t.Logf("wrong: %v", wrongs)
	t.Logf("none (first 20): %v", nones[:min(20, len(nones))])
	if float64(right+wrong) < 0.95*n {
		t.Errorf("a suggestion for %d of %d typos, want at least 95 %%", right+wrong, n)
	}
	if float64(wrong) > 0.01*n {
		t.Errorf("%d wrong suggestions of %d, want at most 1 %%", wrong, n)
	}
}

// TestRealDomains: 1,000 real domains that are not typos (testdata, from
// the Public Suffix List) get no sure suggestion: none that is shown for a
// domain that receives mail. Those only shown when the domain does not
// receive mail (IfBroken) are counted and logged.
func TestRealDomains(t *testing.T) {
	t.Parallel()
	f, err := os.Open("testdata/real_domains.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	var suggested, ifBroken []string
	for sc.Scan() {
		d := strings.TrimSpace(sc.Text())
		if d == "" || strings.HasPrefix(d, "#") {
			continue
		}
		n++
		if got, ok := Default().Domain(d); ok && got.Confidence == Sure {
			suggested = append(suggested, d+" → "+got.Domain)
		} else if ok {
			ifBroken = append(ifBroken, d+" → "+got.Domain)
		}
	}
	if n != 1000 {
		t.Fatalf("%d real domains in testdata, want 1000", n)
	}
	t.Logf("%d real domains: %d got a sure suggestion %v; %d one shown only if the domain receives no mail %v", n, len(suggested), suggested, len(ifBroken), ifBroken)
	if len(suggested) > 0 {
		t.Errorf("real domains got sure suggestions: %v", suggested)
	}
}
