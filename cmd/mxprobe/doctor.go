package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/doctor"
	"github.com/mxprobe/mxprobe/internal/termsafe"
	"github.com/mxprobe/mxprobe/validator"
)

const doctorSynopsis = "mxprobe doctor [flags] [--domain gmail.com]"

// doctorFlags are the audit's own flags; the probe settings come from
// probeFlags so the audit checks exactly what probes will use.
type doctorFlags struct {
	probe    probeFlags
	domain   string
	egressIP string
	dnsbl    string
	json     bool
}

func (d *doctorFlags) register(fs *flag.FlagSet) {
	d.probe.register(fs)
	fs.StringVar(&d.domain, "domain", "", "mail domain whose MX to connect to on --smtp-port, e.g. gmail.com (its EHLO reply shows the IP it sees); empty skips the port-25 test")
	fs.StringVar(&d.egressIP, "egress-ip", "", "public IP probes leave from (default: --source, else learnt from the --domain connection)")
	fs.StringVar(&d.dnsbl, "dnsbl", strings.Join(doctor.DefaultDNSBLZones, ","), "comma-separated DNSBL zones to check the egress IP in; \"none\" checks none")
	fs.BoolVar(&d.json, "json", false, "print the findings as one JSON object")
}

// doctorConfig maps the probe configuration onto the audit's.
func doctorConfig(vcfg validator.Config) doctor.Config {
	return doctor.Config{
		HeloName:       vcfg.Probe.HeloName,
		MailFrom:       vcfg.Probe.MailFrom,
		SourceAddr:     vcfg.Probe.SourceAddr,
		ProxyURL:       vcfg.Probe.ProxyURL,
		SMTPPort:       vcfg.Probe.Port,
		DNSServers:     vcfg.DNS.Servers,
		DNSTimeout:     vcfg.DNS.Timeout,
		ConnectTimeout: vcfg.Probe.ConnectTimeout,
		CommandTimeout: vcfg.Probe.CommandTimeout,
		AllowPrivate:   vcfg.DNS.AllowPrivate,
		CanaryNames:    vcfg.DNS.Canary.Names,
		NoIdentity:     vcfg.NoSMTP,
	}
}

func runDoctor(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	var df doctorFlags
	df.register(fs)
	if err := parseFlags(fs, args, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printFlagHelp(stdout, fs, doctorSynopsis)
			return exitOK, nil
		}
		return exitUsage, err
	}
	if fs.NArg() > 0 {
		return exitUsage, usagef("unexpected arguments %q (the domain goes in --domain)", fs.Args())
	}
	// The defaults probeFlags fills in (HELO = host name, …) are what probes
	// would use, so they are what is audited; the checks report them.
	vcfg, err := df.probe.config(func(string) {})
	if err != nil {
		return exitUsage, err
	}
	cfg := doctorConfig(vcfg)
	cfg.Domain = strings.TrimSuffix(strings.TrimSpace(df.domain), ".")
	if df.egressIP != "" {
		ip, err := netip.ParseAddr(df.egressIP)
		if err != nil {
			return exitUsage, usagef("--egress-ip %q: %v", df.egressIP, err)
		}
		cfg.EgressIP = ip
	}
	cfg.DNSBLZones = []string{}
	if d := strings.TrimSpace(df.dnsbl); d != "none" {
		cfg.DNSBLZones = splitList(d)
	}

	rctx, cancel := context.WithTimeout(ctx, df.probe.timeout)
	defer cancel()
	rep, err := doctor.Run(rctx, cfg)
	if err != nil {
		return exitUsage, usageError{err.Error()}
	}
	if ctx.Err() != nil {
		return exitFailure, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if df.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return exitFailure, err
		}
	} else {
		printFindings(stdout, rep)
	}
	if doctor.Failed(rep.Findings) {
		return exitInvalid, nil
	}
	return exitOK, nil
}

// printFindings writes the checklist: one line per check, then why and how
// to fix it for anything not ok.
func printFindings(w io.Writer, rep doctor.Report) {
	width := 0
	for _, f := range rep.Findings {
		width = max(width, len(f.Check))
	}
	counts := map[doctor.Status]int{}
	for _, f := range rep.Findings {
		counts[f.Status]++
		mark := map[doctor.Status]string{doctor.OK: "[ ok ]", doctor.Warn: "[warn]", doctor.Fail: "[FAIL]", doctor.Skip: "[skip]"}[f.Status]
		// Summaries and details quote remote servers (banners, replies).
		fmt.Fprintf(w, "%s %-*s  %s\n", mark, width, f.Check, termsafe.String(f.Summary))
		indent := strings.Repeat(" ", 7+width+2)
		if f.Detail != "" {
			fmt.Fprintf(w, "%s%s\n", indent, termsafe.String(f.Detail))
		}
		if f.Fix != "" && f.Status != doctor.OK {
			fmt.Fprintf(w, "%sfix: %s\n", indent, termsafe.String(f.Fix))
		}
	}
	plural := func(n int, word string) string {
		if n == 1 {
			return fmt.Sprintf("%d %s", n, word)
		}
		return fmt.Sprintf("%d %ss", n, word)
	}
	fmt.Fprintf(w, "\n%d ok, %s, %s, %d skipped\n", counts[doctor.OK], plural(counts[doctor.Warn], "warning"), plural(counts[doctor.Fail], "failure"), counts[doctor.Skip])
}

// auditEgressIP is the address the self-audit checks: --egress-ip, else
// --egress when it names an IP (the limiter's identity often is one). The
// zero Addr lets the audit fall back to --source.
func (f *workerFlags) auditEgressIP() (netip.Addr, error) {
	if f.egressIP != "" {
		ip, err := netip.ParseAddr(f.egressIP)
		if err != nil {
			return netip.Addr{}, usagef("--egress-ip %q: %v", f.egressIP, err)
		}
		return ip, nil
	}
	ip, _ := netip.ParseAddr(f.egress)
	return ip, nil
}

// startupAudit runs the quick self-audit for a worker and logs what is not
// ok. It runs beside the worker, bounded, so a slow resolver never delays
// start-up.
func startupAudit(ctx context.Context, f *workerFlags, log *slog.Logger) {
	vcfg, err := f.probe.config(func(string) {})
	if err != nil {
		log.Warn("self-audit skipped: settings do not parse", "err", err)
		return
	}
	cfg := doctorConfig(vcfg)
	cfg.EgressIP, _ = f.auditEgressIP()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, fd := range doctor.Quick(ctx, cfg) {
		if fd.Status != doctor.Warn && fd.Status != doctor.Fail {
			continue
		}
		log.Warn("self-audit: "+fd.Summary, "check", fd.Check, "status", string(fd.Status), "fix", fd.Fix, "more", "run mxprobe doctor")
	}
}
