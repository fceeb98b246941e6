// Package api is mxprobe's HTTP face: a JSON API under /v1 for registration
// pipelines written in any language, the sign-up form endpoint POST
// /validate, the web page, asynqmon at /monitoring, Prometheus /metrics and
// the /healthz and /readyz probes.
//
// The way of one request:
//
//  1. requestID: X-Request-Id is honoured (when sane) or generated, echoed in
//     the response, and carried by the request's logger, so every log line
//     of a request names it.
//  2. auth: an API key as a Bearer token ("Authorization: Bearer id:secret")
//     or, for the browser, the same key in an HttpOnly SameSite=Strict
//     cookie set by POST /login. Keys are held as SHA-256 digests and
//     compared in constant time. Each key has a request quota per minute,
//     counted in Redis (a fixed window: simple, shared by every API process,
//     and at worst twice the quota across a window edge).
//  3. the handler decodes strictly (body size caps, unknown JSON fields
//     refused), enqueues through tasks.Client — the same producer API a Go
//     program would use — and answers in one error shape,
//     {"error":{"code":…,"message":…,"field":…}}. A request that cannot be
//     enqueued (Redis down) is refused with 503 and Retry-After, never
//     accepted and lost.
//
// Dependencies: the API imports tasks (producer side) and never the
// validator or the worker, so an API-only process carries no SMTP prober
// (docs/design.md, "The API carries no prober"). asynqmon v0.7.2 is mounted as is; it speaks go-redis v9 like
// we do, so it is handed our own client through a RedisConnOpt and opens no
// second pool. Metrics use prometheus/client_golang; the queue gauges come
// from a small collector over asynq.Inspector rather than asynq's x/metrics
// module, whose published build drags in go-redis v8 (docs/design.md).
package api
