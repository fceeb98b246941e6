package doctor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/proxy"

	"github.com/mxprobe/mxprobe/validator"
)

// smtpResult is what the outbound-smtp check learnt.
type smtpResult struct {
	finding Finding
	host    string     // MX host that answered
	echo    netip.Addr // address the server says it sees, from its EHLO reply
	local   netip.Addr // local end of the connection (without a proxy)
}

// proxyResult is what the proxy check learnt.
type proxyResult struct {
	finding Finding
	ok      bool
	host    netip.Addr // the proxy's address
}

// Reply caps as in the validator's client: a hostile peer must not grow
// memory (docs/smtp.md; RFC 5321 §4.5.3.1.5 allows 512 octets a line).
const (
	maxLineLength = 2000
	maxReplyLines = 100
	// maxMXTried: enough to tell "this host refuses" from "port 25 is
	// blocked" without waiting out many timeouts.
	maxMXTried = 2
)

func (a *auditor) baseDialer() *net.Dialer {
	d := &net.Dialer{Timeout: a.cfg.ConnectTimeout}
	if a.cfg.SourceAddr.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: a.cfg.SourceAddr.AsSlice(), Zone: a.cfg.SourceAddr.Zone()}
	}
	return d
}

// dialer returns the dialer probes use: through the proxy when one is set.
func (a *auditor) dialer() (proxy.ContextDialer, error) {
	nd := a.baseDialer()
	if a.cfg.ProxyURL == "" {
		return nd, nil
	}
	u, err := parseProxy(a.cfg.ProxyURL)
	if err != nil {
		return nil, err
	}
	d, err := proxy.FromURL(u, nd)
	if err != nil {
		return nil, err
	}
	cd, ok := d.(proxy.ContextDialer)
	if !ok {
		return nil, fmt.Errorf("proxy dialer %T takes no context", d)
	}
	return cd, nil
}

// checkSMTP connects to the MX of cfg.Domain the way probes do and says
// whether outbound port 25 works.
func (a *auditor) checkSMTP(ctx context.Context) smtpResult {
	f := Finding{Check: "outbound-smtp"}
	res := smtpResult{}
	port := strconv.Itoa(a.cfg.SMTPPort)
	vr, err := validator.NewDNSResolver(validator.DNSConfig{
		Servers: a.dns.servers, Timeout: a.cfg.DNSTimeout, MaxMXHosts: maxMXTried,
		AllowPrivate: a.cfg.AllowPrivate, CacheSize: -1,
	})
	if err == nil {
		var set validator.MXSet
		set, err = vr.ResolveMX(ctx, a.cfg.Domain)
		if err == nil {
			return a.connectMX(ctx, set, port)
		}
	}
	f.Status = Warn
	f.Summary = fmt.Sprintf("port %s not checked: no mail host for %s", port, a.cfg.Domain)
	f.Detail = err.Error()
	f.Fix = "give --domain a domain that receives mail (e.g. gmail.com), and check that the --dns servers answer"
	if errors.Is(err, validator.ErrDNSTemporary) {
		f.Summary = fmt.Sprintf("port %s not checked: DNS failed for %s", port, a.cfg.Domain)
	}
	res.finding = f
	return res
}

