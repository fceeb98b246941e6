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
// taken for the wrong command could turn a 550 into a 250
// (docs/reliability.md §1).
var ErrProtocolDesync = errors.New("smtp: reply out of sequence (protocol desync)")

// ErrServerClosing: the server sent a 421 unasked after a reply (RFC 5321
// §3.8), closing the session. The reply before it stands; the session takes
// no further command. client.closing holds the 421.
var ErrServerClosing = errors.New("smtp: server closed the session with 421")

// checkSync is called in lock-step use (one command, one reply) before a
// command is sent and after its reply is read: anything already buffered
// was sent unasked. It only sees what has reached our buffer; an extra line
// still in flight is read as the next reply, but its code or the next
// check usually gives it away. Pipelining (RFC 2920) must not use it
// between the replies of one group.
func (c *client) checkSync(stage Stage) error {
	if n := c.br.Buffered(); n > 0 {
		if c.closingNotice(stage) {
			return c.fail(stage, ErrServerClosing)
		}
		line, _ := c.br.Peek(min(n, 80))
		c.note("<", string(line))
		return c.fail(stage, fmt.Errorf("%w: %d unsolicited octets %q", ErrProtocolDesync, n, line))
	}
	return nil
}

// closingNotice reads a 421 waiting in the buffer, the only reply a server
// may send unasked (RFC 5321 §3.8). Anything else is left for checkSync to
// report as a desync.
func (c *client) closingNotice(stage Stage) bool {
	if head, _ := c.br.Peek(min(c.br.Buffered(), 4)); len(head) < 4 || string(head[:3]) != "421" || (head[3] != ' ' && head[3] != '-') {
		return false
	}
	// The rest of it may be in flight; it is a reply like any other.
	c.conn.SetReadDeadline(c.now().Add(min(c.timeout, time.Second)))
	r, raw, err := ReadReply(c.br, c.maxLine, c.maxLines)
	for _, l := range raw {
		c.note("<", l)
	}
	if err != nil {
		c.fail(stage, err)
		return false
	}
	c.closing = &r
	return true
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
	return c.peek(StageRset)
}

// peek looks at the socket, not only our buffer, for octets nobody asked
// for: a reply that came late (a server that answers one RCPT twice) would
// otherwise be read as the answer to the command we are about to send. It
// waits a millisecond at most, and only catches what has arrived by then;
// confirm covers what arrives later.
func (c *client) peek(stage Stage) error {
	if err := c.checkSync(stage); err != nil {
		return err
	}
	// A deadline already past fails the read before looking at the
	// socket; a millisecond ahead lets data already there be seen.
	if err := c.conn.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		return c.fail(stage, err)
	}
	_, err := c.br.Peek(1)
	if derr := c.conn.SetReadDeadline(time.Time{}); derr != nil {
		return c.fail(stage, derr)
	}
	switch {
	case err == nil:
		return c.checkSync(stage)
	case isTimeout(err):
		return nil // silent: what we want
	default:
		return c.fail(stage, err)
	}
}

// confirm proves that a 2yz just read answered the RCPT we sent and was not
// a late extra reply to an earlier command of the session: NOOP must get
// exactly "250" (RFC 5321 §4.1.1.9). Had the 2yz been a stray, the RCPT's
// own reply (a 550, say) is what answers the NOOP, and the session is out
// of step. Lock-step SMTP gives no other proof of which command a reply
// answers; a stray that arrives even later is caught by the next peek or
// the next confirm.
func (c *client) confirm(stage Stage) error {
	reply, err := c.cmd(stage, "NOOP")
	if err != nil {
		return err
	}
	if reply.Code != 250 {
		return c.fail(stage, fmt.Errorf("%w: NOOP answered %d %s", ErrProtocolDesync, reply.Code, reply.Enhanced))
	}
	return nil
}
