package main

import (
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxprobe/mxprobe/internal/termsafe"
	"github.com/mxprobe/mxprobe/ratelimit"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

// checked is one address's result with its place in the input.
type checked struct {
	i   int
	res validator.Result
}

// runChecks checks inputs with up to n domains at once and sends each
// result as it is decided. The addresses of one domain go one after
// another: that keeps to one session per domain (reused where the server
// allows, validator's pool), the politeness a list of one company's
// addresses needs. When a domain's MX hosts refused or timed out the
// connection, its other addresses are not dialled again in this run: they
// get the same unknown verdict at once.
func runChecks(ctx context.Context, v *validator.Validator, inputs []string, n int, timeout time.Duration) <-chan checked {
	type group struct{ idx []int }
	var order []string
	groups := map[string]*group{}
	for i, in := range inputs {
		d := strings.ToLower(in[strings.LastIndexByte(in, '@')+1:])
		g := groups[d]
		if g == nil {
			g = &group{}
			groups[d] = g
			order = append(order, d)
		}
		g.idx = append(g.idx, i)
	}
	work := make(chan *group)
	out := make(chan checked)
	var wg sync.WaitGroup
	for range min(n, len(order)) {
		wg.Go(func() {
			for g := range work {
				var dead *validator.Result
				for _, i := range g.idx {
					if ctx.Err() != nil {
						return
					}
					var res validator.Result
					if dead != nil {
						res = notRedialled(inputs[i], *dead)
					} else {
						actx, cancel := context.WithTimeout(ctx, timeout)
						var waited bool
						res, waited = validatePolitely(actx, v, inputs[i])
						cancel()
						if ctx.Err() != nil {
							return // interrupted: not a verdict
						}
						// After a wait for the limiter the probe had less
						// than --timeout: its timeout says less about the
						// host, and does not condemn the domain.
						if unreachable(res) && (!waited || res.Reason == validator.ReasonConnectFailed) {
							dead = &res
						}
					}
					select {
					case out <- checked{i, res}:
					case <-ctx.Done():
						return
					}
				}
			}
		})
	}
	go func() {
		defer close(out)
		defer wg.Wait()
		defer close(work)
		for _, d := range order {
			select {
			case work <- groups[d]:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// validatePolitely is Validate under the providers' limits: when the Gate
// says not now (rate, sessions, a cool-down), it waits as told and asks
// again, until ctx (--timeout) ends; then the last answer stands.
// It reports whether it waited.
func validatePolitely(ctx context.Context, v *validator.Validator, input string) (validator.Result, bool) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	ctx = worker.WithReservation(ctx, "check:"+hex.EncodeToString(id[:]))
	waited := false
	for {
		res, err := v.Validate(ctx, input)
		var d *ratelimit.DeniedError
		if err == nil || !errors.As(err, &d) {
			return res, waited
		}
		wait := max(d.RetryIn, 10*time.Millisecond)
		notAsked := func() validator.Result {
			// A cool-down or a slot past --timeout: unknown, and why.
			res.Verdict, res.Reason, res.Retryable = validator.Unknown, validator.ReasonRateLimited, true
			res.Error = fmt.Sprintf("not asked: the provider's limit (%s) allows the next session in %s, past --timeout", d.Reason, d.RetryIn.Round(time.Second))
			return res
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return notAsked(), waited
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return notAsked(), waited
		case <-t.C:
		}
		waited = true
	}
}

// inProcessLimiter is a ratelimit.Limiter on an embedded Redis, for check.
func inProcessLimiter(cfg ratelimit.Config) (*ratelimit.Limiter, func(), error) {
	mr, stopClock, err := startEmbeddedRedis()
	if err != nil {
		return nil, nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	l, err := ratelimit.New(rdb, cfg)
	stop := func() { _ = rdb.Close(); stopClock(); mr.Close() }
	if err != nil {
		stop()
		return nil, nil, err
	}
	return l, stop, nil
}

// unreachable reports whether r says the domain's mail servers could not be
// reached at all: refused, or no greeting in time. (A reply of any kind is
// an answer, and the next address is asked.)
func unreachable(r validator.Result) bool {
	switch r.Reason {
	case validator.ReasonConnectFailed:
		return true
	case validator.ReasonTimeout:
		return r.SMTP == nil || r.SMTP.Stage == validator.StageConnect || r.SMTP.Stage == validator.StageBanner
	}
	return false
}

// notRedialled is the verdict for an address of a domain found unreachable
// earlier in the run: the same unknown, not asked.
func notRedialled(input string, dead validator.Result) validator.Result {
	r := validator.Result{Input: input, Verdict: dead.Verdict, Reason: dead.Reason, Retryable: true,
		MXHost: dead.MXHost, MXAddr: dead.MXAddr, Provider: dead.Provider, CheckedAt: time.Now().UTC()}
	if i := strings.LastIndexByte(input, '@'); i > 0 && dead.Address != "" {
		r.Address = input[:i] + dead.Address[strings.LastIndexByte(dead.Address, '@'):]
	}
	r.Error = "not dialled again: " + dash(dead.MXHost) + " did not answer an earlier address of this run (" + dead.Error + ")"
	return r
}

// inOrder passes results on in input order, holding early ones back. When
// in ends early (an interrupt), the held results follow in order, so
// nothing decided is lost. It stops when ctx ends and nobody reads.
func inOrder(ctx context.Context, in <-chan checked) <-chan checked {
	out := make(chan checked)
	go func() {
		defer close(out)
		held := map[int]checked{}
		next := 0
		send := func(r checked) bool {
			select {
			case out <- r:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for r := range in {
			held[r.i] = r
			for {
				h, ok := held[next]
				if !ok {
					break
				}
				delete(held, next)
				if !send(h) {
					return
				}
				next++
			}
		}
		rest := make([]int, 0, len(held))
		for i := range held {
			rest = append(rest, i)
		}
		slices.Sort(rest)
		for _, i := range rest {
			if !send(held[i]) {
				return
			}
		}
	}()
	return out
}

// checkOutput writes results to the terminal (a table, or JSON lines with
// --json) and, with --output, to a file.
type checkOutput struct {
	stdout  io.Writer
	json    *json.Encoder
	table   bool
	file    *os.File
	fileCSV *csv.Writer
	fileEnc *json.Encoder
}

func outputFormat(name string) string {
	switch {
	case strings.HasSuffix(name, ".csv"):
		return "csv"
	case strings.HasSuffix(name, ".ndjson"), strings.HasSuffix(name, ".jsonl"):
		return "ndjson"
	}
	return ""
}

var checkCSVColumns = []string{"input", "address", "verdict", "reason", "mx_host", "smtp_code", "smtp_enhanced_code", "smtp_text", "disposable", "role_account", "free_provider", "catch_all", "error"}

func openCheckOutput(name string, jsonOut bool, stdout io.Writer) (*checkOutput, func(complete bool) error, error) {
	o := &checkOutput{stdout: stdout, table: !jsonOut}
	if jsonOut {
		o.json = json.NewEncoder(stdout)
	} else {
		fmt.Fprintf(stdout, tableRow, "ADDRESS", "VERDICT", "REASON", "MX", "REPLY")
	}
	if name != "" {
		// Written beside the target and renamed at the end: an interrupted
		// run leaves NAME.partial, never a truncated NAME.
		f, err := os.Create(name + ".partial")
		if err != nil {
			return nil, nil, usagef("--output: %v", err)
		}
		o.file = f
		if outputFormat(name) == "csv" {
			o.fileCSV = csv.NewWriter(f)
			_ = o.fileCSV.Write(checkCSVColumns)
		} else {
			o.fileEnc = json.NewEncoder(f)
		}
	}
	return o, func(complete bool) error {
		if o.file == nil {
			return nil
		}
		if o.fileCSV != nil {
			o.fileCSV.Flush()
			if err := o.fileCSV.Error(); err != nil {
				o.file.Close()
				return err
			}
		}
		if err := o.file.Close(); err != nil {
			return err
		}
		if !complete {
			return nil // NAME.partial stays, named for what it is
		}
		return os.Rename(name+".partial", name)
	}, nil
}

// tableRow keeps columns aligned while rows are printed one by one as they
// complete (a tabwriter would hold them all back until the end).
const tableRow = "%-32s  %-7s  %-22s  %-24s  %s\n"

func (o *checkOutput) write(r validator.Result) error {
	var err error
	if o.json != nil {
		err = o.json.Encode(r)
	} else {
		_, err = fmt.Fprintf(o.stdout, tableRow, displayAddress(r), r.Verdict, r.Reason, termsafe.String(dash(r.MXHost)), replySummary(r))
	}
	if err != nil {
		return err
	}
	switch {
	case o.fileEnc != nil:
		return o.fileEnc.Encode(r)
	case o.fileCSV != nil:
		code, enh, text := "", "", ""
		if r.SMTP != nil {
			if r.SMTP.Code != 0 {
				code = strconv.Itoa(r.SMTP.Code)
			}
			enh, text = r.SMTP.Enhanced, r.SMTP.Text
		}
		return o.fileCSV.Write([]string{termsafe.Cell(r.Input), termsafe.Cell(r.Address), string(r.Verdict), string(r.Reason),
			termsafe.Cell(r.MXHost), code, enh, termsafe.Cell(text),
			strconv.FormatBool(r.Flags.Disposable), strconv.FormatBool(r.Flags.RoleAccount), strconv.FormatBool(r.Flags.FreeProvider),
			strconv.FormatBool(r.Flags.CatchAll), termsafe.Cell(r.Error)})
	}
	return nil
}
