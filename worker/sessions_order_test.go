package worker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/validator"
)

// orderValidator records the order addresses are asked in; the first ask
// blocks until released, so the others queue behind it.
type orderValidator struct {
	mu      sync.Mutex
	asked   []string
	started chan struct{}
	release chan struct{}
	done    chan struct{}
	n       int
}

func (o *orderValidator) Validate(_ context.Context, input string) (validator.Result, error) {
	o.mu.Lock()
	o.asked = append(o.asked, input)
	first := len(o.asked) == 1
	o.mu.Unlock()
	if first {
		close(o.started)
		<-o.release
	}
	o.mu.Lock()
	if len(o.asked) == o.n {
		close(o.done)
	}
	o.mu.Unlock()
	return validator.Result{Input: input, Verdict: validator.Valid}, nil
}

func (o *orderValidator) MailHosts(context.Context, string) ([]string, bool) { return nil, false }
func (o *orderValidator) AwaitSession(context.Context, string) bool          { return true }

// A sign-up form's address (the critical queue) goes ahead of those
// already waiting for the session; the others keep their order.
func TestUrgentHandoffGoesFirst(t *testing.T) {
	t.Parallel()
	s := NewSessions(nil, SessionsConfig{})
	v := &orderValidator{started: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{}), n: 4}
	s.attach(v, nil)
	s.held["mx.test"] = 1
	ctx := context.Background()
	job := func(in string, urgent bool) handoffJob {
		return handoffJob{ID: in, From: s.id, Host: "mx.test", Input: in, Urgent: urgent}
	}
	s.enqueue(ctx, job("first", false))
	<-v.started
	s.enqueue(ctx, job("bulk-1", false))
	s.enqueue(ctx, job("bulk-2", false))
	s.enqueue(ctx, job("signup", true))
	close(v.release)
	select {
	case <-v.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the queued addresses were not asked")
	}
	s.bg.Wait()
	if want := []string{"first", "signup", "bulk-1", "bulk-2"}; !slices.Equal(v.asked, want) {
		t.Errorf("asked in order %v, want %v", v.asked, want)
	}
}
