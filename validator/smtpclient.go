package validator

// The SMTP client.
//
// mxprobe talks SMTP through its own lean client on net.Conn + bufio rather
// than emersion/go-smtp's client (go-smtp is used only as a test peer). The
// probe talks to servers it does not control, and go-smtp's client offers
// none of what that needs:
//
//   - Replies are read through caps on line length and on lines per reply, so
//     a hostile server cannot make us buffer an endless line or a
//     10,000-line reply (go-smtp reads with net/textproto, which has neither).
//   - Every command gets its own deadline, and the whole session is bounded by
//     ctx: context.AfterFunc closes the connection when ctx ends, so a server
//     that trickles one byte per second cannot hold a worker forever.
//   - Every line in either direction can be recorded with a timestamp for the
//     transcript, and written live to a debug writer.
//   - Errors know the stage they happened at (banner, EHLO, MAIL, RCPT...),
//     which the decision table needs (docs/verdicts.md).
//   - The write and read halves of a command are separate (send, flush,
//     readReply), so RFC 2920 pipelining and keeping a session open for the
//     next address fit without a rewrite.
//
// As in mox's smtpclient, after any I/O or protocol error the client is
// "botched": it refuses further commands, because it no longer knows what
// state the server is in.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of the SMTP client. They come wrapped in *ProbeError, which names
// the stage; use errors.Is.
var (
	// ErrBotched: an earlier I/O or protocol error left the session in an
	// unknown state; no further command is sent.
	ErrBotched = errors.New("smtp: session botched by an earlier error")
	// ErrLineTooLong: a reply line exceeded the line-length cap.
	ErrLineTooLong = errors.New("smtp: reply line too long")
	// ErrReplyTooLong: a multi-line reply exceeded the lines-per-reply cap.
	ErrReplyTooLong = errors.New("smtp: too many lines in reply")
	// ErrMalformedReply: a reply line that is not "ddd", "ddd text" or
	// "ddd-text", or whose code differs from the previous line's.
	ErrMalformedReply = errors.New("smtp: malformed reply")
	// ErrUnsafeCommand: a command would have carried CR, LF or NUL, which
	// would let its argument inject another command.
	ErrUnsafeCommand = errors.New("smtp: command contains CR, LF or NUL")
	// ErrConnect: the TCP (or SOCKS5) connection could not be opened.
	ErrConnect = errors.New("smtp: connect failed")
	// ErrTLS: the STARTTLS handshake failed; the session is dead.
	ErrTLS = errors.New("smtp: TLS handshake failed")
)

// ProbeError is an I/O, timeout, TLS or protocol failure at one stage of the
// conversation with one host.
type ProbeError struct {
	Stage Stage
	Host  string
	Err   error
}

func (e *ProbeError) Error() string {
	return fmt.Sprintf("%s: %s: %v", e.Host, e.Stage, e.Err)
}

func (e *ProbeError) Unwrap() error { return e.Err }

const (
	// RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers
	// exceed it, so allow about four times that (go-smtp's server doubles it).
	defaultMaxLineLength = 2000
	// An EHLO reply has a few dozen lines at most; 100 leaves room while
	// stopping a 10,000-line reply from growing memory.
	defaultMaxReplyLines = 100
	minMaxLineLength     = 512
)

