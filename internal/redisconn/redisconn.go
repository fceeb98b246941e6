// Package redisconn builds the Redis clients mxprobe's commands use where
// go-redis's defaults do not fit: a Redis Cluster client that follows a
// failover within seconds. It is a go-redis hook and two options, not a
// client of its own.
package redisconn

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterReloadInterval is how often a cluster client reloads the slot map
// by itself. go-redis's 60 s default leaves every client dialling a dead
// master for up to a minute after its replica was promoted; reloads also
// follow MOVED and READONLY replies, and (reloadOnNetError) failed dials.
const ClusterReloadInterval = 5 * time.Second

// NewClusterClient is a Redis Cluster client that notices a failover
// within seconds (docs/reliability.md, "Redis Cluster failover").
func NewClusterClient(opt *redis.ClusterOptions) *redis.ClusterClient {
	c, _ := newClusterClientHook(opt)
	return c
}

func newClusterClientHook(opt *redis.ClusterOptions) (*redis.ClusterClient, *reloadOnNetError) {
	opt.ClusterStateReloadInterval = ClusterReloadInterval
	c := redis.NewClusterClient(opt)
	h := &reloadOnNetError{c: c, every: time.Second}
	c.AddHook(h)
	return c, h
}

// reloadOnNetError reloads the cluster's slot map when a command fails on
// the network (a master that died answers no more, and go-redis reloads
// only on MOVED, ASK, READONLY or its interval), at most once per every.
type reloadOnNetError struct {
	c      *redis.ClusterClient
	every  time.Duration
	last   atomic.Int64 // unix nanoseconds of the last reload started
	reload atomic.Int64 // reloads started (tests)
}

func (h *reloadOnNetError) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil {
			h.maybeReload()
		}
		return conn, err
	}
}

func (h *reloadOnNetError) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if isNetError(err) {
			h.maybeReload()
		}
		return err
	}
}

func (h *reloadOnNetError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if isNetError(err) {
			h.maybeReload()
		}
		return err
	}
}

func (h *reloadOnNetError) maybeReload() {
	now := time.Now().UnixNano()
	last := h.last.Load()
	if now-last < int64(h.every) || !h.last.CompareAndSwap(last, now) {
		return
	}
	h.reload.Add(1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.c.ReloadState(ctx)
	}()
}

func isNetError(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}
