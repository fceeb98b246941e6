package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/internal/termsafe"
	"github.com/mxprobe/mxprobe/tasks"
)

const enqueueSynopsis = "mxprobe enqueue [flags] ADDRESS... (or - for stdin)"

func runEnqueue(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	redisURL := fs.String("redis-url", "", "Redis holding the queues, redis://host:6379/0 (required)")
	wait := fs.Bool("wait", false, "print each result as JSON as soon as it is final; at --wait-timeout, the latest state of the rest (final: false)")
	waitTimeout := fs.Duration("wait-timeout", 5*time.Minute, "with --wait: stop waiting after this long (the validations go on); exit 5 if any was not final")
	callback := fs.String("callback", "", "URL that receives each signed result")
	queue := fs.String("queue", tasks.QueueDefault, "queue: critical, default or bulk")
	metadata := fs.String("metadata", "", "JSON object echoed in results and callbacks")
	deadline := fs.Duration("deadline", 0, "a verdict not final this long after enqueueing becomes a final unknown, and its callback fires (default: none)")
	noDedupe := fs.Bool("no-dedupe", false, "probe even if a recent result is cached or a probe is in flight")
	transcript := fs.Bool("transcript", false, "keep the SMTP transcript in the result")
	shards := fs.Int("queue-shards", 1, queueShardsUsage)
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printFlagHelp(stdout, fs, enqueueSynopsis)
			return exitOK, nil
		}
		return exitUsage, err
	}
	inputs, code, err := addressArgs(fs, stdin)
	if err != nil {
		return code, err
	}
	if *redisURL == "" {
		return exitUsage, usagef("--redis-url (or MXPROBE_REDIS_URL) is required")
	}
	if *deadline < 0 {
		return exitUsage, usagef("--deadline must not be negative")
	}
	if _, err := tasks.ShardQueues(tasks.QueueDefault, *shards); err != nil {
		return exitUsage, usagef("--queue-shards: %v", err)
	}
	opts := []tasks.Option{tasks.Queue(*queue)}
	if *deadline > 0 {
		opts = append(opts, tasks.Deadline(time.Now().Add(*deadline)))
	}
	if *noDedupe {
		opts = append(opts, tasks.NoDedupe())
	}
	if *transcript {
		opts = append(opts, tasks.WithTranscript())
	}
	// What every address shares (--queue, --callback, --metadata) is
	// checked once, before Redis: a bad flag is a usage error, not one
	// refusal per address.
	shared := tasks.Request{Address: "check@example.com", CallbackURL: *callback, Metadata: json.RawMessage(*metadata)}
	if err := tasks.CheckRequest(shared, opts...); err != nil {
		var re *tasks.RequestError
		if errors.As(err, &re) {
			flagName := map[string]string{"queue": "--queue", "callback_url": "--callback", "metadata": "--metadata"}[re.Field]
			return exitUsage, usagef("%s: %s", flagName, re.Reason)
		}
		return exitUsage, usageError{err.Error()}
	}
	rdb, err := openRedis(ctx, *redisURL)
	if err != nil {
		return exitFailure, err
	}
	defer rdb.Close()
	c := tasks.NewClient(rdb, tasks.WithShards(*shards))
	defer c.Close()

	var ids []enqueued
	code = exitOK
	for _, in := range inputs {
		id, err := c.Enqueue(ctx, tasks.Request{Address: in, CallbackURL: *callback, Metadata: json.RawMessage(*metadata)}, opts...)
		if err != nil {
			if errors.Is(err, tasks.ErrBadRequest) {
				fmt.Fprintf(stderr, "%q: refused: %v\n", in, err)
				code = exitInvalid
				continue
			}
			// Redis failed: the addresses queued so far still run; with
			// --wait their ids were not printed yet, so print them now.
			if *wait {
				for _, e := range ids {
					fmt.Fprintf(stdout, "%s\t%s\n", e.id, e.input)
				}
			}
			return exitFailure, err
		}
		ids = append(ids, enqueued{in, id})
		if !*wait {
			fmt.Fprintf(stdout, "%s\t%s\n", id, in)
		}
	}
	if !*wait {
		return code, nil
	}
	return waitAll(ctx, c, ids, *waitTimeout, stdout, stderr, code)
}

