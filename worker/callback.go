package worker

// Callback delivery: one signed HTTP POST per attempt; retries belong to the
// email:callback task, which reads the outcome returned here.
//
//  1. CheckURL at enqueue time (and again before each attempt): http or
//     https, a host, no credentials, a sane port; a literal IP is checked
//     against the address policy; no DNS is done here.
//  2. Dial: the transport resolves the name, and for every address it is
//     about to connect to, the dialer's Control hook checks the address
//     against the policy after the socket is created and before connect(2).
//     A name that resolves (or is rebound) to 127.0.0.1 or to a cloud
//     metadata address never gets a SYN.
//  3. POST the JSON body with the event ID, timestamp and signature headers
//     (tasks.Sign), within one per-attempt timeout that covers dial, TLS,
//     headers and body.
//  4. Classify the answer: 2xx delivered, 410 gone, and a *CallbackError
//     saying whether another attempt could help. Redirects are never
//     followed. The response body is read up to a cap and discarded.
//
// Standard library only: net/http with its own Transport (never the
// environment's proxy, which would dial the target on our behalf and defeat
// the dial-time check).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mxprobe/mxprobe/tasks"
)

// Defaults for CallbackConfig.
const (
	DefaultCallbackTimeout          = 10 * time.Second
	DefaultCallbackMaxResponseBytes = 64 << 10
	DefaultCallbackUserAgent        = "mxprobe-callback/1"
	// MaxCallbackURLLength caps a callback URL. It is stored in every task
	// payload and result; real webhook URLs are far shorter.
	MaxCallbackURLLength = tasks.MaxCallbackURLLength
)

// maxRetryAfter caps a receiver's Retry-After: the callback's own retry
// budget is about a day, so a longer wait could only end in giving up.
const maxRetryAfter = 24 * time.Hour

// maxResponseHeaderBytes caps the receiver's response headers (net/http's
// default is 1 MiB); we read only the status and Retry-After.
const maxResponseHeaderBytes = 16 << 10

var (
	// ErrCallbackGone: the receiver answered 410 Gone. It asks never to be
	// called for this event again: do not retry.
	ErrCallbackGone = errors.New("callback receiver answered 410 Gone")
	// ErrBadCallbackURL: the URL is malformed or not one we will POST to.
	ErrBadCallbackURL = errors.New("bad callback URL")
	// ErrForbiddenAddress: the URL names, or its host resolved to, an
	// address the policy refuses (loopback, private, link-local, ...).
	ErrForbiddenAddress = errors.New("callback address not allowed")
)

// CallbackError is the outcome of an attempt that did not deliver, other
// than ErrCallbackGone. errors.Is sees through it to Err (for example
// ErrForbiddenAddress or context.DeadlineExceeded).
type CallbackError struct {
	// Status is the HTTP status of the response, 0 when there was none.
	Status int
	// Retryable says whether a later attempt could succeed.
	Retryable bool
	// RetryAfter is the receiver's Retry-After (RFC 9110 §10.2.3) as a
	// delay, 0 when absent; capped at a day.
	RetryAfter time.Duration
	Err        error
}

func (e *CallbackError) Error() string {
	var b strings.Builder
	b.WriteString("callback")
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Retryable {
		b.WriteString(" (retryable")
		if e.RetryAfter > 0 {
			fmt.Fprintf(&b, " after %s", e.RetryAfter)
		}
		b.WriteString(")")
	}
	return b.String()
}

func (e *CallbackError) Unwrap() error { return e.Err }

