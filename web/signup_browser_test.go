package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
)

// TestSignupFormScript runs /form.js in headless Chromium on a shop's page
// served from another origin, calling the API with a publishable key
// (CORS preflight and all): a typo shows a clickable suggestion that fills
// the field, a refused mailbox shows the message and holds the form, and a
// check the server is slow to answer never holds it.
func TestSignupFormScript(t *testing.T) {
	t.Parallel()
	rdb := redistest.StartServer(t).Client(t)
	slow := make(chan struct{})
	t.Cleanup(func() { close(slow) })
	mx := smtptest.Start(t, smtptest.Options{Domain: "mx1.example.net", RcptFunc: func(to string) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(to, "nobody@"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
		case strings.HasPrefix(to, "slow@"):
			select { // the server takes its time; the form must not wait for it
			case <-slow:
			case <-time.After(time.Minute):
			}
		}
		return nil
	}})
	dns := dnstest.Start(t, dnstest.Zone{
		"example.org.":     {dnstest.MX("mx1.example.net.", 10)},
		"mx1.example.net.": {dnstest.A("127.0.0.1")},
	})
	workertest.Start(t, rdb, workertest.Options{SMTPPort: mx.Port(), DNS: dns.Addr(), CallbackSecret: []byte("signup-test-secret")})

	var apiURL string
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if r.URL.Path == "/thanks" {
			fmt.Fprint(w, `<!doctype html><title>thanks</title><p id="thanks">Welcome aboard</p>`)
			return
		}
		fmt.Fprintf(w, `<!doctype html><title>shop</title>
<form action="/thanks" method="get"><input type="email" id="email" name="email"><button id="go">Sign up</button></form>
<script src="%s/form.js" data-key="pk_shop"></script>`, apiURL)
	}))
	t.Cleanup(shop.Close)
	keys, err := api.ParseKeys(testKey)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Redis: rdb, Keys: keys, Publishable: api.Publishable{"pk_shop": {shop.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	apiURL = hs.URL

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	ctx = newBrowser(t, ctx)
	must := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(js string) bool {
		t.Helper()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return ok
	}
	waitFor := func(what, predicate string) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.PollFunction[chromedp.Void](predicate,
			chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(30*time.Second)))
		if err != nil {
			msg, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(".mxprobe-message") ? document.querySelector(".mxprobe-message").outerHTML : "no message box"`))
			t.Fatalf("waiting for %s: %v (%s)", what, err, msg)
		}
	}
	setField := func(v string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`(() => { const e = document.getElementById("email"); e.value = ""; e.dispatchEvent(new Event("input")); e.focus(); return true })()`)(ctx, tg)
			if err != nil {
				return err
			}
			_, err = chromedp.SendKeys(chromedp.ID("email"), v)(ctx, tg)
			return err
		})
	}

	if _, err := chromedp.Run(ctx, chromedp.NavigateResponse(shop.URL+"/")); err != nil {
		t.Fatal(err)
	}

	// A typo: the suggestion appears and, chosen, fills the field.
	must("type a typo and leave the field", setField("bob@gmial.com"), chromedp.KeyEvent(kb.Tab))
	waitFor("the suggestion", `() => { const b = document.querySelector(".mxprobe-suggestion"); return b && b.textContent === "bob@gmail.com" }`)
	if !eval(`document.querySelector(".mxprobe-message").textContent.includes("Did you mean")`) {
		t.Error("the suggestion comes without its question")
	}
	must("choose the suggestion with the keyboard", chromedp.Focus(chromedp.CSS(".mxprobe-suggestion")), chromedp.KeyEvent(kb.Enter))
	waitFor("the corrected address in the field", `() => document.getElementById("email").value === "bob@gmail.com"`)

	// A refused mailbox: the message, and the form held.
	must("type a refused address", setField("nobody@example.org"), chromedp.KeyEvent(kb.Tab))
	waitFor("the refusal", `() => { const m = document.querySelector(".mxprobe-message[data-decision=reject]"); return m && m.textContent.includes("does not exist") }`)
	if !eval(`document.getElementById("email").getAttribute("aria-invalid") === "true"`) {
		t.Error("the refused field is not marked aria-invalid")
	}
	if !eval(`(() => { const e = new SubmitEvent("submit", {cancelable: true}); document.querySelector("form").dispatchEvent(e); return e.defaultPrevented })()`) {
		t.Error("the form would submit a refused address")
	}

	// A slow check: the user submits at once and gets through.
	must("type an address the server is slow on", setField("slow@example.org"), chromedp.KeyEvent(kb.Tab))
	resp, err := chromedp.RunResponse(ctx, chromedp.Focus(chromedp.ID("go")), chromedp.KeyEvent(kb.Enter))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	if resp.Status != 200 || !strings.HasPrefix(loc, shop.URL+"/thanks") {
		t.Errorf("submitting while the check ran ended at %s (%d), want the shop's /thanks", loc, resp.Status)
	}
}
