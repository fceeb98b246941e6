// Package validator answers "can this address receive mail?" for one
// address at a time, without sending mail. It knows nothing of Redis or
// queues; the worker puts it under the shared rate limits through a Gate.
//
// The way of one address through Validator.Validate:
//
//  1. Syntax (package address): an RFC 5321 mailbox — dot-string or quoted
//     local part, domain or address literal, octet limits 64/255/254, IDN
//     domains to A-labels with idna.Lookup, SMTPUTF8 flagged. net/mail is
//     not used as the check: it accepts display names and comments
//     (docs/smtp.md §9). Bad syntax is invalid/bad_syntax, final.
//
//  2. Lists: the operator's deny list (invalid/denied), allow list
//     (valid/allowed, no traffic) and the embedded CC0 disposable-domain list
//     (risky/disposable, no traffic: such domains accept everything). Role
//     accounts and free providers are flags, never verdicts. An Updater can
//     refresh the disposable list in the background.
//
//  3. DNS (miekg/dns; dns.go says why not net.Resolver): MX sorted by
//     preference, equal preferences shuffled; implicit MX only when there is
//     no MX; null MX (RFC 7505) and NXDOMAIN are invalid; SERVFAIL and
//     timeouts are unknown and retryable. MX targets on loopback, private or
//     link-local addresses are refused unless DNSConfig.AllowPrivate.
//
//  4. SMTP (Prober; smtpclient.go says why a lean client rather than
//     emersion/go-smtp's): for each MX host in order, the Gate admits the
//     session (nil: always), then connect, banner, EHLO (HELO fallback),
//     STARTTLS when offered (opportunistic unless TLSVerify), MAIL FROM,
//     RCPT TO, the catch-all RCPT (skipped when the domain's status is
//     remembered, including from an earlier "no such user" refusal), QUIT
//     (its 221 is not awaited, as Postfix's client does by default). Never
//     DATA. The next MX host is tried only when a host gave no answer about
//     the mailbox — never after any RCPT reply.
//
//     Sessions are reused (pool.go): after a probe the session is parked, and
//     the next address for the same MX host takes it — in the same MAIL
//     transaction for the same domain, after RSET and the identical MAIL FROM
//     otherwise — bounded by recipients and rejects per session (10 and 3,
//     under Postfix's soft error limit), idle time and age. A reused session
//     costs no new rate-limit token; the Gate's Admission learns every
//     outcome at once (cool-downs) and is done when the session closes. The
//     catch-all verdict of a domain is remembered (CatchAllCache), so the
//     random RCPT — a guaranteed reject that counts toward harvest defences —
//     is sent once per domain a day, not once per address. PIPELINING
//     (RFC 2920) is optional and off by default.
//
//  5. Classification (classify.go): the decision table of docs/verdicts.md
//     §1.2 as data. Only a 5yz reply to RCPT about the mailbox makes an
//     address invalid; greylisting, rate limits, blocks of our IP, timeouts
//     and disconnects are unknown (Outcome.Action tells the worker to cool a
//     provider down). Providers that accept everything at RCPT (profiles.go)
//     give risky/accepts_all_at_rcpt, never valid.
//
// Validate returns a Result (the wire format: stable JSON names) and an error
// only for operational failures (ctx ended, *GateError). Check is the
// "validate or fail" form: nil for valid, else a *CheckError wrapping one of
// the Err… sentinels for errors.Is and carrying the Result for errors.As.
package validator
