package validator

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/proxy"

	"github.com/mxprobe/mxprobe/internal/redact"
)

// ProbeConfig configures the SMTP conversation. Zero values select the
// documented defaults, except HeloName, which must be set.
type ProbeConfig struct {
	// HeloName is the EHLO/HELO argument: an FQDN (ideally the PTR name of
	// the egress IP, docs/smtp.md §6) or an address literal "[192.0.2.1]".
	HeloName string
	// MailFrom is the envelope sender, a mailbox on the operator's domain
	// with SPF for the egress IPs. Empty sends the null sender "<>", which
	// many sites reject (§6); NewProber logs a warning.
	MailFrom string
	// Port is the SMTP port; default 25.
	Port int
	// ConnectTimeout bounds the TCP (and SOCKS5) connect; default 30s.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each reply; default 60s. RFC 5321 §4.5.3.2
	// allows up to 5 min, but tarpits add seconds, not minutes (§4).
	CommandTimeout time.Duration
	// SourceAddr binds outgoing connections to this local address (the
	// egress IP with PTR/HELO/SPF set up); zero lets the kernel choose.
	SourceAddr netip.Addr
	// ProxyURL routes connections through a SOCKS5 proxy,
	// "socks5://user:pass@host:port". HTTP proxies cannot carry SMTP.
	ProxyURL string
	// TLSVerify verifies the server certificate against ServerName = MX
	// name. Off (the default), STARTTLS is opportunistic: any certificate
	// is accepted and TLS is still recorded. On, a failed verification is
	// a tls_error and never falls back to plaintext.
	TLSVerify bool
	// TLSRootCAs replaces the system roots when TLSVerify is on (tests,
	// private CAs). nil: system roots.
	TLSRootCAs *x509.CertPool
	// CatchAllProbe sends a second RCPT for a random-looking local part
	// after the real one was accepted (§3). Skipped for providers whose
	// profile says so.
	CatchAllProbe bool
	// Transcript records every line with a timestamp in ProbeResult, for
	// every probe; WithTranscript decides per call instead (the worker asks
	// only when the request does, sparing an allocation per line).
	Transcript bool
	// MaxLineLength caps one reply line in octets; default 2,000, at least
	// 512 (RFC 5321 §4.5.3.1.5).
	MaxLineLength int
	// MaxReplyLines caps the lines of one reply; default 100.
	MaxReplyLines int
	// Logger receives one debug record per session; nil discards.
	Logger *slog.Logger
	// Debug, when set, receives the conversation live (mxprobe check --debug).
	Debug io.Writer
	// Pool bounds session reuse, which is on unless Pool.Disabled (pool.go).
	Pool PoolConfig
	// OnSessionEnd, when set, is told of every session when it ends (for
	// metrics: recipients per session). It must not block.
	OnSessionEnd func(SessionStats)
	// Pipelining sends RSET, MAIL and RCPT as one group (RFC 2920), and QUIT
	// last in the group that ends a session, when the server advertises
	// PIPELINING. Off by default: docs/smtp.md §5 advises against it
	// (Postfix ≥3.9 drops clients that pipeline where it is not allowed, and
	// rate limits, not round trips, bound throughput); see
	// docs/benchmarks.md for what it saves.
	Pipelining bool
	// CatchAllCache remembers catch-all results per domain; nil keeps them
	// in process for 24 h (NewMemoryCatchAllCache).
	CatchAllCache CatchAllCache
	// RejectBudgets shares the per-host budgets learnt from servers that
	// ended a session for its errors (budget.go); nil keeps them in
	// process only.
	RejectBudgets RejectBudgets
}

// Gate admits each new SMTP session; the worker wires the shared rate
// limiter into it. A new session costs one Admit; a parked session that
// serves another probe costs none and keeps its Admission until it closes.
// A nil Gate admits everything.
type Gate interface {
	Admit(ctx context.Context, host MXHost) (Admission, error)
}

type transcriptKey struct{}

// WithTranscript returns a context under which Probe (and Validate) record
// the transcript if on, or not, whatever ProbeConfig.Transcript says.
func WithTranscript(ctx context.Context, on bool) context.Context {
	return context.WithValue(ctx, transcriptKey{}, on)
}

// wantTranscript is WithTranscript's choice for ctx, else the config's.
func (p *Prober) wantTranscript(ctx context.Context) bool {
	if on, ok := ctx.Value(transcriptKey{}).(bool); ok {
		return on
	}
	return p.cfg.Transcript
}

// ProbeResult is the answer of one Probe.
type ProbeResult struct {
	Outcome Outcome
	// Stage is where the deciding reply or error happened.
	Stage Stage
	// Reply is the deciding reply; nil when there was none (I/O error).
	Reply *Reply
	// Host and Addr identify the MX host that decided.
	Host string
	Addr netip.Addr
	// TLS is true when the deciding session ran over STARTTLS.
	TLS bool
	// CatchAll: nil when not tested (or the test was inconclusive), else
	// whether the random recipient was accepted too.
	CatchAll *bool
	// CatchAllState is CatchAllYes or CatchAllNo with CatchAll, and
	// CatchAllUnknown when the test ran and proved nothing; empty when it
	// did not run.
	CatchAllState CatchAllState
	// Transcript holds every session's lines, in order, when asked for.
	Transcript []TranscriptLine
	// Err is the I/O, timeout, TLS or gate error, when one decided.
	Err error
}

// Prober runs SMTP probes. It is safe for concurrent use.
type Prober struct {
	cfg    ProbeConfig
	gate   Gate
	log    *slog.Logger
	debug  *lockedWriter
	dialer proxy.ContextDialer
	now    func() time.Time

	pool          *sessionPool // nil when reuse is off
	catchAllCache CatchAllCache
	budgets       RejectBudgets // shared; nil: none
	localBudgets  *MemoryRejectBudgets
	// rtts counts round trips (TCP connects and flush-then-read cycles)
	// for the session-reuse benchmark.
	rtts atomic.Int64
	// resetEach sends RSET and MAIL before every address of a reused
	// session instead of keeping the transaction open (benchmark only).
	resetEach bool

	// tlsBroken remembers MX hosts whose STARTTLS handshake failed while
	// TLSVerify was off, so that the next attempt to them goes plaintext
	// (Postfix's opportunistic "may" level does the same). Bounded.
	mu        sync.Mutex
	tlsBroken map[string]time.Time
}

