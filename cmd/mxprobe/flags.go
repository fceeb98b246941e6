package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/validator"
)

// envName is the environment variable that stands in for a flag.
func envName(flagName string) string {
	return "MXPROBE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command line
// from its MXPROBE_* variable, so the command line always wins.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := envName(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %v", name, v, err))
		}
	})
	if len(errs) > 0 {
		return usageError{errors.Join(errs...).Error()}
	}
	return nil
}

// printFlagHelp writes the flag list with the environment name of each.
func printFlagHelp(w io.Writer, fs *flag.FlagSet, synopsis string) {
	fmt.Fprintf(w, "Usage: %s\n\nFlags:\n", synopsis)
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  --%s\n      %s%s  [%s]\n", f.Name, f.Usage, def, envName(f.Name))
	})
}

// probeFlags are the settings of the validator shared by check, worker and
// serve.
type probeFlags struct {
	helo           string
	from           string
	smtpPort       int
	dns            string
	dnsTimeout     time.Duration
	dnsCanary      string
	dnsCanaryEvery time.Duration
	timeout        time.Duration
	connectTimeout time.Duration
	commandTimeout time.Duration
	noSMTP         bool
	ipv4, ipv6     bool
	proxy          string
	source         string
	tlsVerify      bool
	noCatchAll     bool
	noReuse        bool
	sessionRcpts   int
	sessionRejects int
	sessionIdle    time.Duration
	sessionMaxAge  time.Duration
	pipelining     bool
	maxMX          int
	allowPrivate   bool
	allow, deny    string
}

func (p *probeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.helo, "helo", "", "EHLO name: the FQDN your egress IP's PTR points to (default: this host's name, with a warning)")
	fs.StringVar(&p.from, "from", "", "MAIL FROM address on a domain whose SPF allows your egress IP (default: postmaster@<helo>, with a warning)")
	fs.IntVar(&p.smtpPort, "smtp-port", 25, "SMTP port of the recipients' mail servers")
	fs.StringVar(&p.dns, "dns", "", "comma-separated DNS servers host[:port] (default: /etc/resolv.conf)")
	fs.DurationVar(&p.dnsTimeout, "dns-timeout", 5*time.Second, "timeout of one DNS query")
	fs.StringVar(&p.dnsCanary, "dns-canary", strings.Join(validator.DefaultCanaryNames, ","), "comma-separated domains that must have MX records before the resolver's NXDOMAIN or no-MX answer may make an address invalid (while they fail such answers are unknown/dns_error); none: trust every answer")
	fs.DurationVar(&p.dnsCanaryEvery, "dns-canary-interval", validator.DefaultCanaryInterval, "how often the DNS canary is checked (its result is shared through Redis by workers)")
	fs.DurationVar(&p.timeout, "timeout", 3*time.Minute, "bound on the whole check of one address")
	fs.DurationVar(&p.connectTimeout, "connect-timeout", 30*time.Second, "TCP connect timeout per MX address")
	fs.DurationVar(&p.commandTimeout, "command-timeout", 60*time.Second, "timeout for each SMTP reply (RFC 5321 §4.5.3.2 allows minutes; tarpits add seconds)")
	fs.BoolVar(&p.noSMTP, "no-smtp", false, "stop after DNS: no SMTP traffic at all")
	fs.BoolVar(&p.ipv4, "ipv4", false, "connect to MX hosts over IPv4 only")
	fs.BoolVar(&p.ipv6, "ipv6", false, "connect to MX hosts over IPv6 only")
	fs.StringVar(&p.proxy, "proxy", "", "SOCKS5 proxy URL, socks5://[user:pass@]host:port")
	fs.StringVar(&p.source, "source", "", "local source IP address for SMTP connections")
	fs.BoolVar(&p.tlsVerify, "tls-verify", false, "verify the MX host's certificate during STARTTLS (opportunistic TLS otherwise)")
	fs.BoolVar(&p.noCatchAll, "no-catch-all", false, "skip the catch-all probe (one RCPT fewer per session)")
	fs.BoolVar(&p.noReuse, "no-session-reuse", false, "open and QUIT a new SMTP session for every address (reuse is the politeness lever; keep it on)")
	fs.IntVar(&p.sessionRcpts, "session-rcpts", 10, "addresses asked in one reused SMTP session at most")
	fs.IntVar(&p.sessionRejects, "session-rejects", 3, "refused RCPTs after which a session is closed (Postfix slows clients from 10)")
	fs.DurationVar(&p.sessionIdle, "session-idle", 5*time.Second, "an unused open session is closed with QUIT after this long")
	fs.DurationVar(&p.sessionMaxAge, "session-max-age", time.Minute, "a session is closed this long after it was opened (keep below the rate limiter's lease TTL)")
	fs.BoolVar(&p.pipelining, "pipelining", false, "pipeline RSET/MAIL/RCPT (RFC 2920) where the server advertises PIPELINING")
	fs.IntVar(&p.maxMX, "max-mx", 3, "at most this many MX hosts are tried")
	fs.BoolVar(&p.allowPrivate, "allow-private", false, "allow MX hosts on loopback/private/link-local addresses (for labs and tests)")
	fs.StringVar(&p.allow, "allow", "", "comma-separated domains or addresses always accepted without probing")
	fs.StringVar(&p.deny, "deny", "", "comma-separated domains or addresses always refused")
}

