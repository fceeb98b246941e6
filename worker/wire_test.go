package worker

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
)

// tasks.Check mirrors validator.Result so producers need not import the
// validator, and toCheck copies field by field instead of going through
// JSON. This proves both: for a fully populated Result, a zero one and a
// typical verdict, the copy's JSON equals the validator's JSON, and so does
// the Check that the old JSON round trip would give.
func TestCheckMirrorsValidatorResult(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	full := validator.Result{
		Input: "Alice@Example.COM", Address: "Alice@example.com", Verdict: validator.Unknown,
		Reason: validator.ReasonGreylisted, Retryable: true, RetryAfter: validator.Duration(5 * time.Minute),
		Flags: validator.Flags{Disposable: true, CatchAll: true, RoleAccount: true, FreeProvider: true,
			SMTPUTF8: true, Allowlisted: true, Denylisted: true, CatchAllState: validator.CatchAllYes},
		MXHost: "mx.example.com", MXAddr: "192.0.2.1", Provider: "example.com",
		SMTP: &validator.SMTPDetail{Stage: validator.StageRcpt, Code: 450, Enhanced: "4.2.0", Text: "Greylisted"},
		TLS:  true, CheckedAt: at, Duration: validator.Duration(1500 * time.Millisecond),
		Transcript: []validator.TranscriptLine{{At: at, Host: "mx.example.com", Dir: ">", Line: "RCPT TO:<Alice@example.com>"}},
		Error:      "none",
	}
	// Every exported field of validator.Result is set in full, so a field
	// added later without a twin in tasks.Check (or in toCheck) fails here.
	rv := reflect.ValueOf(full)
	for i := range rv.NumField() {
		if rv.Field(i).IsZero() {
			t.Errorf("test does not set validator.Result.%s: set it so the mirror is checked", rv.Type().Field(i).Name)
		}
	}
	tests := []struct {
		name string
		in   validator.Result
	}{
		{name: "every field set", in: full},
		{name: "zero result", in: validator.Result{}},
		{name: "valid, no SMTP detail or transcript, local time", in: validator.Result{
			Input: "bob@example.org", Address: "bob@example.org", Verdict: validator.Valid, Reason: validator.ReasonMailboxExists,
			CheckedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600)), Duration: validator.Duration(42 * time.Millisecond)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := jsonMap(t, tt.in)
			if got := jsonMap(t, toCheck(tt.in)); !reflect.DeepEqual(want, got) {
				t.Errorf("toCheck's JSON differs from the validator's:\nvalidator: %v\ntasks:     %v", want, got)
			}
			// The old path, JSON out of the validator into tasks.Check.
			b, err := json.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var viaJSON tasks.Check
			if err := json.Unmarshal(b, &viaJSON); err != nil {
				t.Fatal(err)
			}
			if got := jsonMap(t, viaJSON); !reflect.DeepEqual(want, got) {
				t.Errorf("tasks.Check lost or changed fields:\nvalidator: %v\ntasks:     %v", want, got)
			}
		})
	}
}

func jsonMap(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
