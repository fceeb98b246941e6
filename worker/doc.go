// Package worker runs mxprobe's asynq tasks: email:validate and
// email:callback. It is the one place that turns validator and ratelimit
// outcomes into queue outcomes (docs/design.md):
//
//   - A final verdict (valid, invalid, risky, or unknown once retries are
//     spent or the producer's deadline has come) is stored with the task
//     (asynq's ResultWriter, kept for the Retention the producer chose),
//     cached per address for a TTL by verdict, handed to OnResult, and
//     followed by one email:callback task whose id derives from the
//     validation's, so a re-run never queues two.
//   - A temporary outcome (greylisting, other 4yz, timeouts, DNS SERVFAIL)
//     stores a provisional result and returns *TemporaryError: asynq counts a
//     failure and retries on RetryPolicy's schedule (cenkalti/backoff:
//     ≥ 6 min, ×3, ≤ 4 h, about a day in all; never earlier than the
//     server's hint). Every attempt uses the same MAIL FROM and egress.
//   - A refusal by the shared limiter (through Gate, a validator.Gate)
//     returns *RateLimitError{RetryIn}: IsFailure says false, so it uses no
//     retry, and RetryDelayFunc brings the task back a second before its
//     reserved slot. One deliberate exception to "a denial never sleeps a
//     goroutine": a reserved slot at most SlotWait (2 s) away is waited for
//     in the Gate, because asynq's whole-second scheduling would otherwise
//     redeem slots late and in clumps (measured: 94 % of the configured
//     rate, bursts of 160 % in short windows; with the wait, 100 %). At most
//     rate × SlotWait handlers per provider wait, 2 s each.
//     A denial whose wait would end after the producer's deadline, or past
//     the give-up horizon (RetryPolicy.GiveUpAfter from enqueue), is not
//     waited out: the task ends at once as a final unknown naming the
//     hold's reason, with its callback (docs/reliability.md).
//     Validation tasks carry tasks.MaxRetryCeiling retries, far above the
//     policy, because asynq archives a task whose retries are spent on any
//     error at all, even a harmless one.
//   - A second request for an address while a probe for it is queued or in
//     flight waits (as a RateLimitError) for that probe's result instead of
//     probing again; each request still gets its own result and callback.
//   - A malformed payload is stored as an error result and skipped
//     (asynq.SkipRetry); a panic becomes a temporary failure, and a
//     validation that keeps panicking ends as unknown/internal_error.
//
// Callbacks are signed (tasks.Sign: HMAC-SHA256 over timestamp and body) and
// delivered by Deliverer, which refuses loopback, private and link-local
// addresses at dial time, after DNS, unless allowlisted. 2xx is delivered,
// 410 stops, 5xx/429/timeouts retry on their own schedule, other 4xx are
// final.
package worker
