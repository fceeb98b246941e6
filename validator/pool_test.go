package validator

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxprobe/mxprobe/internal/testenv/smtptest"
)

var (
	errThrottled = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Try again later, closing connection."}
	errGreylist  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, see http://postgrey.schweikert.ch/"}
)

// poolProber is newTestProber without the catch-all probe, for counting.
func poolProber(t *testing.T, port int, gate Gate, mutate func(*ProbeConfig)) *Prober {
	t.Helper()
	return newTestProber(t, port, gate, func(c *ProbeConfig) {
		c.CatchAllProbe = false
		if mutate != nil {
			mutate(c)
		}
	})
}

func addrs(n int, domain string) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("user%02d@%s", i, domain))
	}
	return out
}

func TestPoolBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		opts      smtptest.Options
		pool      PoolConfig
		rcpts     []string
		wantConns int
		wantMail  int
		wantRset  int
	}{
		{name: "ten addresses share one session", rcpts: addrs(10, "example.com"), wantConns: 1, wantMail: 1},
		{name: "the eleventh opens a new session", rcpts: addrs(11, "example.com"), wantConns: 2, wantMail: 2},
		{name: "three refusals close the session", opts: smtptest.Options{RcptDefault: errUnknownUser},
			rcpts: addrs(4, "example.com"), wantConns: 2, wantMail: 2},
		{name: "greylisting counts as a refusal", opts: smtptest.Options{RcptDefault: errGreylist},
			rcpts: addrs(4, "example.com"), wantConns: 2, wantMail: 2},
		{name: "MaxRcpts 2", pool: PoolConfig{MaxRcpts: 2}, rcpts: addrs(5, "example.com"), wantConns: 3, wantMail: 3},
		{name: "another domain: RSET and MAIL, same session",
			rcpts: append(addrs(2, "a.example"), addrs(2, "b.example")...), wantConns: 1, wantMail: 2, wantRset: 1},
		{name: "reuse off: a session per address", pool: PoolConfig{Disabled: true}, rcpts: addrs(3, "example.com"), wantConns: 3, wantMail: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, tt.opts)
			p := poolProber(t, srv.Port(), nil, func(c *ProbeConfig) { c.Pool = tt.pool })
			for _, r := range tt.rcpts {
				if got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), r, false); got.Stage != StageRcpt {
					t.Fatalf("%s: stage %s outcome %+v err %v", r, got.Stage, got.Outcome, got.Err)
				}
			}
			if got := srv.Conns(); got != tt.wantConns {
				t.Errorf("connections = %d, want %d", got, tt.wantConns)
			}
			if got := srv.Sent("MAIL"); got != tt.wantMail {
				t.Errorf("MAIL sent %d times, want %d", got, tt.wantMail)
			}
			if got := srv.Sent("RSET"); got != tt.wantRset {
				t.Errorf("RSET sent %d times, want %d", got, tt.wantRset)
			}
			if froms := srv.Froms(); len(froms) == 0 || strings.Count(strings.Join(froms, ","), testFrom) != len(froms) {
				t.Errorf("senders %q: greylisting needs the same MAIL FROM every time", froms)
			}
		})
	}
}

func TestPoolIdleAndAgeCloseWithQuit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		pool PoolConfig
	}{
		{name: "idle timeout", pool: PoolConfig{IdleTimeout: 50 * time.Millisecond}},
		{name: "max age", pool: PoolConfig{IdleTimeout: time.Hour, MaxAge: 100 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, smtptest.Options{})
			g := newCountingGate()
			p := poolProber(t, srv.Port(), g, func(c *ProbeConfig) { c.Pool = tt.pool })
			if got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), "alice@example.com", false); got.Outcome.Verdict != Valid {
				t.Fatalf("outcome %+v err %v", got.Outcome, got.Err)
			}
			select {
			case <-srv.QuitReceived:
			case <-time.After(10 * time.Second):
				t.Fatal("the parked session was never closed with QUIT")
			}
			g.waitDone(t, 1)
			if n := p.pool.parked(); n != 0 {
				t.Errorf("%d sessions still parked", n)
			}
			if got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), "bob@example.com", false); got.Outcome.Verdict != Valid {
				t.Fatalf("after expiry: outcome %+v err %v", got.Outcome, got.Err)
			}
			if n := srv.Conns(); n != 2 {
				t.Errorf("connections = %d, want 2 (the expired session must not serve)", n)
			}
		})
	}
}

