// Package suggest finds the mail domain a user most likely meant when the
// one typed is a slip away from a well-known one ("gmial.com" for
// "gmail.com", "hotmail.cmo" for "hotmail.com"): the "did you mean" of a
// sign-up form.
//
// It compares the typed domain with a short table of the domains sign-up
// forms see most (domains.txt) and, when the top-level domain is not a
// delegated one, with a table of common TLDs (tlds.txt), by optimal string
// alignment distance (Levenshtein plus adjacent transpositions, each one
// slip). The tables are data with a test; what it promises and the figures
// measured on a typo set and on real domains are in docs/signup.md.
//
// Written here rather than taken from a library: the reference for what
// users expect is mailcheck.js (JavaScript); the Go ports we found are
// unmaintained and carry neither the squat distinction nor a test set. The
// whole algorithm is the distance function and two table scans.
package suggest

import (
	"bufio"
	"bytes"
	_ "embed"
	"strings"

	"golang.org/x/net/publicsuffix"
)

//go:embed domains.txt
var domainsTxt []byte

//go:embed tlds.txt
var tldsTxt []byte

// Confidence says how far a suggestion may be trusted without knowing
// whether the typed domain receives mail.
type Confidence int

const (
	// IfBroken: show the suggestion only when the typed domain does not
	// receive mail (no such domain, no MX): the slip could as well be
	// another real domain (a short label such as "live" or "aol", another
	// delegated TLD such as "hotmail.se", a provider that is not big).
	IfBroken Confidence = iota
	// Sure: the typed domain is a slip in the label of a big provider's
	// domain under the same suffix ("gmial.com"), or its TLD does not
	// exist ("gmail.con"). If such a domain receives mail it is a
	// typo-squat: mail sent there is lost to the user.
	Sure
)

// Suggestion is a domain the user probably meant.
type Suggestion struct {
	Domain     string
	Confidence Confidence
	// Known is true when Domain is in the table of well-known mail
	// domains, false when only the TLD was corrected.
	Known bool
}

// Suggester holds the tables. The zero value is not usable; use Default or
// New.
type Suggester struct {
	known map[string]bool // every listed domain: never suggested for
	list  []string        // the domains suggested, most common first
	big   map[string]bool // those whose label slips are typo-squats
	tlds  []string
}

var def = New(parseList(domainsTxt), parseList(tldsTxt))

// Default is the Suggester with the embedded tables.
func Default() *Suggester { return def }

// New builds a Suggester from the lines of a domain table (most common
// first, each "domain", "domain big" or "domain real", see domains.txt)
// and a list of common TLDs (most common first).
func New(domains, tlds []string) *Suggester {
	s := &Suggester{known: map[string]bool{}, big: map[string]bool{}}
	for _, line := range domains {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		d := normalise(f[0])
		if d == "" || s.known[d] {
			continue
		}
		s.known[d] = true
		tag := ""
		if len(f) > 1 {
			tag = f[1]
		}
		if tag == "real" {
			continue // known, never a target
		}
		s.list = append(s.list, d)
		if tag == "big" {
			s.big[d] = true
		}
	}
	seen := map[string]bool{}
	for _, t := range tlds {
		if t = normalise(t); t != "" && !seen[t] {
			seen[t] = true
			s.tlds = append(s.tlds, t)
		}
	}
	return s
}

