package validator

// DNS: from a mail domain to the addresses of the hosts to probe.
//
//  1. The domain is checked as a host name before any query: LDH labels,
//     lengths, no IP literals, no all-numeric TLD. Garbage never reaches a
//     DNS server.
//  2. A fresh answer in the MXCache is used as is (TTL-honouring, negative
//     answers included, temporary failures never).
//  3. MX query, following CNAMEs (RFC 5321 §5.1) up to maxCNAMEChain names.
//     NXDOMAIN → ErrDomainNotFound. A single "MX 0 ." → ErrNullMX (RFC 7505).
//     No MX at all → implicit MX: the domain's own A/AAAA (RFC 5321 §5.1),
//     never when any MX record exists.
//  4. MX sorted by preference, equal preferences shuffled (RFC 5321 §5.1),
//     capped at MaxRecords; targets that are IP literals or "localhost"
//     skipped; each target's A/AAAA (per Family) resolved and filtered
//     (loopback, private, link-local, … refused unless AllowPrivate — these
//     would let a hostile domain aim the prober at our own network); hosts
//     without a usable address dropped; at most MaxMXHosts kept.
//
// Queries go over UDP with EDNS0 (1232-byte buffer, the DNS flag day 2020
// value that avoids IP fragmentation), are retried over TCP when the answer
// comes back truncated (RFC 7766 §5), and move to the next configured server
// on timeout, network error, SERVFAIL, REFUSED or a mismatched answer.
//
// github.com/miekg/dns is used instead of net.Resolver because the prober
// needs what net.Resolver hides: the servers to ask (tests point it at a
// loopback server), the rcode (NXDOMAIN vs SERVFAIL decide invalid vs
// unknown), TTLs for caching, and the SOA minimum for negative caching.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// IPFamily selects which address records of MX hosts are looked up.
type IPFamily int

const (
	// FamilyAny uses IPv4 and IPv6 addresses, IPv4 first (IPv6 senders are
	// more often refused for missing rDNS).
	FamilyAny IPFamily = iota
	FamilyIPv4
	FamilyIPv6
)

func (f IPFamily) String() string {
	switch f {
	case FamilyAny:
		return "both"
	case FamilyIPv4:
		return "ipv4"
	case FamilyIPv6:
		return "ipv6"
	}
	return fmt.Sprintf("IPFamily(%d)", int(f))
}

// ParseIPFamily parses "ipv4", "ipv6" or "both" (case-insensitive).
func ParseIPFamily(s string) (IPFamily, error) {
	switch strings.ToLower(s) {
	case "both":
		return FamilyAny, nil
	case "ipv4":
		return FamilyIPv4, nil
	case "ipv6":
		return FamilyIPv6, nil
	}
	return 0, fmt.Errorf("ip family %q: want ipv4, ipv6 or both", s)
}