func TestPoolParkRefusesOldSessions(t *testing.T) {
	t.Parallel()
	sp := newSessionPool(PoolConfig{IdleTimeout: time.Second, MaxAge: time.Minute, MaxIdle: 1}, func(*smtpSession) {})
	now := time.Now()
	tests := []struct {
		name string
		born time.Time
		want bool
	}{
		{name: "young", born: now.Add(-time.Second), want: true},
		{name: "pool full", born: now, want: false},
		{name: "past MaxAge", born: now.Add(-61 * time.Second), want: false},
	}
	for _, tt := range tests {
		s := &smtpSession{key: poolKey{host: tt.name}, born: tt.born}
		if got := sp.park(s, now); got != tt.want {
			t.Errorf("%s: park = %v, want %v", tt.name, got, tt.want)
		}
	}
	sp.closeAll()
	if sp.park(&smtpSession{born: now}, now) {
		t.Error("a closed pool parked a session")
	}
}

// A session that said 421, asked for a cool-down, refused before RCPT or
// broke the protocol is never reused: the next probe connects anew.
func TestPoolNeverReusesADeadSession(t *testing.T) {
	t.Parallel()
	t.Run("421 at RCPT", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
			if strings.HasPrefix(to, "slow@") {
				return errThrottled
			}
			return nil
		}})
		p := poolProber(t, srv.Port(), nil, nil)
		mx := mxSet(srv.Addr().Addr())
		for _, r := range []string{"alice@example.com", "slow@example.com", "bob@example.com"} {
			p.Probe(t.Context(), mx, r, false)
		}
		if n := srv.Conns(); n != 2 {
			t.Errorf("connections = %d, want 2: alice+slow on one, bob on a new one", n)
		}
	})
	scripts := []struct {
		name, script string
	}{
		{name: "4yz to MAIL", script: `
			< 220 mx.example.com ESMTP
			> EHLO probe.mxprobe.test
			< 250 mx.example.com
			> MAIL FROM:<verify@mxprobe.test>
			< 451 4.3.0 Temporary lookup failure
			> QUIT
			< 221 Bye`},
		{name: "malformed RCPT reply botches the client", script: `
			< 220 mx.example.com ESMTP
			> EHLO probe.mxprobe.test
			< 250 mx.example.com
			> MAIL FROM:<verify@mxprobe.test>
			< 250 Ok
			> RCPT TO:<*>
			< hello there`},
	}
	for _, tt := range scripts {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := smtptest.StartScript(t, tt.script)
			p := poolProber(t, fake.Port(), nil, nil)
			mx := mxSet(fake.Addr().Addr())
			for _, r := range []string{"alice@example.com", "bob@example.com"} {
				if got := p.Probe(t.Context(), mx, r, false); got.Outcome.Verdict != Unknown {
					t.Errorf("%s: outcome %+v, want unknown", r, got.Outcome)
				}
			}
			if n := fake.Conns(); n != 2 {
				t.Errorf("connections = %d, want 2", n)
			}
			if n := p.pool.parked(); n != 0 {
				t.Errorf("%d sessions parked", n)
			}
		})
	}
}

// The server dropped the parked session on its own: the probe is asked again
// on a new session instead of failing.
func TestPoolStaleSessionIsReplaced(t *testing.T) {
	t.Parallel()
	fake := smtptest.StartScript(t, `
		< 220 mx.example.com ESMTP
		> EHLO probe.mxprobe.test
		< 250 mx.example.com
		> MAIL FROM:<verify@mxprobe.test>
		< 250 Ok
		> RCPT TO:<*>
		< 250 Ok
		! close`)
	g := newCountingGate()
	p := poolProber(t, fake.Port(), g, nil)
	mx := mxSet(fake.Addr().Addr())
	for _, r := range []string{"alice@example.com", "bob@example.com"} {
		if got := p.Probe(t.Context(), mx, r, false); got.Outcome.Verdict != Valid {
			t.Errorf("%s: outcome %+v err %v, want valid", r, got.Outcome, got.Err)
		}
	}
	if n := fake.Conns(); n != 2 {
		t.Errorf("connections = %d, want 2", n)
	}
	p.Close()
	if a, d := g.counts(); a != 2 || d != 2 {
		t.Errorf("admitted %d, done %d; want 2, 2", a, d)
	}
}

