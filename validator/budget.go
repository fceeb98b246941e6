package validator

// Refused-RCPT budgets learnt at run time.
//
// A server counts the errors it gave one session and ends the session past a
// limit: Postfix sends "421 4.7.0 Error: too many errors" once the count
// reaches smtpd_hard_error_limit (20 by default, often 3 on sites that fight
// directory harvesting, and 1 under stress), counting every refused command,
// not only RCPT. The 421 comes right after the reply that reached the limit,
// before the next command is read, so it reaches us either unasked after
// that reply or as the "reply" to our next command. PoolConfig.MaxRejects is
// a guess made before we knew the server; once a 421 tells us the limit,
// sessions to that MX host stay one error below it, so that their QUIT is
// not met with another 421 (each is a "too many errors" in the server's log,
// the mark of a harvester; docs/reliability.md, "Servers that limit us
// during a session").

import (
	"context"
	"strings"
	"sync"
	"time"
)

// RejectBudgetTTL is how long a learnt budget holds. Limits change with the
// server's load (Postfix's stress mode lowers them for as long as it is
// overloaded) and with its configuration; an hour spares a host's every
// session of the next hour the error that taught us, and a host that was
// only stressed gets its full budget back soon after.
const RejectBudgetTTL = time.Hour

// RejectBudgets remembers per MX host name a refused-RCPT budget below
// PoolConfig.MaxRejects, learnt from a server that ended a session for its
// errors. The worker's implementation shares it through Redis, so one
// worker's 421 teaches them all. Implementations must be safe for
// concurrent use; a failing backend answers "none learnt" and drops the
// write.
type RejectBudgets interface {
	// RejectBudget returns the learnt budget of host; ok is false when
	// none is.
	RejectBudget(ctx context.Context, host string) (n int, ok bool)
	// LowerRejectBudget records n (at least 1) for host for ttl, unless a
	// lower budget is already recorded; an equal one is renewed.
	LowerRejectBudget(ctx context.Context, host string, n int, ttl time.Duration)
}

// MemoryRejectBudgets is the in-process RejectBudgets: what `mxprobe check`
// uses, and the Prober's own first level in front of a shared one.
type MemoryRejectBudgets struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]budgetEntry
}

type budgetEntry struct {
	n       int
	expires time.Time
}

// memoryBudgetsMax bounds the hosts remembered; past it the map is emptied,
// like the Prober's other bounded memories (forgetting costs one more 421).
const memoryBudgetsMax = 4096

var _ RejectBudgets = (*MemoryRejectBudgets)(nil)

// NewMemoryRejectBudgets returns an empty in-process RejectBudgets.
func NewMemoryRejectBudgets() *MemoryRejectBudgets {
	return &MemoryRejectBudgets{now: time.Now, m: make(map[string]budgetEntry)}
}

// BudgetHost is the key budgets are kept under: the MX host name in lower
// case without its trailing dot.
func BudgetHost(host string) string { return strings.ToLower(strings.TrimSuffix(host, ".")) }

// RejectBudget implements RejectBudgets.
func (m *MemoryRejectBudgets) RejectBudget(_ context.Context, host string) (int, bool) {
	host = BudgetHost(host)
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.m[host]
	if !ok {
		return 0, false
	}
	if !m.now().Before(e.expires) {
		delete(m.m, host)
		return 0, false
	}
	return e.n, true
}

// LowerRejectBudget implements RejectBudgets.
func (m *MemoryRejectBudgets) LowerRejectBudget(_ context.Context, host string, n int, ttl time.Duration) {
	host = BudgetHost(host)
	n = max(n, 1)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if e, ok := m.m[host]; ok && now.Before(e.expires) && e.n < n {
		return
	}
	if _, ok := m.m[host]; !ok && len(m.m) >= memoryBudgetsMax {
		clear(m.m)
	}
	m.m[host] = budgetEntry{n: n, expires: now.Add(ttl)}
}

// budgetAfterLimit is the budget that keeps a session one error below the
// limit a server just enforced: its 421 came after seen errors, so its
// limit is seen, and we stop at seen-1 (at least 1: a server that ends the
// session after its first refusal still gets asked one address a session).
func budgetAfterLimit(seen int) int { return max(seen-1, 1) }

// rejectBudget is the refused-RCPT budget of a new session to host: the
// configured MaxRejects, or less when one was learnt.
func (p *Prober) rejectBudget(ctx context.Context, host string) int {
	n := p.cfg.Pool.MaxRejects
	if b, ok := p.localBudgets.RejectBudget(ctx, host); ok {
		n = min(n, b)
	}
	if p.budgets != nil {
		if b, ok := p.budgets.RejectBudget(ctx, host); ok {
			n = min(n, b)
			// Kept near: parked sessions are checked without Redis.
			p.localBudgets.LowerRejectBudget(ctx, host, b, RejectBudgetTTL)
		}
	}
	return max(n, 1)
}

// learnLimit records what a "too many errors" 421 taught about host after
// the session had seen errors refusals.
func (p *Prober) learnLimit(ctx context.Context, host string, seen int) {
	n := budgetAfterLimit(seen)
	p.localBudgets.LowerRejectBudget(ctx, host, n, RejectBudgetTTL)
	if p.budgets != nil {
		p.budgets.LowerRejectBudget(ctx, host, n, RejectBudgetTTL)
	}
	p.log.Info("probe: server ended a session for its errors; fewer refusals per session to this host",
		"host", host, "errors", seen, "budget", n, "for", RejectBudgetTTL)
}
