package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/validator"
)

// CacheHook observes cache lookups (hit or miss) by cache name ("mx",
// "result", "catch_all"), for metrics. nil observes nothing.
type CacheHook func(cache string, hit bool)

// RedisMXCache shares DNS answers (validator.MXCacheEntry, positive and
// negative, each with its own expiry from the DNS TTL) among every worker, in
// front of which each process keeps its in-memory LRU: a hot domain costs no
// Redis round trip, a domain another worker resolved costs no DNS query.
type RedisMXCache struct {
	rdb    redis.UniversalClient
	prefix string
	local  *validator.MemoryMXCache
	hook   CacheHook
	log    *slog.Logger
	now    func() time.Time
}

var _ validator.MXCache = (*RedisMXCache)(nil)

// NewRedisMXCache returns a two-level MX cache: localSize domains in process,
// all of them in Redis under prefix.
func NewRedisMXCache(rdb redis.UniversalClient, prefix string, localSize int, hook CacheHook, log *slog.Logger) *RedisMXCache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if prefix == "" {
		prefix = "mxprobe:"
	}
	return &RedisMXCache{rdb: rdb, prefix: prefix, local: validator.NewMemoryMXCache(localSize), hook: hook, log: log, now: time.Now}
}

func (c *RedisMXCache) key(domain string) string { return c.prefix + "mx:{" + domain + "}" }

func (c *RedisMXCache) observe(hit bool) {
	if c.hook != nil {
		c.hook("mx", hit)
	}
}

// Get looks in process first, then in Redis. A Redis failure is a miss: DNS
// is the source of truth and still answers.
func (c *RedisMXCache) Get(ctx context.Context, domain string) (validator.MXCacheEntry, bool) {
	if e, ok := c.local.Get(ctx, domain); ok && c.now().Before(e.Expires) {
		c.observe(true)
		return e, true
	}
	b, err := c.rdb.Get(ctx, c.key(domain)).Bytes()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			c.log.Warn("shared MX cache unavailable", "err", err)
		}
		c.observe(false)
		return validator.MXCacheEntry{}, false
	}
	var e validator.MXCacheEntry
	if err := json.Unmarshal(b, &e); err != nil || e.Set.Domain == "" {
		c.observe(false)
		return validator.MXCacheEntry{}, false
	}
	c.local.Set(ctx, domain, e)
	c.observe(true)
	return e, true
}

// Set stores e in process and in Redis, expiring with the DNS TTL.
func (c *RedisMXCache) Set(ctx context.Context, domain string, e validator.MXCacheEntry) {
	c.local.Set(ctx, domain, e)
	ttl := e.Expires.Sub(c.now())
	if ttl < time.Second {
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	if err := c.rdb.Set(ctx, c.key(domain), b, ttl).Err(); err != nil {
		c.log.Warn("shared MX cache write failed", "err", err)
	}
}
