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

// RedisCanaryStore shares the DNS canary's results (validator/canary.go)
// between every worker asking the same resolvers the same names: one worker
// checks per interval, the others read its answer, so a fleet adds no DNS
// load and agrees on whether negative answers may be trusted.
type RedisCanaryStore struct {
	rdb    redis.UniversalClient
	prefix string
	log    *slog.Logger
}

var _ validator.CanaryStore = (*RedisCanaryStore)(nil)

// NewRedisCanaryStore keeps results under prefix + "dnscanary:".
func NewRedisCanaryStore(rdb redis.UniversalClient, prefix string, log *slog.Logger) *RedisCanaryStore {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RedisCanaryStore{rdb: rdb, prefix: prefix, log: log}
}

func (s *RedisCanaryStore) key(k string) string { return s.prefix + "dnscanary:" + k }

// LoadCanary implements validator.CanaryStore. A Redis failure or an
// unreadable value is "nothing stored": the canary then checks itself.
func (s *RedisCanaryStore) LoadCanary(ctx context.Context, key string) (validator.CanaryState, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	b, err := s.rdb.Get(ctx, s.key(key)).Bytes()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			s.log.Warn("reading the shared DNS canary result", "err", err)
		}
		return validator.CanaryState{}, false
	}
	var st validator.CanaryState
	if err := json.Unmarshal(b, &st); err != nil || st.Checked.IsZero() {
		s.log.Warn("ignoring an unreadable shared DNS canary result", "key", s.key(key))
		return validator.CanaryState{}, false
	}
	return st, true
}

// StoreCanary implements validator.CanaryStore.
func (s *RedisCanaryStore) StoreCanary(ctx context.Context, key string, st validator.CanaryState, ttl time.Duration) {
	b, err := json.Marshal(st)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := s.rdb.Set(ctx, s.key(key), b, ttl).Err(); err != nil {
		s.log.Warn("sharing the DNS canary result", "err", err)
	}
}
