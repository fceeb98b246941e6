// Package web holds mxprobe's browser page: one HTML file, one script and one
// style sheet, embedded in the binary so `mxprobe serve` needs no files on
// disk and the page never loads anything from another origin.
//
// The api package serves fs.Sub(FS, "static") at "/". The page talks only to
// that same origin:
//
//  1. a check: POST /v1/validations?wait=20s {"address": …}; on 202 it polls
//     GET /v1/validations/{id} until result.final;
//  2. a batch: POST /v1/batches (text/csv) → rejected rows by line number →
//     polls GET /v1/batches/{id} into a <progress> bar until state "done" →
//     GET …/results?format=ndjson into a table, …?format=csv as a download;
//  3. auth: the server sends a browser without a session from "/" to its own
//     sign-in form (GET /login), which sets an HttpOnly, SameSite=Strict
//     cookie. Every call sends that cookie; when the session ends while the
//     page is open, a 401 shows the page's login form, which POSTs
//     {"key": …} as JSON to /login, and the call is retried. The key never
//     lives in script-readable storage.
//
// Batch results are flat NDJSON rows ({line, input, state, verdict, reason,
// mx_host, smtp_code, …}), every input row in input order, rejected ones
// included, as in the CSV download.
//
// Why hand-written and framework-free: the page must run under a strict
// Content-Security-Policy (script-src 'self', no inline code or styles), load
// nothing from a CDN, and stay small enough to audit. Every server value is
// inserted with textContent, never innerHTML, because results echo
// attacker-chosen input (the address, the remote server's reply text).
//
// Accessibility: real <form>, <label> and <button> elements, so everything
// works from the keyboard; visible focus rings; results and progress are
// announced through aria-live regions; verdicts carry text and a symbol, not
// colour alone.
package web

import "embed"

// FS holds static/index.html, app.js, app.css and favicon.svg.
//
//go:embed static
var FS embed.FS