// CallbackConfig configures a Deliverer. The zero value of every field but
// Secret is a usable, strict default.
type CallbackConfig struct {
	// Secret signs every callback (tasks.Sign). Required; 32 random bytes
	// are plenty.
	Secret []byte
	// PreviousSecrets are also signed with, during a rotation, so receivers
	// still holding an old secret keep verifying. Empty entries are ignored.
	PreviousSecrets [][]byte
	// Timeout bounds one attempt: dial, TLS, response headers and reading
	// the body. Default DefaultCallbackTimeout.
	Timeout time.Duration
	// MaxResponseBytes is how much of a response body is read (and thrown
	// away) so the connection can be reused; a receiver streaming gigabytes
	// costs us this much and no more. Default DefaultCallbackMaxResponseBytes.
	MaxResponseBytes int64
	// AllowPrivate turns the address policy off: loopback, private,
	// link-local (including cloud metadata at 169.254.169.254) and every
	// other special range become reachable. For development only.
	AllowPrivate bool
	// Allowlist lets these prefixes through the address policy, for
	// example 127.0.0.1/32 in tests or 10.20.0.0/16 for an internal
	// receiver. Checked against the address actually dialled.
	Allowlist []netip.Prefix
	// AllowHosts exempts these host names from the address policy, whatever
	// they resolve to. An entry "*.example.internal" covers its subdomains
	// (not the name itself). Matching is case-insensitive and ignores a
	// trailing dot.
	AllowHosts []string
	// UserAgent is sent with every callback. Default DefaultCallbackUserAgent.
	UserAgent string
	// Logger receives one debug line per attempt. Default: discard.
	Logger *slog.Logger
}

// Deliverer POSTs signed callbacks. It is safe for concurrent use and keeps
// connections to receivers alive between callbacks.
type Deliverer struct {
	secrets   [][]byte
	timeout   time.Duration
	maxBody   int64
	userAgent string
	log       *slog.Logger
	policy    addrPolicy
	transport *http.Transport
	client    *http.Client
	now       func() time.Time
	// resolver is nil (the default resolver) except in tests, which point
	// it at a DNS server on loopback.
	resolver *net.Resolver
	// dialGuard, set only by tests, runs after the policy has allowed an
	// address: a safety net that keeps even a broken policy from sending a
	// packet off the test host.
	dialGuard func(address string) error
}

