package api_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestLoginNextOnlyCleanLocalPaths: the post-login redirect goes to a clean
// path on this site or to /. Browsers drop tab, CR and LF from URLs (WHATWG
// URL), so "/\t/evil.example" would become "//evil.example".
func TestLoginNextOnlyCleanLocalPaths(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	noRedirect := *b.srv.Client()
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	tests := []struct{ next, want string }{
		{"/", "/"},
		{"/v1/batches/abc?format=csv", "/v1/batches/abc?format=csv"},
		{"/monitoring/", "/monitoring/"},
		{"//evil.example/", "/"},
		{"/\t/evil.example", "/"},
		{"/\n/evil.example", "/"},
		{"/\r/evil.example", "/"},
		{"/ /evil.example", "/"},
		{"/\x00/evil.example", "/"},
		{"/\x1b[31m", "/"},
		{"/\\evil.example", "/"},
		{"/a\\..\\/evil.example", "/"},
		{"/\u00a0/evil.example", "/"},
		{"/\u2028/x", "/"},
		{"https://evil.example/", "/"},
		{"javascript:alert(1)", "/"},
		{"", "/"},
		{"relative", "/"},
	}
	for _, tt := range tests {
		form := url.Values{"key": {keyA}, "next": {tt.next}}
		req, _ := http.NewRequest("POST", b.srv.URL+"/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || got != tt.want {
			t.Errorf("POST /login next=%q: %d Location %q, want %q", tt.next, resp.StatusCode, got, tt.want)
		}
		// The form carries next through: GET /login?next=… must clean it too.
		resp, err = noRedirect.Get(b.srv.URL + "/login?next=" + url.QueryEscape(tt.next))
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if refused := tt.want == "/" && tt.next != "/"; refused && !strings.Contains(string(page), `name="next" value=""`) {
			t.Errorf("GET /login?next=%q: the form keeps it: %s", tt.next, page)
		}
	}
}
