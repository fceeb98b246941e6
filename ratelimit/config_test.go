package ratelimit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/ratelimit"
)

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	ok := ratelimit.Limit{Rate: 10, Per: time.Minute, Burst: 3}
	with := func(f func(*ratelimit.Config)) ratelimit.Config {
		c := ratelimit.DefaultConfig()
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		cfg     ratelimit.Config
		wantErr string // "" = valid
	}{
		{name: "defaults", cfg: ratelimit.DefaultConfig()},
		{name: "zero config takes defaults", cfg: ratelimit.Config{}},
		{name: "provider sessions default", cfg: ratelimit.Config{Providers: map[string]ratelimit.Limit{"example.com": ok}}},
		{name: "zero default rate", cfg: ratelimit.Config{Default: ratelimit.Limit{Per: time.Minute, Burst: 3}}, wantErr: "default limit: rate 0: must be at least 1"},
		{name: "negative default rate", cfg: ratelimit.Config{Default: ratelimit.Limit{Rate: -5, Per: time.Minute, Burst: 3}}, wantErr: "rate -5: must be at least 1"},
		{name: "zero period", cfg: ratelimit.Config{Default: ratelimit.Limit{Rate: 10, Burst: 3}}, wantErr: "period 0s: must be positive"},
		{name: "negative period", cfg: ratelimit.Config{Default: ratelimit.Limit{Rate: 10, Per: -time.Second, Burst: 3}}, wantErr: "must be positive"},
		{name: "zero burst", cfg: ratelimit.Config{Default: ratelimit.Limit{Rate: 10, Per: time.Minute}}, wantErr: "burst 0: must be at least 1"},
		{name: "negative sessions", cfg: ratelimit.Config{Default: ratelimit.Limit{Rate: 10, Per: time.Minute, Burst: 1, Sessions: -1}}, wantErr: "sessions -1"},
		{name: "rate beyond a microsecond", cfg: ratelimit.Config{Default: ratelimit.Limit{Rate: 2_000_000, Per: time.Second, Burst: 1}}, wantErr: "faster than one per microsecond"},
		{name: "provider zero rate", cfg: with(func(c *ratelimit.Config) {
			c.Providers["gmail.example"] = ratelimit.Limit{Per: time.Minute, Burst: 1}
		}), wantErr: `provider "gmail.example": rate 0`},
		{name: "provider bad name", cfg: with(func(c *ratelimit.Config) { c.Providers["bad name.com"] = ok }), wantErr: `provider "bad name.com": character ' '`},
		{name: "override empty suffix", cfg: with(func(c *ratelimit.Config) { c.Overrides[""] = "x.com" }), wantErr: `override suffix "": empty name`},
		{name: "override dot suffix", cfg: with(func(c *ratelimit.Config) { c.Overrides["."] = "x.com" }), wantErr: `override suffix "": empty name`},
		{name: "override empty label", cfg: with(func(c *ratelimit.Config) { c.Overrides["a..b.com"] = "x.com" }), wantErr: `override suffix "a..b.com": empty label`},
		{name: "override empty group", cfg: with(func(c *ratelimit.Config) { c.Overrides["mx.example.com"] = "" }), wantErr: `group "": empty name`},
		{name: "override group with brace", cfg: with(func(c *ratelimit.Config) { c.Overrides["mx.example.com"] = "a{b}" }), wantErr: `character '{'`},
		{name: "override wildcard", cfg: with(func(c *ratelimit.Config) { c.Overrides["*.google.com"] = "google.com" }), wantErr: `override suffix "*.google.com": character '*'`},
		{name: "prefix with brace", cfg: ratelimit.Config{Prefix: "rl:{x}:"}, wantErr: "must not contain braces"},
		{name: "negative lease TTL", cfg: ratelimit.Config{LeaseTTL: -time.Second}, wantErr: "lease TTL -1s"},
		{name: "multiplier below 1", cfg: ratelimit.Config{CoolDown: ratelimit.CoolDownConfig{Multiplier: 0.5}}, wantErr: "cool-down multiplier 0.5"},
		{name: "max below initial", cfg: ratelimit.Config{CoolDown: ratelimit.CoolDownConfig{Initial: time.Hour, Max: time.Minute}}, wantErr: "cool-down max 1m0s: below initial 1h0m0s"},
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // New must not dial
	t.Cleanup(func() { rdb.Close() })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := ratelimit.New(rdb, tt.cfg)
			if tt.wantErr == "" {
				if err != nil || l == nil {
					t.Fatalf("New = %v, %v; want a limiter", l, err)
				}
				return
			}
			if err == nil || l != nil {
				t.Fatalf("New = %v, %v; want error containing %q", l, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "ratelimit: invalid config") {
				t.Fatalf("New error = %q; want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewNilClient(t *testing.T) {
	t.Parallel()
	if _, err := ratelimit.New(nil, ratelimit.Config{}); err == nil {
		t.Fatal("New(nil, …) succeeded")
	}
}

func TestLimitFor(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	cfg := ratelimit.Config{
		Default:   ratelimit.Limit{Rate: 5, Per: time.Minute, Burst: 2},
		Providers: map[string]ratelimit.Limit{"Google.com.": {Rate: 20, Per: time.Minute, Burst: 5}},
	}
	l, err := ratelimit.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		group string
		want  ratelimit.Limit
	}{
		{name: "provider, name normalised, sessions from default", group: "google.com", want: ratelimit.Limit{Rate: 20, Per: time.Minute, Burst: 5, Sessions: 2}},
		{name: "default", group: "example.org", want: ratelimit.Limit{Rate: 5, Per: time.Minute, Burst: 2, Sessions: 2}},
	}
	for _, tt := range tests {
		if got := l.Limit(tt.group); got != tt.want {
			t.Errorf("%s: Limit(%q) = %v; want %v", tt.name, tt.group, got, tt.want)
		}
	}
}

func TestGroup(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	l, err := ratelimit.New(rdb, ratelimit.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, mx, want string
	}{
		{name: "google primary", mx: "aspmx.l.google.com", want: "google.com"},
		{name: "google alt, trailing dot, upper case", mx: "ALT4.ASPMX.L.GOOGLE.COM.", want: "google.com"},
		{name: "microsoft 365 tenant", mx: "contoso-com.mail.protection.outlook.com.", want: "mail.protection.outlook.com"},
		{name: "consumer outlook", mx: "hotmail-com.olc.protection.outlook.com", want: "olc.protection.outlook.com"},
		{name: "override needs a label boundary", mx: "xmail.protection.outlook.com", want: "outlook.com"},
		{name: "outlook.com itself", mx: "outlook.com", want: "outlook.com"},
		{name: "yahoo", mx: "mta5.am0.yahoodns.net", want: "yahoodns.net"},
		{name: "multi-label public suffix", mx: "mx1.example.co.uk", want: "example.co.uk"},
		{name: "private-section suffix groups per customer", mx: "mx.foo.github.io", want: "foo.github.io"},
		{name: "bare public suffix is its own group", mx: "co.uk", want: "co.uk"},
		{name: "single label", mx: "localhost", want: "localhost"},
		{name: "IPv4 literal", mx: "192.0.2.1", want: "192.0.2.1"},
	}
	for _, tt := range tests {
		if got := l.Group(tt.mx); got != tt.want {
			t.Errorf("%s: Group(%q) = %q; want %q", tt.name, tt.mx, got, tt.want)
		}
	}
}

func TestGroupLongestOverrideWins(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	l, err := ratelimit.New(rdb, ratelimit.Config{Overrides: map[string]string{
		"example.net":         "outer.example",
		"in.example.net":      "inner.example",
		".Upper.Example.Org.": "upper.example",
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, mx, want string }{
		{name: "inner", mx: "a.in.example.net", want: "inner.example"},
		{name: "outer", mx: "a.out.example.net", want: "outer.example"},
		{name: "suffix itself", mx: "example.net", want: "outer.example"},
		{name: "normalised override key", mx: "mx.upper.example.org", want: "upper.example"},
	}
	for _, tt := range tests {
		if got := l.Group(tt.mx); got != tt.want {
			t.Errorf("%s: Group(%q) = %q; want %q", tt.name, tt.mx, got, tt.want)
		}
	}
}