// countingGate admits everything and checks the Admission contract: Done
// exactly once, no Report after Done.
type countingGate struct {
	reusable bool
	mu       sync.Mutex
	admitted int
	done     int
	events   []string
	doneSig  chan struct{}
	errs     []string
}

func newCountingGate() *countingGate {
	return &countingGate{reusable: true, doneSig: make(chan struct{}, 1000)}
}

func (g *countingGate) Admit(context.Context, MXHost) (Admission, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.admitted++
	g.events = append(g.events, "admit")
	return &countingAdmission{g: g, id: g.admitted}, nil
}

func (g *countingGate) counts() (admitted, done int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.admitted, g.done
}

func (g *countingGate) waitDone(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-g.doneSig:
		case <-time.After(10 * time.Second):
			t.Fatalf("waiting for %d Done calls", n)
		}
	}
}

type countingAdmission struct {
	g    *countingGate
	id   int
	done bool
}

func (a *countingAdmission) Report(o Outcome) {
	a.g.mu.Lock()
	defer a.g.mu.Unlock()
	if a.done {
		a.g.errs = append(a.g.errs, fmt.Sprintf("session %d: Report after Done", a.id))
	}
	a.g.events = append(a.g.events, fmt.Sprintf("report %d %s", a.id, o.Action))
}

func (a *countingAdmission) Reusable() bool {
	a.g.mu.Lock()
	defer a.g.mu.Unlock()
	return a.g.reusable
}

func (a *countingAdmission) Done() {
	a.g.mu.Lock()
	defer a.g.mu.Unlock()
	if a.done {
		a.g.errs = append(a.g.errs, fmt.Sprintf("session %d: Done twice", a.id))
	}
	a.done = true
	a.g.done++
	a.g.events = append(a.g.events, fmt.Sprintf("done %d", a.id))
	a.g.doneSig <- struct{}{}
}

func TestPoolAdmissions(t *testing.T) {
	t.Parallel()
	t.Run("one admission per session, Done once at close", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.Options{})
		g := newCountingGate()
		p := poolProber(t, srv.Port(), g, nil)
		for _, r := range addrs(12, "example.com") {
			p.Probe(t.Context(), mxSet(srv.Addr().Addr()), r, false)
		}
		if a, d := g.counts(); a != 2 || d != 1 {
			t.Errorf("before Close: admitted %d, done %d; want 2 (12 addresses, 10 per session), 1", a, d)
		}
		p.Close()
		p.Close()
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.admitted != 2 || g.done != 2 || len(g.errs) > 0 {
			t.Errorf("after Close: admitted %d, done %d, errors %q", g.admitted, g.done, g.errs)
		}
		if n := strings.Count(strings.Join(g.events, "\n"), "report "); n != 12 {
			t.Errorf("%d reports, want one per probe (12)", n)
		}
	})
	t.Run("cool-down reaches the gate at the reply", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
			if strings.HasPrefix(to, "slow@") {
				return errThrottled
			}
			return nil
		}})
		g := newCountingGate()
		p := poolProber(t, srv.Port(), g, nil)
		for _, r := range []string{"alice@example.com", "slow@example.com"} {
			p.Probe(t.Context(), mxSet(srv.Addr().Addr()), r, false)
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		want := "admit\nreport 1 none\nreport 1 cool_down\ndone 1"
		if got := strings.Join(g.events, "\n"); got != want {
			t.Errorf("events:\n%s\nwant:\n%s", got, want)
		}
	})
	t.Run("a gate that says not reusable gets a new session", func(t *testing.T) {
		t.Parallel()
		srv := smtptest.Start(t, smtptest.Options{})
		g := newCountingGate()
		g.reusable = false
		p := poolProber(t, srv.Port(), g, nil)
		for _, r := range addrs(2, "example.com") {
			p.Probe(t.Context(), mxSet(srv.Addr().Addr()), r, false)
		}
		if a, d := g.counts(); a != 2 || d != 1 || srv.Conns() != 2 {
			t.Errorf("admitted %d, done %d, connections %d; want 2, 1, 2", a, d, srv.Conns())
		}
	})
}

