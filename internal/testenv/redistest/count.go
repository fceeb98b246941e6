package redistest

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Counter is a go-redis hook that counts what a client sends: round trips
// (a command alone or a whole pipeline is one) and commands. A connection's
// handshake (HELLO, CLIENT SETINFO) counts as neither. Add it with
// client.AddHook(c).
type Counter struct{ trips, cmds atomic.Int64 }

// RoundTrips is the number of round trips so far.
func (c *Counter) RoundTrips() int64 { return c.trips.Load() }

// Commands is the number of commands so far.
func (c *Counter) Commands() int64 { return c.cmds.Load() }

func handshake(cmd redis.Cmder) bool {
	name := cmd.Name()
	return name == "hello" || name == "client"
}

func (c *Counter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *Counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !handshake(cmd) {
			c.trips.Add(1)
			c.cmds.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (c *Counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := int64(0)
		for _, cmd := range cmds {
			if !handshake(cmd) {
				n++
			}
		}
		if n > 0 {
			c.trips.Add(1)
			c.cmds.Add(n)
		}
		return next(ctx, cmds)
	}
}