func parseList(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

func normalise(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// Known reports whether d is in the table of mail domains.
func (s *Suggester) Known(d string) bool { return s.known[normalise(d)] }

// maxLen bounds the input: a domain is at most 253 octets, and the
// distance is quadratic in the length.
const maxLen = 253

// Domain returns the domain the user most likely meant instead of typed,
// and false when typed is itself well known, is no slip from any known
// domain, or is too long to be a domain. Ties go to the more common domain.
func (s *Suggester) Domain(typed string) (Suggestion, bool) {
	d := normalise(typed)
	if d == "" || len(d) > maxLen {
		return Suggestion{}, false
	}
	if s.known[d] {
		return Suggestion{}, false
	}
	fixes := s.fixTLD(d)
	if len(fixes) == 0 {
		if best, ok := s.nearestKnown(d); ok {
			c := Sure
			if !s.sure(d, best) {
				c = IfBroken
			}
			return Suggestion{Domain: best, Confidence: c, Known: true}, true
		}
		return Suggestion{}, false
	}
	// The TLD does not exist: a corrected one that makes a known domain
	// wins ("yahoo.fe" is yahoo.fr, not yahoo.de), then one that makes a
	// slip from a known domain, then the most common.
	for _, f := range fixes {
		if s.Known(f) {
			return Suggestion{Domain: f, Confidence: Sure, Known: true}, true
		}
	}
	for _, f := range fixes {
		if best, ok := s.nearestKnown(f); ok {
			return Suggestion{Domain: best, Confidence: Sure, Known: true}, true
		}
	}
	return Suggestion{Domain: fixes[0], Confidence: Sure}, true
}

// fixTLD returns, when d's last label is not a delegated TLD, d with each
// common TLD one slip from it instead ("con" → "com"), most common first.
func (s *Suggester) fixTLD(d string) []string {
	i := strings.LastIndexByte(d, '.')
	if i <= 0 || i == len(d)-1 {
		return nil
	}
	label, tld := d[:i], d[i+1:]
	if _, icann := publicsuffix.PublicSuffix(tld); icann {
		return nil // the TLD exists (asked of the TLD alone: a name under a
		// private suffix, such as github.io, is not ICANN's as a whole)
	}
	var out []string
	for _, t := range s.tlds {
		if !strings.Contains(t, ".") && distance(tld, t, 1) <= 1 {
			out = append(out, label+"."+t)
		}
	}
	return out
}

// nearestKnown is the known domain at the smallest distance from d within
// the distance each allows (allowed), the more common one on a tie.
func (s *Suggester) nearestKnown(d string) (string, bool) {
	best, bestDist := "", maxLen
	for _, k := range s.list { // most common first: the first at a distance wins
		limit := s.allowed(k)
		if abs(len(k)-len(d)) > limit {
			continue
		}
		if n := distance(d, k, limit); n <= limit && n < bestDist {
			best, bestDist = k, n
		}
	}
	return best, best != ""
}

// allowed is how many slips from k a typed domain may be: 2 for a label of
// 8 characters or more ("hotmail" has 7, "googlemail" 10), else 1.
func (s *Suggester) allowed(k string) int {
	if len(label(k)) >= 8 {
		return 2
	}
	return 1
}

// sure reports whether typed, a slip from the listed domain k, is surely a
// typo of it rather than another real domain: k is a big provider with a
// label of five characters or more ("gmail", "yahoo", "hotmail") and the
// slip is in that label, under k's own suffix. A change of suffix to another
// delegated one ("hotmail.se", "protonmail.ch") is how providers name their
// other domains, and shorter labels ("live", "mail", "aol") are a slip away
// from too many real names.
func (s *Suggester) sure(typed, k string) bool {
	return s.big[k] && len(label(k)) >= 5 && suffix(typed) == suffix(k)
}

// label is d's registrable name without its public suffix: "gmail" for
// gmail.com, "yahoo" for yahoo.co.uk.
func label(d string) string {
	sfx := suffix(d)
	l := strings.TrimSuffix(d, "."+sfx)
	if i := strings.LastIndexByte(l, '.'); i >= 0 {
		l = l[i+1:]
	}
	return l
}

func suffix(d string) string {
	sfx, _ := publicsuffix.PublicSuffix(d)
	return sfx
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// distance is the optimal string alignment distance between a and b
// (insertions, deletions, substitutions and transpositions of adjacent
// bytes each cost 1), or a value above limit as soon as it must exceed it.
func distance(a, b string, limit int) int {
	if abs(len(a)-len(b)) > limit {
		return limit + 1
	}
	// Three rows: the one before last for transpositions.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			v := min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				v = min(v, prev2[j-2]+1)
			}
			cur[j] = v
			rowMin = min(rowMin, v)
		}
		if rowMin > limit {
			return limit + 1
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
