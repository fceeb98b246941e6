package tasks_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/tasks"
)

// Task payloads come from Redis, which any producer (or anyone with write
// access) can fill: decoding must never panic, and whatever it accepts must
// survive being encoded and decoded again unchanged, so a worker that
// re-enqueues or stores a payload never turns an accepted task into a
// rejected one. Seeds live in testdata/fuzz/<Target>/.

func FuzzDecodeValidatePayload(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"input":"a@b.test","address":"a@b.test","enqueued_at":"2026-01-02T03:04:05Z"}`,
		`{"v":1,"request_id":"r1","input":" A@B.test ","address":"A@b.test","callback_url":"https://hook.test/x","metadata":{"user":7},"respond_by":"2026-01-02T03:04:05.123456789+02:00","fresh":true,"transcript":true,"enqueued_at":"2026-01-02T03:04:05Z"}`,
		`{"v":1,"input":"x","address":"x","metadata":{"html":"<b>&amp;</b>","ls":"\u2028"}}`,
		`{"v":1,"input":"x","address":"x","metadata":null}`,
		`{"v":1,"input":"x","address":"x","metadata":  { "a" : [ 1 , 2 ] } }`,
		`{"v":2,"address":"a@b.c"}`,
		`{"v":1,"address":"a@b.c","evil":true}`,
		`{"v":1,"address":"a@b.c"}{}`,
		`{"v":1,"address":"a@b.c","respond_by":"not a time"}`,
		`{"v":1,"address":"\ud800","input":"\xff"}`,
		`[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := tasks.DecodeValidatePayload(in)
		if err != nil {
			return
		}
		if p.V != tasks.PayloadVersion || p.Address == "" || len(p.Metadata) > tasks.MaxMetadataBytes {
			t.Fatalf("accepted a payload that breaks the rules: %+v", p)
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("accepted payload does not encode: %v", err)
		}
		p2, err := tasks.DecodeValidatePayload(again)
		if err != nil {
			t.Fatalf("accepted payload, re-encoded, is refused: %v\nin:    %q\nagain: %q", err, in, again)
		}
		if !sameValidate(p, p2) {
			t.Fatalf("round trip changed the payload:\n%+v\n%+v", p, p2)
		}
	})
}

func sameValidate(a, b tasks.ValidatePayload) bool {
	if !a.RespondBy.Equal(b.RespondBy) || !a.EnqueuedAt.Equal(b.EnqueuedAt) || !sameJSON(a.Metadata, b.Metadata) {
		return false
	}
	a.RespondBy, b.RespondBy, a.EnqueuedAt, b.EnqueuedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	a.Metadata, b.Metadata = nil, nil
	return reflect.DeepEqual(a, b)
}

// sameJSON compares two raw JSON values as encoding/json writes them
// (compact, HTML-escaped), so that insignificant spacing does not count.
func sameJSON(a, b json.RawMessage) bool {
	norm := func(r json.RawMessage) string {
		if len(r) == 0 {
			return ""
		}
		var c, e bytes.Buffer
		if err := json.Compact(&c, r); err != nil {
			return "invalid:" + string(r)
		}
		json.HTMLEscape(&e, c.Bytes())
		return e.String()
	}
	return norm(a) == norm(b)
}

func FuzzDecodeCallbackPayload(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"url":"https://hook.test/x","event_id":"default_1","task_id":"default_1","body":{"verdict":"valid"}}`,
		`{"v":1,"url":"http://x","event_id":"e","body":"<&>"}`,
		`{"v":1,"url":"http://x","event_id":"e","body":null}`,
		`{"v":1,"url":"http://x","event_id":"e"}`,
		`{"v":1,"url":"http://x","event_id":"e","body":{}, "x":1}`,
		`{}`, `[]`, `"str"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := tasks.DecodeCallbackPayload(in)
		if err != nil {
			return
		}
		if p.V != tasks.PayloadVersion || p.URL == "" || p.EventID == "" || len(p.Body) == 0 {
			t.Fatalf("accepted a payload that breaks the rules: %+v", p)
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("accepted payload does not encode: %v", err)
		}
		p2, err := tasks.DecodeCallbackPayload(again)
		if err != nil {
			t.Fatalf("accepted payload, re-encoded, is refused: %v\nin:    %q\nagain: %q", err, in, again)
		}
		if !sameJSON(p.Body, p2.Body) {
			t.Fatalf("round trip changed the body: %s → %s", p.Body, p2.Body)
		}
		p.Body, p2.Body = nil, nil
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("round trip changed the payload:\n%+v\n%+v", p, p2)
		}
	})
}

// TestEnqueuedMetadataDecodes: metadata accepted by Enqueue must be accepted
// by the worker's decoder. json.Marshal HTML-escapes raw JSON ('<' becomes
// "\u003c", six octets for one), so metadata just under the limit could be
// stored over it and the task refused as a bad payload.
func TestEnqueuedMetadataDecodes(t *testing.T) {
	t.Parallel()
	c, insp := newClient(t)
	tests := []struct {
		name     string
		metadata string
		wantErr  bool
	}{
		{name: "plain, at the limit", metadata: `{"k":"` + strings.Repeat("a", tasks.MaxMetadataBytes-8) + `"}`},
		{name: "spaced out, compacts under the limit", metadata: `{"k" :  "` + strings.Repeat("a", tasks.MaxMetadataBytes-12) + `"}`},
		{name: "HTML, under the limit as given, over it once escaped", metadata: `{"k":"` + strings.Repeat("<", 2000) + `"}`, wantErr: true},
		{name: "HTML, small", metadata: `{"k":"<b>&amp;</b>"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id, err := c.Enqueue(t.Context(), tasks.Request{Address: "a@example.test", Metadata: json.RawMessage(tt.metadata)})
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Enqueue accepted metadata that is %d octets once encoded", len(tt.metadata)*6)
				}
				return
			}
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			info, err := insp.GetTaskInfo(tasks.QueueDefault, id)
			if err != nil {
				t.Fatal(err)
			}
			p, err := tasks.DecodeValidatePayload(info.Payload)
			if err != nil {
				t.Fatalf("the worker would refuse what Enqueue accepted: %v", err)
			}
			if !sameJSON(p.Metadata, json.RawMessage(tt.metadata)) {
				t.Errorf("metadata %s, want %s", p.Metadata, tt.metadata)
			}
		})
	}
}
