package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/mxprobe/mxprobe/validator"
)

// progress is check's status line on a terminal: done of total, counts by
// verdict, rate and time left, redrawn in place under the results printed
// so far. Nothing is drawn when stdout is not a terminal, so a pipe or a
// file gets the results alone. (golang.org/x/term tells a terminal; the
// line uses only carriage return and "erase line", which every terminal
// emulator in use understands.)
type progress struct {
	w       io.Writer
	on      bool
	total   int
	done    int
	counts  map[validator.Verdict]int
	started time.Time
	now     func() time.Time
}

// newProgress draws on stderr, and only when both stdout and stderr are
// terminals: results on stdout stay clean for a pipe, a file or --json
// captured from a pseudo-terminal.
func newProgress(stdout, stderr io.Writer, total int) *progress {
	p := &progress{w: stderr, total: total, counts: map[validator.Verdict]int{}, now: time.Now}
	if isTerminal(stdout) && isTerminal(stderr) && total > 1 {
		p.on = true
	}
	p.started = p.now()
	return p
}

// clear erases the status line before a result is printed.
func (p *progress) clear() {
	if p.on {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// add counts a result and redraws the line.
func (p *progress) add(r validator.Result) {
	p.done++
	p.counts[r.Verdict]++
	if !p.on {
		return
	}
	line := fmt.Sprintf("[%d/%d] %d valid, %d invalid, %d risky, %d unknown", p.done, p.total,
		p.counts[validator.Valid], p.counts[validator.Invalid], p.counts[validator.Risky], p.counts[validator.Unknown])
	if el := p.now().Sub(p.started).Seconds(); el > 0 {
		rate := float64(p.done) / el
		line += fmt.Sprintf(", %.1f/s", rate)
		if left := p.total - p.done; left > 0 && rate > 0 {
			eta := time.Duration(float64(left) / rate * float64(time.Second)).Round(time.Second)
			line += ", about " + eta.String() + " left"
		}
	}
	fmt.Fprint(p.w, line)
}

// end erases the line for good.
func (p *progress) end() { p.clear() }

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