// NewDeliverer checks cfg, fills in defaults and builds the HTTP client.
func NewDeliverer(cfg CallbackConfig) (*Deliverer, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("callback: Secret is required")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("callback: negative Timeout %s", cfg.Timeout)
	}
	if cfg.MaxResponseBytes < 0 {
		return nil, fmt.Errorf("callback: negative MaxResponseBytes %d", cfg.MaxResponseBytes)
	}
	policy, err := newAddrPolicy(cfg)
	if err != nil {
		return nil, err
	}
	d := &Deliverer{
		secrets:   [][]byte{cfg.Secret},
		timeout:   orDefault(cfg.Timeout, DefaultCallbackTimeout),
		maxBody:   orDefault(cfg.MaxResponseBytes, DefaultCallbackMaxResponseBytes),
		userAgent: orDefault(cfg.UserAgent, DefaultCallbackUserAgent),
		log:       cfg.Logger,
		policy:    policy,
		now:       time.Now,
	}
	for _, s := range cfg.PreviousSecrets {
		if len(s) > 0 {
			d.secrets = append(d.secrets, s)
		}
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.transport = &http.Transport{
		// Never a proxy: it would resolve and connect on our behalf, out of
		// reach of the dial-time address check.
		Proxy:                  nil,
		DialContext:            d.dialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    d.timeout,
		ResponseHeaderTimeout:  d.timeout,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		// We discard the body; asking for gzip would only add work.
		DisableCompression:  true,
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	d.client = &http.Client{
		Transport: d.transport,
		// A redirect is an answer, not an instruction: following it would
		// send the signed body to a URL nobody checked at enqueue time,
		// possibly internal (the dial check would still catch private
		// addresses, but not a public host the producer never named).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return d, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Close drops idle keep-alive connections.
func (d *Deliverer) Close() { d.transport.CloseIdleConnections() }

// CheckURL is CheckURL under d's policy.
func (d *Deliverer) CheckURL(raw string) error {
	_, err := d.policy.checkURL(raw)
	return err
}

// CheckURL validates a callback URL when it is enqueued, under the address
// policy of cfg (only AllowPrivate, Allowlist and AllowHosts matter; the
// zero CallbackConfig is the strict default). It does no DNS: a host name
// passes here and its addresses are checked when they are dialled. Errors
// wrap ErrBadCallbackURL or ErrForbiddenAddress.
func CheckURL(raw string, cfg CallbackConfig) error {
	p, err := newAddrPolicy(cfg)
	if err != nil {
		return err
	}
	_, err = p.checkURL(raw)
	return err
}

// Deliver makes one attempt to POST body (JSON) to rawURL, signed, with
// eventID in tasks.HeaderEventID. It returns nil when the receiver answered
// 2xx, ErrCallbackGone for 410, and a *CallbackError otherwise.
//
// Retry policy, per outcome:
//   - 5xx, 408, 425, 429, timeouts, refused or reset connections, DNS and
//     TLS failures: retryable. They describe the receiver's or the
//     network's current state, which changes; the task's retry budget
//     bounds the cost. Retry-After is passed on.
//   - other 4xx (400, 401, 403, 404, 422, ...): not retryable. The receiver
//     read the request and refused it, and another attempt would send the
//     same bytes: retrying cannot change the answer. A receiver that is
//     down for a deploy should answer 503, not 404. (401 during a secret
//     rotation is avoided by PreviousSecrets, not by retrying.)
//   - 3xx: not retryable; redirects are not followed (see NewDeliverer).
//   - a URL or address the policy refuses: not retryable.
//   - ctx cancelled by the caller (worker shutting down): retryable; the
//     attempt did not fail, it was interrupted.
func (d *Deliverer) Deliver(ctx context.Context, rawURL, eventID string, body []byte) error {
	u, err := d.policy.checkURL(rawURL)
	if err != nil {
		return &CallbackError{Err: err}
	}
	if eventID == "" || strings.ContainsAny(eventID, "\r\n") {
		return &CallbackError{Err: fmt.Errorf("invalid event ID %q", eventID)}
	}
	start := d.now()
	attemptCtx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()

	req, err := http.NewRequestWithContext(attemptCtx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return &CallbackError{Err: fmt.Errorf("%w: %v", ErrBadCallbackURL, err)}
	}
	sigs := make([]string, len(d.secrets))
	for i, s := range d.secrets {
		sigs[i] = tasks.Sign(s, start, body)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.userAgent)
	req.Header.Set(tasks.HeaderEventID, eventID)
	req.Header.Set(tasks.HeaderTimestamp, strconv.FormatInt(start.Unix(), 10))
	req.Header.Set(tasks.HeaderSignature, strings.Join(sigs, ","))

	resp, err := d.client.Do(req)
	if err != nil {
		out := d.transportError(ctx, err)
		d.logAttempt(ctx, u, eventID, 0, start, out)
		return out
	}
	// Read up to the cap so a small body leaves the connection reusable;
	// a bigger one is cut off and the connection closed. Errors here do not
	// change the outcome: the status line is the receiver's answer.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, d.maxBody))
	_ = resp.Body.Close()

	out := d.classify(resp)
	d.logAttempt(ctx, u, eventID, resp.StatusCode, start, out)
	return out
}

func (d *Deliverer) transportError(ctx context.Context, err error) error {
	// The HTTP client's *url.Error quotes the whole URL, and webhook URLs
	// carry tokens in their path or query: keep only the operation and the
	// cause, so the token reaches neither the log nor the task's stored
	// error (TestWorkerLogsKeepSecrets).
	var ue *url.Error
	if errors.As(err, &ue) {
		err = fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	switch {
	case errors.Is(err, ErrForbiddenAddress):
		return &CallbackError{Err: err}
	case ctx.Err() != nil:
		return &CallbackError{Retryable: true, Err: fmt.Errorf("interrupted: %w", context.Cause(ctx))}
	default:
		return &CallbackError{Retryable: true, Err: err}
	}
}

func (d *Deliverer) classify(resp *http.Response) error {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusGone:
		return ErrCallbackGone
	case code >= 300 && code < 400:
		return &CallbackError{Status: code, Err: fmt.Errorf("redirect to %q not followed", resp.Header.Get("Location"))}
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests:
		return &CallbackError{
			Status:     code,
			Retryable:  true,
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), d.now()),
			Err:        errors.New(http.StatusText(code)),
		}
	default:
		return &CallbackError{Status: code, Err: fmt.Errorf("receiver refused: %s", http.StatusText(code))}
	}
}

func (d *Deliverer) logAttempt(ctx context.Context, u *url.URL, eventID string, status int, start time.Time, out error) {
	// Only the host: query strings of webhook URLs often carry tokens.
	attrs := []slog.Attr{
		slog.String("host", u.Host),
		slog.String("event_id", eventID),
		slog.Int("status", status),
		slog.Duration("elapsed", d.now().Sub(start)),
	}
	if out != nil {
		attrs = append(attrs, slog.String("error", out.Error()))
	}
	d.log.LogAttrs(ctx, slog.LevelDebug, "callback attempt", attrs...)
}

// parseRetryAfter reads delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
// Garbage reads as no hint at all.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// dialContext resolves and connects like net.Dialer, with the address
// policy enforced on each resolved address just before connect(2).
func (d *Deliverer) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	exempt := d.policy.hostExempt(host)
	dialer := &net.Dialer{
		Timeout:   d.timeout,
		KeepAlive: 30 * time.Second,
		Resolver:  d.resolver,
		Control: func(network, address string, _ syscall.RawConn) error {
			if err := d.policy.checkDial(network, address, exempt); err != nil {
				return err
			}
			if d.dialGuard != nil {
				return d.dialGuard(address)
			}
			return nil
		},
	}
	return dialer.DialContext(ctx, network, addr)
}