// config turns the flags into a validator configuration. warn receives one
// line per default that an operator should replace.
func (p *probeFlags) config(warn func(string)) (validator.Config, error) {
	var cfg validator.Config
	if p.ipv4 && p.ipv6 {
		return cfg, usagef("--ipv4 and --ipv6 exclude each other")
	}
	if p.smtpPort < 1 || p.smtpPort > 65535 {
		return cfg, usagef("--smtp-port %d: not a TCP port", p.smtpPort)
	}
	if p.timeout <= 0 || p.connectTimeout <= 0 || p.commandTimeout <= 0 || p.dnsTimeout <= 0 {
		return cfg, usagef("timeouts must be positive")
	}
	if p.maxMX < 1 {
		return cfg, usagef("--max-mx must be at least 1")
	}
	if p.sessionRcpts < 1 || p.sessionRejects < 1 {
		return cfg, usagef("--session-rcpts and --session-rejects must be at least 1")
	}
	if p.sessionIdle <= 0 || p.sessionMaxAge <= 0 {
		return cfg, usagef("--session-idle and --session-max-age must be positive")
	}
	helo, from := p.helo, p.from
	if helo == "" && !p.noSMTP {
		h, err := os.Hostname()
		if err != nil || !strings.Contains(h, ".") {
			h = "localhost.localdomain"
		}
		helo = h
		warn(fmt.Sprintf("no --helo set: using %q; servers that check reverse DNS will block or greylist probes (see README, FAQ)", helo))
	}
	if from == "" && !p.noSMTP {
		from = "postmaster@" + strings.TrimPrefix(strings.TrimSuffix(helo, "."), "[")
		warn(fmt.Sprintf("no --from set: using %q; use a real mailbox on a domain whose SPF allows your IP", from))
	}
	cfg.Probe = validator.ProbeConfig{
		HeloName:       helo,
		MailFrom:       from,
		Port:           p.smtpPort,
		ConnectTimeout: p.connectTimeout,
		CommandTimeout: p.commandTimeout,
		ProxyURL:       p.proxy,
		TLSVerify:      p.tlsVerify,
		CatchAllProbe:  !p.noCatchAll,
		Pool: validator.PoolConfig{
			Disabled:    p.noReuse,
			MaxRcpts:    p.sessionRcpts,
			MaxRejects:  p.sessionRejects,
			IdleTimeout: p.sessionIdle,
			MaxAge:      p.sessionMaxAge,
		},
		Pipelining: p.pipelining,
	}
	if p.source != "" {
		ip, err := netip.ParseAddr(p.source)
		if err != nil {
			return cfg, usagef("--source %q: %v", p.source, err)
		}
		cfg.Probe.SourceAddr = ip
	}
	servers, err := dnsServers(p.dns)
	if err != nil {
		return cfg, err
	}
	canary, err := p.canaryNames()
	if err != nil {
		return cfg, err
	}
	if p.dnsCanaryEvery <= 0 {
		return cfg, usagef("--dns-canary-interval must be positive")
	}
	cfg.DNS = validator.DNSConfig{
		Servers:      servers,
		Timeout:      p.dnsTimeout,
		MaxMXHosts:   p.maxMX,
		AllowPrivate: p.allowPrivate,
		Canary:       validator.CanaryConfig{Names: canary, Interval: p.dnsCanaryEvery},
	}
	switch {
	case p.ipv4:
		cfg.DNS.Family = validator.FamilyIPv4
	case p.ipv6:
		cfg.DNS.Family = validator.FamilyIPv6
	}
	for _, e := range splitList(p.allow) {
		if strings.Contains(e, "@") {
			cfg.Lists.AllowAddresses = append(cfg.Lists.AllowAddresses, e)
		} else {
			cfg.Lists.AllowDomains = append(cfg.Lists.AllowDomains, e)
		}
	}
	for _, e := range splitList(p.deny) {
		if strings.Contains(e, "@") {
			cfg.Lists.DenyAddresses = append(cfg.Lists.DenyAddresses, e)
		} else {
			cfg.Lists.DenyDomains = append(cfg.Lists.DenyDomains, e)
		}
	}
	cfg.NoSMTP = p.noSMTP
	return cfg, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// canaryNames parses --dns-canary: domain names, or "none" alone.
func (p *probeFlags) canaryNames() ([]string, error) {
	names := splitList(p.dnsCanary)
	if len(names) == 0 {
		return nil, usagef("--dns-canary is empty: give domains that have MX records, or none to trust every negative answer")
	}
	if slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, "none") }) {
		if len(names) > 1 {
			return nil, usagef("--dns-canary %q: none cannot be combined with names", p.dnsCanary)
		}
		return nil, nil
	}
	for _, n := range names {
		if strings.ContainsAny(n, "@/:[] ") || !strings.Contains(strings.Trim(n, "."), ".") {
			return nil, usagef("--dns-canary %q: %q is not a domain name with MX records (such as gmail.com)", p.dnsCanary, n)
		}
	}
	return names, nil
}

// dnsServers accepts "1.1.1.1", "1.1.1.1:53", "[::1]:5353" and "::1", and
// returns host:port forms.
func dnsServers(s string) ([]string, error) {
	var out []string
	for _, e := range splitList(s) {
		if ap, err := netip.ParseAddrPort(e); err == nil {
			out = append(out, ap.String())
			continue
		}
		ip, err := netip.ParseAddr(strings.Trim(e, "[]"))
		if err != nil {
			return nil, usagef("--dns %q: not an IP address or IP:port", e)
		}
		out = append(out, netip.AddrPortFrom(ip, 53).String())
	}
	return out, nil
}
