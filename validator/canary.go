package validator

// The DNS canary: before a negative answer (NXDOMAIN, or no MX and no
// address) becomes invalid, the resolver must be known to answer names that
// certainly exist. Captive, filtering, broken or sandboxed resolvers answer
// NXDOMAIN for everything; without this check every address would come back
// invalid/domain_not_found (docs/verdicts.md "DNS answers", docs/reliability.md).
//
// Only negative answers consult it: a positive answer (MX records, a null MX
// per RFC 7505) is data the resolver had to produce, a lie of omission is
// what an unhealthy resolver tells.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DefaultCanaryNames are well-known mail domains whose MX records have been
// stable for many years; a resolver that cannot find them is not telling
// the truth about other domains either.
var DefaultCanaryNames = []string{"gmail.com", "outlook.com", "yahoo.com"}

// DefaultCanaryInterval is how long one canary result is trusted.
const DefaultCanaryInterval = time.Minute

// ErrResolverUnhealthy: a negative answer was held back because the canary
// names did not resolve. It comes in a temporary *DNSError.
var ErrResolverUnhealthy = errors.New("resolver failed the canary check; negative answer not trusted")

// CanaryConfig configures the canary of a DNSResolver.
type CanaryConfig struct {
	// Names must each have MX records. Empty: no canary, negative answers
	// are trusted as they are (the behaviour of "--dns-canary none").
	Names []string
	// Interval is how long a check's result is used before the next one.
	// Default DefaultCanaryInterval.
	Interval time.Duration
	// Store shares results between processes using the same resolvers (the
	// worker plugs in Redis); nil keeps them in this process.
	Store CanaryStore
	// OnCheck is called after each check this process runs or loads (for
	// metrics); it must not block.
	OnCheck func(CanaryState)
}

// CanaryState is the outcome of one canary check.
type CanaryState struct {
	Healthy bool      `json:"healthy"`
	Reason  string    `json:"reason,omitempty"` // why not healthy
	Checked time.Time `json:"checked"`
}

// CanaryStore holds canary results under a key shared by every process that
// uses the same resolvers and names. Load's ok is false when nothing (or
// nothing readable) is stored; Store's ttl bounds how long it is kept.
type CanaryStore interface {
	LoadCanary(ctx context.Context, key string) (CanaryState, bool)
	StoreCanary(ctx context.Context, key string, st CanaryState, ttl time.Duration)
}

// dnsCanary is the canary of one resolver.
type dnsCanary struct {
	r        *DNSResolver
	names    []string
	interval time.Duration
	store    CanaryStore
	key      string
	onCheck  func(CanaryState)

	mu    sync.Mutex // held during a check: one check at a time per process
	state CanaryState
}

func newCanary(r *DNSResolver, cfg CanaryConfig) (*dnsCanary, error) {
	if len(cfg.Names) == 0 {
		return nil, nil
	}
	c := &dnsCanary{r: r, interval: cfg.Interval, store: cfg.Store, onCheck: cfg.OnCheck}
	if c.interval == 0 {
		c.interval = DefaultCanaryInterval
	}
	if c.interval < 0 {
		return nil, fmt.Errorf("canary interval %v: must be positive", c.interval)
	}
	for _, n := range cfg.Names {
		name, err := canonicalName(n)
		if err != nil {
			return nil, fmt.Errorf("canary name: %w", err)
		}
		if !slices.Contains(c.names, name) {
			c.names = append(c.names, name)
		}
	}
	// The key names the resolver set and the names: processes asking the
	// same servers the same questions share one result.
	servers := slices.Clone(r.servers)
	slices.Sort(servers)
	sum := sha256.Sum256([]byte(strings.Join(servers, ",") + "|" + strings.Join(c.names, ",")))
	c.key = hex.EncodeToString(sum[:8])
	return c, nil
}

// healthy returns nil when the resolver passed its last check (run now if
// the last is older than the interval), else why not.
func (c *dnsCanary) healthy(ctx context.Context) error {
	st := c.current(ctx)
	if st.Healthy {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrResolverUnhealthy, st.Reason)
}

