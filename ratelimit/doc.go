// Package ratelimit keeps every worker of mxprobe, on every machine, inside
// one set of limits per receiving provider, so that probing many addresses
// never gets our IP addresses throttled or blacklisted. The limits live in
// Redis; the package knows nothing of asynq or of the validator.
//
// # The way of one Acquire
//
//  1. Group: the MX host (lower-cased, trailing dot removed) maps to a
//     provider group: the longest matching Config.Overrides suffix, else its
//     registrable domain (publicsuffix.EffectiveTLDPlusOne), so every Google
//     MX shares google.com's budget while Microsoft 365 tenants
//     (mail.protection.outlook.com) and consumer Outlook
//     (olc.protection.outlook.com) keep separate ones (docs/smtp.md §7).
//
//  2. Key: the budget belongs to the pair (egress, group), because receivers
//     count per client IP. All keys of a pair share the hash tag
//     "{egress|group}", so each script touches one Redis Cluster slot; the
//     per-MX session set lives under the group's tag for the same reason.
//
//  3. One EVALSHA (go-redis falls back to EVAL after NOSCRIPT, e.g. after a
//     Redis restart; in steady state it is one round trip) that, on Redis's
//     clock (TIME), in order:
//     a. denies with ReasonCoolDown while the pair is paused;
//     b. drops reservations past their grace, and tells a caller who comes
//     back before its reserved slot to wait for it;
//     c. drops expired session leases and denies with ReasonSessions when
//     the MX host has Limit.Sessions live ones;
//     d. admits a caller redeeming its reservation, or takes a token from
//     the bucket, or denies with ReasonRate and a reservation;
//     e. records the new session lease with its expiry.
//
//     Before a, the script reads the pair's fence and, when the keys are
//     on a Redis master other than the one that last wrote them, denies
//     with ReasonFailover for Config.FailoverSettle (keep.go).
//
//  4. The caller gets a *Lease (Release it when the session ends, Extend it
//     during long sessions) or a *DeniedError whose RetryIn says when to come
//     back. Acquire never sleeps; Redis errors are returned, never treated as
//     permission.
//
// # The bucket and reservations
//
// The bucket is a GCRA (generic cell rate algorithm) over one number, the
// theoretical arrival time TAT, with emission interval T = Per/Rate: a
// request is conformant when max(TAT, now)+T − Burst·T ≤ now, and then TAT
// advances by T. This is a token bucket of size Burst refilled at Rate,
// stored as one integer instead of a (tokens, timestamp) pair.
//
// When a request is not conformant, the script does not just say "later":
// it advances TAT by T anyway and records a reservation id → slot in a ZSET,
// where slot is the instant the request would have been conformant. The
// token is spent at the moment of the denial, so the next denied caller gets
// slot + T, the one after slot + 2T, and 100 simultaneous denials get 100
// distinct slots spaced exactly T apart — nobody comes back at the same
// instant to collide again. A caller returning with Request.Reservation at
// or after its slot is admitted without touching the bucket (its token is
// already taken), so it is not denied a second time for rate; it may still
// be denied for sessions or a cool-down, and then its reservation stays
// valid. Reservations are redeemable for Config.ReserveGrace after the slot
// (which must cover the caller's scheduling delay) and are then forgotten;
// their token stays spent, so a caller that never returns only makes the
// limiter more conservative. A slot farther than Config.ReserveHorizon ahead
// is not reserved: the caller is told to come back when it can be, which
// bounds the reservation set to about Horizon·Rate entries.
//
// Because every admission, direct or by reservation, corresponds to one GCRA
// conformance time no later than the admission, admissions in any run of
// length L never exceed Burst + Rate·L plus the reservations redeemed late
// within their grace. The worker passes the task ID as
// Request.Reservation, which survives asynq retries; other callers pass back
// DeniedError.Reservation.
//
// # Why a Lua script and not go-redis/redis_rate
//
// redis_rate implements GCRA well, but it only answers allowed/retry-after:
// it cannot reserve distinct slots, it knows nothing of session leases or
// cool-downs, and combining it with them would take several round trips with
// races between them. One script does all three atomically in one round trip
// and keeps the dependency list to go-redis alone.
//
// # Session leases
//
// Each live SMTP session to an MX host is a member of a ZSET scored by its
// expiry (Config.LeaseTTL, default 2 min). Expired members are pruned by the
// next Acquire, so a worker that crashed mid-session frees its place after
// the TTL; Extend renews a long session, and ExtendIfDue renews it only when a
// quarter of the TTL has passed, for callers that check before every use.
//
// # Cool-downs
//
// CoolDown pauses a pair after the provider throttled or blocked us (421,
// 4.7.x, RBL text). The pause lengths come from cenkalti/backoff's
// ExponentialBackOff without jitter (15 min → 1 h → 4 h by default,
// docs/smtp.md §4), computed once in New and passed to a script that keeps
// the step count in Redis, so all workers agree, a block reported by many
// workers at once opens one pause, and the count starts over after a quiet
// Config.CoolDown.ResetAfter. Acquire checks the pause first, so a block seen
// by one worker stops all of them with their next Acquire. Paused lists the
// pauses from one index ZSET (prefix + "paused", member "egress|group",
// score = end) rather than SCAN, because SCAN on Redis Cluster visits one
// node only; the pair's own record stays the authority.
//
// # Keys and their lifetimes
//
// Under Config.Prefix (default "mxprobe:rl:"), with tag = "{egress|group}":
//
//	tag:tat       GCRA time        expires when the bucket is full again
//	tag:res       reservations     expires after the last slot's grace
//	tag:ses:<mx>  session leases   expires after the last lease's TTL
//	tag:cd        pause record     expires when the pause ends
//	tag:cdstep    pause count      expires after the pause + ResetAfter
//	tag:fence     master's id      expires a week after the last use (keep.go)
//	paused        pause index      pruned on use, expires after the last pause
//
// Nothing grows without bound: every key has a TTL and every set is pruned
// by the script that adds to it.
//
// # Dependencies
//
// github.com/redis/go-redis/v9 (the project's Redis client, shared with
// asynq; UniversalClient so Sentinel and Cluster work), cenkalti/backoff/v4
// (the cool-down schedule, the same library the worker uses for retries) and
// golang.org/x/net/publicsuffix (the registrable domain).
package ratelimit
