package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/mxprobe/mxprobe/validator/address"
)

// fuzzRowLimit is small so that the fuzzer reaches the cut-off often.
const fuzzRowLimit = 8

// FuzzParseBatch feeds arbitrary bodies to the batch parser in each of its
// three formats (kind modulo 3: JSON array, NDJSON, CSV). Properties:
//   - no panic;
//   - bounded rows: never more than fuzzRowLimit+1 (the caller refuses
//     limit+1), and never more rows than the body has lines (NDJSON, CSV) or
//     elements could fit (JSON);
//   - line numbers start at 1, are strictly increasing, and for NDJSON and
//     CSV name a line that exists in the body;
//   - the address of every row the parser passes on either parses or fails
//     with address.ErrSyntax (an empty cell included), which Enqueue turns
//     into a rejected row with field "address"; a parsed address renders
//     as valid UTF-8 without CR, LF or NUL (it goes into an RCPT command);
//   - a rejected row says why, and every input is reported back as valid
//     JSON text (the results stream is JSON).
func FuzzParseBatch(f *testing.F) {
	f.Add(uint8(formatJSON), []byte(`["a@example.com", {"address":"b@example.com","request_id":"x"}, "not-an-address", 7]`))
	f.Add(uint8(formatNDJSON), []byte("\"a@example.com\"\n\n{\"address\":\"b@@x\"}\nnot json\n"))
	f.Add(uint8(formatCSV), []byte("name,email\nAnn,a@example.com\nBob,\"b\nc\"@example.com\nCy\n"))
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		format := batchFormat(kind % 3)
		rows, err := parseBatch(format, body, fuzzRowLimit)
		if err != nil {
			if len(rows) != 0 {
				t.Fatalf("error %v with %d rows", err, len(rows))
			}
			return
		}
		if len(rows) > fuzzRowLimit+1 {
			t.Fatalf("%d rows, want at most %d", len(rows), fuzzRowLimit+1)
		}
		lines := bytes.Count(body, []byte("\n")) + 1
		if format == formatJSON {
			lines = len(body) // every element takes at least one byte
		}
		if len(rows) > lines {
			t.Fatalf("%d rows from %d lines", len(rows), lines)
		}
		prev := 0
		for i, r := range rows {
			if r.line <= prev || r.line > lines {
				t.Fatalf("row %d: line %d after %d (body has %d lines)", i, r.line, prev, lines)
			}
			if format == formatJSON && r.line != i+1 {
				t.Fatalf("JSON row %d has line %d, want its position", i, r.line)
			}
			prev = r.line
			if _, err := json.Marshal(r.input); err != nil {
				t.Fatalf("row %d input %q cannot be reported: %v", i, r.input, err)
			}
			if r.err != "" {
				continue
			}
			a, err := address.Parse(r.row.Address)
			if err != nil {
				if !errors.Is(err, address.ErrSyntax) {
					t.Fatalf("row %d: address.Parse(%q) = %v, not a syntax error", i, r.row.Address, err)
				}
				continue
			}
			rcpt := a.String()
			if !utf8.ValidString(rcpt) || bytes.ContainsAny([]byte(rcpt), "\r\n\x00") {
				t.Fatalf("row %d: %q renders as %q", i, r.row.Address, rcpt)
			}
		}
	})
}
