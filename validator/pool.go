package validator

// The session pool.
//
// A probe that ends well does not QUIT: its session is parked, keyed by MX
// host name, address and sender, and the next Probe for that host takes it
// and sends only what the new address needs. Every session we do not open
// is both speed and politeness (docs/design.md, "Sessions are reused"): one TCP
// connect, banner, EHLO and STARTTLS fewer, and one rate-limit token fewer.
//
// Between addresses of the same domain the MAIL transaction is kept open and
// only RCPT is sent (RFC 5321 §4.5.4.1: "MAIL, RCPT, RCPT, ..." is how one
// message goes to several recipients); when the domain changes, RSET (RFC
// 5321 §4.1.1.5) ends the transaction and the same MAIL FROM opens the next,
// so each transaction carries recipients of one domain, as an MTA's queue
// manager groups them. MAIL FROM is byte-identical every time, so a
// greylister sees the same triplet on the retry (docs/smtp.md §2).
//
// The bounds keep harvest defences from tripping (docs/smtp.md §4): at
// most MaxRcpts real recipients and MaxRejects refused RCPTs (the catch-all
// probe's included) per session, well under Postfix's
// smtpd_soft_error_limit of 10; a parked session is closed with QUIT after
// IdleTimeout and never lives past MaxAge. Any 4yz or 5yz before RCPT, a 421
// anywhere, a reply asking for a cool-down or a new session, an I/O or
// protocol error (a botched client) closes the session instead of parking it.

import (
	"context"
	"strings"
	"sync"
	"time"
)

// PoolConfig bounds session reuse. Zero values select the defaults.
type PoolConfig struct {
	// Disabled turns reuse off: every probe opens its own session and
	// QUITs it. Reuse is on by default because it is the politeness lever.
	Disabled bool
	// MaxRcpts caps the real recipients asked in one session; default 10
	// (docs/smtp.md §4: well below Postfix's soft error limit).
	MaxRcpts int
	// MaxRejects closes a session after this many refused RCPTs (4yz or
	// 5yz, the catch-all probe's included); default 3, far below Postfix's
	// smtpd_soft_error_limit of 10 after which every reply is delayed.
	// A server that ends a session for its errors lowers it for that MX
	// host (budget.go); then every error of the session counts, as the
	// server counts them.
	MaxRejects int
	// IdleTimeout closes a parked session (with QUIT) when no probe took it;
	// default 5s, far below any server's idle timeout (Postfix 300 s).
	IdleTimeout time.Duration
	// MaxAge closes a session this long after it was opened; default 60s,
	// below the rate limiter's 2-minute session lease.
	MaxAge time.Duration
	// MaxIdle caps the parked sessions of one Prober, bounding memory and
	// file descriptors; default 256. Past it a session is closed, not parked.
	MaxIdle int
}

const (
	defaultPoolMaxRcpts    = 10
	defaultPoolMaxRejects  = 3
	defaultPoolIdleTimeout = 5 * time.Second
	defaultPoolMaxAge      = 60 * time.Second
	defaultPoolMaxIdle     = 256
)

// Admission is the Gate's hold on one admitted SMTP session: typically a
// rate-limit session lease. A pooled session keeps its Admission across the
// probes it serves; taking a parked session calls no Admit, because it opens
// no new session and costs no new token.
type Admission interface {
	// Report receives the outcome of every probe the session decided, at
	// once: a reply that asks for a cool-down (Outcome.Action ==
	// ActionCoolDown) must reach the rate limiter when it is read, not when
	// the session closes.
	Report(Outcome)
	// Reusable is asked before a parked session serves another probe;
	// false closes the session instead (say, its provider is cooling down).
	Reusable() bool
	// Done is called exactly once, when the session is closed.
	Done()
}

// poolKey names the sessions that may serve a probe: the same MX host at
// the same address, opened with the same sender identity.
type poolKey struct {
	host   string
	addr   string
	sender string
}

// smtpSession is one open conversation and what the bounds need of it.
type smtpSession struct {
	c       *client
	key     poolKey
	adm     Admission
	born    time.Time
	rcpts   int
	rejects int
	// budget is the errors the session may have before it is closed:
	// PoolConfig.MaxRejects or a learnt lower budget (budget.go).
	budget int
	// learnt: the server's closing 421 has been learnt from.
	learnt bool
	// greeted: banner, EHLO and STARTTLS are done.
	greeted bool
	// tx names the open MAIL transaction (recipient domain and SMTPUTF8);
	// empty when none is open.
	tx    string
	timer *time.Timer
}

// sessionPool holds parked sessions. Whoever removes a session from idle
// under mu owns it: a probe that takes it, the idle timer that expires it,
// or close.
type sessionPool struct {
	cfg     PoolConfig
	release func(*smtpSession) // QUIT, close, Admission.Done

	mu     sync.Mutex
	idle   map[poolKey][]*smtpSession
	n      int
	closed bool
	bg     sync.WaitGroup
	// parkedC is closed, and replaced, whenever a session is parked: await
	// waits on it.
	parkedC chan struct{}
}

func newSessionPool(cfg PoolConfig, release func(*smtpSession)) *sessionPool {
	return &sessionPool{cfg: cfg, release: release, idle: make(map[poolKey][]*smtpSession), parkedC: make(chan struct{})}
}

// parkedAddr returns the address of a session parked for host with sender,
// if any; mu must not be held.
func (sp *sessionPool) parkedAddr(host, sender string) (string, bool) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.parkedAddrLocked(host, sender)
}

func (sp *sessionPool) parkedAddrLocked(host, sender string) (string, bool) {
	for k, list := range sp.idle {
		if k.host == host && k.sender == sender && len(list) > 0 {
			return k.addr, true
		}
	}
	return "", false
}