const (
	// How long a failed STARTTLS handshake sends a host to plaintext.
	tlsBrokenTTL = 24 * time.Hour
	// Bound on that memory: one entry per MX host name.
	tlsBrokenMax = 4096
	// A host's addresses tried at most (RFC 5321 §5.1: "at least two").
	maxAddrsPerHost = 2
)

// NewProber checks cfg, fills in defaults and returns a Prober. A nil gate
// admits every session.
func NewProber(cfg ProbeConfig, gate Gate) (*Prober, error) {
	if err := checkHeloName(cfg.HeloName); err != nil {
		return nil, fmt.Errorf("probe: HeloName %q: %w", cfg.HeloName, err)
	}
	if cfg.MailFrom != "" {
		if err := checkMailFrom(cfg.MailFrom); err != nil {
			return nil, fmt.Errorf("probe: MailFrom %q: %w", cfg.MailFrom, err)
		}
	}
	switch {
	case cfg.Port == 0:
		cfg.Port = 25
	case cfg.Port < 0 || cfg.Port > 65535:
		return nil, fmt.Errorf("probe: Port %d out of range 1–65535", cfg.Port)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ConnectTimeout", &cfg.ConnectTimeout, 30 * time.Second},
		{"CommandTimeout", &cfg.CommandTimeout, 60 * time.Second},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			return nil, fmt.Errorf("probe: %s %v is negative", d.name, *d.v)
		}
	}
	switch {
	case cfg.MaxLineLength == 0:
		cfg.MaxLineLength = defaultMaxLineLength
	case cfg.MaxLineLength < minMaxLineLength:
		return nil, fmt.Errorf("probe: MaxLineLength %d below RFC 5321's 512", cfg.MaxLineLength)
	}
	switch {
	case cfg.MaxReplyLines == 0:
		cfg.MaxReplyLines = defaultMaxReplyLines
	case cfg.MaxReplyLines < 0:
		return nil, fmt.Errorf("probe: MaxReplyLines %d is negative", cfg.MaxReplyLines)
	}
	pc := &cfg.Pool
	for _, d := range []struct {
		name string
		v    *int
		def  int
	}{
		{"Pool.MaxRcpts", &pc.MaxRcpts, defaultPoolMaxRcpts},
		{"Pool.MaxRejects", &pc.MaxRejects, defaultPoolMaxRejects},
		{"Pool.MaxIdle", &pc.MaxIdle, defaultPoolMaxIdle},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			return nil, fmt.Errorf("probe: %s %d is negative", d.name, *d.v)
		}
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Pool.IdleTimeout", &pc.IdleTimeout, defaultPoolIdleTimeout},
		{"Pool.MaxAge", &pc.MaxAge, defaultPoolMaxAge},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			return nil, fmt.Errorf("probe: %s %v is negative", d.name, *d.v)
		}
	}
	p := &Prober{cfg: cfg, gate: gate, log: cfg.Logger, now: time.Now, tlsBroken: make(map[string]time.Time)}
	p.catchAllCache = cfg.CatchAllCache
	p.budgets, p.localBudgets = cfg.RejectBudgets, NewMemoryRejectBudgets()
	if p.catchAllCache == nil {
		p.catchAllCache = NewMemoryCatchAllCache(0, 0)
	}
	if !pc.Disabled {
		p.pool = newSessionPool(*pc, p.release)
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if cfg.MailFrom == "" {
		p.log.Warn("probe: MailFrom is empty; sending MAIL FROM:<>, which many sites reject (docs/smtp.md §6)")
	}
	if cfg.Debug != nil {
		p.debug = &lockedWriter{w: cfg.Debug}
	}
	nd := &net.Dialer{Timeout: cfg.ConnectTimeout}
	if cfg.SourceAddr.IsValid() {
		nd.LocalAddr = &net.TCPAddr{IP: cfg.SourceAddr.AsSlice(), Zone: cfg.SourceAddr.Zone()}
	}
	p.dialer = nd
	if cfg.ProxyURL != "" {
		u, err := url.Parse(cfg.ProxyURL)
		if err != nil {
			return nil, fmt.Errorf("probe: ProxyURL: %w", redact.URLError(err))
		}
		if u.Scheme != "socks5" && u.Scheme != "socks5h" {
			return nil, fmt.Errorf("probe: ProxyURL scheme %q: only socks5:// carries SMTP", u.Scheme)
		}
		if u.Host == "" || u.Port() == "" {
			return nil, fmt.Errorf("probe: ProxyURL %q: want socks5://[user:pass@]host:port", u.Redacted())
		}
		d, err := proxy.FromURL(u, nd)
		if err != nil {
			return nil, fmt.Errorf("probe: ProxyURL: %w", err)
		}
		cd, ok := d.(proxy.ContextDialer)
		if !ok {
			return nil, fmt.Errorf("probe: ProxyURL: dialer %T cannot take a context", d)
		}
		p.dialer = cd
	}
	return p, nil
}

