package validator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/mxprobe/mxprobe/validator/address"
)

// Config configures a Validator. The zero value of every field is a safe
// default except Probe.HeloName and Probe.MailFrom, which identify the
// operator to remote servers (docs/smtp.md §6) and must be set for SMTP.
type Config struct {
	// Probe configures the SMTP conversation.
	Probe ProbeConfig
	// DNS configures MX resolution; ignored when Resolver is set.
	DNS DNSConfig
	// Resolver overrides DNS (tests, or a Redis-backed shared cache).
	Resolver Resolver
	// Lists are the operator's allow and deny lists.
	Lists ListsConfig
	// Disposable is the disposable-domain list; nil loads the embedded copy.
	Disposable *DisposableList
	// NoSMTP stops after DNS: the verdict is unknown/smtp_skipped when the
	// domain has mail hosts. Useful where outbound port 25 is blocked.
	NoSMTP bool
	// Gate admits each SMTP session (the worker plugs in the shared rate
	// limiter). nil admits every session: fine for one-off checks.
	Gate Gate
	// ProviderFunc names the rate-limit group of an MX host for
	// Result.Provider; nil leaves Provider empty.
	ProviderFunc func(mxHost string) string
	Logger       *slog.Logger

	now func() time.Time
}

// Validator runs the whole pipeline for one address at a time; it is safe for
// concurrent use.
type Validator struct {
	cfg      Config
	resolver Resolver
	lists    *Lists
	prober   *Prober
	log      *slog.Logger
	now      func() time.Time
}

// New checks cfg and builds a Validator. Bad configuration fails here, with
// an error naming the setting, never at the first probe.
func New(cfg Config) (*Validator, error) {
	v := &Validator{cfg: cfg, log: cfg.Logger, now: cfg.now}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.now == nil {
		v.now = time.Now
	}
	disposable := cfg.Disposable
	if disposable == nil {
		disposable = EmbeddedDisposableList()
	}
	lists, err := NewLists(cfg.Lists, disposable)
	if err != nil {
		return nil, fmt.Errorf("validator: lists: %w", err)
	}
	v.lists = lists
	v.resolver = cfg.Resolver
	if v.resolver == nil {
		dcfg := cfg.DNS
		if dcfg.Logger == nil {
			dcfg.Logger = v.log
		}
		r, err := NewDNSResolver(dcfg)
		if err != nil {
			return nil, fmt.Errorf("validator: dns: %w", err)
		}
		v.resolver = r
	}
	if !cfg.NoSMTP {
		pcfg := cfg.Probe
		if pcfg.Logger == nil {
			pcfg.Logger = v.log
		}
		var gate Gate
		if cfg.Gate != nil {
			gate = markedGate{cfg.Gate}
		}
		p, err := NewProber(pcfg, gate)
		if err != nil {
			return nil, fmt.Errorf("validator: smtp: %w", err)
		}
		v.prober = p
	}
	return v, nil
}

// GateError wraps an error returned by the Gate (typically the rate
// limiter's denial), so callers can tell "not allowed to probe now" from a
// failed probe. Validate returns it as its error.
type GateError struct{ Err error }

func (e *GateError) Error() string { return "gate refused the session: " + e.Err.Error() }
func (e *GateError) Unwrap() error { return e.Err }

// markedGate wraps the configured Gate so that its refusals come back out of
// the prober recognisable as *GateError.
type markedGate struct{ g Gate }

func (m markedGate) Admit(ctx context.Context, host MXHost) (Admission, error) {
	adm, err := m.g.Admit(ctx, host)
	if err != nil {
		return nil, &GateError{Err: err}
	}
	return adm, nil
}

// DNS returns the resolver built from Config.DNS, for its canary (RunCanary,
// CanaryCheck); nil when Config.Resolver replaced it.
func (v *Validator) DNS() *DNSResolver {
	r, _ := v.resolver.(*DNSResolver)
	return r
}