// MarshalText implements encoding.TextMarshaler.
func (f IPFamily) MarshalText() ([]byte, error) {
	if f < FamilyAny || f > FamilyIPv6 {
		return nil, fmt.Errorf("invalid %v", f)
	}
	return []byte(f.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (f *IPFamily) UnmarshalText(b []byte) error {
	v, err := ParseIPFamily(string(b))
	if err != nil {
		return err
	}
	*f = v
	return nil
}

// MXHost is one mail host to try, with its usable addresses.
type MXHost struct {
	Name  string       `json:"name"` // lower-case, no trailing dot
	Pref  uint16       `json:"pref"`
	Addrs []netip.Addr `json:"addrs"`
}

// MXSet is the outcome of ResolveMX: the hosts to try, in order.
type MXSet struct {
	Domain string   `json:"domain"`
	Hosts  []MXHost `json:"hosts"`
	// Implicit: the domain has no MX records and Hosts is the domain itself
	// with its A/AAAA addresses (RFC 5321 §5.1).
	Implicit bool `json:"implicit,omitempty"`
	// NullMX: the domain publishes "MX 0 ." (RFC 7505). Set only alongside
	// ErrNullMX, which is the contract; Hosts is then empty.
	NullMX bool `json:"null_mx,omitempty"`
}

// Resolver is what the prober needs from DNS. DNSResolver is the real one.
type Resolver interface {
	ResolveMX(ctx context.Context, domain string) (MXSet, error)
}

var _ Resolver = (*DNSResolver)(nil)

// Sentinel errors of the DNS stage. The caller maps them to verdicts:
// ErrDomainNotFound → invalid/domain_not_found, ErrNoMailHost →
// invalid/no_mx, ErrNullMX → invalid/null_mx, ErrDNSTemporary →
// unknown/dns_error (retryable), ErrInvalidName → invalid/bad_syntax.
var (
	// ErrInvalidName: the name is not a valid host name; no query was sent.
	ErrInvalidName = errors.New("invalid domain name")
	// ErrDomainNotFound: NXDOMAIN for the mail domain.
	ErrDomainNotFound = errors.New("domain not found")
	// ErrNoMailHost: the domain exists but has no host mail can be sent to
	// (no MX and no address, or no MX target with a usable address).
	ErrNoMailHost = errors.New("no mail host")
	// ErrNullMX: the domain declares it accepts no mail (RFC 7505).
	ErrNullMX = errors.New("domain accepts no mail (null MX)")
	// ErrDNSTemporary: SERVFAIL, REFUSED, timeout or network error; asking
	// again later may succeed.
	ErrDNSTemporary = errors.New("temporary DNS failure")
	// ErrNoAddress (LookupAddrs): the host exists but has no usable address
	// of the configured family.
	ErrNoAddress = errors.New("no usable address")
	// ErrCNAMEChain: CNAMEs loop or chain longer than allowed. It comes in
	// a temporary *DNSError: a loop is a zone (or resolver) fault that is
	// usually fixed within hours and says nothing about the mailbox, so it
	// is unknown/dns_error, never invalid (docs/reliability.md).
	ErrCNAMEChain = errors.New("CNAME loop or chain too long")
	// ErrTruncated: the answer was still truncated over TCP (RFC 7766 §5
	// leaves no further fallback). Temporary: the records are not known.
	ErrTruncated = errors.New("answer truncated over TCP")
	// ErrFilteredAddress (a kind of ErrNoAddress): the host has addresses,
	// but none of the configured family, or only ones the address policy
	// refuses. It is our setting, not the domain's answer.
	ErrFilteredAddress = fmt.Errorf("%w of the configured family or address policy", ErrNoAddress)
	// ErrNoUsableAddress: no MX target (or implicit MX) has an address we
	// may dial, and at least one has addresses our settings exclude (IP
	// family, private-address policy). Mapped to unknown/no_usable_address:
	// another configuration could deliver, so never invalid.
	ErrNoUsableAddress = errors.New("no MX host has an address usable with our settings")
	// ErrMXAddressLiteral: the domain's MX targets are IP addresses
	// ("MX 10 192.0.2.1." or "[192.0.2.1]"), which RFC 5321 §5.1 does not
	// allow (MX targets are domain names). A fault of the domain, not of the
	// address: unknown/mx_ip_literal. The literal is not dialled.
	ErrMXAddressLiteral = errors.New("MX target is an IP address, not a host name")
)

// DNSError carries the details of a failed lookup. errors.Is(err,
// ErrDNSTemporary) holds exactly when Temporary is set; the other sentinels
// are found through Err.
type DNSError struct {
	Name      string // the name queried, fully qualified
	Qtype     string // "MX", "A", "AAAA"
	Rcode     string // "NXDOMAIN", "SERVFAIL", … ; empty when no answer came
	Server    string // the server that answered last, "host:port"
	Temporary bool
	Err       error
}

func (e *DNSError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dns %s %s", e.Qtype, e.Name)
	if e.Rcode != "" {
		fmt.Fprintf(&b, ": %s", e.Rcode)
	}
	if e.Server != "" {
		fmt.Fprintf(&b, " from %s", e.Server)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *DNSError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrDNSTemporary) follow the Temporary field, so
// timeouts and SERVFAILs need not wrap the sentinel themselves.
func (e *DNSError) Is(target error) bool { return target == ErrDNSTemporary && e.Temporary }

// DNSConfig configures a DNSResolver. Zero values take the documented
// defaults.
type DNSConfig struct {
	// Servers are the DNS servers asked, in order, as "ip:port" or "ip"
	// (port 53). Default: the nameservers of ResolvConf.
	Servers []string
	// ResolvConf is read only when Servers is empty. Default /etc/resolv.conf.
	ResolvConf string
	// Timeout bounds each query to one server. Default 5s.
	Timeout time.Duration
	// Family selects A, AAAA or both for MX hosts. Default FamilyAny.
	Family IPFamily
	// MaxMXHosts is how many MX hosts with usable addresses ResolveMX
	// returns. Default 3: more hosts of one domain rarely answer what the
	// first three did not, and each costs a timeout when they are down.
	MaxMXHosts int
	// MaxRecords caps the MX records and the addresses per host considered.
	// Default 20: a hostile domain with thousands of MX records must not
	// turn one address into thousands of queries.
	MaxRecords int
	// AllowPrivate allows MX addresses that are loopback, private (RFC 1918,
	// ULA), link-local, unspecified, multicast or otherwise not globally
	// routable, and "localhost" names. Off by default: a domain could
	// otherwise point the prober at our own network (SSRF). Tests turn it on.
	AllowPrivate bool
	// CacheSize is the capacity in domains of the default in-memory cache.
	// Default 10000; negative disables caching. Ignored when Cache is set.
	CacheSize int
	// Cache replaces the in-memory cache (e.g. with a shared Redis one).
	Cache MXCache
	// MinTTL and MaxTTL clamp how long answers are cached. Defaults 10s and
	// 1h. Negative answers are cached for the SOA minimum (RFC 2308 §5),
	// at most 5 minutes, so a domain fixed after an outage recovers fast.
	MinTTL, MaxTTL time.Duration
	// NowFunc is the cache's clock. Default time.Now.
	NowFunc func() time.Time
	// ShuffleFunc randomises MX hosts of equal preference; it must be safe
	// for concurrent use. Default math/rand/v2.Shuffle.
	ShuffleFunc func(n int, swap func(i, j int))
	// Logger receives a debug record per query. Default: discard.
	Logger *slog.Logger
	// Canary guards negative answers (validator/canary.go): while its names
	// do not resolve, NXDOMAIN and "no MX" are temporary errors. No names:
	// no canary.
	Canary CanaryConfig
}

const (
	defaultDNSTimeout = 5 * time.Second
	defaultMaxMXHosts = 3
	defaultMaxRecords = 20
	defaultCacheSize  = 10000
	defaultMinTTL     = 10 * time.Second
	defaultMaxTTL     = time.Hour
	// maxNegativeTTL caps caching of NXDOMAIN / no MX / null MX: a domain
	// being set up should not stay "invalid" for the SOA's hours.
	maxNegativeTTL = 5 * time.Minute
	// maxPartialTTL caps caching of a set built while some look-ups failed
	// temporarily, so the missing hosts come back soon.
	maxPartialTTL = 30 * time.Second
	// maxCNAMEChain bounds the names visited per look-up (the original and
	// its CNAME targets); real chains are 1–3 long (CDNs), loops infinite.
	maxCNAMEChain = 8
	// maxTempFailures stops resolving further MX targets after this many
	// temporary failures: the resolver is likely down and each further
	// target would cost another timeout.
	maxTempFailures = 3
	// ednsUDPSize is the EDNS0 buffer advertised (DNS flag day 2020).
	ednsUDPSize = 1232
)

// DNSResolver resolves mail domains with miekg/dns. It is safe for concurrent
// use; concurrent ResolveMX calls for the same domain share one resolution.
type DNSResolver struct {
	servers      []string
	udp, tcp     *dns.Client
	family       IPFamily
	maxHosts     int
	maxRecords   int
	allowPrivate bool
	cache        MXCache // nil: no caching
	minTTL       time.Duration
	maxTTL       time.Duration
	now          func() time.Time
	shuffle      func(n int, swap func(i, j int))
	log          *slog.Logger
	canary       *dnsCanary // nil: negative answers are trusted

	mu      sync.Mutex
	flights map[string]*flight
}

type flight struct {
	done chan struct{}
	set  MXSet
	err  error
}

// NewDNSResolver checks cfg, applies defaults and returns a resolver. Bad
// settings are reported here, not at the first query.
func NewDNSResolver(cfg DNSConfig) (*DNSResolver, error) {
	r := &DNSResolver{
		family:       cfg.Family,
		maxHosts:     cfg.MaxMXHosts,
		maxRecords:   cfg.MaxRecords,
		allowPrivate: cfg.AllowPrivate,
		minTTL:       cfg.MinTTL,
		maxTTL:       cfg.MaxTTL,
		now:          cfg.NowFunc,
		shuffle:      cfg.ShuffleFunc,
		log:          cfg.Logger,
		flights:      make(map[string]*flight),
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	servers := cfg.Servers
	if len(servers) == 0 {
		path := cmp.Or(cfg.ResolvConf, "/etc/resolv.conf")
		cc, err := dns.ClientConfigFromFile(path)
		switch {
		case err != nil:
			bad("no DNS servers configured and %s unusable: %v", path, err)
		case len(cc.Servers) == 0:
			bad("no DNS servers configured and none in %s", path)
		default:
			for _, s := range cc.Servers {
				servers = append(servers, net.JoinHostPort(s, cc.Port))
			}
		}
	}
	for _, s := range servers {
		hp, err := parseServer(s)
		if err != nil {
			bad("%v", err)
			continue
		}
		r.servers = append(r.servers, hp)
	}

	timeout := cfg.Timeout
	switch {
	case timeout == 0:
		timeout = defaultDNSTimeout
	case timeout < 0:
		bad("DNS timeout %v: must be positive", timeout)
	}
	if cfg.Family < FamilyAny || cfg.Family > FamilyIPv6 {
		bad("invalid %v", cfg.Family)
	}
	switch {
	case r.maxHosts == 0:
		r.maxHosts = defaultMaxMXHosts
	case r.maxHosts < 0:
		bad("MaxMXHosts %d: must be positive", r.maxHosts)
	}
	switch {
	case r.maxRecords == 0:
		r.maxRecords = defaultMaxRecords
	case r.maxRecords < 0:
		bad("MaxRecords %d: must be positive", r.maxRecords)
	}
	if r.minTTL == 0 {
		r.minTTL = defaultMinTTL
	}
	if r.maxTTL == 0 {
		r.maxTTL = defaultMaxTTL
	}
	if r.minTTL < 0 || r.maxTTL < 0 || r.minTTL > r.maxTTL {
		bad("cache TTL bounds [%v, %v]: want 0 <= MinTTL <= MaxTTL", r.minTTL, r.maxTTL)
	}
	switch {
	case cfg.Cache != nil:
		r.cache = cfg.Cache
	case cfg.CacheSize == 0:
		r.cache = NewMemoryMXCache(defaultCacheSize)
	case cfg.CacheSize > 0:
		r.cache = NewMemoryMXCache(cfg.CacheSize)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("dns config: %w", err)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.shuffle == nil {
		r.shuffle = rand.Shuffle
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.udp = &dns.Client{Net: "udp", Timeout: timeout, UDPSize: ednsUDPSize}
	r.tcp = &dns.Client{Net: "tcp", Timeout: timeout}
	c, err := newCanary(r, cfg.Canary)
	if err != nil {
		return nil, fmt.Errorf("dns config: %w", err)
	}
	r.canary = c
	return r, nil
}

// parseServer accepts "ip", "ip:port" and "[ipv6]:port". Names are refused:
// resolving the resolver would need a resolver.
func parseServer(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return "", fmt.Errorf("DNS server %q: port 0", s)
		}
		return ap.String(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	return "", fmt.Errorf("DNS server %q: want an IP address, optionally with :port", s)
}

// Servers returns the servers asked, in order, as "ip:port".
func (r *DNSResolver) Servers() []string { return slices.Clone(r.servers) }

// ResolveMX returns the mail hosts of domain (an A-label domain; convert IDNs
// first), best first. See the sentinel errors for the failures; on ErrNullMX
// the returned set has NullMX set.
func (r *DNSResolver) ResolveMX(ctx context.Context, domain string) (MXSet, error) {
	name, err := canonicalName(domain)
	if err != nil {
		return MXSet{}, err
	}
	if r.cache != nil {
		if e, ok := r.cache.Get(ctx, name); ok && r.now().Before(e.Expires) {
			return r.fromEntry(ctx, name, e)
		}
	}

	for {
		r.mu.Lock()
		f, ok := r.flights[name]
		if !ok {
			f = &flight{done: make(chan struct{})}
			r.flights[name] = f
			r.mu.Unlock()
			f.set, f.err = r.resolveAndCache(ctx, name)
			r.mu.Lock()
			delete(r.flights, name)
			r.mu.Unlock()
			close(f.done)
			return r.present(f.set), f.err
		}
		r.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return MXSet{}, &DNSError{Name: dns.Fqdn(name), Qtype: "MX", Temporary: true, Err: ctx.Err()}
		}
		// The leader's context ending says nothing about ours: try again.
		if errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded) {
			if ctx.Err() == nil {
				continue
			}
		}
		return r.present(f.set), f.err
	}
}

func (r *DNSResolver) resolveAndCache(ctx context.Context, name string) (MXSet, error) {
	set, ttl, err := r.resolveMX(ctx, name)
	if isNegative(err) {
		if g := r.guardNegative(ctx, name, err); g != err {
			return MXSet{Domain: name}, g // not cached: the answer is not trusted
		}
	}
	if r.cache == nil {
		return set, err
	}
	var reason Reason
	switch {
	case errors.Is(err, ErrDNSTemporary):
		return set, err
	case errors.Is(err, ErrDomainNotFound):
		reason = ReasonDomainNotFound
	case errors.Is(err, ErrNullMX):
		reason = ReasonNullMX
	case errors.Is(err, ErrNoMailHost):
		reason = ReasonNoMX
	case err != nil:
		return set, err
	}
	if reason != "" {
		ttl = min(ttl, maxNegativeTTL)
	}
	if ttl > 0 {
		r.cache.Set(ctx, name, MXCacheEntry{Set: copySet(set), Reason: reason, Expires: r.now().Add(ttl)})
	}
	return set, err
}

// fromEntry turns a cached entry back into ResolveMX's answer.
func (r *DNSResolver) fromEntry(ctx context.Context, name string, e MXCacheEntry) (MXSet, error) {
	cached := func(s error) error {
		return &DNSError{Name: dns.Fqdn(name), Qtype: "MX", Err: fmt.Errorf("%w (cached)", s)}
	}
	switch e.Reason {
	case "":
		return r.present(e.Set), nil
	case ReasonDomainNotFound:
		// Cached by a healthy resolver, maybe by another worker whose
		// resolver is fine while ours lies: still ask the canary.
		return MXSet{Domain: name}, r.guardNegative(ctx, name, cached(ErrDomainNotFound))
	case ReasonNullMX:
		return MXSet{Domain: name, NullMX: true}, cached(ErrNullMX)
	default:
		return MXSet{Domain: name}, r.guardNegative(ctx, name, cached(ErrNoMailHost))
	}
}

// isNegative reports the answers an untruthful resolver can fake by
// omission: NXDOMAIN and "no mail host" (NODATA). A null MX is a record
// the resolver had to produce, so it needs no canary.
func isNegative(err error) bool {
	if err == nil || errors.Is(err, ErrDNSTemporary) || errors.Is(err, ErrNullMX) {
		return false
	}
	return errors.Is(err, ErrDomainNotFound) || errors.Is(err, ErrNoMailHost)
}

// present returns a copy of set with equal-preference hosts shuffled anew,
// so repeated answers from the cache spread load as fresh ones would.
func (r *DNSResolver) present(set MXSet) MXSet {
	set = copySet(set)
	r.shuffleEqual(set.Hosts)
	return set
}

func copySet(s MXSet) MXSet {
	if s.Hosts == nil {
		return s
	}
	hosts := make([]MXHost, len(s.Hosts))
	for i, h := range s.Hosts {
		h.Addrs = slices.Clone(h.Addrs)
		hosts[i] = h
	}
	s.Hosts = hosts
	return s
}

// shuffleEqual shuffles runs of hosts with the same preference in a slice
// sorted by preference (RFC 5321 §5.1: "randomize" among equal preferences).
func (r *DNSResolver) shuffleEqual(hosts []MXHost) {
	for i := 0; i < len(hosts); {
		j := i + 1
		for j < len(hosts) && hosts[j].Pref == hosts[i].Pref {
			j++
		}
		if j-i > 1 {
			run := hosts[i:j]
			r.shuffle(len(run), func(a, b int) { run[a], run[b] = run[b], run[a] })
		}
		i = j
	}
}

// resolveMX does the work of ResolveMX without the cache; ttl is how long
// the outcome may be cached (0: not at all).
func (r *DNSResolver) resolveMX(ctx context.Context, name string) (MXSet, time.Duration, error) {
	set := MXSet{Domain: name}
	res, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return set, res.ttl, err
	}
	if res.nxdomain {
		return set, res.ttl, res.errorf(ErrDomainNotFound)
	}
	mxs := make([]*dns.MX, 0, len(res.rrs))
	for _, rr := range res.rrs {
		mxs = append(mxs, rr.(*dns.MX))
	}
	if len(mxs) == 0 {
		return r.implicitMX(ctx, name, res)
	}
	// RFC 7505 §3: a single "MX 0 ." means no mail. A "." among other
	// records is a misconfiguration; §4.3 says not to use it as a host.
	if len(mxs) == 1 && mxs[0].Mx == "." {
		set.NullMX = true
		return set, res.ttl, res.errorf(ErrNullMX)
	}

	slices.SortStableFunc(mxs, func(a, b *dns.MX) int { return int(a.Preference) - int(b.Preference) })
	hosts := make([]MXHost, 0, len(mxs))
	seen := make(map[string]bool, len(mxs))
	var tempErr, permErr error
	var literals, filtered int
	var noAddr []string // targets without an address of our family
	for _, mx := range mxs {
		if isAddressLiteral(mx.Mx) {
			r.log.LogAttrs(ctx, slog.LevelDebug, "mx target is an IP address",
				slog.String("domain", name), slog.String("mx", mx.Mx))
			literals++
			continue
		}
		target, err := canonicalHost(mx.Mx)
		if err != nil {
			// IP literals (RFC 5321 §5.1 wants a name), "." next to other
			// records (RFC 7505 §4.3), garbage: not a host to try.
			r.log.LogAttrs(ctx, slog.LevelDebug, "mx target refused",
				slog.String("domain", name), slog.Any("err", err))
			permErr = err
			continue
		}
		if seen[target] { // duplicates keep the best preference
			continue
		}
		seen[target] = true
		hosts = append(hosts, MXHost{Name: target, Pref: mx.Preference})
	}
	r.shuffleEqual(hosts)
	if len(hosts) > r.maxRecords {
		hosts = hosts[:r.maxRecords]
	}

	ttl := res.ttl
	var temps int
	for _, h := range hosts {
		if len(set.Hosts) == r.maxHosts || temps == maxTempFailures {
			break
		}
		addrs, attl, err := r.hostAddrs(ctx, h.Name)
		if err != nil {
			r.log.LogAttrs(ctx, slog.LevelDebug, "mx target unusable",
				slog.String("domain", name), slog.String("mx", h.Name), slog.Any("err", err))
			switch {
			case errors.Is(err, ErrDNSTemporary):
				temps++
				tempErr = err
			case errors.Is(err, ErrFilteredAddress):
				filtered++
				permErr = err
			default:
				permErr = err
				if errors.Is(err, ErrNoAddress) {
					noAddr = append(noAddr, h.Name)
				}
			}
			continue
		}
		h.Addrs = addrs
		ttl = min(ttl, attl)
		set.Hosts = append(set.Hosts, h)
	}
	switch {
	case len(set.Hosts) > 0 && tempErr != nil:
		ttl = min(ttl, maxPartialTTL)
	case len(set.Hosts) > 0:
	case tempErr != nil:
		// Some target might have worked had DNS answered: not a verdict.
		return set, 0, tempErr
	}
	if len(set.Hosts) == 0 && filtered == 0 {
		for _, h := range noAddr {
			if err := r.otherFamilyErr(ctx, h, permErr); errors.Is(err, ErrFilteredAddress) {
				filtered++
				permErr = err
				break
			}
		}
	}
	switch {
	case len(set.Hosts) > 0:
	case filtered > 0:
		// Our family or address policy, not the domain, left nothing.
		return set, ttl, &DNSError{Name: dns.Fqdn(name), Qtype: "MX", Rcode: res.rcode, Server: res.server,
			Err: fmt.Errorf("%w (last: %w)", ErrNoUsableAddress, permErr)}
	case literals > 0 && permErr == nil:
		return set, ttl, &DNSError{Name: dns.Fqdn(name), Qtype: "MX", Rcode: res.rcode, Server: res.server,
			Err: ErrMXAddressLiteral}
	default:
		return set, ttl, &DNSError{Name: dns.Fqdn(name), Qtype: "MX", Rcode: res.rcode, Server: res.server,
			Err: noTargetErr(permErr)}
	}
	return set, ttl, nil
}

// noTargetErr says why no MX target is usable. The last target's error is
// text, not wrapped: a target's NXDOMAIN or malformed name is a fault of the
// domain's mail hosts (no_mx), and must not read as the domain not existing
// (domain_not_found) or the address being malformed (bad_syntax).
func noTargetErr(last error) error {
	if last == nil {
		return fmt.Errorf("%w: no MX target has a usable address", ErrNoMailHost)
	}
	return fmt.Errorf("%w: no MX target has a usable address (last: %v)", ErrNoMailHost, last)
}

// implicitMX handles a domain without MX records: RFC 5321 §5.1 says to
// treat the domain itself as the only mail host, preference 0.
func (r *DNSResolver) implicitMX(ctx context.Context, name string, mxRes lookupResult) (MXSet, time.Duration, error) {
	set := MXSet{Domain: name}
	addrs, ttl, err := r.hostAddrs(ctx, name)
	if err != nil && !errors.Is(err, ErrDNSTemporary) {
		err = r.otherFamilyErr(ctx, name, err)
	}
	switch {
	case errors.Is(err, ErrDNSTemporary):
		return set, 0, err
	case errors.Is(err, ErrFilteredAddress):
		return set, min(mxRes.ttl, ttl), &DNSError{Name: dns.Fqdn(name), Qtype: "MX", Rcode: mxRes.rcode, Server: mxRes.server,
			Err: fmt.Errorf("%w: no MX records, and the domain's own addresses are excluded (%w)", ErrNoUsableAddress, err)}
	case err != nil:
		return set, min(mxRes.ttl, ttl), &DNSError{Name: dns.Fqdn(name), Qtype: "MX", Rcode: mxRes.rcode, Server: mxRes.server,
			Err: fmt.Errorf("%w: no MX records and no usable address (%v)", ErrNoMailHost, err)}
	}
	set.Implicit = true
	set.Hosts = []MXHost{{Name: name, Addrs: addrs}}
	return set, min(mxRes.ttl, ttl), nil
}

// LookupAddrs returns the usable addresses of host for the configured family
// (IPv4 first), following CNAMEs. Errors: ErrInvalidName, ErrDomainNotFound
// (NXDOMAIN), ErrNoAddress (nothing usable: no records, or only refused
// addresses), ErrCNAMEChain, ErrDNSTemporary. Results are not cached.
func (r *DNSResolver) LookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	name, err := canonicalHost(host)
	if err != nil {
		return nil, err
	}
	addrs, _, err := r.hostAddrs(ctx, name)
	return addrs, err
}

// hostAddrs resolves a canonical host name; ttl is the smallest TTL seen.
func (r *DNSResolver) hostAddrs(ctx context.Context, name string) ([]netip.Addr, time.Duration, error) {
	if isLocalhost(name) && !r.allowPrivate {
		// RFC 6761 §6.3: never ask DNS about localhost; it is us.
		return nil, r.maxTTL, &DNSError{Name: dns.Fqdn(name), Qtype: "A", Err: fmt.Errorf("%w: localhost refused", ErrNoAddress)}
	}
	var qtypes []uint16
	switch r.family {
	case FamilyIPv4:
		qtypes = []uint16{dns.TypeA}
	case FamilyIPv6:
		qtypes = []uint16{dns.TypeAAAA}
	default:
		qtypes = []uint16{dns.TypeA, dns.TypeAAAA}
	}
	type out struct {
		res lookupResult
		err error
	}
	outs := make([]out, len(qtypes))
	var wg sync.WaitGroup
	for i, qt := range qtypes {
		wg.Go(func() {
			res, err := r.lookup(ctx, name, qt)
			outs[i] = out{res, err}
		})
	}
	wg.Wait()

	var addrs []netip.Addr
	var refused []string
	// posTTL comes from the record sets that gave addresses only: a family
	// with no records (NODATA) must not shorten how long the other is kept.
	posTTL, negTTL := r.maxTTL, r.maxTTL
	var tempErr, permErr error
	nx := 0
	for _, o := range outs {
		switch {
		case o.err != nil && errors.Is(o.err, ErrDNSTemporary):
			tempErr = o.err
			continue
		case o.err != nil:
			permErr = o.err
			continue
		case o.res.nxdomain:
			nx++
		}
		if len(o.res.rrs) > 0 {
			posTTL = min(posTTL, o.res.ttl)
		} else {
			negTTL = min(negTTL, o.res.ttl)
		}
		for _, rr := range o.res.rrs {
			if len(addrs) == r.maxRecords {
				break
			}
			a, ok := rrAddr(rr)
			if !ok {
				continue
			}
			if why := r.refuse(a); why != "" {
				refused = append(refused, a.String()+" ("+why+")")
				continue
			}
			if !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
	}
	last := outs[len(outs)-1].res
	ttl := min(posTTL, negTTL)
	switch {
	case len(addrs) > 0 && tempErr != nil:
		return addrs, min(posTTL, maxPartialTTL), nil
	case len(addrs) > 0:
		return addrs, posTTL, nil
	case tempErr != nil:
		return nil, 0, tempErr
	case permErr != nil:
		return nil, ttl, permErr
	case nx == len(outs):
		return nil, ttl, last.errorf(ErrDomainNotFound)
	case len(refused) > 0:
		return nil, ttl, last.errorf(fmt.Errorf("%w: refused %s", ErrFilteredAddress, strings.Join(refused, ", ")))
	}
	return nil, ttl, last.errorf(ErrNoAddress)
}

// otherFamilyErr is called when host gave no address of our family and no
// other host worked: it asks whether the other family exists, so an
// IPv4-only host under --ipv6 (or the reverse) is told apart from a host
// with no address at all. It costs queries only on this failing path.
func (r *DNSResolver) otherFamilyErr(ctx context.Context, host string, err error) error {
	other, ok := otherFamily(r.family)
	if !ok || !errors.Is(err, ErrNoAddress) || errors.Is(err, ErrFilteredAddress) {
		return err
	}
	if o, lerr := r.lookup(ctx, host, other); lerr == nil && len(o.rrs) > 0 {
		return o.errorf(fmt.Errorf("%w: only %s records, family is %v", ErrFilteredAddress, dns.TypeToString[other], r.family))
	}
	return err
}

// otherFamily is the address type a single-family resolver does not use.
func otherFamily(f IPFamily) (uint16, bool) {
	switch f {
	case FamilyIPv4:
		return dns.TypeAAAA, true
	case FamilyIPv6:
		return dns.TypeA, true
	}
	return 0, false
}

// isAddressLiteral reports an MX target written as an IP address, bare
// ("192.0.2.1.") or bracketed ("[192.0.2.1]", "[IPv6:2001:db8::1]").
func isAddressLiteral(target string) bool {
	t := strings.TrimSuffix(target, ".")
	if strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]") {
		t = strings.TrimPrefix(strings.TrimPrefix(t[1:len(t)-1], "IPv6:"), "ipv6:")
	}
	_, err := netip.ParseAddr(t)
	return err == nil
}

func rrAddr(rr dns.RR) (netip.Addr, bool) {
	switch v := rr.(type) {
	case *dns.A:
		a, ok := netip.AddrFromSlice(v.A)
		return a.Unmap(), ok && a.Unmap().Is4()
	case *dns.AAAA:
		a, ok := netip.AddrFromSlice(v.AAAA)
		return a, ok && a.Is6()
	}
	return netip.Addr{}, false
}

// Address ranges an MX may not point to unless AllowPrivate: reaching them
// would let any domain owner make the prober connect inside our network or
// to addresses that cannot be a public mail server.
var refusedPrefixes = []struct {
	p   netip.Prefix
	why string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this network"},             // RFC 791
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space"}, // RFC 6598 (CGNAT)
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},      // RFC 2544
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},            // RFC 1112 class E, and broadcast
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped"},       // would bypass the IPv4 checks
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64"},              // RFC 6052: embeds any IPv4
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local NAT64"},      // RFC 8215
	{netip.MustParsePrefix("100::/64"), "discard-only"},           // RFC 6666
	{netip.MustParsePrefix("fec0::/10"), "deprecated site-local"}, // RFC 3879
}

