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
//  3. auth: every call sends the same-origin cookie; a 401 shows a login form
//     that POSTs the API key to /login (which sets an HttpOnly cookie), then
//     the call is retried. The key never lives in script-readable storage.
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
