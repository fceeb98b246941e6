package validator

import "strings"

// Profile is what we know about a mail provider from its MX host names
// (docs/smtp.md §3, §7). The zero Profile means "nothing special".
type Profile struct {
	// Name identifies the provider in logs and tests.
	Name string
	// Suffix is the MX host suffix that selects this profile.
	Suffix string
	// AcceptsAllAtRcpt: the provider answers 250 to every RCPT and rejects
	// unknown users only after DATA, which we never send. An accepted RCPT
	// is reported as risky/accepts_all_at_rcpt, never valid.
	AcceptsAllAtRcpt bool
	// SkipCatchAll: do not send the random-recipient RCPT. The provider
	// answers honestly per mailbox, so the probe would only add a rejected
	// RCPT to the harvest counters (§3, §4).
	SkipCatchAll bool
	// Note says why, for people reading logs and this table.
	Note string
}

// profiles is the one table of provider behaviour, keyed by MX suffix. The
// most specific suffix must come first.
var profiles = []Profile{
	{
		Name: "yahoo", Suffix: ".yahoodns.net", AcceptsAllAtRcpt: true, SkipCatchAll: true,
		Note: "Yahoo/AOL accept every RCPT and reject unknown users only after DATA (§3)",
	},
	{
		Name: "google", Suffix: ".google.com", SkipCatchAll: true,
		Note: "Gmail and Workspace give an honest 550 5.1.1 per mailbox",
	},
	{
		Name: "google", Suffix: ".googlemail.com", SkipCatchAll: true,
		Note: "Gmail and Workspace give an honest 550 5.1.1 per mailbox",
	},
	{
		Name: "outlook", Suffix: ".olc.protection.outlook.com", SkipCatchAll: true,
		Note: "consumer outlook.com/hotmail: 550 5.5.0 for unknown users; a second RCPT may get 452 (outlook.fr)",
	},
	{
		// Tenants without Directory-Based Edge Blocking accept every RCPT
		// and bounce later (a report to the reacher project), so the catch-all probe is the
		// only way to tell such a tenant: keep it.
		Name: "microsoft365", Suffix: ".mail.protection.outlook.com",
		Note: "M365 tenants differ: DBEB rejects with 550 5.4.1, others accept all; catch-all probe tells them apart",
	},
	{
		Name: "antispamcloud", Suffix: ".antispamcloud.com", SkipCatchAll: true,
		Note: "slow filtering proxy; reacher skips its catch-all probe",
	},
}

// ProfileFor returns the profile of the provider behind an MX host name
// (case and a trailing dot do not matter), or the zero Profile.
func ProfileFor(mxHost string) Profile {
	h := strings.ToLower(strings.TrimSuffix(mxHost, "."))
	for _, p := range profiles {
		if strings.HasSuffix(h, p.Suffix) || h == p.Suffix[1:] {
			return p
		}
	}
	return Profile{}
}