// addrPolicy decides which addresses callbacks may connect to.
type addrPolicy struct {
	allowPrivate bool
	allowlist    []netip.Prefix
	allowHosts   []string // lower case, no trailing dot
}

func newAddrPolicy(cfg CallbackConfig) (addrPolicy, error) {
	p := addrPolicy{allowPrivate: cfg.AllowPrivate}
	for _, pfx := range cfg.Allowlist {
		if !pfx.IsValid() {
			return addrPolicy{}, fmt.Errorf("callback: invalid Allowlist prefix %q", pfx)
		}
		p.allowlist = append(p.allowlist, pfx.Masked())
	}
	for _, h := range cfg.AllowHosts {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		if h == "" || h == "*" || h == "*." {
			return addrPolicy{}, fmt.Errorf("callback: invalid AllowHosts entry %q", h)
		}
		p.allowHosts = append(p.allowHosts, h)
	}
	return p, nil
}

func (p addrPolicy) hostExempt(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, h := range p.allowHosts {
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

// checkDial is the dialer's Control hook: address is the "ip:port" about to
// be connected to, after DNS. It fails closed on anything it cannot parse.
func (p addrPolicy) checkDial(network, address string, exempt bool) error {
	if network != "tcp4" && network != "tcp6" {
		return fmt.Errorf("%w: network %q", ErrForbiddenAddress, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable dial address %q", ErrForbiddenAddress, address)
	}
	return p.checkAddr(ap.Addr(), exempt)
}

func (p addrPolicy) checkAddr(a netip.Addr, exempt bool) error {
	if p.allowPrivate || exempt {
		return nil
	}
	a = a.WithZone("")
	for _, pfx := range p.allowlist {
		if pfx.Contains(a) || pfx.Contains(a.Unmap()) {
			return nil
		}
	}
	if why := forbiddenReason(a); why != "" {
		return fmt.Errorf("%w: %s is %s", ErrForbiddenAddress, a, why)
	}
	return nil
}

// specialRanges are refused beyond what netip's predicates cover. Each is
// either not reachable on the public internet or reaches somewhere it must
// not (the local host, a provider's internal network).
var specialRanges = []struct {
	prefix netip.Prefix
	why    string
}{
	// "This network": Linux connects 0.0.0.0 to the local host (RFC 1122 §3.2.1.3).
	{netip.MustParsePrefix("0.0.0.0/8"), "in 0.0.0.0/8"},
	// Carrier-grade NAT (RFC 6598); also where some clouds put metadata.
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space (CGNAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"}, // RFC 6890
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},             // RFC 5737
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},          // RFC 5737
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},           // RFC 5737
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast"},      // RFC 7526
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},             // RFC 2544
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},                   // RFC 1112 §4, incl. broadcast
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (deprecated)"},     // RFC 4291 §2.5.5.1
	{netip.MustParsePrefix("100::/64"), "discard-only"},                  // RFC 6666
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},         // RFC 8215
	{netip.MustParsePrefix("2001::/32"), "Teredo"},                       // RFC 4380
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},            // RFC 3849
	{netip.MustParsePrefix("fec0::/10"), "site-local (deprecated)"},      // RFC 3879
}

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052 §2.1
	sixToFour   = netip.MustParsePrefix("2002::/16")    // RFC 3056 §2
)

