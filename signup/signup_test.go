package signup

import (
	"testing"

	"github.com/mxprobe/mxprobe/tasks"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	check := func(verdict, reason string, f tasks.Flags) *tasks.Check {
		return &tasks.Check{Verdict: verdict, Reason: reason, Flags: f}
	}
	def := DefaultPolicy()
	strict := Policy{RejectDisposable: true, RejectRole: true, RejectFree: true}
	tests := []struct {
		name       string
		typed      string
		c          *tasks.Check
		final      bool
		p          Policy
		want       Decision
		reason     string
		didYouMean string
	}{
		{"valid", "bob@example.com", check("valid", "mailbox_exists", tasks.Flags{}), true, def, Accept, "mailbox_exists", ""},
		{"risky accepts all (Yahoo)", "bob@yahoo.com", check("risky", "accepts_all_at_rcpt", tasks.Flags{FreeProvider: true}), true, def, Accept, "accepts_all_at_rcpt", ""},
		{"risky catch-all", "bob@example.com", check("risky", "catch_all", tasks.Flags{CatchAll: true}), true, def, Accept, "catch_all", ""},
		{"unknown greylisted", "bob@example.com", check("unknown", "greylisted", tasks.Flags{}), true, def, Accept, "greylisted", ""},
		{"unknown blocked", "bob@example.com", check("unknown", "blocked", tasks.Flags{}), true, def, Accept, "blocked", ""},
		{"still running", "bob@example.com", nil, false, def, Accept, "pending", ""},
		{"retrying", "bob@example.com", check("unknown", "greylisted", tasks.Flags{}), false, def, Accept, "pending", ""},
		{"mailbox not found", "bob@example.com", check("invalid", "mailbox_not_found", tasks.Flags{}), true, def, Reject, "mailbox_not_found", ""},
		{"no MX", "bob@example.com", check("invalid", "no_mx", tasks.Flags{}), true, def, Reject, "no_mx", ""},
		{"bad syntax", "bob@", check("invalid", "bad_syntax", tasks.Flags{}), true, def, Reject, "bad_syntax", ""},
		{"disposable by default", "bob@mailinator.com", check("risky", "disposable", tasks.Flags{Disposable: true}), true, def, Reject, "disposable", ""},
		{"disposable allowed by policy", "bob@mailinator.com", check("risky", "disposable", tasks.Flags{Disposable: true}), true, Policy{}, Accept, "disposable", ""},
		{"disposable known before the probe ends", "bob@mailinator.com", check("unknown", "greylisted", tasks.Flags{Disposable: true}), false, def, Reject, "disposable", ""},
		{"role account allowed by default", "info@example.com", check("valid", "mailbox_exists", tasks.Flags{RoleAccount: true}), true, def, Accept, "mailbox_exists", ""},
		{"role account rejected by policy", "info@example.com", check("valid", "mailbox_exists", tasks.Flags{RoleAccount: true}), true, strict, Reject, "role_account", ""},
		{"free provider rejected by policy", "bob@gmail.com", check("valid", "mailbox_exists", tasks.Flags{FreeProvider: true}), true, strict, Reject, "free_provider", ""},
		{"allowlisted beats policy", "info@example.com", check("valid", "allowed", tasks.Flags{RoleAccount: true, Allowlisted: true}), true, strict, Accept, "allowed", ""},
		// Typos.
		{"squat that accepts everything", "bob@gmial.com", check("risky", "disposable", tasks.Flags{Disposable: true}), true, def, Reject, "typo_squat", "bob@gmail.com"},
		{"squat that says valid", "bob@gmial.com", check("valid", "mailbox_exists", tasks.Flags{}), true, def, Reject, "typo_squat", "bob@gmail.com"},
		{"typo domain that does not exist", "bob@gmail.con", check("invalid", "domain_not_found", tasks.Flags{}), true, def, Suggest, "domain_not_found", "bob@gmail.com"},
		{"typo while the check runs", "bob@hotmial.com", nil, false, def, Suggest, "typo", "bob@hotmail.com"},
		{"typo without a dot", "bob@gmailcom", check("invalid", "bad_syntax", tasks.Flags{}), true, def, Suggest, "bad_syntax", "bob@gmail.com"},
		{"unsure slip, domain broken", "bob@live.co", check("invalid", "no_mx", tasks.Flags{}), true, def, Suggest, "no_mx", "bob@live.com"},
		{"unsure slip, domain works", "bob@live.co", check("valid", "mailbox_exists", tasks.Flags{}), true, def, Accept, "mailbox_exists", ""},
		{"unsure slip, mailbox refused", "bob@mex.com", check("invalid", "mailbox_not_found", tasks.Flags{}), true, def, Reject, "mailbox_not_found", ""},
		{"typo of an unknown mailbox at a squat", "bob@gmial.com", check("invalid", "mailbox_not_found", tasks.Flags{}), true, def, Suggest, "mailbox_not_found", "bob@gmail.com"},
		{"a big provider's other domain is no squat", "anna@hotmail.se", check("valid", "mailbox_exists", tasks.Flags{}), true, def, Accept, "mailbox_exists", ""},
		{"nor is protonmail.ch", "anna@protonmail.ch", check("valid", "mailbox_exists", tasks.Flags{}), true, def, Accept, "mailbox_exists", ""},
		{"a TLD slip that receives mail", "anna@gmail.co", check("risky", "catch_all", tasks.Flags{CatchAll: true}), true, def, Accept, "catch_all", ""},
		{"a TLD slip that does not", "anna@gmail.co", check("invalid", "no_mx", tasks.Flags{}), true, def, Suggest, "no_mx", "anna@gmail.com"},
		{"allow-listed squat-like domain", "anna@gmial.com", check("valid", "allowed", tasks.Flags{Allowlisted: true}), true, def, Accept, "allowed", ""},
		{"deny-listed at a typo domain", "spam@gmial.com", check("invalid", "denied", tasks.Flags{Denylisted: true}), true, def, Reject, "denied", ""},
		// Bad input.
		{"empty", "", check("invalid", "bad_syntax", tasks.Flags{}), true, def, Reject, "bad_syntax", ""},
		{"no local part", "@gmial.com", check("invalid", "bad_syntax", tasks.Flags{}), true, def, Reject, "bad_syntax", ""},
		{"spaces kept out", "  bob@gmial.com ", nil, false, def, Suggest, "typo", "bob@gmail.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Decide(tt.typed, tt.c, tt.final, tt.p)
			if got.Decision != tt.want || got.Reason != tt.reason || got.DidYouMean != tt.didYouMean {
				t.Errorf("Decide(%q) = %+v, want %s/%s did_you_mean %q", tt.typed, got, tt.want, tt.reason, tt.didYouMean)
			}
			if (got.Decision == Accept) != (got.Message == "") {
				t.Errorf("message %q for %s: want one exactly when not accepting", got.Message, got.Decision)
			}
		})
	}
}
