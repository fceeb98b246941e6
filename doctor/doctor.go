// Package doctor audits the host mxprobe runs on: can it reach port 25 at
// all, and will receiving servers trust it. A verifier on a badly set-up
// host gives wrong answers (blocked, greylisted, "unknown"), so each check
// says in plain words what is wrong and how to fix it (docs/smtp.md §6).
//
// Run goes through the checks in this order:
//
//  0. dns-canary: the resolver answers names that certainly exist
//     (Config.CanaryNames); one that denies them would turn every address
//     invalid, so the validator trusts no NXDOMAIN from it.
//  1. proxy: when a SOCKS5 proxy is configured, it answers the SOCKS5
//     greeting (and accepts the credentials).
//  2. outbound-smtp: resolve the MX of Config.Domain, connect to port 25
//     (through the proxy when one is set), read the banner, send EHLO and
//     QUIT. Refused and timed out are told apart: a timeout is what a
//     provider's port-25 block looks like. A server that echoes our
//     address in its EHLO reply ("[203.0.113.5]") shows the IP it sees.
//  3. egress-ip: the address receivers see, from (in order) the
//     configuration, the EHLO echo, the proxy's host, or the local address
//     of the connection. A mismatch between them is reported.
//  4. fcrdns: the egress IP has a PTR whose A/AAAA points back to it
//     (Postfix reject_unknown_client_hostname, Gmail's PTR rule).
//  5. helo: the configured HELO name is that PTR name and resolves to the
//     egress IP (RFC 5321 §4.1.4; Postfix reject_unknown_helo_hostname).
//  6. spf: the MAIL FROM domain's SPF (or the HELO name's, for a null
//     sender) authorizes the egress IP (RFC 7208).
//  7. dnsbl:<zone>: the egress IP is not listed, with return codes
//     explained; Spamhaus's 127.255.255.x error answers are "not checked",
//     never "listed".
//
// Quick runs 0 and 4–7 only, with the configured egress IP, and sends no SMTP:
// the worker runs it at start-up and logs the warnings.
//
// DNS questions go to the configured servers with miekg/dns (the library the
// validator uses), since PTR, TXT and the NXDOMAIN/SERVFAIL distinction of
// DNSBLs are beyond the validator's MX resolver, which is still used for the
// MX step. SPF is evaluated by blitiri.com.ar/go/spf (by chasquid's author,
// MIT): it implements RFC 7208 in full (ip4/ip6 with CIDR, a, mx, include,
// redirect, exists, ptr, macros, the 10-lookup and 2-void-lookup limits),
// takes a context and a pluggable resolver, and has no run-time
// dependencies; writing our own evaluator would only re-derive its edge cases.
// The SOCKS5 greeting is written here (a dozen bytes, RFC 1928/1929) because
// golang.org/x/net/proxy exposes no way to greet without connecting.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Status is the outcome of one check.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
	// Skip: the check could not run (nothing configured, or it depends on
	// something unknown, such as the egress IP).
	Skip Status = "skip"
)

// Finding is one line of the checklist.
type Finding struct {
	// Check is a stable identifier: "proxy", "outbound-smtp", "egress-ip",
	// "fcrdns", "helo", "spf" or "dnsbl:<zone>".
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Summary string `json:"summary"`
	// Detail explains what was seen (records, replies, errors).
	Detail string `json:"detail,omitempty"`
	// Fix says what to do; set for warn and fail.
	Fix string `json:"fix,omitempty"`
}

// Report is the result of Run.
type Report struct {
	// Egress is the IP address receivers see, when it could be learnt.
	Egress   netip.Addr `json:"egress_ip,omitzero"`
	Findings []Finding  `json:"findings"`
}

// Failed reports whether any finding failed.
func Failed(fs []Finding) bool {
	for _, f := range fs {
		if f.Status == Fail {
			return true
		}
	}
	return false
}

// DefaultDNSBLZones are the blocklists checked when Config.DNSBLZones is nil:
// Spamhaus ZEN (SBL, CSS, XBL, PBL in one zone) and SpamCop, the two most
// receivers consult.
var DefaultDNSBLZones = []string{"zen.spamhaus.org", "bl.spamcop.net"}

// Config says what to audit. Zero values take the documented defaults.
type Config struct {
	// Domain is a mail domain whose MX the outbound-smtp check connects to
	// (e.g. gmail.com, whose MX echoes the client address). Empty skips it.
	Domain string
	// HeloName is the EHLO name probes send.
	HeloName string
	// MailFrom is the envelope sender probes send; empty means the null
	// sender, for which SPF checks postmaster@HeloName (RFC 7208 §2.4).
	MailFrom string
	// EgressIP is the public address probes leave from, when the operator
	// knows it. Otherwise it is learnt from the outbound-smtp check.
	EgressIP netip.Addr
	// SourceAddr binds outgoing connections, as validator.ProbeConfig does.
	// Without a proxy it is also the egress IP when EgressIP is unset.
	SourceAddr netip.Addr
	// ProxyURL is the SOCKS5 proxy probes go through,
	// socks5://[user:pass@]host:port.
	ProxyURL string
	// SMTPPort is the port of the MX hosts; default 25.
	SMTPPort int
	// DNSServers are the recursive servers asked, "ip" or "ip:port".
	// Default: /etc/resolv.conf. Use your own resolver: Spamhaus refuses
	// queries from public ones (127.255.255.254).
	DNSServers []string
	// DNSTimeout bounds one DNS query; default 5s.
	DNSTimeout time.Duration
	// ConnectTimeout bounds a TCP (or SOCKS5) connect; default 15s.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each SMTP reply; default 30s.
	CommandTimeout time.Duration
	// DNSBLZones are the blocklists checked; nil means DefaultDNSBLZones,
	// an empty non-nil slice checks none.
	DNSBLZones []string
	// CanaryNames are domains that must have MX records for the resolver's
	// negative answers to be trusted (validator.CanaryConfig). Empty: the
	// dns-canary check is skipped.
	CanaryNames []string
	// NoIdentity limits Quick to the DNS canary: for a worker that sends
	// no SMTP (--no-smtp), whose identity nobody sees.
	NoIdentity bool
	// AllowPrivate lets the MX of Domain be on loopback or private
	// addresses (labs and tests); see validator.DNSConfig.
	AllowPrivate bool
}

