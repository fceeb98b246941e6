package validator

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/mxprobe/mxprobe/validator/address"
)

// The disposable-domain list is the community list from
// github.com/disposable-email-domains (CC0, see
// disposable_email_blocklist.LICENSE.txt). The embedded copy is the default;
// Updater replaces it at run time.
//
//go:embed disposable_email_blocklist.conf
var embeddedDisposable []byte

//go:embed role_accounts.txt
var embeddedRoles []byte

//go:embed free_providers.txt
var embeddedFree []byte

// ErrMalformedList is wrapped by every error ParseDomainList returns.
var ErrMalformedList = errors.New("malformed domain list")

// Tolerance for bad lines in a domain list: upstream lists occasionally
// carry a stray typo, which should not block an update, but an HTML error
// page or a truncated binary must. One bad line per 100 good ones.
const badLinesPerHundred = 1

// ParseDomainList parses the list format: one domain per line, '#' starts a
// comment, blank lines are ignored, names are normalised to lower-case
// A-labels. Duplicates collapse. It fails on binary content, on an empty
// list, and when invalid lines exceed 1 % of the valid ones; a few invalid
// lines within that tolerance are skipped.
func ParseDomainList(data []byte) ([]string, error) {
	if bytes.IndexByte(data, 0) >= 0 || !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: binary content", ErrMalformedList)
	}
	seen := make(map[string]struct{})
	var out []string
	bad, firstBad, lineNo := 0, "", 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 4096)
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		d, err := address.ParseDomain(line)
		if err != nil || strings.IndexByte(d, '.') < 0 {
			// A single-label entry would mark a whole TLD disposable.
			if bad == 0 {
				firstBad = fmt.Sprintf("line %d %q", lineNo, line)
			}
			bad++
			continue
		}
		if _, dup := seen[d]; !dup {
			seen[d] = struct{}{}
			out = append(out, d)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %v", ErrMalformedList, lineNo+1, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no entries", ErrMalformedList)
	}
	if bad*100 > len(out)*badLinesPerHundred {
		return nil, fmt.Errorf("%w: %d invalid lines for %d valid ones (first: %s)", ErrMalformedList, bad, len(out), firstBad)
	}
	return out, nil
}

// domainSet is an immutable set of domains; a domain matches when it or any
// parent domain is in the set.
type domainSet map[string]struct{}

func newDomainSet(domains []string) domainSet {
	s := make(domainSet, len(domains))
	for _, d := range domains {
		s[d] = struct{}{}
	}
	return s
}

// match walks the labels of domain: "a.b.example.com" looks up itself,
// "b.example.com", "example.com" and "com". O(labels) map lookups, no
// allocation.
func (s domainSet) match(domain string) bool {
	if len(s) == 0 {
		return false
	}
	for {
		if _, ok := s[domain]; ok {
			return true
		}
		i := strings.IndexByte(domain, '.')
		if i < 0 {
			return false
		}
		domain = domain[i+1:]
	}
}

// normDomain prepares a caller's domain for lookup in a set of A-labels.
// Address.Domain is already normal; this only guards other callers.
func normDomain(d string) string {
	d = strings.TrimSuffix(d, ".")
	for i := 0; i < len(d); i++ {
		if c := d[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(d)
		}
	}
	return d
}

// disposableSnapshot is one version of the list with the hash of the bytes
// it was parsed from, so an updater can tell whether a download changed it.
type disposableSnapshot struct {
	set domainSet
	sum [sha256.Size]byte
}

// DisposableList is the set of disposable-mail domains. Readers never lock:
// the set sits behind an atomic pointer and Replace swaps in a whole new set,
// so a Contains racing with an update sees either the old or the new list.
// The zero value is an empty list.
type DisposableList struct {
	cur atomic.Pointer[disposableSnapshot]
}

// NewDisposableList parses data (see ParseDomainList) into a list.
func NewDisposableList(data []byte) (*DisposableList, error) {
	l := &DisposableList{}
	if _, err := l.Replace(data); err != nil {
		return nil, err
	}
	return l, nil
}

var embeddedDisposableDomains = sync.OnceValue(func() []string {
	d, err := ParseDomainList(embeddedDisposable)
	if err != nil {
		panic("validator: embedded disposable list: " + err.Error()) // caught by TestEmbeddedDisposableList
	}
	return d
})

// EmbeddedDisposableList returns a new list holding the copy compiled into
// the binary.
func EmbeddedDisposableList() *DisposableList {
	l := &DisposableList{}
	l.cur.Store(&disposableSnapshot{
		set: newDomainSet(embeddedDisposableDomains()),
		sum: sha256.Sum256(embeddedDisposable),
	})
	return l
}

// Contains reports whether domain or one of its parent domains is listed.
// domain should be an A-label name such as address.Address.Domain.
func (l *DisposableList) Contains(domain string) bool {
	s := l.cur.Load()
	return s != nil && s.set.match(normDomain(domain))
}

// Len returns the number of listed domains.
func (l *DisposableList) Len() int {
	if s := l.cur.Load(); s != nil {
		return len(s.set)
	}
	return 0
}

// Sum returns the SHA-256 of the data the current list was parsed from
// (zero for an empty list).
func (l *DisposableList) Sum() [sha256.Size]byte {
	if s := l.cur.Load(); s != nil {
		return s.sum
	}
	return [sha256.Size]byte{}
}