// ReadReply reads one complete SMTP reply from r, multi-line or not, and
// returns it together with its raw lines (for transcripts). It never reads
// more than maxLineLength octets per line plus r's buffer, nor more than
// maxLines lines, so memory stays bounded whatever the peer sends. Values
// below 1 select the defaults (2,000 octets, 100 lines).
//
// Each line must be "ddd", "ddd text" or "ddd-text" with the same code
// throughout; anything else is ErrMalformedReply. An enhanced status code
// (RFC 3463) is taken from the first line when its class matches the basic
// code's first digit, and stripped from every line that repeats it.
func ReadReply(r *bufio.Reader, maxLineLength, maxLines int) (Reply, []string, error) {
	if maxLineLength < 1 {
		maxLineLength = defaultMaxLineLength
	}
	if maxLines < 1 {
		maxLines = defaultMaxReplyLines
	}
	var (
		reply Reply
		raw   []string
		text  strings.Builder
		buf   []byte
	)
	for n := 0; ; n++ {
		if n == maxLines {
			return Reply{}, raw, ErrReplyTooLong
		}
		line, err := readLine(r, maxLineLength, buf[:0])
		if err != nil {
			return Reply{}, raw, err
		}
		buf = line
		raw = append(raw, string(line))
		code, more, rest, ok := parseReplyLine(line)
		if !ok || bytes.IndexByte(line, '\r') >= 0 {
			// A bare CR is forbidden in SMTP (RFC 5321 §2.3.8).
			return Reply{}, raw, fmt.Errorf("%w: %q", ErrMalformedReply, truncate(string(line), 80))
		}
		if n == 0 {
			reply.Code = code
			reply.Enhanced, rest = splitEnhanced(code, rest)
		} else {
			if code != reply.Code {
				return Reply{}, raw, fmt.Errorf("%w: code %d after %d in one reply", ErrMalformedReply, code, reply.Code)
			}
			if reply.Enhanced != "" {
				if e, r := splitEnhanced(code, rest); e == reply.Enhanced {
					rest = r
				}
			}
			text.WriteByte('\n')
		}
		text.Write(rest)
		if !more {
			reply.Text = text.String()
			return reply, raw, nil
		}
	}
}

