package web_test

// The browser test drives the real page in Debian's headless Chromium through
// chromedp (chosen over playwright-core because it is pure Go: no Node.js and
// no downloaded browser build, only the distribution's chromium). It uses the
// keyboard only, never a mouse click, because the page must be usable without
// a mouse.

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// chromiumPath finds the browser: $MXPROBE_CHROMIUM, else chromium on PATH,
// else Debian's /usr/bin/chromium. A missing browser fails the test rather
// than skipping it, so CI cannot go green without running it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MXPROBE_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("MXPROBE_CHROMIUM=%s: %v", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	t.Fatal("headless Chromium not found: install Debian's chromium (apt-get install chromium; .ci/run does) " +
		"or set MXPROBE_CHROMIUM to a Chromium/Chrome binary")
	return ""
}

// newBrowser starts a private headless Chromium and returns a tab context.
// Every test gets a fresh profile, and the flags keep the browser from
// talking to anything but loopback (no updates, sync or QUIC probes).
func newBrowser(t *testing.T, parent context.Context) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root, where the sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("password-store", "basic"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	return ctx
}

// TestBrowser runs the page against the stand-in API (standin_test.go).
// After the api package is merged, this should start the real api server and
// call runBrowserChecks with its URL and key instead.
func TestBrowser(t *testing.T) {
	t.Parallel()
	s := newStandin()
	srv := httptest.NewServer(s.handler())
	t.Cleanup(srv.Close)

	runBrowserChecks(t, srv.URL, standinKey)

	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waits) == 0 || slices.ContainsFunc(s.waits, func(w string) bool { return w != "20s" }) {
		t.Errorf("POST /v1/validations wait parameters = %q, want all \"20s\"", s.waits)
	}
}

