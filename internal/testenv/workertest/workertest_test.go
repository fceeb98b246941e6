package workertest_test

import (
	"context"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxprobe/mxprobe/internal/testenv/dnstest"
	"github.com/mxprobe/mxprobe/internal/testenv/redistest"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
	"github.com/mxprobe/mxprobe/internal/testenv/workertest"
	"github.com/mxprobe/mxprobe/tasks"
	"github.com/mxprobe/mxprobe/validator"
	"github.com/mxprobe/mxprobe/worker"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// Start gives a working worker: an address queued through tasks gets its
// verdict from the test's SMTP server, and Adjust reaches the configs.
func TestStartValidatesThroughTheQueue(t *testing.T) {
	t.Parallel()
	rdb := redistest.StartServer(t).Client(t)
	mx := smtptest.Start(t, smtptest.Options{RcptDefault: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"},
		Rcpt: map[string]*smtp.SMTPError{"alice@example.test": nil}})
	dns := dnstest.Start(t, dnstest.Zone{
		"example.test.":    {dnstest.MX("mx.example.test.", 10)},
		"mx.example.test.": {dnstest.A("127.0.0.1")},
	})
	adjusted := false
	workertest.Start(t, rdb, workertest.Options{SMTPPort: mx.Port(), DNS: dns.Addr(),
		Adjust: func(*worker.Config, *validator.Config) { adjusted = true }})
	if !adjusted {
		t.Error("Adjust was not called")
	}
	c := tasks.NewClient(rdb)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for addr, want := range map[string]string{"alice@example.test": tasks.VerdictValid, "bob@example.test": tasks.VerdictInvalid} {
		id, err := c.Enqueue(ctx, tasks.Request{Address: addr})
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.Wait(ctx, id)
		if err != nil || st.Result == nil || st.Result.Verdict != want {
			t.Errorf("%s: %+v (%v), want %s", addr, st.Result, err, want)
		}
	}
}
