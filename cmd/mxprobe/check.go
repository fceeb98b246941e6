package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/internal/termsafe"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

const checkSynopsis = "mxprobe check [flags] ADDRESS... (or - to read addresses from stdin, one per line)"

func runCheck(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	var pf probeFlags
	pf.register(fs)
	jsonOut := fs.Bool("json", false, "print one JSON object per address instead of a table")
	debug := fs.Bool("debug", false, "print the SMTP conversation to stderr as it happens")
	transcript := fs.Bool("transcript", false, "include the SMTP transcript in --json output")
	concurrency := fs.Int("concurrency", 8, "domains checked at once (the addresses of one domain go one after another, on one session where the server allows)")
	ordered := fs.Bool("ordered", false, "print results in input order (default: as they complete)")
	output := fs.String("output", "", "also write every result to this file: .csv or .ndjson (.jsonl)")
	limitDefault := fs.String("limit-default", "10/1m:3:2", "default provider limit RATE/PERIOD:BURST:SESSIONS, as the workers'")
	limits := fs.String("limits", "", "per-provider limits, comma-separated GROUP=RATE/PERIOD:BURST:SESSIONS (e.g. google.com=20/1m:5:3)")
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printFlagHelp(stdout, fs, checkSynopsis)
			return exitOK, nil
		}
		return exitUsage, err
	}
	inputs, code, err := addressArgs(fs, stdin)
	if err != nil {
		return code, err
	}
	if *concurrency < 1 || *concurrency > 1024 {
		return exitUsage, usagef("--concurrency %d: want 1 to 1024", *concurrency)
	}
	if *output != "" && outputFormat(*output) == "" {
		return exitUsage, usagef("--output %s: want a file ending in .csv, .ndjson or .jsonl", *output)
	}
	cfg, err := pf.config(func(msg string) { fmt.Fprintf(stderr, "warning: %s\n", msg) })
	if err != nil {
		return exitUsage, err
	}
	cfg.Probe.Transcript = *transcript
	if *debug {
		// One conversation at a time, so the live transcript reads as one.
		*concurrency = 1
		// The transcript carries the remote server's bytes: escaped, so
		// its ESC or NUL never reach the operator's terminal.
		cfg.Probe.Debug = termsafe.NewWriter(stderr)
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	lcfg, err := limiterConfig(*limitDefault, *limits, pf.timeout)
	if err != nil {
		return exitUsage, err
	}
	// A slot reserved beyond what an address can wait would be spent for
	// nothing, and each next ask pushed further out: reserve only within
	// half of --timeout, so the probe keeps the other half.
	lcfg.ReserveHorizon = min(lcfg.ReserveHorizon, max(pf.timeout/2, time.Second))
	// The workers' limits and Gate, on an in-process Redis: a list checked
	// here is as polite to each provider as the same list in the queue.
	limiter, stopLimiter, err := inProcessLimiter(lcfg)
	if err != nil {
		return exitFailure, err
	}
	defer stopLimiter()
	cfg.Gate = worker.NewGate(limiter, "check", cfg.Logger)
	cfg.ProviderFunc = limiter.Group
	v, err := validator.New(cfg)
	if err != nil {
		return exitUsage, usageError{err.Error()}
	}
	// QUIT the sessions kept open for the next address before exiting.
	defer v.Close()

	out, closeOut, err := openCheckOutput(*output, *jsonOut, stdout)
	if err != nil {
		return exitUsage, err
	}
	// Ours to cancel too: on a write error the checks still running stop.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	results := runChecks(runCtx, v, inputs, *concurrency, pf.timeout)
	code = exitOK
	if *ordered {
		results = inOrder(runCtx, results)
	}
	prog := newProgress(stdout, stderr, len(inputs))
	n := 0
	for r := range results {
		code = worseExitCode(code, verdictExit(string(r.res.Verdict)))
		prog.clear()
		if err := out.write(r.res); err != nil {
			cancelRun()
			closeOut(false)
			return exitFailure, err
		}
		prog.add(r.res)
		n++
	}
	prog.end()
	if err := closeOut(n == len(inputs)); err != nil {
		return exitFailure, err
	}
	if ctx.Err() != nil {
		return exitFailure, fmt.Errorf("interrupted after %d of %d results: %w", n, len(inputs), ctx.Err())
	}
	return code, nil
}

// verdictExit is the exit status one verdict asks for: invalid 1, valid 0,
// anything else (risky, unknown) 3.
func verdictExit(v string) int {
	switch v {
	case string(validator.Invalid):
		return exitInvalid
	case string(validator.Valid):
		return exitOK
	}
	return exitUnsure
}

// addressArgs returns the addresses a command was given: its arguments, or
// one per line of stdin for a lone "-". No address is a usage error; a read
// failure an operational one. A line too long to be an address becomes a
// row that names it and that no parser accepts, so it is reported as a bad
// row and the rest of the list still runs.
func addressArgs(fs *flag.FlagSet, stdin io.Reader) ([]string, int, error) {
	inputs := fs.Args()
	if len(inputs) == 0 {
		return nil, exitUsage, usagef("no address given")
	}
	if len(inputs) == 1 && inputs[0] == "-" {
		var err error
		if inputs, err = readAddresses(stdin); err != nil {
			var ue usageError
			if errors.As(err, &ue) {
				return nil, exitUsage, err
			}
			return nil, exitFailure, fmt.Errorf("reading stdin: %w", err)
		}
	}
	return inputs, exitOK, nil
}

// maxLine bounds one stdin line: far above any address (RFC 5321 §4.5.3.1
// caps a path at 256 octets), and what is held in memory per line.
const maxLine = 64 * 1024

func readAddresses(r io.Reader) ([]string, error) {
	var out []string
	br := bufio.NewReaderSize(r, maxLine)
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			head := strings.ToValidUTF8(string(line[:min(len(line), 40)]), "?")
			size := len(line)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				size += len(line)
			}
			out = append(out, fmt.Sprintf("line %d longer than 64 KiB (%d bytes): %q...", n, size, head))
		} else if t := strings.TrimSpace(string(line)); t != "" && !strings.HasPrefix(t, "#") {
			out = append(out, t)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, usagef("no address on stdin")
	}
	return out, nil
}

func displayAddress(r validator.Result) string {
	if r.Address != "" {
		return termsafe.String(r.Address)
	}
	return fmt.Sprintf("%q", r.Input)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func replySummary(r validator.Result) string {
	if r.SMTP != nil && r.SMTP.Code != 0 {
		s := fmt.Sprintf("%d", r.SMTP.Code)
		if r.SMTP.Enhanced != "" {
			s += " " + r.SMTP.Enhanced
		}
		// Cut before escaping would split an escape; cut runes, not bytes.
		text := []rune(strings.ReplaceAll(r.SMTP.Text, "\n", " / "))
		if len(text) > 80 {
			text = append(text[:77], []rune("...")...)
		}
		return s + " " + termsafe.String(string(text))
	}
	if r.Error != "" {
		return termsafe.String(r.Error)
	}
	return "-"
}
