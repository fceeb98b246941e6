package validator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// listServer is a loopback HTTP server serving a list with an ETag and
// honouring If-None-Match, like a CDN would.
type listServer struct {
	*httptest.Server

	mu          sync.Mutex
	body        string
	etag        string
	status      int  // 0: 200 or 304
	noLength    bool // stream without Content-Length
	requests    int
	ifNoneMatch []string // If-None-Match of each request
}

func newListServer(t *testing.T, body, etag string) *listServer {
	t.Helper()
	s := &listServer{body: body, etag: etag}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *listServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	inm := r.Header.Get("If-None-Match")
	s.ifNoneMatch = append(s.ifNoneMatch, inm)
	body, etag, status, noLength := s.body, s.etag, s.status, s.noLength
	s.mu.Unlock()
	if status != 0 {
		http.Error(w, "upstream broken", status)
		return
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
		if inm == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	if noLength {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush() // forces chunked encoding
	} else {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	}
	_, _ = w.Write([]byte(body))
}

func (s *listServer) set(body, etag string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.etag, s.status = body, etag, status
}

func (s *listServer) stats() (int, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, append([]string(nil), s.ifNoneMatch...)
}

type updaterBundle struct {
	srv   *listServer
	clock *testClock
	list  *DisposableList
	u     *Updater
	cache string
}

// setupUpdater starts a server serving body and returns an Updater whose
// list starts as "old.example".
func setupUpdater(t *testing.T, body, etag string) *updaterBundle {
	t.Helper()
	srv := newListServer(t, body, etag)
	list, err := NewDisposableList([]byte("old.example\ncommon.example\n"))
	if err != nil {
		t.Fatal(err)
	}
	clock := &testClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	cache := filepath.Join(t.TempDir(), "disposable.conf")
	u := &Updater{URL: srv.URL + "/list.conf", CachePath: cache, Client: srv.Client(), List: list, now: clock.Now}
	return &updaterBundle{srv: srv, clock: clock, list: list, u: u, cache: cache}
}

const newBody = "new.example\ncommon.example\n"

func TestUpdaterFreshDownload(t *testing.T) {
	t.Parallel()
	b := setupUpdater(t, newBody, `"v1"`)
	changed, err := b.u.Refresh(t.Context())
	if err != nil || !changed {
		t.Fatalf("Refresh = %v, %v; want true, nil", changed, err)
	}
	if !b.list.Contains("new.example") || b.list.Contains("old.example") {
		t.Error("list was not replaced by the download")
	}
	if _, inm := b.srv.stats(); inm[0] != "" {
		t.Errorf("first request sent If-None-Match %q", inm[0])
	}
	data, err := os.ReadFile(b.cache)
	if err != nil || string(data) != newBody {
		t.Fatalf("cache file = %q, %v; want the body", data, err)
	}
	var m cacheMeta
	raw, err := os.ReadFile(b.cache + ".meta.json")
	if err != nil || json.Unmarshal(raw, &m) != nil || m.ETag != `"v1"` || !m.CheckedAt.Equal(b.clock.Now()) {
		t.Fatalf("meta = %s, %v; want ETag \"v1\" checked now", raw, err)
	}
	if leftovers, _ := filepath.Glob(b.cache + "*.tmp*"); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	// A restarted process loads the cache and revalidates with its ETag.
	list2, _ := NewDisposableList([]byte("other.example\n"))
	u2 := &Updater{URL: b.u.URL, CachePath: b.cache, Client: b.srv.Client(), List: list2, now: b.clock.Now}
	if err := u2.LoadCache(); err != nil {
		t.Fatal(err)
	}
	if !list2.Contains("new.example") {
		t.Error("LoadCache did not load the cached list")
	}
	changed, err = u2.RefreshIfStale(t.Context())
	if err != nil || changed {
		t.Errorf("RefreshIfStale after load = %v, %v; want false, nil", changed, err)
	}
	if n, _ := b.srv.stats(); n != 1 {
		t.Errorf("fresh cache caused a request: %d requests", n)
	}
	if _, err := u2.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, inm := b.srv.stats(); inm[1] != `"v1"` {
		t.Errorf("revalidation sent If-None-Match %q, want \"v1\"", inm[1])
	}
}

func TestUpdaterNotModified(t *testing.T) {
	t.Parallel()
	b := setupUpdater(t, newBody, `"v1"`)
	if _, err := b.u.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := b.list.cur.Load()
	b.clock.Advance(time.Hour)
	changed, err := b.u.Refresh(t.Context())
	if err != nil || changed {
		t.Fatalf("Refresh = %v, %v; want false, nil", changed, err)
	}
	if n, inm := b.srv.stats(); n != 2 || inm[1] != `"v1"` {
		t.Errorf("requests %d, If-None-Match %q; want 2, \"v1\"", n, inm)
	}
	if b.list.cur.Load() != before {
		t.Error("304 swapped the list")
	}
	if got := b.u.NextCheck(); !got.Equal(b.clock.Now().Add(DefaultListMaxAge)) {
		t.Errorf("NextCheck = %v; a 304 should restart the age", got)
	}
}

func TestUpdaterSameContentNewETag(t *testing.T) {
	t.Parallel()
	b := setupUpdater(t, newBody, `"v1"`)
	if _, err := b.u.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := b.list.cur.Load()
	b.srv.set(newBody, `"v2"`, 0) // e.g. a CDN re-deploy
	changed, err := b.u.Refresh(t.Context())
	if err != nil || changed {
		t.Fatalf("Refresh = %v, %v; want false, nil", changed, err)
	}
	if b.list.cur.Load() != before {
		t.Error("identical content swapped the list")
	}
	if _, err := b.u.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, inm := b.srv.stats(); n != 3 || inm[2] != `"v2"` {
		t.Errorf("requests %d, If-None-Match %q; want the new ETag remembered", n, inm)
	}
}

func TestUpdaterKeepsOldListOnBadDownload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		body     string
		status   int
		maxBytes int64
		noLength bool
		wantErr  string
	}{
		{name: "malformed html", body: "<html>\n<body>Sign in to continue</body>\n</html>\n", wantErr: "malformed domain list"},
		{name: "empty body", body: "", wantErr: "no entries"},
		{name: "binary", body: "\x1f\x8b\x08\x00\x00", wantErr: "binary content"},
		{name: "server error", body: newBody, status: http.StatusInternalServerError, wantErr: "unexpected status 500"},
		{name: "not found", body: newBody, status: http.StatusNotFound, wantErr: "unexpected status 404"},
		{name: "oversized with length", body: strings.Repeat("x.example\n", 1000), maxBytes: 1024, wantErr: "exceeds the 1024-byte cap"},
		{name: "oversized streamed", body: strings.Repeat("x.example\n", 1000), maxBytes: 1024, noLength: true, wantErr: "body exceeds the 1024-byte cap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupUpdater(t, tt.body, "")
			b.srv.set(tt.body, "", tt.status)
			b.srv.mu.Lock()
			b.srv.noLength = tt.noLength
			b.srv.mu.Unlock()
			b.u.MaxBytes = tt.maxBytes
			changed, err := b.u.Refresh(t.Context())
			if changed || err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Refresh = %v, %v; want false, error containing %q", changed, err, tt.wantErr)
			}
			if !b.list.Contains("old.example") || b.list.Contains("new.example") {
				t.Error("old list was not kept")
			}
			if _, err := os.Stat(b.cache); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cache written after a failed download: %v", err)
			}
			if next := b.u.NextCheck(); !next.Equal(b.clock.Now().Add(defaultRetryInterval)) {
				t.Errorf("NextCheck = %v, want a retry after %v", next, defaultRetryInterval)
			}
		})
	}
}