// checkHeloName wants an FQDN (RFC 5321 §4.1.4; Postfix's
// reject_non_fqdn_helo_hostname answers 504 otherwise) or an address literal.
func checkHeloName(s string) error {
	if s == "" {
		return errors.New("must be set: an FQDN that resolves to the egress IP, or an address literal")
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		lit := s[1 : len(s)-1]
		if v6, ok := strings.CutPrefix(lit, "IPv6:"); ok {
			if a, err := netip.ParseAddr(v6); err == nil && a.Is6() {
				return nil
			}
		} else if a, err := netip.ParseAddr(lit); err == nil && a.Is4() {
			return nil
		}
		return errors.New("not a valid address literal ([192.0.2.1] or [IPv6:2001:db8::1])")
	}
	name := strings.TrimSuffix(s, ".")
	if len(name) > 253 {
		return errors.New("longer than 253 octets")
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return errors.New("not fully qualified (needs a dot); servers reject bare host names")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("bad label %q", l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("label %q: only letters, digits and '-' (A-labels for IDN)", l)
			}
		}
	}
	return nil
}

// checkMailFrom is a guard, not a parser: the sender goes on the wire
// between <>, so it must be one printable ASCII token with a local part and
// a domain.
func checkMailFrom(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '<' || c == '>' {
			return errors.New("must be a plain ASCII mailbox without spaces, controls or <>")
		}
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || len(s) > 254 {
		return errors.New("must be local@domain")
	}
	return checkHeloName(s[at+1:])
}

// Probe asks mx's hosts, in order, whether rcpt (the canonical mailbox,
// already validated) exists. utf8 says the mailbox needs SMTPUTF8.
//
// It moves to the next host (and to a host's second address) only when a
// host gave no answer about the mailbox: a connection, TLS or I/O failure,
// a 4yz reply or "no service" before RCPT. After any RCPT reply it stops,
// so a 5yz RCPT is never re-asked elsewhere. A Gate error ends the probe at
// once with the error in Err.
//
// With the pool on (the default), a parked session to the host serves the
// probe without a new Admit; see pool.go.
func (p *Prober) Probe(ctx context.Context, mx MXSet, rcpt string, utf8 bool) ProbeResult {
	if mx.NullMX {
		return ProbeResult{Stage: StageDNS, Outcome: Outcome{Verdict: Invalid, Reason: ReasonNullMX, Rule: "null MX record"}}
	}
	if rcpt == "" || strings.ContainsAny(rcpt, "\r\n\x00<>") || !strings.Contains(rcpt, "@") {
		return ProbeResult{Stage: StageRcpt, Err: ErrUnsafeCommand,
			Outcome: Outcome{Verdict: Unknown, Reason: ReasonBadSyntax, Rule: "unsafe recipient"}}
	}
	mx = p.parkedFirst(mx)
	var (
		best        *ProbeResult
		transcript  []TranscriptLine
		tried       bool
		reconnected map[string]bool // hosts asked again after a first-contact refusal
	)
	record := p.wantTranscript(ctx)
	finish := func(r ProbeResult) ProbeResult {
		if record {
			r.Transcript = transcript
		}
		return r
	}
	for _, h := range mx.Hosts {
		addrs := h.Addrs
		if len(addrs) > maxAddrsPerHost {
			addrs = addrs[:maxAddrsPerHost]
		}
		for _, a := range addrs {
			if err := ctx.Err(); err != nil {
				r := errResult(StageConnect, h.Name, a, err)
				if best == nil || best.Reply == nil {
					best = &r
				}
				return finish(*best)
			}
			r, lines, moveOn, gateErr, fresh := p.attempt(ctx, h, a, rcpt, utf8)
			transcript = append(transcript, lines...)
			if gateErr == nil && fresh && !reconnected[h.Name] && firstContactRefusal(r) && ctx.Err() == nil {
				// A postscreen-like screen refuses a client's first
				// connection and lets the next one from the same IP
				// through (docs/reliability.md): one new session, admitted
				// like any other, once per host and probe.
				if reconnected == nil {
					reconnected = make(map[string]bool)
				}
				reconnected[h.Name] = true
				p.log.Debug("probe: first contact refused; connecting again", "host", h.Name, "addr", a, "stage", r.Stage)
				first := r
				r, lines, moveOn, gateErr, _ = p.attempt(ctx, h, a, rcpt, utf8)
				transcript = append(transcript, lines...)
				if gateErr == nil && r.Reply == nil && ctx.Err() != nil {
					// The budget ran out on the way: the server's own
					// answer says more than our deadline.
					r = first
				}
			}
			if gateErr != nil {
				out := Outcome{Verdict: Unknown, Reason: ReasonRateLimited, Retryable: true, Rule: "gate refused"}
				if ctx.Err() != nil {
					out.Reason = ReasonTimeout
				}
				return finish(ProbeResult{Stage: StageConnect, Host: h.Name, Addr: a, Outcome: out, Err: gateErr})
			}
			tried = true
			if !moveOn {
				return finish(r)
			}
			// Keep the first answer a server actually gave; a later
			// connection failure must not hide a 421 that asks us to
			// cool down.
			if best == nil || (best.Reply == nil && r.Reply != nil) {
				best = &r
			}
			p.log.Debug("probe: trying next MX", "host", h.Name, "addr", a, "stage", r.Stage, "reason", r.Outcome.Reason)
		}
	}
	if !tried {
		return finish(ProbeResult{Stage: StageConnect, Err: ErrNoMXHosts,
			Outcome: Outcome{Verdict: Unknown, Reason: ReasonNoMX, Rule: "no MX address"}})
	}
	return finish(*best)
}

// parkedFirst moves a host of the most preferred tier that has a parked
// session (and that session's address) to the front. Hosts of equal
// preference are equivalent (RFC 5321 §5.1 has the client choose among them
// at random), so asking the one already connected changes no verdict and
// spares a session; it is how addresses handed to the worker that holds a
// session (worker/sessions.go) land on that session.
func (p *Prober) parkedFirst(mx MXSet) MXSet {
	if p.pool == nil || len(mx.Hosts) < 1 {
		return mx
	}
	for i, h := range mx.Hosts {
		if h.Pref != mx.Hosts[0].Pref {
			break
		}
		addr, ok := p.pool.parkedAddr(strings.ToLower(strings.TrimSuffix(h.Name, ".")), p.cfg.MailFrom)
		if !ok {
			continue
		}
		hosts := slices.Clone(mx.Hosts)
		hosts[0], hosts[i] = hosts[i], hosts[0]
		addrs := slices.Clone(hosts[0].Addrs)
		for j, a := range addrs {
			if a.String() == addr {
				addrs[0], addrs[j] = addrs[j], addrs[0]
				break
			}
		}
		hosts[0].Addrs = addrs
		mx.Hosts = hosts
		return mx
	}
	return mx
}

