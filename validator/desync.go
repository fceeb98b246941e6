package validator

import (
	"errors"
	"fmt"
	"time"
)

// ErrProtocolDesync: the server sent a reply that cannot belong to the
// command we sent — a 3yz (we never send DATA, BDAT or AUTH, the only
// commands answered with one), or more lines than one reply, which would be
// read as the answer to our next command. The session is botched: a reply
// taken for the wrong command could turn a 550 into a 250 (issue 8).
var ErrProtocolDesync = errors.New("smtp: reply out of sequence (protocol desync)")

// checkSync is called in lock-step use (one command, one reply) before a
// command is sent and after its reply is read: anything already buffered
// was sent unasked. It only sees what has reached our buffer; an extra line
// still in flight is read as the next reply, but its code or the next
// check usually gives it away. Pipelining (RFC 2920) must not use it
// between the replies of one group.
func (c *client) checkSync(stage Stage) error {
	if n := c.br.Buffered(); n > 0 {
		line, _ := c.br.Peek(min(n, 80))
		c.note("<", string(line))
		return c.fail(stage, fmt.Errorf("%w: %d unsolicited octets %q", ErrProtocolDesync, n, line))
	}
	return nil
}

// quiet reports whether a parked session has stayed silent since it was
// parked. Servers announce an idle timeout with an unsolicited "421 … timeout
// exceeded" before closing; read as the reply to our next command it would
// turn into a verdict for the wrong address, and checkSync cannot see it
// while it is still in the socket rather than our buffer. A 1 ms peek
// finds it; the session is then dropped, unread.
func (c *client) quiet() error {
	if c.botched != nil {
		return c.botched
	}
	if err := c.checkSync(StageRset); err != nil {
		return err
	}
	// A deadline already past fails the read before looking at the
	// socket; a millisecond ahead lets data already there be seen.
	if err := c.conn.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		return err
	}
	_, err := c.br.Peek(1)
	if derr := c.conn.SetReadDeadline(time.Time{}); derr != nil {
		return derr
	}
	switch {
	case err == nil:
		return c.checkSync(StageRset)
	case isTimeout(err):
		return nil // silent: what we want
	default:
		return c.fail(StageRset, err)
	}
}
