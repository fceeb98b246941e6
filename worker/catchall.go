package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/validator"
)

// DefaultCatchAllTTL is how long a domain's catch-all status is shared:
// about a day (docs/smtp.md §3); a domain rarely switches, and every random RCPT saved is a
// guaranteed refusal that never counts toward the server's harvest limits.
const DefaultCatchAllTTL = 24 * time.Hour

// catchAllLocalTTL bounds how long a worker answers from its own memory
// without asking Redis: short next to the shared TTL, so an answer that
// changes (a domain probed again after the shared entry expired) reaches
// every worker within minutes, long enough that a hot domain costs no Redis
// round trip per address.
const catchAllLocalTTL = 10 * time.Minute

// RedisCatchAllCache shares each domain's catch-all status among every
// worker: once one worker has sent the random RCPT to a domain, no
// other worker sends it again until the entry expires. Like RedisMXCache it
// keeps an in-process copy in front of Redis. A Redis failure is a miss (the
// prober then asks the server, as without a cache) and a dropped write.
type RedisCatchAllCache struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	local  *validator.MemoryCatchAllCache
	hook   CacheHook
	log    *slog.Logger
}

var _ validator.CatchAllCache = (*RedisCatchAllCache)(nil)

// NewRedisCatchAllCache returns a two-level catch-all cache: up to localSize
// domains in process (for at most ten minutes each), all of them in Redis
// under prefix for ttl (default DefaultCatchAllTTL). hook, if not nil, sees
// every lookup as cache "catch_all".
func NewRedisCatchAllCache(rdb redis.UniversalClient, prefix string, ttl time.Duration, localSize int, hook CacheHook, log *slog.Logger) *RedisCatchAllCache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if prefix == "" {
		prefix = "mxprobe:"
	}
	if ttl <= 0 {
		ttl = DefaultCatchAllTTL
	}
	return &RedisCatchAllCache{rdb: rdb, prefix: prefix, ttl: ttl,
		local: validator.NewMemoryCatchAllCache(min(ttl, catchAllLocalTTL), localSize), hook: hook, log: log}
}

// The {domain} hash tag keeps the key on one slot in Redis Cluster, like
// the other per-domain keys.
func (c *RedisCatchAllCache) key(domain string) string { return c.prefix + "catchall:{" + domain + "}" }

func (c *RedisCatchAllCache) observe(hit bool) {
	if c.hook != nil {
		c.hook("catch_all", hit)
	}
}

// CatchAll implements validator.CatchAllCache: in process first, then Redis.
func (c *RedisCatchAllCache) CatchAll(ctx context.Context, domain string) (catchAll, known bool) {
	domain = strings.ToLower(domain)
	if domain == "" {
		c.observe(false)
		return false, false
	}
	if v, ok := c.local.CatchAll(ctx, domain); ok {
		c.observe(true)
		return v, true
	}
	s, err := c.rdb.Get(ctx, c.key(domain)).Result()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			c.log.Warn("shared catch-all cache unavailable", "err", err)
		}
		c.observe(false)
		return false, false
	}
	switch s {
	case "1":
		catchAll = true
	case "0":
	default:
		// Not ours (or damaged): a miss; the next conclusive probe
		// overwrites it.
		c.observe(false)
		return false, false
	}
	c.local.SetCatchAll(ctx, domain, catchAll)
	c.observe(true)
	return catchAll, true
}

// SetCatchAll implements validator.CatchAllCache: in process and in Redis.
func (c *RedisCatchAllCache) SetCatchAll(ctx context.Context, domain string, catchAll bool) {
	domain = strings.ToLower(domain)
	if domain == "" {
		return
	}
	c.local.SetCatchAll(ctx, domain, catchAll)
	v := "0"
	if catchAll {
		v = "1"
	}
	if err := c.rdb.Set(ctx, c.key(domain), v, c.ttl).Err(); err != nil {
		c.log.Warn("shared catch-all cache write failed", "err", err)
	}
}