// Concurrent probes to one MX never share a session (the race detector
// watches the client), and every session is released once.
func TestPoolConcurrentProbes(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{})
	g := newCountingGate()
	p := poolProber(t, srv.Port(), g, nil)
	const workers, each = 6, 8
	var wg sync.WaitGroup
	errs := make(chan string, workers*each)
	for w := range workers {
		wg.Go(func() {
			for _, r := range addrs(each, fmt.Sprintf("d%d.example", w)) {
				if got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), r, false); got.Outcome.Verdict != Valid {
					errs <- fmt.Sprintf("%s: %+v %v", r, got.Outcome, got.Err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := srv.Conns(); n > workers*each/2 {
		t.Errorf("%d connections for %d probes: sessions were hardly reused", n, workers*each)
	}
	p.Close()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.admitted != g.done || g.admitted != srv.Conns() || len(g.errs) > 0 {
		t.Errorf("admitted %d, done %d, connections %d, errors %q", g.admitted, g.done, srv.Conns(), g.errs)
	}
	if got := len(srv.Rcpts()); got != workers*each {
		t.Errorf("%d RCPTs, want %d", got, workers*each)
	}
}

func TestCatchAllCacheSparesRandomRcpts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		opts        smtptest.Options
		pool        PoolConfig
		rcpts       []string
		wantRcpts   int
		wantVerdict Verdict
	}{
		{name: "catch-all domain, pooled", rcpts: addrs(3, "example.com"), wantRcpts: 4, wantVerdict: Risky},
		{name: "catch-all domain, no reuse", pool: PoolConfig{Disabled: true}, rcpts: addrs(3, "example.com"), wantRcpts: 4, wantVerdict: Risky},
		{name: "two domains, one random probe each", rcpts: append(addrs(2, "a.example"), addrs(2, "b.example")...), wantRcpts: 6, wantVerdict: Risky},
		{name: "not catch-all", opts: smtptest.Options{RcptFunc: func(to string) *smtp.SMTPError {
			if strings.HasPrefix(to, "user") {
				return nil
			}
			return errUnknownUser
		}}, rcpts: addrs(3, "example.com"), wantRcpts: 4, wantVerdict: Valid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, tt.opts)
			p := newTestProber(t, srv.Port(), nil, func(c *ProbeConfig) { c.Pool = tt.pool })
			for _, r := range tt.rcpts {
				got := p.Probe(t.Context(), mxSet(srv.Addr().Addr()), r, false)
				if got.Outcome.Verdict != tt.wantVerdict || got.CatchAll == nil {
					t.Errorf("%s: outcome %+v catch-all %s, want %s and a catch-all answer", r, got.Outcome, fmtPtr(got.CatchAll), tt.wantVerdict)
				}
			}
			if got := srv.Rcpts(); len(got) != tt.wantRcpts {
				t.Errorf("RCPTs %q, want %d", got, tt.wantRcpts)
			}
		})
	}
}

