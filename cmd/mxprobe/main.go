// Command mxprobe checks whether email addresses can receive mail, without
// sending any.
//
// Subcommands:
//
//	mxprobe check [flags] ADDRESS...   probe addresses now and print verdicts
//	mxprobe worker [flags]             process queued validations
//	mxprobe enqueue [flags] ADDRESS... queue validations, optionally wait
//	mxprobe serve [flags]              HTTP API, web page, asynqmon and a worker
//	mxprobe doctor [flags]             audit this host (exit 1 on any failed check)
//
// Every flag has an environment equivalent: --smtp-port is MXPROBE_SMTP_PORT.
// A flag given on the command line wins over the environment.
//
// Exit status of check: 0 all valid, 1 any invalid, 3 any unknown or risky
// (and none invalid), 2 usage or configuration error, 4 operational failure;
// enqueue --wait adds 5: some result not final in time (and none invalid).
//
// Dependencies beyond the project's own packages: golang.org/x/term (is
// stdout a terminal, for check's status line: the Go team's, and what the
// standard library's own tools use); github.com/creack/pty in tests only (a
// real pseudo-terminal to test that line; the usual Go choice).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes are part of the command's documented interface.
const (
	exitOK      = 0
	exitInvalid = 1
	exitUsage   = 2
	exitUnsure  = 3
	exitFailure = 4
	// exitNotFinal: enqueue --wait ran out of time with some results not
	// final (and none invalid).
	exitNotFinal = 5
)

// usageError marks errors caused by how mxprobe was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error)
}

func commands() []command {
	return []command{
		{"check", "probe addresses now and print their verdicts", runCheck},
		{"worker", "process validation tasks from Redis under the shared rate limits", runWorker},
		{"enqueue", "queue addresses for validation (optionally wait for the verdicts)", runEnqueue},
		{"serve", "run the HTTP API, web page and a worker (embedded Redis without --redis-url)", runServe},
		{"doctor", "audit this host: port 25, egress IP, reverse DNS, HELO, SPF, blocklists, proxy", runDoctor},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		code, err := c.run(ctx, args[1:], stdin, stdout, stderr)
		if err != nil {
			var ue usageError
			if errors.As(err, &ue) {
				fmt.Fprintf(stderr, "mxprobe %s: %s\nRun 'mxprobe %s -h' for help.\n", c.name, err, c.name)
				return exitUsage
			}
			fmt.Fprintf(stderr, "mxprobe %s: %s\n", c.name, err)
			if code == exitOK {
				code = exitFailure
			}
		}
		return code
	}
	fmt.Fprintf(stderr, "mxprobe: unknown command %q\n", args[0])
	printUsage(stderr)
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: mxprobe COMMAND [flags] [args]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery flag can also be set as MXPROBE_<FLAG> (e.g. --smtp-port → MXPROBE_SMTP_PORT).")
}
