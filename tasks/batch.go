package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// A batch's completion is kept here, by the package producers and workers
// share, so that whichever process sees the last row end sends the
// batch-done webhook, exactly once:
//
//	mxprobe:batch:{id}       hash: total (rows queued), webhook (URL or ""), fired
//	mxprobe:batch:{id}:rows  set of the task ids that ended (dropped once fired)
//
// The hash tag keeps both in one Cluster slot. A row's end is counted once
// however often its task runs (at least once), and "fired" is set with the
// count in one script, so a webhook is enqueued once even when the last row
// ends while the producer is still recording the batch (BatchStarted sees
// every row done and fires itself). The webhook is queued before it is
// marked sent, so a failure in between is repaired by the next row end or
// the task's retry (the callback's task id keeps it to one).

// Batch marks a task as a row of batch id (see BatchStarted).
func Batch(id string) Option { return func(o *enqueueOptions) { o.batch = id } }

// BatchDone is the body of a batch-done webhook.
type BatchDone struct {
	Event      string `json:"event"` // "batch.done"
	BatchID    string `json:"batch_id"`
	Total      int    `json:"total"`
	StatusURL  string `json:"status_url"`
	ResultsURL string `json:"results_url"`
}

// BatchCallbackRetries is how often a batch-done webhook is retried.
const BatchCallbackRetries = 20

// BatchKeepFor is how long a batch's completion record lives after its
// last change: longer than its rows may take (the workers give up within a
// day by default).
const BatchKeepFor = 48 * time.Hour

func batchKeys(id string) []string {
	h := "mxprobe:batch:{" + id + "}"
	return []string{h, h + ":rows"}
}

// batchScript records a row's end (ARGV[1] "row", ARGV[2] its task id) or
// the batch's start (ARGV[1] "start", ARGV[2] the rows queued, ARGV[3] the
// webhook) and returns {1, webhook, total} when every row has ended and the
// webhook is not yet queued, else {0, "", 0}. ARGV[4] is the keys' TTL in
// ms. It does not mark the webhook sent: the caller queues it first (its
// task id makes a second queueing a no-op) and then calls batchSentScript,
// so a failure in between leaves the next row end, or the task's retry, to
// queue it again.
var batchScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'fired') then return {0, '', 0} end
if ARGV[1] == 'row' then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
else
  redis.call('HSET', KEYS[1], 'total', ARGV[2], 'webhook', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '-1')
if total < 0 then return {0, '', 0} end
if redis.call('SCARD', KEYS[2]) >= total then
  return {1, redis.call('HGET', KEYS[1], 'webhook') or '', total}
end
return {0, '', 0}
`)

// batchSentScript marks the webhook queued and drops the set of ended rows,
// which is no longer needed.
var batchSentScript = redis.NewScript(`
redis.call('HSET', KEYS[1], 'fired', '1')
redis.call('DEL', KEYS[2])
return 1
`)

func runBatch(ctx context.Context, rdb redis.UniversalClient, id, mode, arg, webhook string, ttl time.Duration) (string, int, bool, error) {
	r, err := batchScript.Run(ctx, rdb, batchKeys(id), mode, arg, webhook, ttl.Milliseconds()).Slice()
	if err != nil {
		return "", 0, false, fmt.Errorf("batch %s: %w", id, err)
	}
	if len(r) != 3 {
		return "", 0, false, errors.New("batch script: unexpected reply")
	}
	fire, _ := r[0].(int64)
	url, _ := r[1].(string)
	total, _ := r[2].(int64)
	return url, int(total), fire == 1, nil
}

// fireBatch queues the webhook of a batch found done, then marks it sent.
func fireBatch(ctx context.Context, rdb redis.UniversalClient, ac *asynq.Client, queue, id, url string, total int) error {
	if url != "" {
		if err := EnqueueBatchCallback(ctx, ac, queue, id, url, total); err != nil {
			return err
		}
	}
	return batchSentScript.Run(ctx, rdb, batchKeys(id)).Err()
}

// BatchStarted records that batch id has total rows queued (tasks made
// with the Batch option) in queue and, when webhook is not empty, that it
// is to be told when they have all ended. It is called once the rows are
// queued; if they have all ended by then, it enqueues the webhook itself.
func (c *Client) BatchStarted(ctx context.Context, id, queue string, total int, webhook string) error {
	url, n, fire, err := runBatch(ctx, c.rdb, id, "start", fmt.Sprint(total), webhook, max(c.retention, BatchKeepFor))
	if err != nil || !fire {
		return err
	}
	return fireBatch(ctx, c.rdb, c.ac, queue, id, url, n)
}

// BatchForget removes a batch's completion record and its webhook task, if
// queued: the producer could not record the batch after all.
func (c *Client) BatchForget(ctx context.Context, id, queue string) {
	_ = c.rdb.Del(ctx, batchKeys(id)...).Err()
	_ = c.insp.DeleteTask(queue, "cb_batch_"+id)
}

// BatchRowEnded records that a row of batch id ended with a final result;
// when that was the last one and the batch has a webhook, it enqueues the
// webhook on ac (the worker's client) in queue.
func BatchRowEnded(ctx context.Context, rdb redis.UniversalClient, ac *asynq.Client, queue, id, taskID string) error {
	url, total, fire, err := runBatch(ctx, rdb, id, "row", taskID, "", BatchKeepFor)
	if err != nil || !fire {
		return err
	}
	return fireBatch(ctx, rdb, ac, queue, id, url, total)
}

// EnqueueBatchCallback enqueues the signed POST of a BatchDone to url, one
// task per batch (a second call is a no-op).
func EnqueueBatchCallback(ctx context.Context, ac *asynq.Client, queue, id, url string, total int) error {
	body, err := json.Marshal(BatchDone{Event: "batch.done", BatchID: id, Total: total,
		StatusURL: "/v1/batches/" + id, ResultsURL: "/v1/batches/" + id + "/results"})
	if err != nil {
		return err
	}
	cp, err := json.Marshal(CallbackPayload{V: PayloadVersion, URL: url, EventID: "batch_" + id, TaskID: "batch_" + id, Body: body})
	if err != nil {
		return err
	}
	_, err = ac.EnqueueContext(ctx, asynq.NewTask(TypeCallback, cp), asynq.Queue(queue),
		asynq.TaskID("cb_batch_"+id), asynq.MaxRetry(BatchCallbackRetries),
		asynq.Timeout(CallbackTimeout), asynq.Retention(24*time.Hour))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}