// AwaitSession waits until a session to host is parked in this Prober's
// pool (true), or until some session ends or ctx ends (false: the caller
// decides whether to wait again). Without reuse it returns false at once.
func (p *Prober) AwaitSession(ctx context.Context, host string) bool {
	if p.pool == nil {
		return false
	}
	return p.pool.await(ctx, strings.ToLower(strings.TrimSuffix(host, ".")), p.cfg.MailFrom)
}

// Close QUITs every parked session (releasing its Admission) and stops
// parking; probes still running close their own sessions. The Prober stays
// usable, without reuse. Safe to call more than once.
func (p *Prober) Close() error {
	if p.pool != nil {
		p.pool.closeAll()
	}
	return nil
}

// ErrNoMXHosts: the MX set had no host with an address to dial.
var ErrNoMXHosts = errors.New("smtp: no MX host address to connect to")

// errResult turns an I/O-level failure into a result.
func errResult(stage Stage, host string, a netip.Addr, err error) ProbeResult {
	out := Outcome{Verdict: Unknown, Retryable: true}
	switch {
	case isTimeout(err):
		out.Reason, out.Rule = ReasonTimeout, "timeout"
	case errors.Is(err, ErrTLS):
		out.Reason, out.Rule = ReasonTLSError, "tls handshake"
	case errors.Is(err, ErrConnect):
		out.Reason, out.Rule, out.Action = ReasonConnectFailed, "connect", ActionNextMX
	case errors.Is(err, context.Canceled):
		out.Reason, out.Rule = ReasonTimeout, "canceled"
	default:
		out.Reason, out.Rule = ReasonSMTPError, "i/o or protocol error"
	}
	return ProbeResult{Stage: stage, Host: host, Addr: a, Outcome: out, Err: err}
}

// attempt asks one address of one host: on a parked session when there is
// one, else on a new session the Gate admits. moveOn says whether the next
// address may be asked; gateErr is the Gate's refusal.
func (p *Prober) attempt(ctx context.Context, h MXHost, a netip.Addr, rcpt string, utf8 bool) (res ProbeResult, lines []TranscriptLine, moveOn bool, gateErr error, fresh bool) {
	key := poolKey{host: strings.ToLower(strings.TrimSuffix(h.Name, ".")), addr: a.String(), sender: p.cfg.MailFrom}
	if p.pool != nil {
		if s := p.pool.take(key); s != nil {
			if err := s.c.quiet(); err != nil {
				// It spoke while parked (idle timeout) or is gone: nothing
				// about the next address, so a new session asks it.
				p.log.Debug("probe: parked session not quiet", "host", h.Name, "addr", a, "err", err)
				p.release(s)
				p.learnFromClosing(ctx, s)
			} else if s.adm != nil && !s.adm.Reusable() {
				p.release(s)
			} else if b, ok := p.localBudgets.RejectBudget(ctx, h.Name); ok && s.c.errors >= min(s.budget, b) {
				// Since it was parked, the host was found to allow
				// fewer errors than the session has already had.
				p.release(s)
			} else {
				r, l, move, stale := p.converse(ctx, s, h, a, rcpt, utf8)
				if !stale {
					return r, l, move, nil, false
				}
				// The server had dropped the parked session (an idle
				// timeout of its own): nothing was learnt, ask on a new one.
				lines = l
				p.log.Debug("probe: parked session was stale", "host", h.Name, "addr", a, "err", r.Err)
			}
		}
	}
	var adm Admission
	if p.gate != nil {
		var err error
		if adm, err = p.gate.Admit(ctx, h); err != nil {
			return ProbeResult{}, lines, false, err, true
		}
	}
	born := p.now()
	conn, err := p.dial(ctx, a)
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		r := errResult(StageConnect, h.Name, a, &ProbeError{Stage: StageConnect, Host: h.Name, Err: fmt.Errorf("%w: %w", ErrConnect, err)})
		if adm != nil {
			adm.Report(r.Outcome)
			adm.Done()
		}
		return r, lines, true, nil, true
	}
	p.rtts.Add(1) // the TCP connect
	c := newClient(conn, h.Name, &p.cfg, p.debug, p.now)
	c.rtts = &p.rtts
	s := &smtpSession{c: c, key: key, adm: adm, born: born, budget: p.rejectBudget(ctx, h.Name)}
	r, l, move, _ := p.converse(ctx, s, h, a, rcpt, utf8)
	return r, append(lines, l...), move, nil, true
}

// firstContactRefusal recognises a screen that refuses a client it has not
// seen before and admits its next connection: Postfix's postscreen answers
// "450 4.3.2 Service currently unavailable" (after its after-220 tests, at
// RCPT or earlier), as RFC 3463's 4.3.2 "system not accepting network
// messages" says. A 421 (busy, closing) is not asked again at once, nor is
// anything that asks for a cool-down.
func firstContactRefusal(r ProbeResult) bool {
	if r.Reply == nil || r.Outcome.Action == ActionCoolDown || r.Reply.Code != 450 {
		return false
	}
	if r.Reply.Enhanced == "4.3.2" {
		return true
	}
	switch r.Stage {
	case StageBanner, StageEHLO, StageHELO:
		return strings.Contains(strings.ToLower(r.Reply.Text), "service currently unavailable")
	}
	return false
}

