package worker

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/tasks"
)

// consumedQueues returns the queues Start hands asynq: the configured ones
// with their shards (New), and every shard of a consumed priority that
// Redis already lists, with the priority's weight. The second part is what
// keeps a producer with another shard setting from stranding tasks in
// queues no worker reads; a shard that appears after Start is picked up at
// the next restart, and the log names the queues so a mismatch shows.
func (w *Worker) consumedQueues() map[string]int {
	queues := maps.Clone(w.queues)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	known, err := listQueues(ctx, w.rdb)
	if err != nil {
		w.log.Warn("could not list the queues Redis knows; consuming the configured ones only", "err", err)
	}
	var found []string
	for _, q := range known {
		if _, ok := queues[q]; ok {
			continue
		}
		p, ok := tasks.PriorityOf(q)
		if !ok {
			continue
		}
		weight, ok := w.cfg.Queues[p]
		if !ok {
			continue // this worker does not serve the priority
		}
		queues[q] = weight
		found = append(found, q)
	}
	if len(found) > 0 {
		slices.Sort(found)
		w.log.Warn("consuming queue shards this worker's --queue-shards does not name: a producer uses another setting", "queues", found, "queue_shards", w.cfg.QueueShards)
	}
	names := slices.Sorted(maps.Keys(queues))
	w.log.Info("consuming queues", "queues", names, "queue_shards", w.cfg.QueueShards)
	return queues
}

// listQueues returns the queues asynq has registered in Redis.
func listQueues(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	type result struct {
		qs  []string
		err error
	}
	done := make(chan result, 1)
	go func() {
		qs, err := asynq.NewInspectorFromRedisClient(rdb).Queues()
		done <- result{qs, err}
	}()
	select {
	case r := <-done:
		return r.qs, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// isCritical reports whether queue is the critical priority or one of its
// shards: sign-up forms wait on those.
func isCritical(queue string) bool {
	p, _ := tasks.PriorityOf(queue)
	return p == tasks.QueueCritical
}