// enqueued is one task enqueue created, in input order.
type enqueued struct{ input, id string }

// waitConcurrency bounds the waits in flight at once (each polls Redis now
// and then besides the shared announcement channel).
const waitConcurrency = 64

// provisional is what --wait prints for a task with no final result when
// its time is up: the latest known state, never a verdict it did not get.
type provisional struct {
	TaskID        string    `json:"task_id"`
	Input         string    `json:"input"`
	Final         bool      `json:"final"`
	State         string    `json:"state,omitempty"`
	Verdict       string    `json:"verdict"`
	Reason        string    `json:"reason"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
}

// waitAll prints each result as it becomes final, whatever the input
// order, then at the timeout the provisional state of each task still
// running (in input order), and returns the exit code: code so far, made
// worse by the verdicts, and exitNotFinal when any task was not final.
func waitAll(ctx context.Context, c *tasks.Client, ids []enqueued, timeout time.Duration, stdout, stderr io.Writer, code int) (int, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		mu      sync.Mutex
		enc     = json.NewEncoder(stdout)
		pending = map[int]bool{}
		werr    error
		failure error // a wait that failed for another reason than time
		wg      sync.WaitGroup
		sem     = make(chan struct{}, waitConcurrency)
	)
	printFinal := func(e enqueued, st tasks.Status) {
		if st.Result == nil {
			fmt.Fprintf(stderr, "%s (%q): ended without a result (state %s: %s)\n", e.id, e.input, st.State, termsafe.String(st.LastError))
			code = worseExitCode(code, exitFailure)
			return
		}
		if err := enc.Encode(st.Result); err != nil && werr == nil {
			werr = err
		}
		code = worseExitCode(code, verdictExit(st.Result.Verdict))
	}
	for i, e := range ids {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-wctx.Done():
			}
			st, err := c.Wait(wctx, e.id)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				printFinal(e, st)
				return
			case wctx.Err() == nil && failure == nil:
				failure = fmt.Errorf("waiting for %s: %w", e.id, err) // Redis, not time
			}
			pending[i] = true
		})
	}
	wg.Wait()
	if werr != nil {
		return exitFailure, werr
	}
	// Time is up (or Redis failed, or an interrupt): the rest, in input
	// order, as they stand. One failed read ends the reading: the rest are
	// reported unread rather than each waiting on a Redis that is away.
	var readErr error
	for i, e := range ids {
		if !pending[i] {
			continue
		}
		var st tasks.Status
		err := readErr
		if err == nil && ctx.Err() == nil {
			gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
			st, err = c.Get(gctx, e.id)
			gcancel()
			if err != nil {
				readErr = err
			}
		} else if err == nil {
			err = ctx.Err()
		}
		if err == nil && st.Done() {
			printFinal(e, st) // final just as the wait ended
			continue
		}
		p := provisional{TaskID: e.id, Input: e.input, State: st.State, Verdict: tasks.VerdictUnknown, Reason: "pending"}
		if err != nil {
			p.Reason = "status unavailable: " + err.Error()
		} else if st.Result != nil {
			p.Verdict, p.Reason, p.NextAttemptAt = st.Result.Verdict, st.Result.Reason, st.Result.NextAttemptAt
		}
		if err := enc.Encode(p); err != nil {
			return exitFailure, err
		}
		code = worseExitCode(code, exitNotFinal)
	}
	switch {
	case ctx.Err() != nil:
		return exitFailure, fmt.Errorf("interrupted: %w", ctx.Err())
	case failure != nil:
		return exitFailure, failure
	case readErr != nil:
		return exitFailure, fmt.Errorf("reading the tasks not final: %w", readErr)
	}
	return code, nil
}

// worseExitCode keeps the more serious of two exit codes: failure, then
// invalid, then not final, then unsure, then ok.
func worseExitCode(a, b int) int {
	rank := map[int]int{exitOK: 0, exitUnsure: 1, exitNotFinal: 2, exitInvalid: 3, exitUsage: 4, exitFailure: 5}
	if rank[b] > rank[a] {
		return b
	}
	return a
}