// converse holds one probe's part of a session: the greeting when the
// session is new, then the transaction. Afterwards it reports the outcome to
// the session's Admission and parks the session or closes it. stale says a
// reused session failed before any reply about the mailbox; it is closed and
// the caller may ask again on a new one.
func (p *Prober) converse(ctx context.Context, s *smtpSession, h MXHost, a netip.Addr, rcpt string, utf8 bool) (res ProbeResult, lines []TranscriptLine, moveOn, stale bool) {
	start := p.now()
	c := s.c
	defer func() {
		if r := recover(); r != nil {
			// A panic here is our bug, not the peer's doing: the session
			// must not outlive it holding its lease (the worker turns the
			// panic into a retry; the lease would otherwise block a session
			// slot until its TTL). Close, give the lease back, re-panic.
			c.conn.Close()
			if s.adm != nil {
				s.adm.Done()
			}
			panic(r)
		}
	}()
	// A pooled session serves probes of different requests: each decides
	// for itself whether its lines are recorded.
	c.transcript, c.record = nil, p.wantTranscript(ctx)
	// The whole-probe bound: whatever a command's deadline, ctx ending
	// closes the connection and fails the pending read.
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	res, moveOn, keep, stale := p.talk(ctx, s, h, rcpt, utf8)
	alive := stop()
	if res.Reply != nil && res.Outcome.Action == ActionLowerRejectBudget {
		seen := c.errors
		if res.Reply.Code != 421 {
			seen-- // counted by readReply, but it is the limit's answer
		}
		p.learnLimit(ctx, h.Name, seen)
	} else {
		p.learnFromClosing(ctx, s)
	}
	res.Host, res.Addr = h.Name, a
	if res.Err != nil && ctx.Err() != nil && !isTimeout(res.Err) {
		// The read failed because AfterFunc closed the connection; say so.
		res.Err = &ProbeError{Stage: res.Stage, Host: h.Name, Err: fmt.Errorf("%w (%w)", context.Cause(ctx), res.Err)}
		res.Outcome = errResult(res.Stage, h.Name, a, res.Err).Outcome
	}
	res.TLS = c.tls
	p.log.LogAttrs(ctx, slog.LevelDebug, "probe: session",
		slog.String("host", h.Name), slog.String("addr", a.String()),
		slog.String("stage", string(res.Stage)), slog.String("verdict", string(res.Outcome.Verdict)),
		slog.String("reason", string(res.Outcome.Reason)), slog.String("rule", res.Outcome.Rule),
		slog.Bool("tls", c.tls), slog.Int("rcpts", s.rcpts), slog.Int("rejects", s.rejects),
		slog.Duration("took", p.now().Sub(start)))
	if stale && alive && ctx.Err() == nil {
		c.close()
		if s.adm != nil {
			s.adm.Done()
		}
		p.ended(s)
		return res, c.transcript, moveOn, true
	}
	if s.adm != nil {
		s.adm.Report(res.Outcome)
	}
	if keep && alive && p.pool != nil && c.botched == nil && !c.quitSent && !firstContactRefusal(res) &&
		s.rcpts < p.cfg.Pool.MaxRcpts && s.rejects < s.budget && c.errors < s.budget {
		lines = c.transcript
		if p.pool.park(s, p.now()) {
			return res, lines, moveOn, false
		}
	}
	p.release(s)
	return res, c.transcript, moveOn, false
}

// learnFromClosing learns the host's error limit when the server closed s
// with an unasked "421 … too many errors" (budget.go).
func (p *Prober) learnFromClosing(ctx context.Context, s *smtpSession) {
	if s.c.closing == nil || s.learnt {
		return
	}
	if p.classify(StageRcpt, *s.c.closing, "", s.c.host).Action == ActionLowerRejectBudget {
		s.learnt = true
		p.learnLimit(ctx, s.c.host, s.c.errors)
	}
}

// release ends a session for good: QUIT when it is healthy, close, and
// Done to its Admission, exactly once (the pool's owner rule sees to that).
func (p *Prober) release(s *smtpSession) {
	s.c.quit()
	s.c.close()
	if s.adm != nil {
		s.adm.Done()
	}
	p.ended(s)
}

// SessionStats describes one SMTP session when it ends.
type SessionStats struct {
	Host    string
	Rcpts   int // real recipients asked (the catch-all probe's not counted)
	Rejects int // refused RCPTs
	Age     time.Duration
}

func (p *Prober) ended(s *smtpSession) {
	if p.pool != nil {
		p.pool.changed() // one waiting for this host's session stops waiting
	}
	if p.cfg.OnSessionEnd != nil {
		p.cfg.OnSessionEnd(SessionStats{Host: s.key.host, Rcpts: s.rcpts, Rejects: s.rejects, Age: p.now().Sub(s.born)})
	}
}

func (p *Prober) dial(ctx context.Context, a netip.Addr) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	return p.dialer.DialContext(dctx, "tcp", netip.AddrPortFrom(a, uint16(p.cfg.Port)).String())
}

