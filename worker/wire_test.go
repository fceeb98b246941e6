package worker

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/validator"
)

// tasks.Check mirrors validator.Result so producers need not import the
// validator. This proves the mirror loses nothing: every field of a fully
// populated Result survives the trip into tasks.Check and back to JSON.
func TestCheckMirrorsValidatorResult(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	r := validator.Result{
		Input: "Alice@Example.COM", Address: "Alice@example.com", Verdict: validator.Unknown,
		Reason: validator.ReasonGreylisted, Retryable: true, RetryAfter: validator.Duration(5 * time.Minute),
		Flags: validator.Flags{Disposable: true, CatchAll: true, RoleAccount: true, FreeProvider: true,
			SMTPUTF8: true, Allowlisted: true, Denylisted: true},
		MXHost: "mx.example.com", MXAddr: "192.0.2.1", Provider: "example.com",
		SMTP: &validator.SMTPDetail{Stage: validator.StageRcpt, Code: 450, Enhanced: "4.2.0", Text: "Greylisted"},
		TLS:  true, CheckedAt: at, Duration: validator.Duration(1500 * time.Millisecond),
		Transcript: []validator.TranscriptLine{{At: at, Host: "mx.example.com", Dir: ">", Line: "RCPT TO:<Alice@example.com>"}},
		Error:      "none",
	}
	want, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	c, err := toCheck(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var wantMap, gotMap map[string]any
	json.Unmarshal(want, &wantMap)
	json.Unmarshal(got, &gotMap)
	if !reflect.DeepEqual(wantMap, gotMap) {
		t.Errorf("tasks.Check lost or changed fields:\nvalidator: %s\ntasks:     %s", want, got)
	}
	// Every exported field of validator.Result is set above, so a field
	// added later without a twin in tasks.Check fails here.
	rv := reflect.ValueOf(r)
	for i := range rv.NumField() {
		if rv.Field(i).IsZero() {
			t.Errorf("test does not set validator.Result.%s: set it so the mirror is checked", rv.Type().Field(i).Name)
		}
	}
}
