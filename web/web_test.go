package web_test

import (
	"bytes"
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/mxprobe/mxprobe/web"
)

func TestFSHoldsThePage(t *testing.T) {
	t.Parallel()
	static, err := fs.Sub(web.FS, "static")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		wantText string
	}{
		{name: "index.html", wantText: `<script src="app.js"`},
		{name: "app.js", wantText: "v1/validations?wait=20s"},
		{name: "app.css", wantText: ":focus-visible"},
		{name: "favicon.svg", wantText: "<svg"},
	} {
		b, err := fs.ReadFile(static, tc.name)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !bytes.Contains(b, []byte(tc.wantText)) {
			t.Errorf("%s does not contain %q", tc.name, tc.wantText)
		}
	}
}

// pageProblems lists what would break the page under a strict CSP
// (script-src 'self'; style-src 'self'), load something from another
// origin, or hurt keyboard and screen-reader users.
func pageProblems(doc string) []string {
	var problems []string
	root, err := html.Parse(strings.NewReader(doc))
	if err != nil {
		return []string{err.Error()}
	}
	labelled := map[string]bool{}
	var inputs []string
	hasViewport := false
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			attrs := map[string]string{}
			for _, a := range n.Attr {
				attrs[a.Key] = a.Val
				if strings.HasPrefix(a.Key, "on") {
					problems = append(problems, "inline event handler "+a.Key+" on <"+n.Data+">")
				}
				if a.Key == "style" {
					problems = append(problems, "inline style on <"+n.Data+">")
				}
				if (a.Key == "src" || a.Key == "href" || a.Key == "action") && (strings.Contains(a.Val, "//") || strings.HasPrefix(a.Val, "javascript:")) {
					problems = append(problems, "<"+n.Data+" "+a.Key+"="+a.Val+"> leaves the origin")
				}
			}
			switch n.Data {
			case "script":
				if attrs["src"] == "" || n.FirstChild != nil {
					problems = append(problems, "inline <script>")
				}
			case "style":
				problems = append(problems, "inline <style>")
			case "meta":
				if attrs["name"] == "viewport" && strings.Contains(attrs["content"], "width=device-width") {
					hasViewport = true
				}
			case "label":
				if attrs["for"] != "" {
					labelled[attrs["for"]] = true
				}
			case "input", "select", "textarea":
				if attrs["type"] != "hidden" {
					inputs = append(inputs, attrs["id"])
				}
			case "html":
				if attrs["lang"] == "" {
					problems = append(problems, "<html> without lang")
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(root)
	for _, id := range inputs {
		if id == "" || !labelled[id] {
			problems = append(problems, "form field without a <label for>: id="+id)
		}
	}
	if !hasViewport {
		problems = append(problems, "no viewport meta (unreadable on a phone)")
	}
	return problems
}

func TestPageProblems(t *testing.T) {
	t.Parallel()
	page, err := fs.ReadFile(web.FS, "static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	const head = `<!doctype html><html lang="en"><head><meta name="viewport" content="width=device-width"></head><body>`
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{name: "the real page", doc: string(page), want: nil},
		{name: "inline script", doc: head + `<script>alert(1)</script>`, want: []string{"inline <script>"}},
		{name: "CDN script", doc: head + `<script src="https://cdn.example/x.js"></script>`, want: []string{"<script src=https://cdn.example/x.js> leaves the origin"}},
		{name: "event handler", doc: head + `<button onclick="go()">x</button>`, want: []string{"inline event handler onclick on <button>"}},
		{name: "inline style", doc: head + `<p style="color:red">x</p>`, want: []string{"inline style on <p>"}},
		{name: "unlabelled input", doc: head + `<input id="q">`, want: []string{"form field without a <label for>: id=q"}},
		{name: "no viewport", doc: `<html lang="en"><body></body></html>`, want: []string{"no viewport meta (unreadable on a phone)"}},
	} {
		got := pageProblems(tc.doc)
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%s: problems = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestScriptNeverParsesData guards the XSS rule: server data goes into the
// DOM with textContent only.
func TestScriptNeverParsesData(t *testing.T) {
	t.Parallel()
	js, err := fs.ReadFile(web.FS, "static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	bad := regexp.MustCompile(`\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|\beval\(|new Function`)
	for i, line := range strings.Split(string(js), "\n") {
		if bad.MatchString(line) {
			t.Errorf("app.js:%d parses a string as HTML or code: %s", i+1, strings.TrimSpace(line))
		}
	}
}