// talk runs banner → EHLO/HELO → STARTTLS → EHLO on a new session, then
// [RSET →] [MAIL →] RCPT → catch-all RCPT. Never DATA. keep says the session
// may serve another probe; stale, that a reused session failed before the
// server said anything about the mailbox.
func (p *Prober) talk(ctx context.Context, s *smtpSession, h MXHost, rcpt string, utf8 bool) (res ProbeResult, moveOn, keep, stale bool) {
	c := s.c
	reused := s.greeted
	ioFail := func(stage Stage, err error) (ProbeResult, bool, bool, bool) {
		r := errResult(stage, h.Name, netip.Addr{}, err)
		// Before RCPT the host said nothing about the mailbox: a broken
		// connection there is a connection failure (§1.1 "try at least two").
		// On a reused session a closed or reset connection is a parked
		// session the server dropped: stale, asked again on a new one. A
		// timeout is not: the server is slow or tarpitting, and asking
		// again would double the load it is pushing back on.
		return r, stage != StageRcpt && stage != StageCatchAll, false, reused && !isTimeout(err)
	}
	// A refusal before RCPT closes the session: any 4yz or 5yz there, and
	// above all 421, means the server wants no more of this conversation.
	replied := func(stage Stage, reply Reply) (ProbeResult, bool, bool, bool) {
		out := p.classify(stage, reply, rcpt, h.Name)
		move := stage != StageRcpt && (reply.Code/100 == 4 || out.Action == ActionNextMX)
		return ProbeResult{Stage: stage, Reply: &reply, Outcome: out}, move, false, false
	}

	if !s.greeted {
		// Banner (RFC 5321 §4.3.1: 220, or 554 "no SMTP service").
		reply, err := c.readReply(StageBanner)
		if err != nil {
			return ioFail(StageBanner, err)
		}
		if reply.Code != 220 {
			return replied(StageBanner, reply)
		}
		if stage, reply, err := p.hello(c); err != nil {
			return ioFail(stage, err)
		} else if reply.Code/100 != 2 {
			return replied(stage, reply)
		}

		// Opportunistic STARTTLS (RFC 3207). A refusal (454, 5yz) leaves the
		// session as it was: carry on in plaintext. A failed handshake kills it.
		if c.has("STARTTLS") && p.tlsAllowed(h.Name) {
			reply, err := c.cmd(StageSTARTTLS, "STARTTLS")
			if err != nil {
				return ioFail(StageSTARTTLS, err)
			}
			if reply.Code == 220 {
				if err := c.startTLS(ctx, p.tlsConfig(h.Name)); err != nil {
					if !p.cfg.TLSVerify {
						p.markTLSBroken(h.Name)
					}
					return ioFail(StageSTARTTLS, err)
				}
				// RFC 3207 §4.2: forget what was learnt before TLS; EHLO again.
				reply, err := c.cmd(StageEHLO, "EHLO "+p.cfg.HeloName)
				if err != nil {
					return ioFail(StageEHLO, err)
				}
				if reply.Code/100 != 2 {
					return replied(StageEHLO, reply)
				}
				c.parseEHLO(reply)
			}
		}
		s.greeted = true
		c.inTx = true
	} else {
		c.note("*", fmt.Sprintf("reusing session: %d recipients, %d refused, open %s",
			s.rcpts, s.rejects, p.now().Sub(s.born).Round(time.Millisecond)))
	}

	// RFC 6531: a mailbox that needs SMTPUTF8 can only be asked about when
	// the server offers it; otherwise we cannot tell (§9), so stop. Nothing
	// was sent: the session is as good as before.
	if utf8 && !c.has("SMTPUTF8") {
		return ProbeResult{Stage: StageMail, Outcome: Outcome{Verdict: Unknown, Reason: ReasonUnverifiableEAI, Rule: "SMTPUTF8 not offered"}}, false, true, false
	}

	domain := rcpt[strings.LastIndexByte(rcpt, '@')+1:]
	tx := strings.ToLower(domain)
	if utf8 {
		tx += " SMTPUTF8"
	}
	prof := ProfileFor(h.Name)
	wantCatchAll := p.cfg.CatchAllProbe && !prof.SkipCatchAll && !prof.AcceptsAllAtRcpt
	var cachedCatchAll, known bool
	if wantCatchAll {
		cachedCatchAll, known = p.catchAllCache.CatchAll(ctx, domain)
	}

	// The group for this address: RSET ends another domain's transaction
	// (RFC 5321 §4.1.1.5), MAIL opens one with the same sender, RCPT asks.
	type step struct {
		stage Stage
		line  string
		noop  bool // the NOOP that confirms the RCPT before it
	}
	var steps []step
	if s.tx != tx || p.resetEach {
		if s.tx != "" {
			steps = append(steps, step{stage: StageRset, line: "RSET"})
		}
		mail := "MAIL FROM:<" + p.cfg.MailFrom + ">"
		if utf8 {
			mail += " SMTPUTF8"
		}
		steps = append(steps, step{stage: StageMail, line: mail})
	}
	steps = append(steps, step{stage: StageRcpt, line: "RCPT TO:<" + rcpt + ">"})
	// RFC 2920 §3.1: RSET, MAIL and RCPT may appear anywhere in a group,
	// QUIT only last. QUIT joins the group when the session ends after
	// this RCPT whatever its reply, and no catch-all RCPT may follow it.
	pipe := p.cfg.Pipelining && c.has("PIPELINING")
	ending := p.pool == nil || s.rcpts+1 >= p.cfg.Pool.MaxRcpts
	// An acceptance on a session that answered a RCPT before must be
	// confirmed (client.confirm), so no QUIT may end the group then.
	mustConfirm := s.rcpts > 0
	if pipe && ending && (!wantCatchAll || known) && !mustConfirm {
		steps = append(steps, step{stage: StageQuit, line: "QUIT"})
	}
	if pipe && mustConfirm {
		// RFC 2920 §3.1 allows NOOP last in a group: the confirmation
		// costs no round trip of its own.
		steps = append(steps, step{stage: StageRcpt, line: "NOOP", noop: true})
	}

	replies := make([]Reply, 0, len(steps))
	if pipe {
		if err := c.peek(steps[0].stage); err != nil {
			return ioFail(steps[0].stage, err)
		}
		for _, st := range steps {
			if err := c.send(st.stage, st.line); err != nil {
				// Part of the group may sit in the buffer: never reuse.
				c.fail(st.stage, err)
				return ioFail(st.stage, err)
			}
			if st.stage == StageQuit {
				c.quitSent = true
			}
		}
		if err := c.flush(steps[0].stage); err != nil {
			return ioFail(steps[0].stage, err)
		}
		// Every reply is read and checked, in order (RFC 2920 §3.1), even
		// after a refusal: the server answers each command of the group.
		// QUIT's is not awaited, as in quit(): the RCPT reply before it is
		// the answer, and a server that drops or stalls the 221 must not
		// turn it into a connection failure.
		for _, st := range steps {
			if st.stage == StageQuit {
				break
			}
			reply, err := c.readReply(st.stage)
			if err != nil {
				return ioFail(st.stage, err)
			}
			if reply.Code == 421 && st.noop {
				// The server closed after the RCPT's reply (RFC 5321
				// §3.8): that reply stands, the NOOP went unanswered.
				c.closing = &reply
				c.fail(st.stage, ErrServerClosing)
				break
			}
			replies = append(replies, reply)
			if reply.Code == 421 {
				break // nothing after it is answered
			}
		}
		// One reply per command, exactly: anything more already here
		// was sent unasked, and one of the replies may not be what it
		// seems.
		if !c.quitSent && c.botched == nil {
			// A 421 after them closes the session; the replies stand.
			if err := c.checkSync(steps[len(replies)-1].stage); err != nil && !errors.Is(err, ErrServerClosing) {
				return ioFail(steps[len(replies)-1].stage, err)
			}
		}
	} else {
		for _, st := range steps {
			reply, err := c.cmd(st.stage, st.line)
			if err != nil {
				return ioFail(st.stage, err)
			}
			replies = append(replies, reply)
			if (st.stage == StageRset || st.stage == StageMail) && reply.Code/100 != 2 {
				break
			}
		}
	}

	for i, reply := range replies {
		if steps[i].noop {
			continue // read with its RCPT
		}
		switch steps[i].stage {
		case StageRset:
			s.tx = ""
			if reply.Code != 250 {
				// RSET cannot fail on a healthy session (RFC 5321 §4.1.1.5
				// "MUST send a 250"); the server gave up on this one.
				// A 421 or a throttling reply is an answer about us:
				// report it (the cool-down must open) rather than redial
				// the same host at once. Anything else (a 502, say) says
				// nothing about the address, which was never asked: the
				// session is dropped and the address asked on a new one.
				r, move, _, _ := replied(StageRset, reply)
				if r.Outcome.Action == ActionLowerRejectBudget {
					// The errors of earlier probes reached the server's
					// limit; this address was never asked: a new session
					// (which starts with no errors) asks it.
					return r, false, false, reused
				}
				if reply.Code == 421 || r.Outcome.Action == ActionCoolDown {
					return r, move, false, false
				}
				return r, false, false, true
			}
		case StageMail:
			if reply.Code/100 != 2 {
				s.tx = ""
				r, move, _, _ := replied(StageMail, reply)
				return r, move, false, reused && r.Outcome.Action == ActionLowerRejectBudget
			}
			s.tx = tx
		case StageRcpt:
			if reply.Code/100 == 2 && mustConfirm {
				var err error
				if pipe {
					if n := replies[len(replies)-1]; len(replies) != len(steps) || n.Code != 250 {
						err = c.fail(StageRcpt, fmt.Errorf("%w: NOOP answered %d %s", ErrProtocolDesync, n.Code, n.Enhanced))
					}
				} else {
					err = c.confirm(StageRcpt)
				}
				if err != nil {
					// The acceptance may have been a late reply to an
					// earlier command: no verdict from this session. As
					// stale, the address is asked on a new session.
					r := errResult(StageRcpt, h.Name, netip.Addr{}, err)
					return r, false, false, !isTimeout(err)
				}
			}
			s.rcpts++
			res = ProbeResult{Stage: StageRcpt, Reply: &reply, Outcome: p.classify(StageRcpt, reply, rcpt, h.Name)}
			keep = reply.Code != 421 && res.Outcome.Action != ActionCoolDown && res.Outcome.Action != ActionNewSession && res.Outcome.Action != ActionLowerRejectBudget
			if res.Outcome.Action == ActionLowerRejectBudget && reused {
				// As for RSET: the limit was met by earlier probes'
				// refusals, so the address is asked on a new session.
				return res, false, false, true
			}
			if reply.Code/100 != 2 {
				s.rejects++
				if wantCatchAll && !known && res.Outcome.Reason == ReasonMailboxNotFound && reply.Code == 550 && reply.Enhanced == "5.1.1" {
					// "550 5.1.1 no such mailbox" for a real candidate
					// proves the domain does not accept everything:
					// remembered, it spares the domain's next accepted
					// address the random RCPT, a certain refusal that
					// counts toward harvest limits (docs/smtp.md §3).
					// Only that exact answer: catch-all servers still
					// refuse local parts they cannot parse (5.1.3), moved
					// users (5.1.6) or blocked ones, which a candidate's
					// user-supplied local part can hit and the random
					// probe's never does.
					p.catchAllCache.SetCatchAll(ctx, domain, false)
				}
				return res, false, keep, false
			}
			switch {
			case prof.AcceptsAllAtRcpt:
				res.Outcome = Outcome{Verdict: Risky, Reason: ReasonAcceptsAllAtRcpt, Rule: "profile " + prof.Name}
			case wantCatchAll && res.Outcome.Verdict == Valid && known:
				v := cachedCatchAll
				res.CatchAll = &v
				res.CatchAllState = CatchAllNo
				if v {
					res.CatchAllState = CatchAllYes
					res.Outcome = Outcome{Verdict: Risky, Reason: ReasonCatchAll, Rule: "catch-all (remembered)"}
				}
			case wantCatchAll && res.Outcome.Verdict == Valid:
				keep = p.catchAll(ctx, s, domain, &res) && keep
			}
			return res, false, keep, false
		}
	}
	// Unreachable: the RCPT reply or an earlier refusal returned above.
	return errResult(StageRcpt, h.Name, netip.Addr{}, c.fail(StageRcpt, ErrMalformedReply)), false, false, false
}