// refuse says why a is not an acceptable MX address, "" when it is.
func (r *DNSResolver) refuse(a netip.Addr) string {
	if r.allowPrivate {
		return ""
	}
	return refusedAddr(a)
}

// refusedAddr says why a is not a public unicast address we may dial, ""
// when it is: the one filter for MX addresses and address literals.
func refusedAddr(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate():
		return "private"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "multicast"
	}
	for _, rp := range refusedPrefixes {
		if rp.p.Contains(a) {
			return rp.why
		}
	}
	return ""
}

// lookupResult is the outcome of one name and type, CNAMEs followed.
type lookupResult struct {
	name     string // the name asked, fully qualified
	qtype    uint16
	rrs      []dns.RR // records of qtype for the end of the chain
	nxdomain bool
	ttl      time.Duration // clamped; positive: smallest TTL on the chain, negative: from the SOA
	rcode    string
	server   string
}

func (l lookupResult) errorf(err error) *DNSError {
	return &DNSError{Name: l.name, Qtype: dns.TypeToString[l.qtype], Rcode: l.rcode, Server: l.server, Err: err}
}

// lookup asks for name/qtype and follows CNAMEs, both those included in an
// answer and those that need a new query (RFC 1034 §3.6.2).
func (r *DNSResolver) lookup(ctx context.Context, name string, qtype uint16) (lookupResult, error) {
	fq := dns.Fqdn(name)
	res := lookupResult{name: fq, qtype: qtype}
	cur := fq
	visited := map[string]bool{strings.ToLower(cur): true}
	minTTL := uint32(1<<32 - 1)
	follow := func(target string) error {
		t := strings.ToLower(target)
		if visited[t] || len(visited) >= maxCNAMEChain {
			e := res.errorf(fmt.Errorf("%w (at %s)", ErrCNAMEChain, target))
			e.Temporary = true
			return e
		}
		visited[t] = true
		cur = t
		return nil
	}
	for {
		msg, server, err := r.exchange(ctx, cur, qtype)
		res.server = server
		if err != nil {
			return res, err
		}
		res.rcode = dns.RcodeToString[msg.Rcode]
		asked := cur
		// Walk the answer along the chain from cur.
		for {
			var recs []dns.RR
			var cname *dns.CNAME
			for _, rr := range msg.Answer {
				if !strings.EqualFold(rr.Header().Name, cur) {
					continue
				}
				switch v := rr.(type) {
				case *dns.CNAME:
					cname = v
				default:
					if rr.Header().Rrtype == qtype {
						recs = append(recs, rr)
					}
				}
			}
			if len(recs) > 0 {
				for _, rr := range recs {
					minTTL = min(minTTL, rr.Header().Ttl)
				}
				res.rrs = recs
				res.ttl = r.clamp(time.Duration(minTTL) * time.Second)
				return res, nil
			}
			if cname == nil {
				break
			}
			minTTL = min(minTTL, cname.Hdr.Ttl)
			if err := follow(cname.Target); err != nil {
				return res, err
			}
		}
		if msg.Rcode == dns.RcodeNameError {
			res.nxdomain = true
			res.ttl = r.negativeTTL(msg)
			return res, nil
		}
		if cur == asked {
			// NODATA for the end of the chain.
			res.ttl = min(r.negativeTTL(msg), r.clamp(time.Duration(minTTL)*time.Second))
			return res, nil
		}
		// The answer stopped at a CNAME target: ask for it.
	}
}