// await blocks until a session for host with sender is parked (true), or
// until any session parks or ends, ctx ends or the pool closes: then it
// reports whether one for host is parked. Callers loop while their reason
// to wait lasts (a session of theirs still open).
func (sp *sessionPool) await(ctx context.Context, host, sender string) bool {
	sp.mu.Lock()
	if _, ok := sp.parkedAddrLocked(host, sender); ok {
		sp.mu.Unlock()
		return true
	}
	ch := sp.parkedC
	if sp.closed {
		ch = nil // nothing will park or end here again: only ctx ends it
	}
	sp.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
	_, ok := sp.parkedAddr(host, sender)
	return ok
}

// changed wakes every await: a session parked or ended.
func (sp *sessionPool) changed() {
	sp.mu.Lock()
	close(sp.parkedC)
	sp.parkedC = make(chan struct{})
	sp.mu.Unlock()
}

// take returns the most recently parked session for key, or nil.
func (sp *sessionPool) take(key poolKey) *smtpSession {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	list := sp.idle[key]
	if len(list) == 0 {
		return nil
	}
	s := list[len(list)-1]
	sp.remove(s)
	if s.timer.Stop() {
		// The timer's func will never run: settle its count here.
		sp.bg.Done()
	}
	return s
}

// remove unlinks s; mu must be held. It reports whether s was parked.
func (sp *sessionPool) remove(s *smtpSession) bool {
	list := sp.idle[s.key]
	for i, x := range list {
		if x == s {
			list = append(list[:i], list[i+1:]...)
			if len(list) == 0 {
				delete(sp.idle, s.key)
			} else {
				sp.idle[s.key] = list
			}
			sp.n--
			return true
		}
	}
	return false
}

// park keeps s for the next probe, or reports false when the pool is full or
// closed (the caller closes s). The idle timer never lets s outlive MaxAge.
func (sp *sessionPool) park(s *smtpSession, now time.Time) bool {
	wait := min(sp.cfg.IdleTimeout, sp.cfg.MaxAge-now.Sub(s.born))
	if wait <= 0 {
		return false
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed || sp.n >= sp.cfg.MaxIdle {
		return false
	}
	sp.idle[s.key] = append(sp.idle[s.key], s)
	sp.n++
	close(sp.parkedC) // wake every await
	sp.parkedC = make(chan struct{})
	sp.bg.Add(1)
	s.timer = time.AfterFunc(wait, func() {
		defer sp.bg.Done()
		sp.mu.Lock()
		mine := sp.remove(s)
		sp.mu.Unlock()
		if mine {
			sp.release(s)
		}
	})
	return true
}

// closeAll closes every parked session and waits for the closings, also
// those the idle timers started.
func (sp *sessionPool) closeAll() {
	sp.mu.Lock()
	sp.closed = true
	var all []*smtpSession
	for _, list := range sp.idle {
		all = append(all, list...)
	}
	clear(sp.idle)
	sp.n = 0
	close(sp.parkedC) // wake every await: nothing will park again
	sp.parkedC = make(chan struct{})
	for _, s := range all {
		if s.timer.Stop() {
			// The timer's func will never run: settle its count here.
			sp.bg.Done()
		}
	}
	sp.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() { sp.release(s) })
	}
	wg.Wait()
	sp.bg.Wait()
}

// parked counts parked sessions (tests).
func (sp *sessionPool) parked() int {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.n
}

// CatchAllCache remembers per domain whether it accepts every recipient, so
// that later addresses of the domain do not send the random RCPT again:
// every random probe is a guaranteed refusal that counts toward harvest
// limits (docs/smtp.md §3), so it is remembered for a day. Implementations must be safe for concurrent use; a failing
// backend answers "not known" and drops the write.
type CatchAllCache interface {
	// CatchAll reports what is known of domain: known is false on a miss.
	CatchAll(ctx context.Context, domain string) (catchAll, known bool)
	// SetCatchAll records a conclusive catch-all probe.
	SetCatchAll(ctx context.Context, domain string, catchAll bool)
}

// MemoryCatchAllCache is the in-process CatchAllCache: bounded, with a TTL.
type MemoryCatchAllCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[string]catchAllEntry
}

type catchAllEntry struct {
	catchAll bool
	expires  time.Time
}

var _ CatchAllCache = (*MemoryCatchAllCache)(nil)

// NewMemoryCatchAllCache keeps results for ttl (default 24 h) and at most
// max domains (default 100,000; past it the cache is emptied rather than
// grown, like the Prober's other bounded memories).
func NewMemoryCatchAllCache(ttl time.Duration, max int) *MemoryCatchAllCache {
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	if max <= 0 {
		max = 100_000
	}
	return &MemoryCatchAllCache{ttl: ttl, max: max, now: time.Now, m: make(map[string]catchAllEntry)}
}

// CatchAll implements CatchAllCache.
func (c *MemoryCatchAllCache) CatchAll(_ context.Context, domain string) (bool, bool) {
	domain = strings.ToLower(domain)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[domain]
	if !ok {
		return false, false
	}
	if !c.now().Before(e.expires) {
		delete(c.m, domain)
		return false, false
	}
	return e.catchAll, true
}

// SetCatchAll implements CatchAllCache.
func (c *MemoryCatchAllCache) SetCatchAll(_ context.Context, domain string, catchAll bool) {
	domain = strings.ToLower(domain)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[domain]; !ok && len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[domain] = catchAllEntry{catchAll: catchAll, expires: c.now().Add(c.ttl)}
}