// MailHosts returns the MX hosts of the most preferred tier an SMTP probe of
// input would ask, resolved as Validate resolves them (cached). ok is false
// when Validate would decide without SMTP (bad syntax, a list, a DNS
// answer, no SMTP configured): the worker then has no session to look for.
func (v *Validator) MailHosts(ctx context.Context, input string) (hosts []string, ok bool) {
	if v.prober == nil {
		return nil, false
	}
	a, err := address.Parse(input)
	if err != nil {
		return nil, false
	}
	if m := v.lists.Check(a); m.Denied || m.Allowed || m.Disposable {
		return nil, false
	}
	mx, err := v.mailHosts(ctx, a)
	if err != nil || mx.NullMX || len(mx.Hosts) == 0 {
		return nil, false
	}
	for _, h := range mx.Hosts {
		if h.Pref != mx.Hosts[0].Pref {
			break
		}
		hosts = append(hosts, h.Name)
	}
	return hosts, true
}

// AwaitSession waits until a session to host is parked for reuse (true),
// or ctx ends (false at once without reuse or SMTP).
func (v *Validator) AwaitSession(ctx context.Context, host string) bool {
	if v.prober == nil {
		return false
	}
	return v.prober.AwaitSession(ctx, host)
}

// Close QUITs the SMTP sessions parked for reuse and releases their rate
// limit leases; call it when the Validator is no longer needed (worker
// shutdown, end of a check run). Validate still works afterwards, without
// reuse.
func (v *Validator) Close() error {
	if v.prober != nil {
		return v.prober.Close()
	}
	return nil
}

