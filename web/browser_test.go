package web_test

// The browser test drives the real page in Debian's headless Chromium through
// chromedp (chosen over playwright-core because it is pure Go: no Node.js and
// no downloaded browser build, only the distribution's chromium). It uses the
// keyboard only, never a mouse click, because the page must be usable without
// a mouse.

import (
	"context"
	"errors"
	"net/http"
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

// TestBrowser runs the page against the real server (server_test.go): the
// api package's handler with a worker probing loopback DNS and SMTP.
func TestBrowser(t *testing.T) {
	t.Parallel()
	rs := startRealServer(t)

	runBrowserChecks(t, rs.url, testKey)

	posts := rs.posts.list()
	if len(posts) == 0 {
		t.Fatal("the page sent no POST /v1/validations")
	}
	greylisted := false
	for _, p := range posts {
		if p.wait != "20s" {
			t.Errorf("POST /v1/validations?wait=%q (body %s), want wait=20s", p.wait, p.body)
		}
		if strings.Contains(p.body, "greylist@example.org") {
			greylisted = true
			if p.status != http.StatusAccepted {
				t.Errorf("the greylisted address was answered %d, want 202 (the page's polling path)", p.status)
			}
		}
	}
	if !greylisted {
		t.Error("the page never posted the greylisted address")
	}
	// The server really was asked twice: greylisted, then accepted.
	for _, addr := range []string{"greylist@example.org", "greylist-batch@example.org"} {
		if n := rs.mail.count(addr); n != 2 {
			t.Errorf("RCPT TO:<%s> sent %d times, want 2 (greylisted, then retried)", addr, n)
		}
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
	base := strings.TrimSuffix(baseURL, "/")

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

	must("viewport", chromedp.EmulateViewport(1280, 900))

	// A browser without a session is sent to the server's sign-in form; a
	// wrong key is refused there, the right one leads back to the page.
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(base+"/"))
	if err != nil {
		t.Fatalf("open %s/: %v", base, err)
	}
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); resp.Status != 200 || !strings.HasPrefix(loc, base+"/login?next=%2F") {
		t.Fatalf("GET / without a session ended at %s (%d), want the sign-in form", loc, resp.Status)
	}
	shot("login.png")
	resp, err = chromedp.RunResponse(ctx, chromedp.SendKeys(chromedp.ID("key"), "web:wrong-secret-0123456789"+kb.Enter))
	if err != nil {
		t.Fatalf("sign in with a wrong key: %v", err)
	}
	if got := text("p.err"); resp.Status != 401 || !strings.Contains(got, "wrong API key") {
		t.Errorf("wrong key: status %d, message %q; want 401 and the server's message", resp.Status, got)
	}
	resp, err = chromedp.RunResponse(ctx, chromedp.SendKeys(chromedp.ID("key"), apiKey+kb.Enter))
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	must("see the page", chromedp.WaitVisible(chromedp.ID("address")))
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); resp.Status != 200 || loc != base+"/" {
		t.Fatalf("after signing in: %s (%d), want %s/", loc, resp.Status, base)
	}
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

	// The session ends (signed out in another tab, or the cookie expired):
	// the next API call meets a 401 and the page asks for the key itself,
	// refuses a wrong one, accepts the right one and retries the check.
	if !eval(`fetch("logout", {method: "POST", credentials: "same-origin"}).then(r => r.status === 204)`) {
		t.Fatal("POST /logout did not end the session")
	}
	must("submit the first address",
		chromedp.SendKeys(chromedp.ID("address"), "alice@example.com"+kb.Enter),
		chromedp.WaitVisible(chromedp.ID("login")),
		chromedp.SendKeys(chromedp.ID("login-key"), "web:wrong-secret-0123456789"+kb.Enter),
	)
	waitFor("the login error", `() => document.getElementById("login-error").textContent !== ""`)
	if got := text("#login-error"); !strings.Contains(got, "wrong API key") {
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
		{name: "valid", address: "alice@example.com", wantVerdict: "Valid", wantClass: "v-valid", wantReason: "mailbox_exists", wantReply: "250 2.", wantDetails: "1 attempt"},
		{name: "invalid", address: "nobody@example.com", wantVerdict: "Invalid", wantClass: "v-invalid", wantReason: "mailbox_not_found", wantReply: "550 5.1.1 No such user here (at rcpt)"},
		{name: "greylisted: 202, polled until final", address: "greylist@example.org", wantVerdict: "Valid", wantClass: "v-valid", wantReason: "mailbox_exists", wantReply: "250 2.", wantDetails: "2 attempts"},
		{name: "markup in the server's reply stays text", address: "mallory@example.com", wantVerdict: "Invalid", wantClass: "v-invalid", wantReason: "mailbox_not_found", wantReply: "550 5.1.1 <img src=x id=pwned> is not a user here"},
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
			document.getElementById("verdict-address").textContent === want`, tc.address)
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
		if got := text("#r-mx"); !strings.Contains(got, "mx1.example.net [127.0.0.1]") {
			t.Errorf("%s: MX = %q, want mx1.example.net [127.0.0.1]", tc.name, got)
		}
		if got := text("#r-details"); !strings.Contains(got, tc.wantDetails) {
			t.Errorf("%s: details = %q, want %q", tc.name, got, tc.wantDetails)
		}
		if got := text("#check-error"); got != "" {
			t.Errorf("%s: error %q shown with a verdict", tc.name, got)
		}
		if eval(`document.getElementById("pwned") !== null || document.querySelector("#check-result img") !== null`) {
			t.Fatalf("%s: server data was parsed as HTML", tc.name)
		}
	}
	shot("desktop-check.png")

	// Bad input: the server's error message is shown as text and the field
	// marked.
	for _, tc := range []struct {
		name, address, wantError string
	}{
		{name: "no @", address: "not-an-address", wantError: `"not-an-address": missing '@'`},
		{name: "markup in the address stays text", address: `"<img src=x id=pwned>"@example.com`, wantError: `"\"<img src=x id=pwned>\"@example.com": angle brackets are not allowed`},
	} {
		must(tc.name+": submit",
			clearField("address"),
			chromedp.SendKeys(chromedp.ID("address"), tc.address+kb.Enter),
		)
		waitFor(tc.name+": the address error", `() => document.getElementById("check-error").textContent !== ""`)
		if got := text("#check-error"); !strings.Contains(got, tc.wantError) {
			t.Errorf("%s: check error = %q, want the server's message %q", tc.name, got, tc.wantError)
		}
		if !eval(`document.getElementById("address").getAttribute("aria-invalid") === "true"`) {
			t.Errorf("%s: the address field is not marked aria-invalid after a field error", tc.name)
		}
		if eval(`document.getElementById("pwned") !== null`) {
			t.Fatalf("%s: the error message was parsed as HTML", tc.name)
		}
	}

	// A CSV batch: rejected rows by line, progress to 100%, results, download.
	csvPath := filepath.Join(t.TempDir(), "list.csv")
	csvData := "email\n" +
		"alice@example.com\n" + // line 2: valid (from the worker's cache by now)
		"not-an-address\n" + // line 3: rejected
		"nobody@example.com\n" + // line 4: invalid
		"\"<b>bold</b>@example.com\"\n" + // line 5: rejected, markup in the input
		"mallory@example.com\n" + // line 6: invalid, markup in the reply
		"greylist-batch@example.org\n" + // line 7: valid on the retry, a second later
		"carol@example.net\n" // line 8: valid
	if err := os.WriteFile(csvPath, []byte(csvData), 0o644); err != nil {
		t.Fatal(err)
	}
	// Record every progress value the page shows, to prove the bar moved
	// through intermediate states rather than jumping to the end (the
	// greylisted row holds the batch back for at least a second).
	eval(`(() => {
		window.__progress = [];
		window.__partialRows = 0;
		const bar = document.getElementById("batch-progress");
		new MutationObserver(() => {
			window.__progress.push(bar.value + "/" + bar.max);
			// Before the end: the table already shows finished rows, and the
			// download link is there for the results so far.
			if (bar.value < bar.max && !document.getElementById("batch-done").hidden) {
				window.__partialRows = Math.max(window.__partialRows,
					document.querySelectorAll("#batch-results tbody tr").length);
				window.__partialLink = document.getElementById("batch-download").textContent;
			}
		}).observe(document.getElementById("batch-status"), {childList: true, characterData: true, subtree: true});
		return true;
	})()`)
	must("upload the CSV",
		chromedp.SetUploadFiles(chromedp.ID("csv-file"), []string{csvPath}),
		chromedp.SendKeys(chromedp.ID("batch-button"), kb.Enter),
	)
	waitFor("the batch results", `() => document.getElementById("batch-status").textContent.startsWith("Done") || document.getElementById("batch-error").textContent !== ""`)
	if got := text("#batch-error"); got != "" {
		t.Fatalf("batch error: %q", got)
	}
	if !eval(`(() => { const b = document.getElementById("batch-progress"); return b.max === 5 && b.value === 5 &&
			b.getAttribute("aria-valuetext") === "100%"; })()`) {
		t.Error("progress bar did not end at 5/5 (100%)")
	}
	if got := text("#batch-status"); !strings.Contains(got, "100%") {
		t.Errorf("batch status = %q, want 100%%", got)
	}
	if got := text("#batch-counts"); !strings.Contains(got, "valid: 3") || !strings.Contains(got, "invalid: 2") || !strings.Contains(got, "pending: 0") {
		t.Errorf("batch counts = %q, want valid 3, invalid 2, pending 0", got)
	}
	progress, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.__progress`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(progress, func(p string) bool { return p == "1/5" || p == "2/5" || p == "3/5" || p == "4/5" }) {
		t.Errorf("progress went %q, want an intermediate value before 5/5", progress)
	}
	if !eval(`window.__partialRows > 0 && window.__partialLink === "Download results so far (CSV)"`) {
		t.Error("before the batch was done, the table showed no finished rows or the partial download was missing")
	}
	rejected := text("#rejected-list")
	for _, want := range []string{"Line 3: “not-an-address”", "Line 5: “<b>bold</b>@example.com”"} {
		if !strings.Contains(rejected, want) {
			t.Errorf("rejected rows = %q, want %q", rejected, want)
		}
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("#batch-results tbody tr")).map(r => r.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	// Every input row, in input order, as in the CSV download.
	wantRows := [][]string{
		{"alice@example.com", "Valid", "mailbox_exists", "mx1.example.net", "250 2."},
		{"not-an-address", "Invalid", "bad_syntax (not queued)", "missing '@'"},
		{"nobody@example.com", "Invalid", "mailbox_not_found", "550 5.1.1 No such user here"},
		{"<b>bold</b>@example.com", "Invalid", "bad_syntax (not queued)", "angle brackets"},
		{"mallory@example.com", "Invalid", "mailbox_not_found", "<img src=x id=pwned> is not a user here"},
		{"greylist-batch@example.org", "Valid", "mailbox_exists", "250 2."},
		{"carol@example.net", "Valid", "mailbox_exists"},
	}
	if len(rows) != len(wantRows) {
		t.Fatalf("results table has %d rows, want %d: %q", len(rows), len(wantRows), rows)
	}
	for i, want := range wantRows {
		for _, w := range want {
			if !strings.Contains(rows[i], w) {
				t.Errorf("results row %d = %q, want it to contain %q", i+1, rows[i], w)
			}
		}
		if strings.Contains(rows[i], "not final") {
			t.Errorf("results row %d = %q is not final", i+1, rows[i])
		}
	}
	if eval(`document.querySelector("#batch-results b, #batch-results img") !== null || document.getElementById("pwned") !== null`) {
		t.Error("markup from an address or a reply was parsed as HTML in the results table")
	}
	if !eval(`fetch(document.getElementById("batch-download").href, {credentials: "same-origin"})
			.then(r => r.ok && r.headers.get("Content-Type").startsWith("text/csv") ? r.text() : "")
			.then(s => s.startsWith("line,input,address,state,verdict,reason") &&
				s.includes("\n7,greylist-batch@example.org,greylist-batch@example.org,done,valid,mailbox_exists,"))`) {
		t.Error("the CSV download link does not deliver the results")
	}
	// The list survives a reload: it is in "Recent lists", and choosing it
	// shows its results again.
	if _, err := chromedp.Run(ctx, chromedp.NavigateResponse(base+"/")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	waitFor("the recent list", `() => { const b = document.querySelector("#recent-list button"); return b && b.textContent === "list.csv" }`)
	must("reopen the list with the keyboard", chromedp.Focus(chromedp.CSS("#recent-list button")), chromedp.KeyEvent(kb.Enter))
	waitFor("the reopened list", `() => document.getElementById("batch-status").textContent.startsWith("Done: list.csv") &&
		document.querySelectorAll("#batch-results tbody tr").length === 7`)
	// A long reply token (<address>) must wrap, not push the table past
	// its box into a sideways scroll on a desktop screen.
	if !eval(`(() => { const w = document.querySelector(".table-wrap"); return w.scrollWidth <= w.clientWidth; })()`) {
		t.Error("the results table is wider than its box at 1280 px")
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