// hello sends EHLO and falls back to HELO when EHLO gets a 5yz (RFC 5321
// §4.1.4: servers that predate ESMTP answer 500/502).
func (p *Prober) hello(c *client) (Stage, Reply, error) {
	reply, err := c.cmd(StageEHLO, "EHLO "+p.cfg.HeloName)
	if err != nil || reply.Code/100 == 2 {
		if err == nil {
			c.parseEHLO(reply)
		}
		return StageEHLO, reply, err
	}
	if reply.Code/100 != 5 {
		return StageEHLO, reply, nil
	}
	reply, err = c.cmd(StageHELO, "HELO "+p.cfg.HeloName)
	c.ext = map[string]string{}
	return StageHELO, reply, err
}

// catchAll sends the random-recipient RCPT after the real one was accepted
// (the real one first: outlook.fr answered a second RCPT with 452, §3).
// Accepted → the domain accepts everything: risky/catch_all. Rejected with
// 5yz → not catch-all, the verdict stands. Anything else (4yz, errors) is
// inconclusive: CatchAll stays nil and the real RCPT's verdict stands.
// Conclusive answers are remembered per domain. It reports whether the
// session may still be reused.
//
// It is never pipelined with the real RCPT: it would be wasted, a certain
// refusal counting toward harvest limits, whenever the real one is refused.
func (p *Prober) catchAll(ctx context.Context, s *smtpSession, domain string, res *ProbeResult) bool {
	addr := CatchAllLocalPart(domain, p.cfg.MailFrom, p.now()) + "@" + domain
	// Inconclusive until a reply proves otherwise; nothing is remembered.
	res.CatchAllState = CatchAllUnknown
	reply, err := s.c.cmd(StageCatchAll, "RCPT TO:<"+addr+">")
	if err != nil {
		return false
	}
	s.rcpts++ // a recipient like any other for the per-session bound
	if reply.Code/100 != 2 {
		s.rejects++
	}
	out := p.classify(StageCatchAll, reply, addr, s.key.host)
	// Read as if it were a real RCPT: only "no such mailbox" proves the
	// domain does not accept everything. A 552 "too many recipients", a
	// block or a policy refusal says nothing about catch-all.
	asRcpt := p.classify(StageRcpt, reply, addr, s.key.host)
	if reply.Code/100 == 2 {
		// Remembered for the domain for a day, an acceptance must be the
		// random RCPT's own (client.confirm): a stray 250 would make every
		// address of the domain risky.
		if err := s.c.confirm(StageCatchAll); err != nil {
			return false
		}
	}
	switch {
	case reply.Code/100 == 2:
		yes := true
		res.CatchAll = &yes
		res.CatchAllState = CatchAllYes
		res.Stage, res.Reply = StageCatchAll, &reply
		res.Outcome = Outcome{Verdict: Risky, Reason: ReasonCatchAll, Rule: "catch-all accepted"}
		p.catchAllCache.SetCatchAll(ctx, domain, true)
	case asRcpt.Verdict == Invalid && (asRcpt.Reason == ReasonMailboxNotFound || asRcpt.Reason == ReasonMailboxDisabled):
		no := false
		res.CatchAll = &no
		res.CatchAllState = CatchAllNo
		p.catchAllCache.SetCatchAll(ctx, domain, false)
	}
	if out.Action == ActionLowerRejectBudget {
		seen := s.c.errors
		if reply.Code != 421 {
			seen--
		}
		p.learnLimit(ctx, s.c.host, seen)
	}
	if out.Action == ActionCoolDown && s.adm != nil {
		// The throttle or block came on the catch-all RCPT; the provider
		// must still be paused at once, whatever the real RCPT said.
		s.adm.Report(out)
	}
	return reply.Code != 421 && out.Action != ActionCoolDown && out.Action != ActionNewSession && out.Action != ActionLowerRejectBudget
}

