package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/miekg/dns"
)

// maxPTRNames bounds the PTR names forward-resolved: one is normal, a
// hostile or broken zone could return hundreds.
const maxPTRNames = 5

// global reports whether receivers could see a as a client address.
func global(a netip.Addr) bool {
	return a.IsValid() && a.IsGlobalUnicast() && !a.IsPrivate()
}

func addrList(as []netip.Addr) string {
	if len(as) == 0 {
		return "no address"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func contains(as []netip.Addr, a netip.Addr) bool {
	return slices.ContainsFunc(as, func(b netip.Addr) bool { return b.Unmap() == a.Unmap() })
}

// checkFCrDNS looks up the PTR names of eg and whether any resolves back to
// it (forward-confirmed reverse DNS). It returns every PTR name found.
func (a *auditor) checkFCrDNS(ctx context.Context, eg netip.Addr) ([]string, Finding) {
	f := Finding{Check: "fcrdns"}
	if !eg.IsValid() {
		f.Status, f.Summary = Skip, "reverse DNS not checked: egress IP unknown"
		f.Fix = "set --egress-ip, or give --domain so a connection reveals it"
		return nil, f
	}
	names, err := a.dns.ptr(ctx, eg)
	if err != nil && !isNotFound(err) {
		f.Status, f.Summary, f.Detail = Warn, fmt.Sprintf("reverse DNS of %s not checked: DNS failed", eg), err.Error()
		f.Fix = "check that the --dns servers answer, then run again"
		return nil, f
	}
	if len(names) == 0 {
		f.Status, f.Summary = Fail, fmt.Sprintf("%s has no reverse DNS (PTR) record", eg)
		f.Detail = "Gmail, Outlook and Postfix's reject_unknown_client_hostname refuse or greylist clients without one, so probes come back blocked or unknown."
		f.Fix = fmt.Sprintf("ask whoever owns %s (your hosting provider's control panel, or your ISP) to set its PTR to your mail host name, e.g. mail.example.com, and give that name an A/AAAA record pointing to %s; use it as --helo", eg, eg)
		return nil, f
	}
	var detail []string
	var confirmed []string
	for _, n := range names[:min(len(names), maxPTRNames)] {
		addrs, err := a.dns.addrs(ctx, n)
		switch {
		case err != nil && !isNotFound(err):
			detail = append(detail, fmt.Sprintf("%s: %v", n, err))
			f.Status = Warn
		case contains(addrs, eg):
			confirmed = append(confirmed, n)
		default:
			detail = append(detail, fmt.Sprintf("%s resolves to %s", n, addrList(addrs)))
		}
	}
	switch {
	case len(confirmed) > 0:
		f.Status, f.Summary = OK, fmt.Sprintf("%s ↔ %s (forward-confirmed reverse DNS)", eg, confirmed[0])
	case f.Status == Warn:
		f.Summary = fmt.Sprintf("reverse DNS of %s (%s) not confirmed: DNS failed", eg, strings.Join(names, ", "))
		f.Detail = strings.Join(detail, "; ")
		f.Fix = "check that the --dns servers answer, then run again"
	default:
		f.Status = Fail
		f.Summary = fmt.Sprintf("PTR of %s is %s, which does not point back to it", eg, strings.Join(names, ", "))
		f.Detail = strings.Join(detail, "; ") + ". Receivers that check forward-confirmed reverse DNS (Postfix reject_unknown_client_hostname, Gmail) treat this as no PTR at all."
		f.Fix = fmt.Sprintf("add an A (or AAAA) record %s → %s, or change the PTR to a name that has one", names[0], eg)
	}
	return names, f
}

// checkHELO compares the HELO name with the PTR names of eg and checks it
// resolves to eg (docs/smtp.md §6: HELO = PTR(egress IP), and the HELO
// name's A/AAAA must contain the egress IP).
func (a *auditor) checkHELO(ctx context.Context, eg netip.Addr, ptrNames []string) Finding {
	f := Finding{Check: "helo"}
	helo := hostname(a.cfg.HeloName)
	switch {
	case helo == "":
		f.Status, f.Summary = Warn, "no HELO name configured"
		f.Fix = "set --helo to the PTR name of your egress IP"
		return f
	case strings.HasPrefix(helo, "["):
		f.Status, f.Summary = Warn, fmt.Sprintf("HELO is the address literal %s", a.cfg.HeloName)
		f.Detail = "RFC 5321 §4.1.4 wants the host's name when it has one; many servers score address literals as spam-like."
		f.Fix = "set --helo to the PTR name of your egress IP"
		return f
	case !strings.Contains(helo, "."):
		f.Status, f.Summary = Fail, fmt.Sprintf("HELO name %q is not fully qualified", helo)
		f.Detail = "Postfix's reject_non_fqdn_helo_hostname answers 504 to it."
		f.Fix = "set --helo to a fully qualified name, the PTR name of your egress IP"
		return f
	}
	addrs, err := a.dns.addrs(ctx, helo)
	switch {
	case err != nil && !isNotFound(err):
		f.Status, f.Summary, f.Detail = Warn, fmt.Sprintf("HELO name %s not checked: DNS failed", helo), err.Error()
		f.Fix = "check that the --dns servers answer, then run again"
		return f
	case len(addrs) == 0:
		f.Status, f.Summary = Fail, fmt.Sprintf("HELO name %s does not resolve", helo)
		f.Detail = "Postfix's reject_unknown_helo_hostname answers 450 to a HELO name without an address."
		f.Fix = fmt.Sprintf("add an A/AAAA record for %s pointing to the egress IP, or set --helo to the PTR name of the egress IP", helo)
		return f
	case !eg.IsValid():
		f.Status, f.Summary = Skip, fmt.Sprintf("HELO name %s resolves to %s; not compared with the egress IP (unknown)", helo, addrList(addrs))
		f.Fix = "set --egress-ip, or give --domain so a connection reveals it"
		return f
	}
	var problems []string
	if !contains(addrs, eg) {
		problems = append(problems, fmt.Sprintf("%s resolves to %s, not to the egress IP %s", helo, addrList(addrs), eg))
	}
	if len(ptrNames) > 0 && !slices.Contains(ptrNames, helo) {
		problems = append(problems, fmt.Sprintf("it differs from the PTR name %s", strings.Join(ptrNames, ", ")))
	}
	if len(problems) == 0 && len(ptrNames) == 0 {
		problems = append(problems, "the egress IP has no PTR name to match it")
	}
	if len(problems) > 0 {
		f.Status = Warn
		f.Summary = fmt.Sprintf("HELO name %s does not match the egress IP", helo)
		f.Detail = strings.Join(problems, "; ") + ". Servers may not refuse a mismatch (RFC 5321 §4.1.4), but spam filters score it."
		fix := "set --helo to the PTR name of the egress IP"
		if len(ptrNames) > 0 {
			fix = fmt.Sprintf("set --helo %s (the PTR name of %s)", ptrNames[0], eg)
		}
		f.Fix = fix
		return f
	}
	f.Status, f.Summary = OK, fmt.Sprintf("HELO name %s is the PTR name of %s and resolves to it", helo, eg)
	return f
}

// checkSPF evaluates the SPF policy of the MAIL FROM domain (of
// postmaster@HELO for the null sender, RFC 7208 §2.4) for eg.
func (a *auditor) checkSPF(ctx context.Context, eg netip.Addr) Finding {
	f := Finding{Check: "spf"}
	sender := a.cfg.MailFrom
	helo := hostname(a.cfg.HeloName)
	if sender == "" {
		if helo == "" || strings.HasPrefix(helo, "[") {
			f.Status, f.Summary = Warn, "SPF not checked: no MAIL FROM and no HELO name"
			f.Fix = "set --from to a mailbox on a domain whose SPF record authorizes the egress IP"
			return f
		}
		sender = "postmaster@" + helo
	}
	domain := hostname(sender[strings.LastIndexByte(sender, '@')+1:])
	if !eg.IsValid() {
		f.Status, f.Summary = Skip, fmt.Sprintf("SPF of %s not checked: egress IP unknown", domain)
		f.Fix = "set --egress-ip, or give --domain so a connection reveals it"
		return f
	}
	var top string
	rec := func(name string, txts []string) {
		if hostname(name) != domain || top != "" {
			return
		}
		for _, t := range txts {
			if l := strings.ToLower(t); l == "v=spf1" || strings.HasPrefix(l, "v=spf1 ") {
				top = t
			}
		}
	}
	res, err := spf.CheckHostWithSender(net.IP(eg.Unmap().AsSlice()), helo, sender,
		spf.WithContext(ctx), spf.WithResolver(spfResolver{r: a.dns, record: rec}))
	detail := func() string {
		var parts []string
		if top != "" {
			parts = append(parts, fmt.Sprintf("%s: %q", domain, top))
		}
		matched := map[error]string{
			spf.ErrMatchedIP: "an ip4/ip6 term", spf.ErrMatchedA: "an a term", spf.ErrMatchedMX: "an mx term",
			spf.ErrMatchedAll: "the all term", spf.ErrMatchedPTR: "a ptr term", spf.ErrMatchedExists: "an exists term",
		}
		switch {
		case err == nil || errors.Is(err, spf.ErrNoResult):
		case matched[err] != "":
			parts = append(parts, "decided by "+matched[err])
		default:
			parts = append(parts, "evaluation: "+err.Error())
		}
		return strings.Join(parts, "; ")
	}
	f.Detail = detail()
	add := fmt.Sprintf("add ip4:%s (or the range) to the SPF record of %s, before its all", eg, domain)
	if eg.Is6() {
		add = fmt.Sprintf("add ip6:%s to the SPF record of %s, before its all", eg, domain)
	}
	switch res {
	case spf.Pass:
		f.Status, f.Summary = OK, fmt.Sprintf("SPF of %s authorizes %s (pass)", domain, eg)
	case spf.Fail:
		f.Status, f.Summary = Fail, fmt.Sprintf("SPF of %s forbids %s (fail)", domain, eg)
		f.Fix = add
	case spf.SoftFail:
		f.Status, f.Summary = Warn, fmt.Sprintf("SPF of %s does not authorize %s (softfail)", domain, eg)
		f.Fix = add
	case spf.Neutral:
		f.Status, f.Summary = Warn, fmt.Sprintf("SPF of %s says nothing about %s (neutral)", domain, eg)
		f.Fix = add
	case spf.None:
		f.Status, f.Summary = Warn, fmt.Sprintf("%s has no SPF record (none)", domain)
		f.Detail = "Senders without SPF are treated with suspicion; Yahoo refuses MAIL FROM domains it cannot verify."
		f.Fix = fmt.Sprintf("publish a TXT record at %s: \"v=spf1 ip4:%s -all\" (or set --from to a domain that has one)", domain, eg)
	case spf.TempError:
		f.Status, f.Summary = Warn, fmt.Sprintf("SPF of %s not checked: DNS failed (temperror)", domain)
		f.Fix = "check that the --dns servers answer, then run again"
	default: // PermError
		f.Status, f.Summary = Fail, fmt.Sprintf("SPF record of %s is broken (permerror)", domain)
		switch {
		case errors.Is(err, spf.ErrLookupLimitReached):
			f.Fix = "the record needs more than 10 DNS lookups (RFC 7208 §4.6.4): replace include:, a and mx terms with ip4:/ip6: ranges"
		case errors.Is(err, spf.ErrVoidLookupLimitReached):
			f.Fix = "the record names more than 2 domains that do not exist or have no records (RFC 7208 §4.6.4): remove them"
		case errors.Is(err, spf.ErrMultipleRecords):
			f.Fix = "publish exactly one v=spf1 TXT record (RFC 7208 §3.2): merge them"
		default:
			f.Fix = "correct the record's syntax (RFC 7208 §4.6); receivers treat a broken record like a failing one"
		}
	}
	return f
}

// reverseName is ip's DNSBL query prefix (RFC 5782 §2.1 and §2.4): IPv4
// octets reversed, IPv6 as 32 reversed nibbles.
func reverseName(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		return fmt.Sprintf("%d.%d.%d.%d", b[3], b[2], b[1], b[0])
	}
	b := ip.As16()
	var s strings.Builder
	const hex = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		s.WriteByte(hex[b[i]&0xf])
		s.WriteByte('.')
		s.WriteByte(hex[b[i]>>4])
		if i > 0 {
			s.WriteByte('.')
		}
	}
	return s.String()
}

