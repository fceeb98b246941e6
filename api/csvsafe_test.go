package api_test

import (
	"context"
	"encoding/csv"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/api"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

// TestBatchCSVIsTerminalAndSpreadsheetSafe: a server's ESC, NUL and C1
// bytes are escaped in the CSV download, and a reply or input starting
// with = + - @ is not a formula; the NDJSON download keeps the raw text.
func TestBatchCSVIsTerminalAndSpreadsheetSafe(t *testing.T) {
	t.Parallel()
	hostile := "=HYPERLINK(\"x\") \x1b[2J\x00\u009b31m gone"
	b := setup(t, opts{worker: true, smtp: smtptest.Options{
		RcptDefault: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: hostile},
	}})
	resp, body := b.do(t, "POST", "/v1/batches", keyA, "application/x-ndjson",
		"\"bob@example.test\"\n\"-1+1@example.test\"\n\"@SUM(1)\x1b[31m\"\n")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("batch: %d %s", resp.StatusCode, body)
	}
	a := mustJSON[batchAccepted](t, body)
	// Wait for every task through the producer API (signals, not sleeps).
	_, body = b.do(t, "GET", a.ResultsURL, keyA, "", nil)
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		r := mustJSON[resultRow](t, []byte(l))
		if r.TaskID == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if _, err := b.client.Wait(ctx, r.TaskID); err != nil {
			t.Fatalf("waiting for %s: %v", r.TaskID, err)
		}
		cancel()
	}
	_, raw := b.do(t, "GET", a.ResultsURL+"?format=csv", keyA, "", nil)
	for i, c := range string(raw) {
		if c < 0x20 && c != '\n' && c != '\r' || c >= 0x7f && c <= 0x9f {
			t.Fatalf("CSV byte %d is %U:\n%q", i, c, raw)
		}
	}
	recs, err := csv.NewReader(strings.NewReader(string(raw))).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse: %v\n%s", err, raw)
	}
	for _, rec := range recs[1:] {
		for j, cell := range rec {
			if cell != "" && strings.ContainsRune("=+-@", rune(cell[0])) {
				t.Errorf("column %s starts a formula: %q", recs[0][j], cell)
			}
		}
	}
	if !strings.Contains(string(raw), `'=HYPERLINK(""x"") \x1b[2J\x00\u009b31m gone`) {
		t.Errorf("the reply is not shown escaped:\n%s", raw)
	}
	_, nd := b.do(t, "GET", a.ResultsURL+"?format=ndjson", keyA, "", nil)
	if !strings.Contains(string(nd), `\u001b[2J\u0000`) {
		t.Errorf("NDJSON should keep the raw text (JSON-escaped):\n%s", nd)
	}
}

func TestCSVCellLooksPastLeadingSpaces(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{" =1+1": "' =1+1", "  @SUM(A1)": "'  @SUM(A1)", " plain": " plain", "": ""} {
		if got := api.CSVCell(in); got != want {
			t.Errorf("csvCell(%q) = %q, want %q", in, got, want)
		}
	}
}