// A list URL with credentials (a private mirror) never shows its password
// in the update error or the updater's logs.
func TestUpdaterHidesURLPassword(t *testing.T) {
	t.Parallel()
	b := setupUpdater(t, newBody, "")
	b.srv.set(newBody, "", http.StatusInternalServerError)
	u, err := url.Parse(b.u.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("mirror", "s3cret-pw")
	b.u.URL = u.String()
	var logs strings.Builder
	b.u.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, err = b.u.Refresh(t.Context())
	if err == nil || strings.Contains(err.Error(), "s3cret-pw") || !strings.Contains(err.Error(), "mirror:xxxxx@") {
		t.Errorf("Refresh error %v: want it to name the URL without its password", err)
	}
	if strings.Contains(logs.String(), "s3cret-pw") {
		t.Errorf("logs show the password:\n%s", logs.String())
	}
}

func TestUpdaterExactCapAccepted(t *testing.T) {
	t.Parallel()
	b := setupUpdater(t, newBody, "")
	b.u.MaxBytes = int64(len(newBody))
	if changed, err := b.u.Refresh(t.Context()); err != nil || !changed {
		t.Fatalf("Refresh = %v, %v; a body of exactly MaxBytes must pass", changed, err)
	}
}

func TestUpdaterMaxAge(t *testing.T) {
	t.Parallel()
	b := setupUpdater(t, newBody, `"v1"`)
	b.u.MaxAge = 24 * time.Hour
	steps := []struct {
		name         string
		advance      time.Duration
		failServer   bool
		wantRequests int
	}{
		{name: "never checked", advance: 0, wantRequests: 1},
		{name: "just checked", advance: 0, wantRequests: 1},
		{name: "younger than max age", advance: 23*time.Hour + 59*time.Minute, wantRequests: 1},
		{name: "max age reached, server fails", advance: time.Minute, failServer: true, wantRequests: 2},
		{name: "retry interval not yet over", advance: 59 * time.Minute, wantRequests: 2},
		{name: "retry interval over", advance: time.Minute, wantRequests: 3},
		{name: "fresh again", advance: 23 * time.Hour, wantRequests: 3},
	}
	for _, st := range steps { // sequential: each step builds on the last
		b.clock.Advance(st.advance)
		status := 0
		if st.failServer {
			status = http.StatusServiceUnavailable
		}
		b.srv.set(newBody, `"v1"`, status)
		_, err := b.u.RefreshIfStale(t.Context())
		if (err != nil) != st.failServer {
			t.Errorf("%s: RefreshIfStale error %v", st.name, err)
		}
		if n, _ := b.srv.stats(); n != st.wantRequests {
			t.Errorf("%s: %d requests, want %d", st.name, n, st.wantRequests)
		}
	}
}

func TestUpdaterLoadCache(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		data        *string // nil: no cache file
		meta        string
		wantErr     string
		wantNew     bool
		wantETagUse bool
	}{
		{name: "no cache", data: nil},
		{name: "valid cache and meta", data: ptr(newBody), meta: `{"url":"URL","etag":"\"v9\"","sha256":"SUM","checked_at":"2025-06-01T00:00:00Z"}`, wantNew: true, wantETagUse: true},
		{name: "meta for another body", data: ptr(newBody), meta: `{"url":"URL","etag":"\"v9\"","sha256":"00","checked_at":"2025-06-01T00:00:00Z"}`, wantNew: true},
		{name: "meta for another URL", data: ptr(newBody), meta: `{"url":"http://elsewhere/","etag":"\"v9\"","sha256":"SUM","checked_at":"2025-06-01T00:00:00Z"}`, wantNew: true},
		{name: "garbled meta", data: ptr(newBody), meta: `{`, wantNew: true},
		{name: "malformed cache", data: ptr("\x00\x01"), wantErr: "binary content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupUpdater(t, newBody, `"v10"`)
			if tt.data != nil {
				if err := os.WriteFile(b.cache, []byte(*tt.data), 0o644); err != nil {
					t.Fatal(err)
				}
				l, _ := NewDisposableList([]byte(*tt.data))
				var sum string
				if l != nil {
					s := l.Sum()
					sum = fmt.Sprintf("%x", s[:])
				}
				meta := strings.NewReplacer("URL", b.u.URL, "SUM", sum).Replace(tt.meta)
				if err := os.WriteFile(b.cache+".meta.json", []byte(meta), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := b.u.LoadCache()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadCache = %v, want error containing %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := b.list.Contains("new.example"); got != tt.wantNew {
				t.Errorf("cached list loaded = %v, want %v", got, tt.wantNew)
			}
			if !tt.wantNew && !b.list.Contains("old.example") {
				t.Error("old list lost")
			}
			if _, err := b.u.Refresh(t.Context()); err != nil {
				t.Fatal(err)
			}
			_, inm := b.srv.stats()
			if got := inm[0] == `"v9"`; got != tt.wantETagUse {
				t.Errorf("If-None-Match %q; want cached ETag used = %v", inm[0], tt.wantETagUse)
			}
		})
	}
}

func TestUpdaterConcurrentReaders(t *testing.T) {
	t.Parallel()
	b := setupUpdater(t, newBody, "")
	stop := make(chan struct{})
	var misses, reads atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// common.example is in every version; a torn swap would
				// show it missing.
				if !b.list.Contains("common.example") {
					misses.Add(1)
				}
				reads.Add(1)
			}
		})
	}
	for i := range 30 {
		b.srv.set(fmt.Sprintf("v%d.example\ncommon.example\n", i), "", 0)
		if changed, err := b.u.Refresh(t.Context()); err != nil || !changed {
			t.Errorf("Refresh %d = %v, %v", i, changed, err)
		}
		if !b.list.Contains(fmt.Sprintf("v%d.example", i)) {
			t.Errorf("version %d not visible after Refresh", i)
		}
	}
	close(stop)
	wg.Wait()
	if misses.Load() != 0 {
		t.Errorf("%d of %d reads missed a domain present in every version", misses.Load(), reads.Load())
	}
}

func TestUpdaterRun(t *testing.T) {
	t.Parallel()
	b := setupUpdater(t, newBody, `"v1"`)
	checked := make(chan error, 1)
	b.u.afterCheck = func(changed bool, err error) {
		if err == nil && !changed {
			err = errors.New("first check did not change the list")
		}
		select {
		case checked <- err:
		default:
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.u.Run(ctx)
	}()
	select {
	case err := <-checked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run made no check")
	}
	if !b.list.Contains("new.example") {
		t.Error("Run did not update the list")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx was cancelled")
	}
}

func TestUpdaterRequiresURLAndList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		u    *Updater
	}{
		{name: "no URL", u: &Updater{List: &DisposableList{}}},
		{name: "no list", u: &Updater{URL: "http://127.0.0.1:1/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := tt.u.Refresh(t.Context()); err == nil {
				t.Error("Refresh succeeded without URL or List")
			}
		})
	}
}