// Spamhaus return codes (docs.spamhaus.com, "040-zones"; docs/smtp.md §6).
var zenCodes = map[byte]struct{ list, meaning, fix string }{
	2:  {"SBL", "a known spam source or spam operation", sbFix},
	3:  {"SBL CSS", "low-reputation or snowshoe sending seen by Spamhaus", sbFix},
	4:  {"XBL", "an exploited host: malware, a botnet or an open proxy sends from it", xblFix},
	5:  {"XBL", "an exploited host", xblFix},
	6:  {"XBL", "an exploited host", xblFix},
	7:  {"XBL", "an exploited host", xblFix},
	9:  {"DROP", "a hijacked range or one leased to spammers", sbFix},
	10: {"PBL (ISP-maintained)", "the range's owner says it should not send mail directly to other servers", pblFix},
	11: {"PBL (Spamhaus-maintained)", "an end-user or dynamic range that should not send mail directly", pblFix},
}

const (
	sbFix  = "stop whatever sends spam from this IP, then request removal at https://check.spamhaus.org/, or probe from another IP"
	xblFix = "find and clean the infected machine or open proxy on this IP (or behind its NAT), then request removal at https://check.spamhaus.org/"
	pblFix = "probe from a server IP your provider designates for mail (or through a SOCKS5 proxy on one); if this is a static server IP you control, remove it from the PBL at https://check.spamhaus.org/"
)

