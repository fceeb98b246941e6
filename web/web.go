// Package web holds the embedded files of the web page served at "/".
//
// PLACEHOLDER: this minimal version exists so that the api package and
// `mxprobe serve` build and can be tested; the real page (form, CSV upload,
// progress, results) replaces static/ at merge.
package web

import "embed"

// FS holds static/ (index.html, app.js, app.css).
//
//go:embed static
var FS embed.FS
