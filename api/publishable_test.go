package api_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/api"
)

func TestParsePublishable(t *testing.T) {
	t.Parallel()
	good, err := api.ParsePublishable(" pk_shop=https://Shop.example,https://www.shop.example:8443/ ; pk_blog=http://127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(good["pk_shop"], " "); got != "https://shop.example https://www.shop.example:8443" {
		t.Errorf("pk_shop origins %q", got)
	}
	for _, bad := range []string{
		"pk_shop",                             // no origins
		"pk shop=https://a.example",           // bad id
		"pk_shop=shop.example",                // no scheme
		"pk_shop=ftp://shop.example",          // not http(s)
		"pk_shop=https://shop.example/signup", // a path
		"pk_shop=https://*.shop.example",      // wildcards are not origins
		"pk_shop=https://u:p@shop.example",    // credentials
		"pk_shop=https://a.example;pk_shop=https://b.example",
		"pk_shop=",
	} {
		if _, err := api.ParsePublishable(bad); err == nil {
			t.Errorf("ParsePublishable(%q) accepted", bad)
		}
	}
}

// TestPublishableKeys: a publishable key works for POST /validate from the
// origins on its list, with CORS, and for nothing else.
func TestPublishableKeys(t *testing.T) {
	t.Parallel()
	const shop = "https://shop.example"
	b := setup(t, opts{cfg: func(c *api.Config) {
		c.Publishable = api.Publishable{"pk_shop": {shop}}
		c.PublishableIPQuota = 5
		c.ValidateWait = time.Millisecond // answer at once: no worker here
	}})
	req := func(method, path, key, origin, body string) *http.Response {
		t.Helper()
		r, err := http.NewRequest(method, b.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if key != "" {
			r.Header.Set("Authorization", "Bearer "+key)
		}
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if method == "OPTIONS" {
			r.Header.Set("Access-Control-Request-Method", "POST")
			r.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		}
		resp, err := b.srv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	const body = `{"email":"a@example.test"}`

	pre := req("OPTIONS", "/validate", "", shop, "")
	if pre.StatusCode != http.StatusNoContent || pre.Header.Get("Access-Control-Allow-Origin") != shop ||
		!strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "Authorization") || pre.Header.Get("Access-Control-Allow-Methods") != "POST" {
		t.Errorf("preflight from the shop: %d %v", pre.StatusCode, pre.Header)
	}
	if pre := req("OPTIONS", "/validate", "", "https://evil.example", ""); pre.StatusCode != http.StatusForbidden || pre.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from elsewhere: %d %v", pre.StatusCode, pre.Header)
	}
	if ok := req("POST", "/validate", "pk_shop", shop, body); ok.StatusCode != http.StatusOK || ok.Header.Get("Access-Control-Allow-Origin") != shop {
		t.Errorf("POST from the shop: %d %v", ok.StatusCode, ok.Header)
	}
	for _, tt := range []struct {
		name, method, path, key, origin string
		want                            int
	}{
		{"another origin", "POST", "/validate", "pk_shop", "https://evil.example", http.StatusForbidden},
		{"no origin (a server, not a browser)", "POST", "/validate", "pk_shop", "", http.StatusForbidden},
		{"an unknown publishable id", "POST", "/validate", "pk_other", shop, http.StatusUnauthorized},
		{"another route", "POST", "/v1/validations", "pk_shop", shop, http.StatusUnauthorized},
		{"reading results", "GET", "/v1/providers", "pk_shop", shop, http.StatusUnauthorized},
	} {
		if resp := req(tt.method, tt.path, tt.key, tt.origin, body); resp.StatusCode != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}
	// A secret key still works without an origin.
	if resp := req("POST", "/validate", keyA, "", body); resp.StatusCode != http.StatusOK {
		t.Errorf("secret key: %d", resp.StatusCode)
	}
	// The per-IP quota (5 a minute here; one used above) ends in 429.
	codes := []int{}
	for range 6 {
		codes = append(codes, req("POST", "/validate", "pk_shop", shop, body).StatusCode)
	}
	if codes[3] != http.StatusOK || codes[4] != http.StatusTooManyRequests || codes[5] != http.StatusTooManyRequests {
		t.Errorf("statuses over the IP quota of 5: %v (after 1 earlier), want 4 × 200 then 429", codes)
	}
}

func TestPublishableIDMustNotBeASecretKey(t *testing.T) {
	t.Parallel()
	keys, err := api.ParseKeys(keyA)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // New does not dial
	t.Cleanup(func() { _ = rdb.Close() })
	_, err = api.New(api.Config{Redis: rdb, Keys: keys, Publishable: api.Publishable{"alice": {"https://a.example"}}})
	if err == nil || !strings.Contains(err.Error(), "also a secret key") {
		t.Errorf("New: %v, want the clash named", err)
	}
}

// TestFormScriptAndDemoPage: the helper script and the demo are served
// without a key, and a bad ?key= is refused rather than written into HTML.
func TestFormScriptAndDemoPage(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{})
	resp, body := b.do(t, "GET", "/form.js", "", "", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") || !strings.Contains(string(body), "/validate") {
		t.Errorf("/form.js: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, body = b.do(t, "GET", "/signup-demo?key=pk_shop", "", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `data-key="pk_shop"`) {
		t.Errorf("/signup-demo: %d %s", resp.StatusCode, body)
	}
	if resp, _ := b.do(t, "GET", `/signup-demo?key="><script>alert(1)</script>`, "", "", nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("/signup-demo with markup in key: %d, want 400", resp.StatusCode)
	}
}

func TestIPBucket(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"198.51.100.7", "198.51.100.7"},
		{"2001:db8::1", "2001:db8::/64"},
		{"2001:db8::a", "2001:db8::/64"},
		{"2001:db8:0:1::1", "2001:db8:0:1::/64"},
		{"::ffff:198.51.100.7", "::ffff:198.51.100.7"},
		{"not an ip", "not an ip"},
	} {
		if got := api.IPBucket(tt.in); got != tt.want {
			t.Errorf("ipBucket(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestPublishableIPQuotaSparesTheKey: what the per-IP quota refuses does
// not count against the key, so one host cannot switch the checks off for
// every other visitor of the page.
func TestPublishableIPQuotaSparesTheKey(t *testing.T) {
	t.Parallel()
	const shop = "https://shop.example"
	b := setup(t, opts{cfg: func(c *api.Config) {
		c.Publishable = api.Publishable{"pk_shop": {shop}}
		c.PublishableIPQuota = 3
		c.Quota = 5
		c.ValidateWait = time.Millisecond
	}})
	from := func(local string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
	post := func(c *http.Client) int {
		t.Helper()
		r, _ := http.NewRequest("POST", b.srv.URL+"/validate", strings.NewReader(`{"email":"a@example.test"}`))
		r.Header.Set("Authorization", "Bearer pk_shop")
		r.Header.Set("Origin", shop)
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	greedy, other := from("127.0.0.1"), from("127.0.0.2")
	var codes []int
	for range 10 {
		codes = append(codes, post(greedy))
	}
	if codes[2] != http.StatusOK || codes[3] != http.StatusTooManyRequests {
		t.Fatalf("one IP over its quota of 3: %v", codes)
	}
	// The key has used 3 of its 5; the other visitor still gets 2.
	if a, b := post(other), post(other); a != http.StatusOK || b != http.StatusOK {
		t.Errorf("another IP after the greedy one: %d %d, want 200 200 (the key's quota spent by refused requests?)", a, b)
	}
	if c := post(other); c != http.StatusTooManyRequests {
		t.Errorf("past the key's quota of 5: %d, want 429", c)
	}
}