func TestMemoryCatchAllCache(t *testing.T) {
	t.Parallel()
	c := NewMemoryCatchAllCache(time.Hour, 2)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	ctx := t.Context()
	c.SetCatchAll(ctx, "Example.COM", true)
	c.SetCatchAll(ctx, "b.example", false)
	tests := []struct {
		name      string
		advance   time.Duration
		domain    string
		wantAll   bool
		wantKnown bool
	}{
		{name: "case-insensitive hit", domain: "example.com", wantAll: true, wantKnown: true},
		{name: "negative hit", domain: "B.example", wantKnown: true},
		{name: "miss", domain: "c.example"},
		{name: "expired", advance: time.Hour, domain: "example.com"},
	}
	for _, tt := range tests {
		now = now.Add(tt.advance)
		all, known := c.CatchAll(ctx, tt.domain)
		if all != tt.wantAll || known != tt.wantKnown {
			t.Errorf("%s: got (%v, %v), want (%v, %v)", tt.name, all, known, tt.wantAll, tt.wantKnown)
		}
	}
	c.SetCatchAll(ctx, "x.example", true)
	c.SetCatchAll(ctx, "y.example", true)
	c.SetCatchAll(ctx, "z.example", true) // past max: emptied, then stored
	if _, known := c.CatchAll(ctx, "z.example"); !known || len(c.m) > 2 {
		t.Errorf("bound not kept: %d entries", len(c.m))
	}
}

func TestNewProberPoolConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		pool    PoolConfig
		wantErr string
	}{
		{name: "defaults", pool: PoolConfig{}},
		{name: "negative MaxRcpts", pool: PoolConfig{MaxRcpts: -1}, wantErr: "Pool.MaxRcpts"},
		{name: "negative MaxRejects", pool: PoolConfig{MaxRejects: -1}, wantErr: "Pool.MaxRejects"},
		{name: "negative IdleTimeout", pool: PoolConfig{IdleTimeout: -time.Second}, wantErr: "Pool.IdleTimeout"},
		{name: "negative MaxAge", pool: PoolConfig{MaxAge: -time.Second}, wantErr: "Pool.MaxAge"},
		{name: "negative MaxIdle", pool: PoolConfig{MaxIdle: -1}, wantErr: "Pool.MaxIdle"},
	}
	for _, tt := range tests {
		p, err := NewProber(ProbeConfig{HeloName: testHelo, MailFrom: testFrom, Pool: tt.pool}, nil)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v, want one naming %s", tt.name, err, tt.wantErr)
		case err == nil:
			c := p.cfg.Pool
			if c.MaxRcpts != 10 || c.MaxRejects != 3 || c.IdleTimeout != 5*time.Second || c.MaxAge != time.Minute || c.MaxIdle != 256 {
				t.Errorf("%s: defaults %+v", tt.name, c)
			}
		}
	}
}

// WithTranscript decides per probe, also on a pooled session that served a
// probe with the other choice before: a request's transcript holds its own
// lines only, and a probe that did not ask records nothing.
func TestWithTranscriptPerProbeOnPooledSession(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		config  bool   // ProbeConfig.Transcript
		ctx     []int  // per probe: -1 no context value, 0 WithTranscript false, 1 true
		wantHas []bool // per probe: transcript recorded
	}{
		{name: "config off, asked on the second only", config: false, ctx: []int{-1, 1, -1}, wantHas: []bool{false, true, false}},
		{name: "config on, refused on the second", config: true, ctx: []int{-1, 0, 1}, wantHas: []bool{true, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := smtptest.Start(t, smtptest.Options{})
			p := poolProber(t, srv.Port(), nil, func(c *ProbeConfig) { c.Transcript = tt.config })
			for i, mode := range tt.ctx {
				ctx := t.Context()
				if mode >= 0 {
					ctx = WithTranscript(ctx, mode == 1)
				}
				rcpt := fmt.Sprintf("user%02d@example.com", i)
				got := p.Probe(ctx, mxSet(srv.Addr().Addr()), rcpt, false)
				if got.Stage != StageRcpt {
					t.Fatalf("probe %d: stage %s err %v", i, got.Stage, got.Err)
				}
				if has := len(got.Transcript) > 0; has != tt.wantHas[i] {
					t.Fatalf("probe %d: transcript %v, want recorded = %v", i, got.Transcript, tt.wantHas[i])
				}
				for _, l := range got.Transcript {
					if strings.HasPrefix(l.Line, "RCPT") && !strings.Contains(l.Line, rcpt) {
						t.Errorf("probe %d: transcript holds another probe's line %q", i, l.Line)
					}
				}
			}
			if srv.Conns() != 1 {
				t.Errorf("connections = %d, want 1 (the probes must share the pooled session)", srv.Conns())
			}
		})
	}
}