// forbiddenReason says why a is refused, or "" when it is a public unicast
// address. Addresses that embed an IPv4 address (mapped, NAT64, 6to4) are
// judged by the embedded one: the packet ends up there.
func forbiddenReason(a netip.Addr) string {
	if !a.IsValid() {
		return "invalid"
	}
	if a.Is4In6() {
		if why := forbiddenReason(a.Unmap()); why != "" {
			return "IPv4-mapped " + why
		}
		return ""
	}
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate(): // RFC 1918, RFC 4193 fc00::/7
		return "private"
	case a.IsLinkLocalUnicast(): // RFC 3927 (incl. cloud metadata 169.254.169.254), RFC 4291 fe80::/10
		return "link-local"
	case a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "multicast or broadcast"
	}
	for _, r := range specialRanges {
		if r.prefix.Contains(a) {
			return r.why
		}
	}
	if a.Is6() {
		b := a.As16()
		var v4 [4]byte
		switch {
		case nat64Prefix.Contains(a):
			copy(v4[:], b[12:16])
		case sixToFour.Contains(a):
			copy(v4[:], b[2:6])
		default:
			return ""
		}
		if why := forbiddenReason(netip.AddrFrom4(v4)); why != "" {
			return "IPv4-embedding " + why
		}
	}
	return ""
}

// refusedPorts are ports of plain-text protocols that a POST could be
// smuggled into (mail submission, Redis, memcached). A webhook
// receiver has no business on them.

// checkURL is the parse-time check; it returns the parsed URL. The syntax
// rules are tasks.ParseCallbackURL's, the ones Enqueue already applied; the
// address policy (literals, localhost) is the worker's.
func (p addrPolicy) checkURL(raw string) (*url.URL, error) {
	u, err := tasks.ParseCallbackURL(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCallbackURL, err)
	}
	host := u.Hostname()
	exempt := p.hostExempt(host)
	if a, err := netip.ParseAddr(host); err == nil {
		if err := p.checkAddr(a, exempt); err != nil {
			return nil, err
		}
		return u, nil
	}
	// RFC 6761 §6.3: localhost names resolve to loopback, so refuse them
	// now rather than after the task has waited in the queue.
	lh := strings.TrimSuffix(strings.ToLower(host), ".")
	if lh == "localhost" || strings.HasSuffix(lh, ".localhost") {
		if err := p.checkAddr(netip.AddrFrom4([4]byte{127, 0, 0, 1}), exempt); err != nil {
			return nil, fmt.Errorf("%w: %s is loopback", ErrForbiddenAddress, host)
		}
	}
	return u, nil
}
