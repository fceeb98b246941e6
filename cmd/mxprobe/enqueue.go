package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mxprobe/mxprobe/internal/termsafe"
	"github.com/mxprobe/mxprobe/tasks"
)

const enqueueSynopsis = "mxprobe enqueue [flags] ADDRESS... (or - for stdin)"

func runEnqueue(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	redisURL := fs.String("redis-url", "", "Redis holding the queues, redis://host:6379/0 (required)")
	wait := fs.Bool("wait", false, "wait for each final result and print it")
	waitTimeout := fs.Duration("wait-timeout", 5*time.Minute, "with --wait: give up waiting after this long (the validation goes on)")
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

	type enqueued struct{ input, id string }
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
	wctx, cancel := context.WithTimeout(ctx, *waitTimeout)
	defer cancel()
	enc := json.NewEncoder(stdout)
	for _, e := range ids {
		st, err := c.Wait(wctx, e.id)
		if err != nil {
			fmt.Fprintf(stderr, "%s (%q): no final result yet: %v\n", e.id, e.input, err)
			code = worseExitCode(code, exitUnsure)
			continue
		}
		if st.Result == nil {
			fmt.Fprintf(stderr, "%s (%q): ended without a result (state %s: %s)\n", e.id, e.input, st.State, termsafe.String(st.LastError))
			code = exitFailure
			continue
		}
		if err := enc.Encode(st.Result); err != nil {
			return exitFailure, err
		}
		code = worseExitCode(code, verdictExit(st.Result.Verdict))
	}
	return code, nil
}

// worseExitCode keeps the more serious of two exit codes: failure, then
// invalid, then unsure, then ok.
func worseExitCode(a, b int) int {
	rank := map[int]int{exitOK: 0, exitUnsure: 1, exitInvalid: 2, exitUsage: 3, exitFailure: 4}
	if rank[b] > rank[a] {
		return b
	}
	return a
}