// Replace parses data and, when its hash differs from the current list's,
// swaps it in atomically. On error the current list stays.
func (l *DisposableList) Replace(data []byte) (changed bool, err error) {
	sum := sha256.Sum256(data)
	if s := l.cur.Load(); s != nil && s.sum == sum {
		return false, nil
	}
	domains, err := ParseDomainList(data)
	if err != nil {
		return false, err
	}
	l.cur.Store(&disposableSnapshot{set: newDomainSet(domains), sum: sum})
	return true, nil
}

// ListsConfig holds the operator's lists. Domain entries match the domain
// and its subdomains; address entries match one mailbox, with the local part
// compared case-insensitively (nearly every server ignores its case, and a
// deny list that "Bob@" escapes would be useless).
type ListsConfig struct {
	AllowDomains   []string
	AllowAddresses []string
	DenyDomains    []string
	DenyAddresses  []string
}

// ListMatch says which lists an address is on. Allowed and Denied can both
// be true; the caller's policy decides (deny is the safe reading).
type ListMatch struct {
	Allowed    bool
	Denied     bool
	Disposable bool
}

// Lists answers list membership for parsed addresses. It is immutable and
// safe for concurrent use; the disposable list inside it may be updated.
type Lists struct {
	allowDomains, denyDomains domainSet
	allowAddrs, denyAddrs     map[string]struct{}
	disposable                *DisposableList
}

// NewLists validates and normalises cfg. A bad entry is refused with an
// error naming it, so a typo fails at start-up rather than silently never
// matching. disposable may be nil.
func NewLists(cfg ListsConfig, disposable *DisposableList) (*Lists, error) {
	l := &Lists{disposable: disposable}
	var errs []error
	l.allowDomains = parseDomainEntries("allow domain", cfg.AllowDomains, &errs)
	l.denyDomains = parseDomainEntries("deny domain", cfg.DenyDomains, &errs)
	l.allowAddrs = parseAddressEntries("allow address", cfg.AllowAddresses, &errs)
	l.denyAddrs = parseAddressEntries("deny address", cfg.DenyAddresses, &errs)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

func parseDomainEntries(kind string, entries []string, errs *[]error) domainSet {
	s := make(domainSet, len(entries))
	for _, e := range entries {
		d, err := address.ParseDomain(strings.TrimSpace(e))
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s entry %q: %w", kind, e, err))
			continue
		}
		s[d] = struct{}{}
	}
	return s
}

func parseAddressEntries(kind string, entries []string, errs *[]error) map[string]struct{} {
	s := make(map[string]struct{}, len(entries))
	for _, e := range entries {
		a, err := address.Parse(e)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s entry %q: %w", kind, e, err))
			continue
		}
		s[addressKey(a)] = struct{}{}
	}
	return s
}

func addressKey(a address.Address) string { return strings.ToLower(a.Local) + "@" + a.Domain }

// Check reports which lists a matches. It does no I/O.
func (l *Lists) Check(a address.Address) ListMatch {
	var m ListMatch
	if a.Domain == "" {
		return m
	}
	key := ""
	if len(l.allowAddrs) > 0 || len(l.denyAddrs) > 0 {
		key = addressKey(a)
	}
	_, allowA := l.allowAddrs[key]
	_, denyA := l.denyAddrs[key]
	m.Allowed = allowA || (!a.IsLiteral() && l.allowDomains.match(a.Domain))
	m.Denied = denyA || (!a.IsLiteral() && l.denyDomains.match(a.Domain))
	m.Disposable = !a.IsLiteral() && l.disposable != nil && l.disposable.Contains(a.Domain)
	return m
}

var (
	roleAccounts  = sync.OnceValue(func() map[string]struct{} { return wordSet(embeddedRoles) })
	freeProviders = sync.OnceValue(func() map[string]struct{} { return wordSet(embeddedFree) })
)

// wordSet reads a small curated table: one lower-case entry per line, '#'
// comments.
func wordSet(data []byte) map[string]struct{} {
	s := make(map[string]struct{})
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if line = strings.TrimSpace(line); line != "" {
			s[line] = struct{}{}
		}
	}
	return s
}

// IsRoleAccount reports whether local names a function rather than a person
// (postmaster, sales, noreply…). Case, a "+tag" subaddress and the
// separators '.', '-' and '_' are ignored: "No-Reply+x" is "noreply".
func IsRoleAccount(local string) bool {
	local = strings.ToLower(local)
	if i := strings.IndexByte(local, '+'); i > 0 {
		local = local[:i]
	}
	roles := roleAccounts()
	if _, ok := roles[local]; ok {
		return true
	}
	if !strings.ContainsAny(local, ".-_") {
		return false
	}
	_, ok := roles[roleSeparators.Replace(local)]
	return ok
}

// roleSeparators is built once: a Replacer built per call cost ≈ 1.5 % of
// the worker's CPU (docs/benchmarks.md).
var roleSeparators = strings.NewReplacer(".", "", "-", "", "_", "")

// IsFreeProvider reports whether domain belongs to a free consumer mailbox
// provider (gmail.com, outlook.com, web.de…). Only the listed names match,
// not their subdomains: "corp.gmail.com" is not a mailbox domain anyone gets
// for free.
func IsFreeProvider(domain string) bool {
	_, ok := freeProviders()[normDomain(domain)]
	return ok
}