// Validate answers "can this address receive mail?". The error is only for
// operational failures the caller must handle itself: ctx ended, or the Gate
// refused a session (*GateError). Everything the world said — bad syntax,
// NXDOMAIN, a 550, a greylisting, a timeout — is in the Result.
func (v *Validator) Validate(ctx context.Context, input string) (Result, error) {
	start := v.now()
	res := Result{Input: input, CheckedAt: start.UTC()}
	finish := func(err error) (Result, error) {
		res.Duration = Duration(v.now().Sub(start))
		return res, err
	}

	a, err := address.Parse(input)
	if err != nil {
		res.Verdict, res.Reason, res.Error = Invalid, ReasonBadSyntax, err.Error()
		return finish(nil)
	}
	res.Address = a.String()
	res.Flags.SMTPUTF8 = a.NeedsSMTPUTF8
	res.Flags.RoleAccount = IsRoleAccount(a.Local)
	res.Flags.FreeProvider = !a.IsLiteral() && IsFreeProvider(a.Domain)

	m := v.lists.Check(a)
	res.Flags.Allowlisted, res.Flags.Denylisted, res.Flags.Disposable = m.Allowed, m.Denied, m.Disposable
	switch {
	case m.Denied:
		res.Verdict, res.Reason = Invalid, ReasonDenied
		return finish(nil)
	case m.Allowed:
		// The operator vouches for this address or domain: no traffic.
		res.Verdict, res.Reason = Valid, ReasonAllowed
		return finish(nil)
	case m.Disposable:
		// Disposable domains accept everything by design; probing them
		// would tell nothing and spend rate budget.
		res.Verdict, res.Reason = Risky, ReasonDisposable
		return finish(nil)
	}

	mx, err := v.mailHosts(ctx, a)
	if err != nil {
		if ctx.Err() != nil {
			res.Verdict, res.Reason, res.Retryable, res.Error = Unknown, ReasonTimeout, true, ctx.Err().Error()
			return finish(ctx.Err())
		}
		res.SMTP = &SMTPDetail{Stage: StageDNS}
		res.Error = err.Error()
		switch {
		case errors.Is(err, ErrDNSTemporary):
			// Checked first: a canary failure or a CNAME loop may wrap a
			// negative sentinel but is not an answer (docs/verdicts.md "DNS answers").
			res.Verdict, res.Reason, res.Retryable = Unknown, ReasonDNSError, true
		case errors.Is(err, ErrNoUsableAddress):
			// Our settings, not the domain: never invalid, and retrying
			// with the same settings changes nothing.
			res.Verdict, res.Reason = Unknown, ReasonNoUsableAddress
		case errors.Is(err, ErrMXAddressLiteral):
			res.Verdict, res.Reason = Unknown, ReasonMXIPLiteral
		case errors.Is(err, ErrInvalidName):
			res.Verdict, res.Reason = Invalid, ReasonBadSyntax
		case errors.Is(err, ErrDomainNotFound):
			res.Verdict, res.Reason = Invalid, ReasonDomainNotFound
		case errors.Is(err, ErrNullMX):
			res.Verdict, res.Reason = Invalid, ReasonNullMX
		case errors.Is(err, ErrNoMailHost):
			res.Verdict, res.Reason = Invalid, ReasonNoMX
		default:
			// SERVFAIL, timeouts, refused addresses: nothing about the mailbox.
			res.Verdict, res.Reason, res.Retryable = Unknown, ReasonDNSError, true
		}
		return finish(nil)
	}
	if len(mx.Hosts) > 0 {
		res.MXHost = mx.Hosts[0].Name
		if v.cfg.ProviderFunc != nil {
			res.Provider = v.cfg.ProviderFunc(res.MXHost)
		}
	}
	if v.prober == nil {
		res.Verdict, res.Reason = Unknown, ReasonSMTPSkipped
		return finish(nil)
	}

	pr := v.prober.Probe(ctx, mx, a.String(), a.NeedsSMTPUTF8)
	res.Verdict, res.Reason = pr.Outcome.Verdict, pr.Outcome.Reason
	res.Retryable = pr.Outcome.Retryable
	res.RetryAfter = Duration(pr.Outcome.RetryHint)
	res.TLS = pr.TLS
	res.Transcript = pr.Transcript
	if pr.CatchAll != nil && *pr.CatchAll {
		res.Flags.CatchAll = true
	}
	res.Flags.CatchAllState = pr.CatchAllState
	if pr.Host != "" {
		res.MXHost = pr.Host
		if v.cfg.ProviderFunc != nil {
			res.Provider = v.cfg.ProviderFunc(pr.Host)
		}
	}
	if pr.Addr.IsValid() {
		res.MXAddr = pr.Addr.String()
	}
	if pr.Stage != "" {
		res.SMTP = &SMTPDetail{Stage: pr.Stage}
		if pr.Reply != nil {
			res.SMTP.Code, res.SMTP.Enhanced, res.SMTP.Text = pr.Reply.Code, pr.Reply.Enhanced, pr.Reply.Text
		}
	}
	if pr.Err != nil {
		res.Error = pr.Err.Error()
		var ge *GateError
		if errors.As(pr.Err, &ge) {
			return finish(ge)
		}
		if ctx.Err() != nil {
			return finish(ctx.Err())
		}
	}
	if res.Verdict == "" {
		// A prober outcome with no verdict is a bug; never let it pass as
		// anything but unknown.
		res.Verdict, res.Reason = Unknown, ReasonSMTPError
	}
	return finish(nil)
}

// mailHosts returns where mail for a would go: the MX set of its domain, or
// the address literal itself (RFC 5321 §4.1.3).
func (v *Validator) mailHosts(ctx context.Context, a address.Address) (MXSet, error) {
	if !a.IsLiteral() {
		return v.resolver.ResolveMX(ctx, a.Domain)
	}
	ip := a.Literal.Unmap()
	if why := refusedAddr(ip); why != "" && !v.cfg.DNS.AllowPrivate {
		return MXSet{}, fmt.Errorf("address literal %s is not a public address (%s): %w", ip, why, ErrNoMailHost)
	}
	return MXSet{Domain: a.Domain, Implicit: true, Hosts: []MXHost{{Name: a.Domain, Addrs: []netip.Addr{ip}}}}, nil
}

// Check is Validate for callers that only want to know "is it fine?": nil for
// a valid address, otherwise a *CheckError wrapping one of the Err…
// sentinels (errors.Is) and carrying the Result (errors.As). Operational
// failures are returned as they are.
func (v *Validator) Check(ctx context.Context, input string) error {
	res, err := v.Validate(ctx, input)
	if err != nil {
		return err
	}
	return errorFor(res)
}
