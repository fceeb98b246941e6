package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/mxprobe/mxprobe/validator"
)

const checkSynopsis = "mxprobe check [flags] ADDRESS... (or - to read addresses from stdin, one per line)"

func runCheck(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	var pf probeFlags
	pf.register(fs)
	jsonOut := fs.Bool("json", false, "print one JSON object per address instead of a table")
	debug := fs.Bool("debug", false, "print the SMTP conversation to stderr as it happens")
	transcript := fs.Bool("transcript", false, "include the SMTP transcript in --json output")
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
	cfg, err := pf.config(func(msg string) { fmt.Fprintf(stderr, "warning: %s\n", msg) })
	if err != nil {
		return exitUsage, err
	}
	cfg.Probe.Transcript = *transcript
	if *debug {
		cfg.Probe.Debug = stderr
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	v, err := validator.New(cfg)
	if err != nil {
		return exitUsage, usageError{err.Error()}
	}
	// QUIT the sessions kept open for the next address before exiting.
	defer v.Close()

	var tw *tabwriter.Writer
	if !*jsonOut {
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ADDRESS\tVERDICT\tREASON\tMX\tREPLY")
	}
	enc := json.NewEncoder(stdout)
	code = exitOK
	for _, in := range inputs {
		actx, cancel := context.WithTimeout(ctx, pf.timeout)
		res, err := v.Validate(actx, in)
		cancel()
		if err != nil && ctx.Err() != nil {
			if tw != nil {
				tw.Flush()
			}
			return exitFailure, fmt.Errorf("interrupted: %w", ctx.Err())
		}
		code = worseExitCode(code, verdictExit(string(res.Verdict)))
		if *jsonOut {
			if err := enc.Encode(res); err != nil {
				return exitFailure, err
			}
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", displayAddress(res), res.Verdict, res.Reason, dash(res.MXHost), replySummary(res))
	}
	if tw != nil {
		tw.Flush()
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
// failure (a line over 64 KiB, say) is an operational one.
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

func readAddresses(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, usagef("no address on stdin")
	}
	return out, nil
}

func displayAddress(r validator.Result) string {
	if r.Address != "" {
		return r.Address
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
		text := strings.ReplaceAll(r.SMTP.Text, "\n", " / ")
		if len(text) > 80 {
			text = text[:77] + "..."
		}
		return s + " " + text
	}
	if r.Error != "" {
		return r.Error
	}
	return "-"
}