// CatchAllLocalPart returns the random-looking local part of the catch-all
// probe: 16 lower-case letters and digits, fixed for one (domain, sender,
// UTC day). A fixed triplet lets a greylisted catch-all probe pass on retry
// (docs/smtp.md §2); a new one each day keeps it from becoming a
// known trap address.
func CatchAllLocalPart(domain, sender string, now time.Time) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	sum := sha256.Sum256([]byte("mxprobe catch-all\x00" + strings.ToLower(domain) + "\x00" + sender + "\x00" + now.UTC().Format("2006-01-02")))
	var b [16]byte
	for i := range b {
		n := len(alphabet)
		if i == 0 {
			n = 26 // start with a letter, as real local parts do
		}
		b[i] = alphabet[int(sum[i])%n]
	}
	return string(b[:])
}

func (p *Prober) tlsConfig(host string) *tls.Config {
	name := strings.TrimSuffix(host, ".")
	if strings.HasPrefix(name, "[") {
		// An address literal: verify against the IP, send no SNI.
		name = strings.TrimPrefix(strings.Trim(name, "[]"), "IPv6:")
	}
	return &tls.Config{
		ServerName:         name,
		InsecureSkipVerify: !p.cfg.TLSVerify,
		RootCAs:            p.cfg.TLSRootCAs,
	}
}

func (p *Prober) tlsAllowed(host string) bool {
	if p.cfg.TLSVerify {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.tlsBroken[host]
	if ok && p.now().Sub(t) > tlsBrokenTTL {
		delete(p.tlsBroken, host)
		return true
	}
	return !ok
}

func (p *Prober) markTLSBroken(host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.tlsBroken) >= tlsBrokenMax {
		// Crude but bounded: forget everything rather than grow.
		clear(p.tlsBroken)
	}
	p.tlsBroken[host] = p.now()
}

// classify reads a reply with what this prober knows of the conversation,
// so echoed addresses and names never trigger a text rule
// (docs/verdicts.md "Reading a reply").
func (p *Prober) classify(stage Stage, r Reply, rcpt, mxHost string) Outcome {
	return ClassifyReply(stage, r, ReplyContext{
		MailFrom: p.cfg.MailFrom, Rcpt: rcpt, Helo: p.cfg.HeloName,
		ServerNames: []string{strings.TrimSuffix(mxHost, ".")},
	})
}
