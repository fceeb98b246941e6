package ratelimit

import (
	"net/netip"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// Group returns the provider group of an MX host: the longest matching
// override suffix's group, else the host's registrable domain
// (publicsuffix.EffectiveTLDPlusOne), so mx1.google.com and
// alt4.aspmx.l.google.com share google.com's budget (docs/smtp.md §7).
// The name is lower-cased and its trailing dot removed first, because
// EffectiveTLDPlusOne rejects a trailing dot. A host that has no registrable
// domain (an IP literal, a bare public suffix, "localhost") is its own group.
func (l *Limiter) Group(mxHost string) string {
	return group(mxHost, l.cfg.Overrides)
}

func group(mxHost string, overrides map[string]string) string {
	h := normHost(mxHost)
	if g, ok := matchOverride(h, overrides); ok {
		return g
	}
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return h
	}
	g, err := publicsuffix.EffectiveTLDPlusOne(h)
	if err != nil {
		return h
	}
	return g
}

func normHost(h string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
}

// matchOverride walks h's suffixes at label boundaries from the longest
// (h itself) to the shortest, so the most specific override wins.
func matchOverride(h string, overrides map[string]string) (string, bool) {
	if len(overrides) == 0 {
		return "", false
	}
	for s := h; s != ""; {
		if g, ok := overrides[s]; ok {
			return g, true
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			break
		}
		s = s[i+1:]
	}
	return "", false
}