// negativeTTL is how long a negative answer may be cached: the smaller of
// the SOA's TTL and minimum (RFC 2308 §5), capped at maxNegativeTTL.
func (r *DNSResolver) negativeTTL(msg *dns.Msg) time.Duration {
	for _, rr := range msg.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(r.clamp(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second), maxNegativeTTL)
		}
	}
	// No SOA: RFC 2308 §5 says not to cache; the floor still protects the
	// servers from a loop of identical questions.
	return r.minTTL
}

func (r *DNSResolver) clamp(d time.Duration) time.Duration {
	return max(r.minTTL, min(r.maxTTL, d))
}

// exchange sends one question to the configured servers in order until one
// gives a usable answer (NOERROR or NXDOMAIN).
func (r *DNSResolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, string, error) {
	var last error
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			return nil, server, &DNSError{Name: name, Qtype: dns.TypeToString[qtype], Server: server, Temporary: true, Err: err}
		}
		msg, err := r.exchangeOne(ctx, server, name, qtype)
		if err == nil {
			return msg, server, nil
		}
		last = err
	}
	return nil, r.servers[len(r.servers)-1], last
}

func (r *DNSResolver) exchangeOne(ctx context.Context, server, name string, qtype uint16) (*dns.Msg, error) {
	qt := dns.TypeToString[qtype]
	fail := func(rcode string, err error) error {
		return &DNSError{Name: name, Qtype: qt, Rcode: rcode, Server: server, Temporary: true, Err: err}
	}
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	q.SetEdns0(ednsUDPSize, false)

	start := time.Now()
	resp, err := exchangeVia(ctx, r.udp, q, server)
	if err == nil && resp.Rcode == dns.RcodeFormatError {
		// RFC 6891 §7: a server that does not know EDNS0 answers FORMERR;
		// ask again without it.
		q.Extra = nil
		resp, err = exchangeVia(ctx, r.udp, q, server)
	}
	netw := "udp"
	if err == nil && resp.Truncated {
		// RFC 7766 §5: a truncated UDP answer is retried over TCP.
		netw = "tcp"
		resp, err = exchangeVia(ctx, r.tcp, q, server)
		if err == nil && resp.Truncated {
			// TCP has no further fallback: whatever records came are a
			// fragment, and an empty fragment must not read as "no MX".
			err = ErrTruncated
		}
	}
	attrs := []slog.Attr{slog.String("name", name), slog.String("type", qt), slog.String("server", server),
		slog.String("net", netw), slog.Duration("took", time.Since(start))}
	if err != nil {
		r.log.LogAttrs(ctx, slog.LevelDebug, "dns query failed", append(attrs, slog.Any("err", err))...)
		return nil, fail("", err)
	}
	rcode := dns.RcodeToString[resp.Rcode]
	r.log.LogAttrs(ctx, slog.LevelDebug, "dns query", append(attrs, slog.String("rcode", rcode), slog.Int("answers", len(resp.Answer)))...)
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return nil, fail(rcode, fmt.Errorf("server answered %s", rcode))
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, name) || resp.Question[0].Qtype != qtype {
		return nil, fail(rcode, errors.New("answer does not match the question"))
	}
	return resp, nil
}

