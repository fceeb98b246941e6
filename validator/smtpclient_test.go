package validator

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        string
		want      Reply
		wantLines int
		wantErr   error
	}{
		{name: "single", in: "250 OK\r\n", want: Reply{Code: 250, Text: "OK"}, wantLines: 1},
		{name: "code only", in: "250\r\n", want: Reply{Code: 250}, wantLines: 1},
		{name: "bare LF tolerated", in: "220 hi\n", want: Reply{Code: 220, Text: "hi"}, wantLines: 1},
		{
			name: "multi-line EHLO", in: "250-mx.test greets you\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
			want: Reply{Code: 250, Text: "mx.test greets you\nPIPELINING\nSTARTTLS"}, wantLines: 3,
		},
		{name: "enhanced", in: "550 5.1.1 User unknown\r\n", want: Reply{Code: 550, Enhanced: "5.1.1", Text: "User unknown"}, wantLines: 1},
		{name: "multi-digit enhanced", in: "550 5.1.10 RESOLVER.ADR.RecipientNotFound\r\n", want: Reply{Code: 550, Enhanced: "5.1.10", Text: "RESOLVER.ADR.RecipientNotFound"}, wantLines: 1},
		{name: "three-digit detail", in: "421 4.7.652 S3115 too many\r\n", want: Reply{Code: 421, Enhanced: "4.7.652", Text: "S3115 too many"}, wantLines: 1},
		{
			name: "gmail repeats enhanced on each line",
			in:   "550-5.1.1 The email account that you tried to reach does\r\n550-5.1.1 not exist. Please try\r\n550 5.1.1 https://support.google.com/mail/?p=NoSuchUser x\r\n",
			want: Reply{Code: 550, Enhanced: "5.1.1", Text: "The email account that you tried to reach does\nnot exist. Please try\nhttps://support.google.com/mail/?p=NoSuchUser x"}, wantLines: 3,
		},
		{name: "class mismatch is not enhanced", in: "550 4.2.0 odd\r\n", want: Reply{Code: 550, Text: "4.2.0 odd"}, wantLines: 1},
		{name: "four-digit part is not enhanced", in: "550 5.1.1000 x\r\n", want: Reply{Code: 550, Text: "5.1.1000 x"}, wantLines: 1},
		{name: "enhanced needs a space after", in: "550 5.1.1x\r\n", want: Reply{Code: 550, Text: "5.1.1x"}, wantLines: 1},
		{name: "enhanced alone", in: "250 2.0.0\r\n", want: Reply{Code: 250, Enhanced: "2.0.0"}, wantLines: 1},
		{name: "code changes mid-reply", in: "250-a\r\n550 b\r\n", wantErr: ErrMalformedReply, wantLines: 2},
		{name: "letters for code", in: "abc def\r\n", wantErr: ErrMalformedReply, wantLines: 1},
		{name: "1yz code", in: "150 x\r\n", wantErr: ErrMalformedReply, wantLines: 1},
		{name: "6yz code", in: "650 x\r\n", wantErr: ErrMalformedReply, wantLines: 1},
		{name: "bad separator", in: "250+x\r\n", wantErr: ErrMalformedReply, wantLines: 1},
		{name: "bare CR", in: "250 a\rb\r\n", wantErr: ErrMalformedReply, wantLines: 1},
		{name: "short line", in: "25\r\n", wantErr: ErrMalformedReply, wantLines: 1},
		{name: "empty line", in: "\r\n", wantErr: ErrMalformedReply, wantLines: 1},
		{name: "EOF mid-line", in: "250 trunc", wantErr: io.ErrUnexpectedEOF},
		{name: "EOF before reply", in: "", wantErr: io.EOF},
		{name: "EOF inside multi-line", in: "250-a\r\n", wantErr: io.EOF, wantLines: 1},
		{name: "line too long", in: "250 " + strings.Repeat("x", 600) + "\r\n", wantErr: ErrLineTooLong},
		{name: "too many lines", in: strings.Repeat("250-x\r\n", 10) + "250 x\r\n", wantErr: ErrReplyTooLong, wantLines: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, lines, err := ReadReply(bufio.NewReaderSize(strings.NewReader(tt.in), 16), 512, 5)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("reply = %+v, want %+v", got, tt.want)
			}
			if len(lines) != tt.wantLines {
				t.Errorf("raw lines = %d %q, want %d", len(lines), lines, tt.wantLines)
			}
		})
	}
}

// endlessReader is a hostile peer that never ends its line; it counts what
// was read so the test can prove the reader stopped early.
type endlessReader struct{ n int }

func (e *endlessReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	copy(p, "250-")
	e.n += len(p)
	return len(p), nil
}

func TestReadReplyBoundedMemory(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		r       io.Reader
		wantErr error
	}{
		{name: "endless line", r: &endlessReader{}, wantErr: ErrLineTooLong},
		{name: "10,000-line reply", r: strings.NewReader(strings.Repeat("250-x\r\n", 10000)), wantErr: ErrReplyTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cr := &countingReader{r: tt.r}
			_, _, err := ReadReply(bufio.NewReaderSize(cr, 4096), 2000, 100)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			// At most one line cap plus one buffer fill beyond it.
			if cr.n > 2000+2+2*4096 {
				t.Errorf("read %d octets before giving up; want a bound near the caps", cr.n)
			}
		})
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"250 OK\r\n",
		"250-mx\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n",
		"550-5.1.1 a\r\n550 5.1.1 b\r\n",
		"421 4.7.652 x\r\n",
		"250-a\r\n550 b\r\n",
		"2",
		"250 5.1.1 x\n",
		"550 5.999.999 y\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const maxLine, maxLines = 512, 20
		r, lines, err := ReadReply(bufio.NewReaderSize(strings.NewReader(string(in)), 64), maxLine, maxLines)
		if len(lines) > maxLines {
			t.Fatalf("%d raw lines > cap %d", len(lines), maxLines)
		}
		for _, l := range lines {
			if len(l) > maxLine {
				t.Fatalf("raw line of %d octets > cap", len(l))
			}
		}
		if err != nil {
			if r != (Reply{}) {
				t.Fatalf("error %v with non-zero reply %+v", err, r)
			}
			return
		}
		if r.Code < 200 || r.Code > 559 {
			t.Fatalf("code %d out of range", r.Code)
		}
		if r.Enhanced != "" && int(r.Enhanced[0]-'0') != r.Code/100 {
			t.Fatalf("enhanced %q does not match code %d", r.Enhanced, r.Code)
		}
		if len(r.Text) > maxLine*maxLines {
			t.Fatalf("text of %d octets beyond caps", len(r.Text))
		}
		if strings.ContainsAny(r.Text, "\r") {
			t.Fatalf("CR in text %q", r.Text)
		}
	})
}