func (a *auditor) connectMX(ctx context.Context, set validator.MXSet, port string) smtpResult {
	f := Finding{Check: "outbound-smtp"}
	res := smtpResult{}
	d, err := a.dialer()
	if err != nil {
		f.Status, f.Summary, f.Fix = Fail, "cannot use the proxy: "+err.Error(), "correct --proxy"
		res.finding = f
		return res
	}
	via := ""
	if a.cfg.ProxyURL != "" {
		via = " through the proxy"
	}
	var conn net.Conn
	var errs []string
	var firstErr error
	var host string
	for _, h := range set.Hosts[:min(len(set.Hosts), maxMXTried)] {
		if len(h.Addrs) == 0 {
			continue
		}
		addr := net.JoinHostPort(h.Addrs[0].String(), port)
		dctx, cancel := context.WithTimeout(ctx, a.cfg.ConnectTimeout)
		c, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err == nil {
			conn, host = c, h.Name
			break
		}
		if firstErr == nil {
			firstErr = err
		}
		errs = append(errs, fmt.Sprintf("%s (%s): %v", h.Name, addr, err))
	}
	if conn == nil {
		f.Status = Fail
		f.Detail = strings.Join(errs, "; ")
		if firstErr == nil {
			f.Summary = fmt.Sprintf("no MX host of %s has an address to connect to", set.Domain)
			f.Fix = "give --domain a domain whose mail hosts resolve"
		} else {
			f.Summary, f.Fix = describeDialErr(firstErr, port, via != "")
		}
		res.finding = f
		return res
	}
	defer conn.Close()
	res.host = host
	if ta, ok := conn.LocalAddr().(*net.TCPAddr); ok && a.cfg.ProxyURL == "" {
		res.local = ta.AddrPort().Addr().Unmap()
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	br := bufio.NewReader(conn)
	read := func() (validator.Reply, error) {
		conn.SetReadDeadline(time.Now().Add(a.cfg.CommandTimeout))
		r, _, err := validator.ReadReply(br, maxLineLength, maxReplyLines)
		return r, err
	}
	send := func(line string) error {
		conn.SetWriteDeadline(time.Now().Add(a.cfg.CommandTimeout))
		_, err := io.WriteString(conn, line+"\r\n")
		return err
	}
	// quit ends the session politely and waits for the reply, so the
	// server sees a clean close rather than a reset.
	quit := func() {
		if send("QUIT") == nil {
			_, _ = read()
		}
	}
	where := fmt.Sprintf("%s (%s)", host, conn.RemoteAddr())
	if via != "" {
		where = host
	}
	banner, err := read()
	if err != nil {
		f.Status = Fail
		f.Summary = fmt.Sprintf("connected to %s%s, but it sent no SMTP greeting", where, via)
		f.Detail = err.Error()
		f.Fix = "a firewall or provider may intercept port 25 and hold connections; ask the provider, or use a SOCKS5 proxy on a host with open port 25 (--proxy)"
		res.finding = f
		return res
	}
	if banner.Code != 220 {
		f.Status = Warn
		if banner.Code >= 500 {
			f.Status = Fail
		}
		f.Summary = fmt.Sprintf("port %s is open, but %s refused us at the greeting: %d %s", port, where, banner.Code, oneLine(banner.Text))
		f.Fix = "read the reply: it usually names a blocklist or a reputation problem of the egress IP (see the checks below)"
		res.finding = f
		quit()
		return res
	}
	helo := a.cfg.HeloName
	if helo == "" {
		helo = "localhost.localdomain"
		if res.local.IsValid() {
			helo = literal(res.local)
		}
	}
	if err := send("EHLO " + helo); err != nil {
		f.Status, f.Summary, f.Detail = Fail, fmt.Sprintf("connected to %s%s, but the connection broke", where, via), err.Error()
		f.Fix = "run again; if it persists, a firewall may interfere with port 25"
		res.finding = f
		return res
	}
	ehlo, err := read()
	switch {
	case err != nil:
		f.Status, f.Summary, f.Detail = Warn, fmt.Sprintf("port %s is open (%s answered%s), but EHLO got no reply", port, where, via), err.Error()
		f.Fix = "run again; a slow or strict server may drop clients it distrusts (see the identity checks below)"
	case ehlo.Code != 250:
		f.Status = Warn
		f.Summary = fmt.Sprintf("port %s is open (%s answered%s), but EHLO %s was refused: %d %s", port, where, via, helo, ehlo.Code, oneLine(ehlo.Text))
		f.Fix = "set --helo to the PTR name of the egress IP (see the helo check)"
	default:
		f.Status = OK
		f.Summary = fmt.Sprintf("port %s is open: %s answered%s", port, where, via)
		f.Detail = fmt.Sprintf("greeting %q", oneLine(banner.Text))
		res.echo = echoedAddr(ehlo.Text)
		if res.echo.IsValid() {
			f.Detail += fmt.Sprintf("; it sees us as %s", res.echo)
		}
	}
	quit()
	res.finding = f
	return res
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " / ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

// echoRE finds the client address many servers put in the first line of
// their EHLO reply: Gmail "mx.google.com at your service, [203.0.113.5]",
// Exim "Hello name [203.0.113.5]" (docs/smtp.md §6).
var echoRE = regexp.MustCompile(`\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]`)

func echoedAddr(text string) netip.Addr {
	first, _, _ := strings.Cut(text, "\n")
	m := echoRE.FindStringSubmatch(first)
	if m == nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(m[1])
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// describeDialErr tells the operator what a failed connect means.
func describeDialErr(err error, port string, viaProxy bool) (summary, fix string) {
	msg := err.Error()
	switch {
	case viaProxy && strings.Contains(msg, "socks connect") && !errors.Is(err, syscall.ECONNREFUSED) && !isTimeout(err):
		// The proxy answered but could not reach the MX: its reply code
		// (RFC 1928 §6) is in the message.
		return fmt.Sprintf("the proxy could not reach port %s: %s", port, msg),
			"the proxy's own network blocks port " + port + " or the MX refused it: use a proxy whose host can send mail"
	case viaProxy && (errors.Is(err, syscall.ECONNREFUSED) || isTimeout(err)):
		return "could not connect through the proxy: " + msg, "check the proxy (see the proxy line) and --proxy"
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("port %s connection refused", port),
			"the mail host, or a firewall on the way (this host's included: check iptables/nftables OUTPUT rules), actively refused; try another --domain, and check the local firewall"
	case isTimeout(err):
		return fmt.Sprintf("port %s timed out: outbound SMTP looks blocked", port),
			"most cloud and home providers block outbound port 25 (AWS, Google Cloud, Azure, DigitalOcean, residential ISPs); ask the provider to lift the block, or send probes through a SOCKS5 proxy on a host that can reach port 25 (--proxy)"
	case errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH):
		return fmt.Sprintf("port %s unreachable: no route to the mail host", port),
			"check this host's network; if it has no IPv6 route, probe over IPv4 (--ipv4)"
	}
	return fmt.Sprintf("port %s connect failed: %v", port, err), "check this host's network and firewall"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// checkProxy greets the SOCKS5 proxy (RFC 1928 §3) and, with credentials,
// authenticates (RFC 1929), without asking it to connect anywhere.
func (a *auditor) checkProxy(ctx context.Context) proxyResult {
	res := proxyResult{finding: Finding{Check: "proxy"}}
	f := &res.finding
	u, _ := parseProxy(a.cfg.ProxyURL) // checked by Config.check
	name := u.Redacted()
	fail := func(summary, detail, fix string) proxyResult {
		f.Status, f.Summary, f.Detail, f.Fix = Fail, summary, detail, fix
		return res
	}
	host := u.Hostname()
	ip, err := netip.ParseAddr(host)
	if err != nil {
		addrs, err := a.dns.addrs(ctx, host)
		if err != nil || len(addrs) == 0 {
			return fail(fmt.Sprintf("proxy %s: its host name does not resolve", name), fmt.Sprint(err), "correct --proxy, or use the proxy's IP address")
		}
		ip = addrs[0]
	}
	res.host = ip.Unmap()
	dctx, cancel := context.WithTimeout(ctx, a.cfg.ConnectTimeout)
	defer cancel()
	conn, err := a.baseDialer().DialContext(dctx, "tcp", net.JoinHostPort(ip.String(), u.Port()))
	if err != nil {
		what := "does not answer"
		if errors.Is(err, syscall.ECONNREFUSED) {
			what = "refused the connection (nothing listens there)"
		} else if isTimeout(err) {
			what = "did not answer in time"
		}
		return fail(fmt.Sprintf("proxy %s %s", name, what), err.Error(), "start the proxy or correct --proxy; probes cannot run without it")
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(a.cfg.CommandTimeout))

	user := u.User.Username()
	pass, _ := u.User.Password()
	hello := []byte{5, 1, 0} // version 5, one method: no authentication
	if user != "" {
		hello = []byte{5, 2, 0, 2} // also username/password
	}
	if _, err := conn.Write(hello); err != nil {
		return fail(fmt.Sprintf("proxy %s closed the connection", name), err.Error(), "check that --proxy points at a SOCKS5 proxy")
	}
	var rep [2]byte
	if _, err := io.ReadFull(conn, rep[:]); err != nil {
		return fail(fmt.Sprintf("proxy %s did not answer the SOCKS5 greeting", name), err.Error(),
			"check that --proxy points at a SOCKS5 proxy (an HTTP proxy cannot carry SMTP)")
	}
	switch {
	case rep[0] != 5:
		return fail(fmt.Sprintf("proxy %s is not a SOCKS5 proxy", name), fmt.Sprintf("greeting answered with version byte %d", rep[0]),
			"point --proxy at a SOCKS5 proxy; HTTP proxies cannot carry SMTP")
	case rep[1] == 0:
	case rep[1] == 2 && user != "":
		if len(user) > 255 || len(pass) > 255 {
			return fail(fmt.Sprintf("proxy %s: username or password longer than 255 bytes", name), "", "shorten the credentials (RFC 1929)")
		}
		msg := append([]byte{1, byte(len(user))}, user...)
		msg = append(append(msg, byte(len(pass))), pass...)
		if _, err := conn.Write(msg); err != nil {
			return fail(fmt.Sprintf("proxy %s closed the connection during authentication", name), err.Error(), "check the proxy's logs")
		}
		if _, err := io.ReadFull(conn, rep[:]); err != nil || rep[1] != 0 {
			return fail(fmt.Sprintf("proxy %s rejected the username and password", name), fmt.Sprint(err),
				"correct the user:password in --proxy")
		}
	case rep[1] == 0xff && user == "":
		return fail(fmt.Sprintf("proxy %s wants credentials", name), "it accepts none of the offered methods",
			"add them: --proxy socks5://user:pass@host:port")
	default:
		return fail(fmt.Sprintf("proxy %s accepts none of our authentication methods", name), fmt.Sprintf("method %d chosen", rep[1]),
			"configure the proxy for no authentication or username/password (RFC 1929)")
	}
	res.ok = true
	f.Status, f.Summary = OK, fmt.Sprintf("SOCKS5 proxy %s answers", name)
	return res
}

// proxyFinding completes the proxy line with the address probes leave from.
func (a *auditor) proxyFinding(pr proxyResult, sr smtpResult, eg netip.Addr) Finding {
	f := pr.finding
	if !pr.ok {
		return f
	}
	switch {
	case sr.echo.IsValid():
		f.Summary += fmt.Sprintf("; probes leave from %s (as %s sees it through the proxy)", sr.echo, sr.host)
	case eg.IsValid() && eg == a.cfg.EgressIP:
		f.Summary += fmt.Sprintf("; probes leave from %s (configured)", eg)
	case global(pr.host):
		f.Summary += fmt.Sprintf("; probes likely leave from %s, the proxy's address", pr.host)
		f.Detail = "a proxy with several addresses may send from another one; --domain gmail.com shows the address a server sees"
	default:
		f.Status = Warn
		f.Summary += fmt.Sprintf("; the address probes leave from is unknown (the proxy is at %s)", pr.host)
		f.Fix = "run with --domain gmail.com so a server shows the address it sees, or set --egress-ip"
	}
	return f
}

// egress decides the address receivers see and reports how it was learnt.
func (a *auditor) egress(_ context.Context, sr smtpResult, pr proxyResult) (netip.Addr, Finding) {
	f := Finding{Check: "egress-ip"}
	configured := a.cfg.EgressIP
	if !configured.IsValid() && a.cfg.ProxyURL == "" {
		configured = a.cfg.SourceAddr
	}
	switch {
	case configured.IsValid():
		if sr.echo.IsValid() && sr.echo != configured.Unmap() {
			f.Status = Warn
			f.Summary = fmt.Sprintf("configured egress IP %s, but %s saw %s", configured, sr.host, sr.echo)
			f.Detail = "identity checks below use the configured address; receivers judge the one they see"
			f.Fix = "set --egress-ip to the address servers see, or bind probes to the configured one with --source"
			return configured, f
		}
		f.Status, f.Summary = OK, fmt.Sprintf("egress IP %s (configured)", configured)
		if sr.echo.IsValid() {
			f.Summary += fmt.Sprintf(", confirmed by %s", sr.host)
		}
		return configured, f
	case sr.echo.IsValid():
		f.Status, f.Summary = OK, fmt.Sprintf("egress IP %s (as %s sees it)", sr.echo, sr.host)
		if sr.local.IsValid() && sr.local != sr.echo {
			f.Detail = fmt.Sprintf("this host's local address is %s: it is behind NAT", sr.local)
		}
		if !global(sr.echo) {
			f.Status = Warn
			f.Detail = "the server saw a private address: it is on your own network, so this is not what the internet sees"
			f.Fix = "set --egress-ip, or run with --domain gmail.com"
			return netip.Addr{}, f
		}
		return sr.echo, f
	case a.cfg.ProxyURL != "" && pr.ok && global(pr.host):
		f.Status, f.Summary = OK, fmt.Sprintf("egress IP %s (the proxy's address; not confirmed by a server)", pr.host)
		return pr.host, f
	case a.cfg.ProxyURL == "" && sr.local.IsValid():
		if global(sr.local) {
			f.Status, f.Summary = OK, fmt.Sprintf("egress IP %s (local address of the connection to %s)", sr.local, sr.host)
			return sr.local, f
		}
		f.Status = Warn
		f.Summary = fmt.Sprintf("egress IP unknown: the local address %s is private (behind NAT)", sr.local)
		f.Detail = "reverse DNS, SPF and blocklists are judged on the public address, which this host cannot see"
		f.Fix = "set --egress-ip to the public address, or run with --domain gmail.com, whose MX shows the address it sees"
		return netip.Addr{}, f
	}
	f.Status, f.Summary = Warn, "egress IP unknown: reverse DNS, SPF and blocklists not checked"
	f.Fix = "set --egress-ip to the public address probes leave from, or run with --domain gmail.com to learn it"
	return netip.Addr{}, f
}