// spamhausErrors are the 127.255.255.x answers Spamhaus gives instead of a
// listing when it refused to answer (a Spamhaus news item): never a listing.
var spamhausErrors = map[byte]string{
	252: "the zone name is wrong (typo) or the query malformed",
	254: "the query came through a public or open resolver, which Spamhaus refuses",
	255: "too many queries from your resolver (excessive volume)",
}

// checkDNSBL asks zone whether eg is listed (RFC 5782 §2.1: an A record is
// a listing, NXDOMAIN is not).
func (a *auditor) checkDNSBL(ctx context.Context, eg netip.Addr, zone string) Finding {
	f := Finding{Check: "dnsbl:" + zone}
	if !eg.IsValid() {
		f.Status, f.Summary = Skip, fmt.Sprintf("%s not checked: egress IP unknown", zone)
		f.Fix = "set --egress-ip, or give --domain so a connection reveals it"
		return f
	}
	q := reverseName(eg) + "." + zone
	rrs, err := a.dns.query(ctx, q, dns.TypeA)
	switch {
	case isNotFound(err):
		f.Status, f.Summary = OK, fmt.Sprintf("%s is not listed in %s", eg, zone)
		return f
	case err != nil:
		f.Status, f.Summary, f.Detail = Warn, fmt.Sprintf("%s not checked: DNS failed", zone), err.Error()
		f.Fix = "check that the --dns servers answer, then run again"
		return f
	}
	var listed, notChecked, fixes []string
	for _, rr := range rrs {
		ip, ok := netip.AddrFromSlice(rr.(*dns.A).A)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		b := ip.As4()
		switch {
		case b[0] != 127:
			// RFC 5782 §2.3: listings are in 127.0.0.0/8. Anything else is a
			// resolver that rewrites NXDOMAIN into an advertising page.
			notChecked = append(notChecked, fmt.Sprintf("%s is not a blocklist answer: your resolver seems to rewrite unknown names", ip))
		case b[1] == 255 && b[2] == 255:
			why, ok := spamhausErrors[b[3]]
			if !ok {
				why = "the list refused the query"
			}
			notChecked = append(notChecked, fmt.Sprintf("%s: %s", ip, why))
		default:
			if c, ok := zenCodes[b[3]]; ok && strings.HasSuffix(zone, "spamhaus.org") {
				listed = append(listed, fmt.Sprintf("%s %s: %s", ip, c.list, c.meaning))
				fixes = appendOnce(fixes, c.fix)
			} else if zone == "bl.spamcop.net" {
				listed = append(listed, fmt.Sprintf("%s: SpamCop users reported spam from this IP", ip))
				fixes = appendOnce(fixes, "SpamCop listings expire about 24 hours after the reports stop; find what sent the reported mail (https://www.spamcop.net/bl.shtml)")
			} else {
				listed = append(listed, fmt.Sprintf("%s (return code %d)", ip, b[3]))
				fixes = appendOnce(fixes, fmt.Sprintf("see %s's website for why %s is listed and how to be removed", zone, eg))
			}
		}
	}
	switch {
	case len(listed) > 0:
		f.Status, f.Summary = Fail, fmt.Sprintf("%s is LISTED in %s", eg, zone)
		f.Detail = strings.Join(listed, "; ")
		if txts, err := a.dns.txt(ctx, q); err == nil && len(txts) > 0 {
			f.Detail += "; the list says: " + strings.Join(txts, " / ")
		}
		f.Detail += ". Receivers using this list refuse probes from this IP, so verdicts come back blocked or unknown."
		f.Fix = strings.Join(fixes, "; ")
	case len(notChecked) > 0:
		f.Status, f.Summary = Warn, fmt.Sprintf("%s not checked: the list refused the query (this is not a listing)", zone)
		f.Detail = strings.Join(notChecked, "; ")
		f.Fix = "query DNSBLs through your own recursive resolver (e.g. unbound on this host, --dns 127.0.0.1), not a public one; Spamhaus also offers a free DQS key for high volume"
	default:
		f.Status, f.Summary = OK, fmt.Sprintf("%s is not listed in %s", eg, zone)
	}
	return f
}

func appendOnce(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// literal is ip as an SMTP address literal (RFC 5321 §4.1.3).
func literal(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() {
		return "[IPv6:" + ip.String() + "]"
	}
	return "[" + ip.String() + "]"
}