// runBrowserChecks exercises the page served at baseURL (which must serve
// the web page at "/" and the API under "/v1", with apiKey accepted by
// POST /login) and saves screenshots to a kept temporary directory.
func runBrowserChecks(t *testing.T, baseURL, apiKey string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	ctx = newBrowser(t, ctx)

	// Collect what the page writes to the console: an uncaught exception or
	// a CSP violation (an inline script or style, an outside origin) fails
	// the test.
	var (
		mu       sync.Mutex
		problems []string
	)
	consoleCtx, stopConsole := context.WithCancel(ctx)
	defer stopConsole()
	msgs := chromedp.Console(consoleCtx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || strings.Contains(m.Text, "Content Security Policy") {
				mu.Lock()
				problems = append(problems, string(m.Type)+": "+m.Text)
				mu.Unlock()
			}
		}
	}()

	shots, err := os.MkdirTemp("", "mxprobe-web-screenshots-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)

	must := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	eval := func(js string) bool {
		t.Helper()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return ok
	}
	// waitFor waits, on DOM mutations rather than on a clock, until the
	// JavaScript predicate is true.
	waitFor := func(what, predicate string, args ...any) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.PollFunction[chromedp.Void](predicate,
			chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingArgs(args...)))
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
	// clearField empties a field the way a user's select-all + delete would.
	// (chromedp's SetValue refuses the empty string in v0.23.0.)
	clearField := func(id string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`(document.getElementById("`+id+`").value = "") === ""`)(ctx, tg)
			return err
		})
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100 gives PNG, less gives JPEG
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	must("open the page",
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(strings.TrimSuffix(baseURL, "/")+"/"),
		chromedp.WaitVisible(chromedp.ID("address")),
	)
	if title, err := chromedp.Run(ctx, chromedp.Title()); err != nil || !strings.Contains(title, "mxprobe") {
		t.Fatalf("title = %q, %v; want it to name mxprobe", title, err)
	}
	if eval(`getComputedStyle(document.querySelector("button")).backgroundColor === "rgba(0, 0, 0, 0)"`) {
		t.Fatal("the style sheet did not load (buttons are unstyled)")
	}

	// Keyboard only: Tab walks the controls in reading order.
	must("tab through the page", chromedp.Focus(chromedp.ID("address")))
	var order []string
	for range 3 {
		must("press Tab", chromedp.KeyEvent(kb.Tab))
		id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.id`))
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, id)
	}
	if want := []string{"check-button", "csv-file", "batch-button"}; !slices.Equal(order, want) {
		t.Errorf("Tab order from the address field = %q, want %q", order, want)
	}

	// The first API call meets a 401: the login form appears, a wrong key is
	// refused, the right one is accepted and the check is retried.
	must("submit the first address",
		chromedp.SendKeys(chromedp.ID("address"), "alice@example.com"+kb.Enter),
		chromedp.WaitVisible(chromedp.ID("login")),
		chromedp.SendKeys(chromedp.ID("login-key"), "wrong-key"+kb.Enter),
	)
	waitFor("the login error", `() => document.getElementById("login-error").textContent !== ""`)
	if got := text("#login-error"); !strings.Contains(got, "not valid") {
		t.Errorf("login error = %q, want the server's message", got)
	}
	must("log in",
		clearField("login-key"),
		chromedp.SendKeys(chromedp.ID("login-key"), apiKey+kb.Enter),
		chromedp.WaitNotVisible(chromedp.ID("login")),
	)

	checks := []struct {
		name        string
		address     string
		wantVerdict string
		wantClass   string
		wantReason  string
		wantReply   string
		wantDetails string
	}{
		{name: "valid", address: "alice@example.com", wantVerdict: "Valid", wantClass: "v-valid", wantReason: "mailbox_exists", wantReply: "250 2.1.5 OK <alice@example.com> (at rcpt)"},
		{name: "invalid", address: "nobody@example.com", wantVerdict: "Invalid", wantClass: "v-invalid", wantReason: "mailbox_not_found", wantReply: "550 5.1.1"},
		{name: "202 then polled until final", address: "greylist@example.org", wantVerdict: "Valid", wantClass: "v-valid", wantReason: "mailbox_exists", wantReply: "250 2.1.5", wantDetails: "2 attempts"},
		{name: "markup in the address stays text", address: `"<img src=x id=pwned>"@example.com`, wantVerdict: "Valid", wantClass: "v-valid", wantReason: "mailbox_exists", wantReply: `<"<img src=x id=pwned>"@example.com>`},
	}
	for i, tc := range checks {
		if i > 0 { // the first address was submitted before the login
			must(tc.name+": submit",
				clearField("address"),
				chromedp.SendKeys(chromedp.ID("address"), tc.address+kb.Enter),
			)
		}
		waitFor(tc.name+": final verdict", `(want) =>
			document.getElementById("check-status").textContent.startsWith("Done") &&
			document.getElementById("verdict-address").textContent === want`, strings.ToLower(tc.address))
		if got := text("#verdict"); !strings.Contains(got, tc.wantVerdict) || strings.Contains(got, "not final") {
			t.Errorf("%s: verdict = %q, want %q (final)", tc.name, got, tc.wantVerdict)
		}
		if !eval(`document.getElementById("verdict").classList.contains("` + tc.wantClass + `")`) {
			t.Errorf("%s: verdict badge lacks class %s", tc.name, tc.wantClass)
		}
		if got := text("#r-reason"); got != tc.wantReason {
			t.Errorf("%s: reason = %q, want %q", tc.name, got, tc.wantReason)
		}
		if got := text("#r-smtp"); !strings.Contains(got, tc.wantReply) {
			t.Errorf("%s: reply = %q, want it to contain %q", tc.name, got, tc.wantReply)
		}
		if got := text("#r-mx"); !strings.Contains(got, "mx1.example.net") {
			t.Errorf("%s: MX = %q, want mx1.example.net", tc.name, got)
		}
		if got := text("#r-details"); !strings.Contains(got, tc.wantDetails) {
			t.Errorf("%s: details = %q, want %q", tc.name, got, tc.wantDetails)
		}
		if eval(`document.getElementById("pwned") !== null || document.querySelector("#check-result img") !== null`) {
			t.Fatalf("%s: server data was parsed as HTML", tc.name)
		}
	}
	shot("desktop-check.png")

	// Bad input: the server's error message is shown and the field marked.
	must("submit a bad address",
		clearField("address"),
		chromedp.SendKeys(chromedp.ID("address"), "not-an-address"+kb.Enter),
	)
	waitFor("the address error", `() => document.getElementById("check-error").textContent !== ""`)
	if got := text("#check-error"); !strings.Contains(got, "is not an email address") {
		t.Errorf("check error = %q, want the server's message", got)
	}
	if !eval(`document.getElementById("address").getAttribute("aria-invalid") === "true"`) {
		t.Error("the address field is not marked aria-invalid after a field error")
	}

	// A CSV batch: rejected rows by line, progress to 100%, results, download.
	csvPath := filepath.Join(t.TempDir(), "list.csv")
	csvData := "email\nalice@example.com\nnot-an-address\nnobody@example.com\n\"<b>bold</b>@example.com\"\ncarol@example.net\n"
	if err := os.WriteFile(csvPath, []byte(csvData), 0o644); err != nil {
		t.Fatal(err)
	}
	// Record every progress value the page shows, to prove the bar moved
	// through intermediate states rather than jumping to the end.
	eval(`(() => {
		window.__progress = [];
		const bar = document.getElementById("batch-progress");
		new MutationObserver(() => window.__progress.push(bar.value + "/" + bar.max))
			.observe(document.getElementById("batch-status"), {childList: true, characterData: true, subtree: true});
		return true;
	})()`)
	must("upload the CSV",
		chromedp.SetUploadFiles(chromedp.ID("csv-file"), []string{csvPath}),
		chromedp.SendKeys(chromedp.ID("batch-button"), kb.Enter),
	)
	waitFor("the batch results", `() => !document.getElementById("batch-done").hidden`)
	if !eval(`(() => { const b = document.getElementById("batch-progress"); return b.max === 4 && b.value === 4 &&
			b.getAttribute("aria-valuetext") === "100%"; })()`) {
		t.Error("progress bar did not end at 4/4 (100%)")
	}
	if got := text("#batch-status"); !strings.Contains(got, "100%") {
		t.Errorf("batch status = %q, want 100%%", got)
	}
	progress, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.__progress`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(progress, func(p string) bool { return p == "1/4" || p == "2/4" || p == "3/4" }) {
		t.Errorf("progress went %q, want an intermediate value before 4/4", progress)
	}
	if got := text("#rejected-list"); !strings.Contains(got, "Line 3") || !strings.Contains(got, "not-an-address") {
		t.Errorf("rejected rows = %q, want line 3 (not-an-address)", got)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("#batch-results tbody tr")).map(r => r.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("results table has %d rows, want 4: %q", len(rows), rows)
	}
	if !strings.Contains(rows[1], "Invalid") || !strings.Contains(rows[1], "mailbox_not_found") {
		t.Errorf("row 2 = %q, want nobody@ invalid", rows[1])
	}
	if !strings.Contains(rows[2], "<b>bold</b>@example.com") || eval(`document.querySelector("#batch-results b") !== null`) {
		t.Errorf("row 3 = %q: markup in an address must show as text", rows[2])
	}
	if !eval(`fetch(document.getElementById("batch-download").href, {credentials: "same-origin"})
			.then(r => r.ok && r.headers.get("Content-Type").startsWith("text/csv") ? r.text() : "")
			.then(s => s.includes("alice@example.com"))`) {
		t.Error("the CSV download link does not deliver the results")
	}
	shot("desktop-batch.png")

	// A phone: nothing may force sideways scrolling of the page.
	must("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulatePortrait))
	waitFor("phone layout", `() => window.innerWidth === 390`)
	if !eval(`document.documentElement.scrollWidth <= window.innerWidth`) {
		w, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		t.Errorf("on a 390 px phone the page is %d px wide", w)
	}
	shot("phone.png")

	stopConsole()
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the page logged problems:\n%s", strings.Join(problems, "\n"))
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("browser context: %v", err)
	}
}