// check validates cfg and fills in defaults.
func (c *Config) check() error {
	var errs []error
	switch {
	case c.SMTPPort == 0:
		c.SMTPPort = 25
	case c.SMTPPort < 0 || c.SMTPPort > 65535:
		errs = append(errs, fmt.Errorf("SMTP port %d out of range", c.SMTPPort))
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.DNSTimeout, 5 * time.Second}, {&c.ConnectTimeout, 15 * time.Second}, {&c.CommandTimeout, 30 * time.Second}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if c.DNSBLZones == nil {
		c.DNSBLZones = DefaultDNSBLZones
	}
	for i, z := range c.DNSBLZones {
		z = strings.ToLower(strings.Trim(strings.TrimSpace(z), "."))
		if z == "" || !strings.Contains(z, ".") {
			errs = append(errs, fmt.Errorf("DNSBL zone %q: want a domain such as zen.spamhaus.org", c.DNSBLZones[i]))
		}
	}
	if c.ProxyURL != "" {
		if _, err := parseProxy(c.ProxyURL); err != nil {
			errs = append(errs, err)
		}
	}
	if c.MailFrom != "" && !strings.Contains(c.MailFrom, "@") {
		errs = append(errs, fmt.Errorf("MAIL FROM %q: want local@domain", c.MailFrom))
	}
	return errors.Join(errs...)
}

func parseProxy(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("proxy URL: %v", err)
	}
	if u.Scheme != "socks5" && u.Scheme != "socks5h" {
		return nil, fmt.Errorf("proxy URL scheme %q: only socks5:// carries SMTP", u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("proxy URL %q: want socks5://[user:pass@]host:port", u.Redacted())
	}
	return u, nil
}

// auditor holds one run's state.
type auditor struct {
	cfg Config
	dns *resolver
}

// Run audits the host and returns every finding. The error is for a bad
// Config only; what goes wrong on the network is a finding.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.check(); err != nil {
		return Report{}, err
	}
	r, err := newResolver(cfg.DNSServers, cfg.DNSTimeout)
	if err != nil {
		return Report{}, err
	}
	a := &auditor{cfg: cfg, dns: r}
	var rep Report
	rep.Findings = append(rep.Findings, a.checkCanary(ctx))

	var pr proxyResult
	if cfg.ProxyURL != "" {
		pr = a.checkProxy(ctx)
	}
	var sr smtpResult
	if cfg.Domain != "" {
		sr = a.checkSMTP(ctx)
	} else {
		sr.finding = Finding{Check: "outbound-smtp", Status: Skip,
			Summary: "not checked: no domain given",
			Fix:     "run mxprobe doctor --domain gmail.com (Gmail's MX also shows the IP it sees) to test outbound port 25"}
	}
	eg, ef := a.egress(ctx, sr, pr)
	if cfg.ProxyURL != "" {
		rep.Findings = append(rep.Findings, a.proxyFinding(pr, sr, eg))
	}
	rep.Findings = append(rep.Findings, sr.finding, ef)
	rep.Egress = eg
	rep.Findings = append(rep.Findings, a.identity(ctx, eg)...)
	return rep, nil
}

// Quick runs the identity checks (FCrDNS, HELO, SPF, DNSBL) for the
// configured egress IP (EgressIP, else SourceAddr without a proxy) and sends
// no SMTP. A bad Config is reported as one failed finding.
func Quick(ctx context.Context, cfg Config) []Finding {
	if err := cfg.check(); err != nil {
		return []Finding{{Check: "config", Status: Fail, Summary: "self-audit not run: " + err.Error(), Fix: "correct the configuration"}}
	}
	r, err := newResolver(cfg.DNSServers, cfg.DNSTimeout)
	if err != nil {
		return []Finding{{Check: "config", Status: Fail, Summary: "self-audit not run: " + err.Error(), Fix: "set --dns"}}
	}
	a := &auditor{cfg: cfg, dns: r}
	out := []Finding{a.checkCanary(ctx)}
	if cfg.NoIdentity {
		return out
	}
	eg := cfg.EgressIP
	if !eg.IsValid() && cfg.ProxyURL == "" {
		eg = cfg.SourceAddr
	}
	if !eg.IsValid() {
		out = append(out, Finding{Check: "egress-ip", Status: Warn,
			Summary: "egress IP not configured: reverse DNS, SPF and blocklists not checked",
			Fix:     "set --egress-ip to the public address probes leave from, or run mxprobe doctor --domain gmail.com to find it"})
		return append(out, a.identity(ctx, netip.Addr{})...)
	}
	return append(out, a.identity(ctx, eg)...)
}

// identity runs the checks that depend on the egress IP.
func (a *auditor) identity(ctx context.Context, eg netip.Addr) []Finding {
	var out []Finding
	ptrNames, fc := a.checkFCrDNS(ctx, eg)
	out = append(out, fc, a.checkHELO(ctx, eg, ptrNames), a.checkSPF(ctx, eg))
	for _, z := range a.cfg.DNSBLZones {
		out = append(out, a.checkDNSBL(ctx, eg, strings.ToLower(strings.Trim(strings.TrimSpace(z), "."))))
	}
	return out
}
