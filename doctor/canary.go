package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// checkCanary asks the resolver for the MX records of the canary names, as
// the validator does before it trusts an NXDOMAIN or a no-MX answer
// (docs/verdicts.md, "DNS answers"). A resolver that denies them lies about
// other domains too: while it does, such addresses are unknown/dns_error.
func (a *auditor) checkCanary(ctx context.Context) Finding {
	f := Finding{Check: "dns-canary"}
	names := a.cfg.CanaryNames
	if len(names) == 0 {
		f.Status = Skip
		f.Summary = "not checked: no canary names (--dns-canary none); NXDOMAIN and no-MX answers are trusted as they come"
		f.Fix = "set --dns-canary to domains that certainly have MX records, such as gmail.com"
		return f
	}
	denied := make([]string, len(names))
	failed := make([]string, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			rrs, err := a.dns.query(ctx, n, dns.TypeMX)
			var le *lookupError
			switch {
			case err == nil && len(rrs) == 0:
				denied[i] = n + ": no MX records"
			case err == nil:
			case errors.As(err, &le) && le.NotFound:
				denied[i] = n + ": NXDOMAIN"
			default:
				failed[i] = fmt.Sprintf("%s: %v", n, err)
			}
		})
	}
	wg.Wait()
	nonEmpty := func(s []string) []string {
		var out []string
		for _, e := range s {
			if e != "" {
				out = append(out, e)
			}
		}
		return out
	}
	d, t := nonEmpty(denied), nonEmpty(failed)
	switch {
	case len(d) > 0:
		f.Status = Fail
		f.Summary = "the resolver denies names that exist (" + strings.Join(d, "; ") +
			"): it is lying, filtering or sandboxed; addresses it cannot find are unknown/dns_error, not invalid, until it answers them"
		f.Detail = strings.Join(append(d, t...), "; ")
		f.Fix = "point --dns at a recursive resolver that answers public names, or set --dns-canary to names this resolver must know (none trusts every answer)"
	case len(t) > 0:
		f.Status = Warn
		f.Summary = "the resolver did not answer the canary names: NXDOMAIN and no-MX answers are unknown/dns_error until it does"
		f.Detail = strings.Join(t, "; ")
		f.Fix = "check that --dns (or /etc/resolv.conf) points at a working recursive resolver"
	default:
		f.Status = OK
		f.Summary = "the resolver answers the canary names (" + strings.Join(names, ", ") + "): its NXDOMAIN and no-MX answers are trusted"
	}
	return f
}