// exchangeVia is Client.ExchangeContext that also ends on cancellation:
// miekg/dns only honours the context's deadline, so a cancelled probe would
// otherwise wait out the full query timeout.
func exchangeVia(ctx context.Context, c *dns.Client, q *dns.Msg, server string) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return resp, err
}

// canonicalName checks that s is a host name fit for DNS and returns it
// lower-cased without the trailing dot. It is strict on purpose: the domain
// comes from untrusted input and MX targets from untrusted servers.
func canonicalName(s string) (string, error) { return canonical(s, false) }

// canonicalHost is canonicalName for the name of a mail host (an MX target,
// a host whose addresses are looked up), which may also contain '_'.
func canonicalHost(s string) (string, error) { return canonical(s, true) }

func canonical(s string, underscore bool) (string, error) {
	bad := func(why string) error { return fmt.Errorf("%w %q: %s", ErrInvalidName, s, why) }
	name := strings.TrimSuffix(s, ".")
	switch {
	case name == "":
		return "", bad("empty")
	case len(name) > 253:
		// 255 octets on the wire (RFC 1035 §2.3.4) = 253 characters.
		return "", bad("longer than 253 characters")
	case strings.HasPrefix(name, "["):
		return "", bad("address literal, not a domain")
	}
	if _, err := netip.ParseAddr(name); err == nil {
		// RFC 5321 §5.1: an MX must name a host, never an address.
		return "", bad("IP address, not a domain")
	}
	name = strings.ToLower(name)
	labels := strings.Split(name, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return "", bad("empty label")
		case len(l) > 63:
			return "", bad("label longer than 63 characters")
		case l[0] == '-' || l[len(l)-1] == '-':
			return "", bad("label starts or ends with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			// '_' is in no host name (RFC 952/1123) nor mail domain
			// (RFC 5321 §4.1.2), but DNS carries it (RFC 2181 §11) and
			// mail hosts named with it exist and receive mail: refusing
			// such an MX target would make its domain's addresses
			// invalid/no_mx.
			if c == '_' && underscore {
				continue
			}
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				if c >= 0x80 {
					return "", bad("not ASCII; convert IDNs to A-labels first")
				}
				return "", bad(fmt.Sprintf("invalid character %q", c))
			}
		}
	}
	// RFC 3696 §2: a top-level domain is never all-numeric; this also catches
	// dotted-decimal forms ParseAddr refuses ("1.2.3.04", "1.2.3.4.5").
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", bad("all-numeric top-level label")
	}
	return name, nil
}

// isLocalhost reports names reserved for the local host (RFC 6761 §6.3).
func isLocalhost(name string) bool {
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}
