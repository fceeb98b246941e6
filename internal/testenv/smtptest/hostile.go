package smtptest

import (
	"io"
	"net"
	"strings"
)

// Steps for peers that break the protocol on purpose, kept apart
// from the ordinary script steps:
//
//	! reset                      abort the connection with a TCP RST
//	                             (SO_LINGER 0), not the FIN of "! close"
//	! burst 250 a || 250 b       send several lines in ONE write, so they
//	                             reach the client together: a reply plus
//	                             an unsolicited extra one (protocol desync)

// reset aborts c: with linger 0 the kernel answers the client's next read
// with ECONNRESET instead of a clean EOF.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// burst writes the " || "-separated lines of arg with one Write.
func burst(c net.Conn, arg string) error {
	var b strings.Builder
	for _, l := range strings.Split(arg, " || ") {
		b.WriteString(l + "\r\n")
	}
	_, err := io.WriteString(c, b.String())
	return err
}
