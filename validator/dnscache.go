package validator

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// MXCacheEntry is one cached outcome of ResolveMX. Negative outcomes are
// cached too (RFC 2308), recorded by Reason so that a shared backend (Redis)
// can store the entry as plain data and ResolveMX can rebuild the error.
type MXCacheEntry struct {
	// Set is the resolved set for a positive entry; for negative entries it
	// carries only Domain (and NullMX).
	Set MXSet `json:"set"`
	// Reason is empty for a positive entry, otherwise ReasonDomainNotFound,
	// ReasonNoMX or ReasonNullMX. Temporary failures are never cached.
	Reason Reason `json:"reason,omitempty"`
	// Expires is when the entry stops being valid; the resolver compares it
	// with its own clock, so a cache need not know the time.
	Expires time.Time `json:"expires"`
}

// MXCache stores ResolveMX outcomes keyed by domain (lower-case, no trailing
// dot). Implementations must be safe for concurrent use and must not keep
// references to slices in a Set they are given or return (the resolver copies
// before handing sets out). A cache may drop entries at any time; Get of an
// expired entry may return it, the resolver ignores it.
type MXCache interface {
	Get(ctx context.Context, domain string) (MXCacheEntry, bool)
	Set(ctx context.Context, domain string, e MXCacheEntry)
}

// MemoryMXCache is the default MXCache: an in-process LRU bounded in entries,
// so a flood of distinct domains cannot grow memory without limit.
type MemoryMXCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // front = most recently used; values are *memEntry
	items map[string]*list.Element
}

type memEntry struct {
	key string
	e   MXCacheEntry
}

var _ MXCache = (*MemoryMXCache)(nil)

// NewMemoryMXCache returns an LRU cache holding at most size entries
// (at least 1).
func NewMemoryMXCache(size int) *MemoryMXCache {
	return &MemoryMXCache{max: max(size, 1), ll: list.New(), items: make(map[string]*list.Element)}
}

// Get returns the entry for domain, marking it recently used.
func (c *MemoryMXCache) Get(_ context.Context, domain string) (MXCacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[domain]
	if !ok {
		return MXCacheEntry{}, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*memEntry).e, true
}

// Set stores e for domain, evicting the least recently used entry when full.
func (c *MemoryMXCache) Set(_ context.Context, domain string, e MXCacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[domain]; ok {
		el.Value.(*memEntry).e = e
		c.ll.MoveToFront(el)
		return
	}
	c.items[domain] = c.ll.PushFront(&memEntry{key: domain, e: e})
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*memEntry).key)
	}
}

// Len is the number of entries held, expired ones included.
func (c *MemoryMXCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
