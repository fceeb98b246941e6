package validator

// TEMPORARY — written by the SMTP helper so validator/ compiles in its own
// worktree. The real declarations come from validator/dns.go (DNS helper).
// The lead deletes this file when merging.

import "net/netip"

type MXHost struct {
	Name  string
	Pref  uint16
	Addrs []netip.Addr
}

type MXSet struct {
	Domain           string
	Hosts            []MXHost
	Implicit, NullMX bool
}