// readLine reads one line, without its CRLF (or bare LF, which lenient
// servers send), into buf. The check runs before every append, so at most
// max+2 octets are held however long the peer's line is.
func readLine(r *bufio.Reader, max int, buf []byte) ([]byte, error) {
	for {
		frag, err := r.ReadSlice('\n')
		if len(buf)+len(frag) > max+2 {
			return nil, ErrLineTooLong
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			buf = buf[:len(buf)-1]
			if n := len(buf); n > 0 && buf[n-1] == '\r' {
				buf = buf[:n-1]
			}
			if len(buf) > max {
				return nil, ErrLineTooLong
			}
			return buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// parseReplyLine splits "250-text" / "250 text" / "250". SMTP replies are
// 2yz–5yz with a second digit 0–5 (RFC 5321 §4.2.1); 1yz is never sent.
func parseReplyLine(line []byte) (code int, more bool, rest []byte, ok bool) {
	if len(line) < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' || line[2] < '0' || line[2] > '9' {
		return 0, false, nil, false
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	if len(line) == 3 {
		return code, false, nil, true
	}
	switch line[3] {
	case ' ':
		return code, false, line[4:], true
	case '-':
		return code, true, line[4:], true
	}
	return 0, false, nil, false
}

// splitEnhanced takes an RFC 3463 code ^([245])\.(\d{1,3})\.(\d{1,3}) off
// the front of text when its class equals the basic code's first digit
// (a "550 4.2.0" mismatch is ignored, as RFC 3463 §2 requires agreement) and
// it is followed by a space or the end.
func splitEnhanced(code int, text []byte) (string, []byte) {
	if len(text) < 5 || int(text[0]-'0') != code/100 || text[1] != '.' {
		return "", text
	}
	i := 2
	digits := func() bool {
		start := i
		for i < len(text) && i-start < 4 && text[i] >= '0' && text[i] <= '9' {
			i++
		}
		return i > start && i-start <= 3
	}
	if !digits() || i >= len(text) || text[i] != '.' {
		return "", text
	}
	i++
	if !digits() {
		return "", text
	}
	if i < len(text) && text[i] != ' ' {
		return "", text
	}
	enh := string(text[:i])
	for i < len(text) && text[i] == ' ' {
		i++
	}
	return enh, text[i:]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// client is one SMTP session. It is not safe for concurrent use.
type client struct {
	conn     net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	host     string
	timeout  time.Duration
	maxLine  int
	maxLines int
	now      func() time.Time

	botched  error
	quitSent bool
	// errors counts the 4yz and 5yz replies of the session (a 421 aside),
	// as the server counts them toward its error limit (budget.go).
	errors int
	// closing is a 421 the server sent unasked after a reply (RFC 5321
	// §3.8: a server that must close may say so at any time); the reply
	// before it stands, no command follows it.
	closing *Reply
	// inTx: the greeting is over; before each further command the socket
	// is peeked for unsolicited octets (peek), not only our buffer.
	inTx bool
	tls  bool
	ext  map[string]string // EHLO keywords, upper-case → parameters

	record     bool
	transcript []TranscriptLine
	debug      *lockedWriter

	// Round trips for the session-reuse benchmark: each read
	// that waits on something we flushed is one; the caller counts the
	// TCP connect. rtts may be nil.
	rtts    *atomic.Int64
	flushed bool
}

func newClient(conn net.Conn, host string, cfg *ProbeConfig, debug *lockedWriter, now func() time.Time) *client {
	return &client{
		conn:     conn,
		br:       bufio.NewReaderSize(conn, 4096),
		bw:       bufio.NewWriterSize(conn, 1024),
		host:     host,
		timeout:  cfg.CommandTimeout,
		maxLine:  cfg.MaxLineLength,
		maxLines: cfg.MaxReplyLines,
		now:      now,
		record:   cfg.Transcript,
		debug:    debug,
	}
}

func (c *client) note(dir, line string) {
	if !c.record && c.debug == nil {
		return
	}
	at := c.now()
	if c.record {
		c.transcript = append(c.transcript, TranscriptLine{At: at, Host: c.host, Dir: dir, Line: line})
	}
	if c.debug != nil {
		c.debug.printf("%s %s %s %s\n", at.UTC().Format("15:04:05.000"), c.host, dir, line)
	}
}

// fail marks the session botched and wraps err with the stage.
func (c *client) fail(stage Stage, err error) error {
	if c.botched == nil {
		c.botched = err
	}
	return &ProbeError{Stage: stage, Host: c.host, Err: err}
}

// send queues one command line; flush puts queued lines on the wire. Kept
// apart so that pipelining (RFC 2920) can queue several before one flush.
func (c *client) send(stage Stage, line string) error {
	if c.botched != nil {
		return &ProbeError{Stage: stage, Host: c.host, Err: ErrBotched}
	}
	if strings.ContainsAny(line, "\r\n\x00") {
		// Refused before anything reaches the wire; the session is intact.
		return &ProbeError{Stage: stage, Host: c.host, Err: ErrUnsafeCommand}
	}
	c.note(">", line)
	c.conn.SetWriteDeadline(c.now().Add(c.timeout))
	c.bw.WriteString(line)
	if _, err := c.bw.WriteString("\r\n"); err != nil {
		return c.fail(stage, err)
	}
	return nil
}

func (c *client) flush(stage Stage) error {
	if c.botched != nil {
		return &ProbeError{Stage: stage, Host: c.host, Err: ErrBotched}
	}
	c.conn.SetWriteDeadline(c.now().Add(c.timeout))
	if c.bw.Buffered() > 0 {
		c.flushed = true
	}
	if err := c.bw.Flush(); err != nil {
		return c.fail(stage, err)
	}
	return nil
}

// readReply reads one reply under the per-command deadline. RFC 5321
// §4.5.3.2 allows servers minutes per reply; the deadline is the configured
// CommandTimeout, and ctx bounds the whole session on top.
func (c *client) readReply(stage Stage) (Reply, error) {
	if c.botched != nil {
		return Reply{}, &ProbeError{Stage: stage, Host: c.host, Err: ErrBotched}
	}
	if c.flushed {
		c.flushed = false
		if c.rtts != nil {
			c.rtts.Add(1)
		}
	}
	c.conn.SetReadDeadline(c.now().Add(c.timeout))
	r, raw, err := ReadReply(c.br, c.maxLine, c.maxLines)
	for _, l := range raw {
		c.note("<", l)
	}
	if err != nil {
		return Reply{}, c.fail(stage, err)
	}
	if r.Code/100 == 3 {
		return Reply{}, c.fail(stage, fmt.Errorf("%w: %d reply to %s", ErrProtocolDesync, r.Code, stage))
	}
	if r.Code/100 >= 4 && r.Code != 421 {
		c.errors++
	}
	return r, nil
}

// cmd sends one command and reads its reply (lock-step). Octets buffered
// before the command or left over after its reply were sent unasked: the
// session is out of step, see checkSync.
func (c *client) cmd(stage Stage, line string) (Reply, error) {
	if c.botched == nil {
		check := c.checkSync
		if c.inTx {
			check = c.peek
		}
		if err := check(stage); err != nil {
			return Reply{}, err
		}
	}
	if err := c.send(stage, line); err != nil {
		return Reply{}, err
	}
	if err := c.flush(stage); err != nil {
		return Reply{}, err
	}
	r, err := c.readReply(stage)
	if err != nil {
		return Reply{}, err
	}
	if err := c.checkSync(stage); err != nil && !errors.Is(err, ErrServerClosing) {
		return Reply{}, err
	}
	return r, nil
}

// parseEHLO records the keywords of a 250 EHLO reply (RFC 5321 §4.1.1.1):
// the first line is the greeting, each further line a keyword and params.
func (c *client) parseEHLO(r Reply) {
	c.ext = make(map[string]string)
	lines := strings.Split(r.Text, "\n")
	for _, l := range lines[1:] {
		kw, params, _ := strings.Cut(strings.TrimSpace(l), " ")
		if kw != "" {
			c.ext[strings.ToUpper(kw)] = params
		}
	}
}

func (c *client) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// startTLS runs the handshake after a 220 to STARTTLS. Any buffered input
// is a protocol violation (RFC 3207 §5 warns of plaintext injected before
// the handshake) and botches the session.
func (c *client) startTLS(ctx context.Context, cfg *tls.Config) error {
	if c.br.Buffered() > 0 {
		return c.fail(StageSTARTTLS, fmt.Errorf("%w: server sent data before the TLS handshake", ErrMalformedReply))
	}
	c.conn.SetDeadline(c.now().Add(c.timeout))
	tc := tls.Client(c.conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return c.fail(StageSTARTTLS, fmt.Errorf("%w: %w", ErrTLS, err))
	}
	st := tc.ConnectionState()
	c.note("*", fmt.Sprintf("TLS handshake done: %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)))
	c.conn = tc
	c.br.Reset(tc)
	c.bw.Reset(tc)
	c.tls = true
	c.ext = nil
	return nil
}

// quit ends a healthy session politely, QUIT then close, without waiting
// for the 221: the verdict is known, and nothing in the reply would change
// what we do. Postfix's own SMTP client does the same by default
// (smtp_skip_quit_response = yes), so a server sees what it sees from most
// mail relays. Waiting would cost one more round trip per session, and on a
// session ended by its last allowed RCPT it would hold that address's answer
// back by it. A botched session is just closed; one whose QUIT
// already went out in a pipelined group is left alone.
func (c *client) quit() {
	if c.botched != nil || c.quitSent {
		return
	}
	c.quitSent = true
	if c.timeout > 5*time.Second {
		c.timeout = 5 * time.Second
	}
	if c.send(StageQuit, "QUIT") != nil {
		return
	}
	c.flush(StageQuit)
	c.flushed = false // no reply is awaited: not a round trip
}

func (c *client) close() error { return c.conn.Close() }

// isTimeout reports whether err is a deadline or context timeout.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// lockedWriter serialises live transcript lines from concurrent probes.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}