// current returns a fresh state: this process's, the store's, or a new check.
func (c *dnsCanary) current(ctx context.Context) CanaryState {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.r.now()
	if !c.state.Checked.IsZero() && now.Sub(c.state.Checked) < c.interval {
		return c.state
	}
	if c.store != nil {
		if st, ok := c.store.LoadCanary(ctx, c.key); ok && now.Sub(st.Checked) < c.interval {
			c.set(st)
			return st
		}
	}
	st := c.check(ctx)
	if ctx.Err() != nil {
		// Our caller gave up, the resolver did not fail: report this
		// check as failed but do not remember it.
		return st
	}
	if c.store != nil {
		c.store.StoreCanary(ctx, c.key, st, 2*c.interval)
	}
	c.set(st)
	return st
}

func (c *dnsCanary) set(st CanaryState) {
	if st.Healthy != c.state.Healthy || c.state.Checked.IsZero() {
		lvl := slog.LevelInfo
		if !st.Healthy {
			lvl = slog.LevelWarn
		}
		c.r.log.LogAttrs(context.Background(), lvl, "dns canary",
			slog.Bool("healthy", st.Healthy), slog.String("reason", st.Reason),
			slog.Any("names", c.names), slog.Any("servers", c.r.servers))
	}
	c.state = st
	if c.onCheck != nil {
		c.onCheck(st)
	}
}

// check asks every canary name for MX records, bypassing the cache. The
// names are asked at once: against a resolver that does not answer, a check
// costs one query timeout, not one per name, and negative answers wait on it.
func (c *dnsCanary) check(ctx context.Context) CanaryState {
	st := CanaryState{Healthy: true, Checked: c.r.now()}
	why := make([]string, len(c.names))
	var wg sync.WaitGroup
	for i, n := range c.names {
		wg.Go(func() {
			res, err := c.r.lookup(ctx, n, dns.TypeMX)
			switch {
			case err != nil:
				why[i] = fmt.Sprintf("%s: %v", n, err)
			case res.nxdomain:
				why[i] = n + ": NXDOMAIN"
			case len(res.rrs) == 0:
				why[i] = n + ": no MX records"
			}
		})
	}
	wg.Wait()
	why = slices.DeleteFunc(why, func(s string) bool { return s == "" })
	if len(why) > 0 {
		st.Healthy = false
		st.Reason = "canary names did not resolve (" + strings.Join(why, "; ") + ")"
	}
	return st
}

// CanaryCheck runs the canary now (or loads a fresh shared result) and
// returns it; ok is false when no canary is configured. Doctor and the
// start-up self-audit report it.
func (r *DNSResolver) CanaryCheck(ctx context.Context) (st CanaryState, ok bool) {
	if r.canary == nil {
		return CanaryState{}, false
	}
	return r.canary.current(ctx), true
}

// CanaryNames returns the canary names in use (nil: no canary).
func (r *DNSResolver) CanaryNames() []string {
	if r.canary == nil {
		return nil
	}
	return slices.Clone(r.canary.names)
}

// RunCanary checks the canary every interval until ctx ends, so a resolver
// that turns bad is noticed (and logged, and counted) even between negative
// answers. It returns at once without a canary.
func (r *DNSResolver) RunCanary(ctx context.Context) {
	if r.canary == nil {
		return
	}
	t := time.NewTicker(r.canary.interval)
	defer t.Stop()
	for {
		r.canary.current(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// guardNegative holds back a negative answer while the canary fails: it
// becomes a temporary error (unknown/dns_error, retryable, not cached).
func (r *DNSResolver) guardNegative(ctx context.Context, name string, err error) error {
	if r.canary == nil {
		return err
	}
	herr := r.canary.healthy(ctx)
	if herr == nil {
		return err
	}
	return &DNSError{Name: dns.Fqdn(name), Qtype: "MX", Temporary: true,
		Err: fmt.Errorf("%w (answer was: %v)", herr, err)}
}
