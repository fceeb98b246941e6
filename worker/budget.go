package worker

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/validator"
)

// RedisRejectBudgets shares the refused-RCPT budgets the validator learns
// from servers that end a session for its errors (validator/budget.go), so
// that one worker's "421 too many errors" keeps every worker's sessions to
// that MX host below the limit. It costs one GET per new SMTP session.
type RedisRejectBudgets struct {
	rdb    redis.UniversalClient
	prefix string
	log    *slog.Logger
}

var _ validator.RejectBudgets = (*RedisRejectBudgets)(nil)

// NewRedisRejectBudgets keeps budgets under prefix.
func NewRedisRejectBudgets(rdb redis.UniversalClient, prefix string, log *slog.Logger) *RedisRejectBudgets {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RedisRejectBudgets{rdb: rdb, prefix: prefix, log: log}
}

func (b *RedisRejectBudgets) key(host string) string {
	return b.prefix + "rejectbudget:{" + validator.BudgetHost(host) + "}"
}

// RejectBudget implements validator.RejectBudgets. A Redis failure is "none
// learnt": the configured budget applies, as before anything was learnt.
func (b *RedisRejectBudgets) RejectBudget(ctx context.Context, host string) (int, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := b.rdb.Get(ctx, b.key(host)).Result()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			b.log.Warn("reading a learnt reject budget", "mx_host", host, "err", err)
		}
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// lowerScript records ARGV[1] unless a lower budget is held; an equal or
// higher one is replaced and its TTL renewed.
var lowerScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]))
if cur and cur < tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// LowerRejectBudget implements validator.RejectBudgets.
func (b *RedisRejectBudgets) LowerRejectBudget(ctx context.Context, host string, n int, ttl time.Duration) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := lowerScript.Run(ctx, b.rdb, []string{b.key(host)}, max(n, 1), ttl.Milliseconds()).Err(); err != nil {
		b.log.Warn("sharing a learnt reject budget", "mx_host", host, "err", err)
	}
}
