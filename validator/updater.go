package validator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/internal/redact"
)

// Updater defaults.
const (
	DefaultListMaxAge   = 5 * 24 * time.Hour
	DefaultListMaxBytes = 16 << 20
	// The upstream list is ~100 KiB; 16 MiB leaves room for growth while a
	// misconfigured URL serving an endless stream cannot exhaust memory.
	defaultRetryInterval = time.Hour
	defaultFetchTimeout  = time.Minute
)

// Updater keeps a DisposableList current from a URL.
//
// A check is due when the last successful check is older than MaxAge. It
// sends If-None-Match / If-Modified-Since from the previous answer; a 304
// or a body whose SHA-256 equals the current list's leaves the list alone.
// A new body is parsed with ParseDomainList and swapped in atomically; a
// failed or malformed download keeps the old list. When CachePath is set
// the accepted body is written there atomically (temp file + rename) with
// its validators in CachePath+".meta.json", and LoadCache reads it back at
// start, so restarts neither lose an update nor re-download.
//
// Set the exported fields before the first call; an Updater must not be
// copied after first use.
type Updater struct {
	// URL serves the list in ParseDomainList format. Required.
	URL string
	// CachePath is where the last accepted list is kept. Empty: no cache.
	CachePath string
	// MaxAge is how old the local copy may grow before a check. Default 5 days.
	MaxAge time.Duration
	// MaxBytes caps the download. Default 16 MiB.
	MaxBytes int64
	// RetryInterval is the wait after a failed check. Default 1 h, at most MaxAge.
	RetryInterval time.Duration
	// Client does the fetch. Default: a client with a 1-minute timeout.
	Client *http.Client
	// List is the list to keep current. Required.
	List *DisposableList
	// Logger receives one line per check. Default: discard.
	Logger *slog.Logger

	now        func() time.Time
	afterCheck func(changed bool, err error) // test hook, called by Run

	mu       sync.Mutex
	meta     cacheMeta // validators and time of the last successful check
	failedAt time.Time // last failed check, for RetryInterval
}

// cacheMeta is stored beside the cache file.
type cacheMeta struct {
	URL          string    `json:"url"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	SHA256       string    `json:"sha256"`
	CheckedAt    time.Time `json:"checked_at"`
}

func (u *Updater) clock() time.Time {
	if u.now != nil {
		return u.now()
	}
	return time.Now()
}

func (u *Updater) maxAge() time.Duration {
	if u.MaxAge > 0 {
		return u.MaxAge
	}
	return DefaultListMaxAge
}

func (u *Updater) retryInterval() time.Duration {
	r := u.RetryInterval
	if r <= 0 {
		r = defaultRetryInterval
	}
	return min(r, u.maxAge())
}

func (u *Updater) logger() *slog.Logger {
	if u.Logger != nil {
		return u.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (u *Updater) metaPath() string { return u.CachePath + ".meta.json" }

// LoadCache reads the cache file, if any, into List. A missing cache is not
// an error; an unreadable or malformed one is, and leaves List unchanged.
func (u *Updater) LoadCache() error {
	if u.CachePath == "" {
		return nil
	}
	if u.List == nil {
		return errors.New("disposable list updater: List is nil")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	data, err := os.ReadFile(u.CachePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("disposable list cache: %w", err)
	}
	if _, err := u.List.Replace(data); err != nil {
		return fmt.Errorf("disposable list cache %s: %w", u.CachePath, err)
	}
	sum := sha256.Sum256(data)
	var m cacheMeta
	raw, err := os.ReadFile(u.metaPath())
	if err == nil && json.Unmarshal(raw, &m) == nil && m.SHA256 == hex.EncodeToString(sum[:]) && m.URL == u.URL {
		u.meta = m
		return nil
	}
	// The metadata is missing, stale, or for another URL: keep the list
	// but forget the validators, and date it by the file.
	u.meta = cacheMeta{URL: u.URL, SHA256: hex.EncodeToString(sum[:])}
	if fi, err := os.Stat(u.CachePath); err == nil {
		u.meta.CheckedAt = fi.ModTime()
	}
	return nil
}

// NextCheck returns when the next check is due.
func (u *Updater) NextCheck() time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.nextCheckLocked()
}

func (u *Updater) nextCheckLocked() time.Time {
	next := u.meta.CheckedAt.Add(u.maxAge())
	if u.meta.CheckedAt.IsZero() {
		next = time.Time{}
	}
	if retry := u.failedAt.Add(u.retryInterval()); !u.failedAt.IsZero() && retry.After(next) {
		next = retry
	}
	return next
}

// RefreshIfStale checks for a new list only when one is due (see NextCheck).
func (u *Updater) RefreshIfStale(ctx context.Context) (changed bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.clock().Before(u.nextCheckLocked()) {
		return false, nil
	}
	return u.refreshLocked(ctx)
}

// Refresh checks the URL now. changed reports whether List was replaced;
// it can be true with a non-nil error when only writing the cache failed.
func (u *Updater) Refresh(ctx context.Context) (changed bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.refreshLocked(ctx)
}

func (u *Updater) refreshLocked(ctx context.Context) (bool, error) {
	if u.List == nil || u.URL == "" {
		return false, errors.New("disposable list updater: URL and List are required")
	}
	fail := func(err error) (bool, error) {
		u.failedAt = u.clock()
		return false, fmt.Errorf("disposable list update from %s: %w", redact.URL(u.URL), err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.URL, nil)
	if err != nil {
		return fail(err)
	}
	req.Header.Set("User-Agent", "mxprobe-list-updater")
	if u.meta.URL == u.URL {
		// Validators from another URL would be meaningless to this server.
		if u.meta.ETag != "" {
			req.Header.Set("If-None-Match", u.meta.ETag)
		}
		if u.meta.LastModified != "" {
			req.Header.Set("If-Modified-Since", u.meta.LastModified)
		}
	}
	client := u.Client
	if client == nil {
		client = &http.Client{Timeout: defaultFetchTimeout}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()

	now := u.clock()
	switch resp.StatusCode {
	case http.StatusNotModified:
		u.meta.CheckedAt = now
		u.failedAt = time.Time{}
		if err := u.writeMeta(); err != nil {
			return false, fmt.Errorf("disposable list cache: %w", err)
		}
		u.logger().LogAttrs(ctx, slog.LevelDebug, "disposable list not modified", slog.String("url", redact.URL(u.URL)))
		return false, nil
	case http.StatusOK:
	default:
		return fail(fmt.Errorf("unexpected status %s", resp.Status))
	}

	limit := u.MaxBytes
	if limit <= 0 {
		limit = DefaultListMaxBytes
	}
	if resp.ContentLength > limit {
		return fail(fmt.Errorf("body of %d bytes exceeds the %d-byte cap", resp.ContentLength, limit))
	}
	// Read one byte past the cap to tell "exactly at" from "over".
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fail(fmt.Errorf("reading body: %w", err))
	}
	if int64(len(body)) > limit {
		return fail(fmt.Errorf("body exceeds the %d-byte cap", limit))
	}

	sum := sha256.Sum256(body)
	changed := false
	if sum != u.List.Sum() {
		if changed, err = u.List.Replace(body); err != nil {
			return fail(err)
		}
	}
	oldSum := u.meta.SHA256
	u.meta = cacheMeta{
		URL:          u.URL,
		ETag:         resp.Header.Get("ETag"),
		LastModified: resp.Header.Get("Last-Modified"),
		SHA256:       hex.EncodeToString(sum[:]),
		CheckedAt:    now,
	}
	u.failedAt = time.Time{}
	if changed {
		u.logger().LogAttrs(ctx, slog.LevelInfo, "disposable list updated",
			slog.String("url", redact.URL(u.URL)), slog.Int("domains", u.List.Len()))
	}
	if err := u.writeCache(body, oldSum != u.meta.SHA256); err != nil {
		return changed, fmt.Errorf("disposable list cache: %w", err)
	}
	return changed, nil
}

// writeCache stores body (when it differs from what the cache holds, or the
// file is missing) and the metadata.
func (u *Updater) writeCache(body []byte, newData bool) error {
	if u.CachePath == "" {
		return nil
	}
	if _, err := os.Stat(u.CachePath); newData || err != nil {
		if err := writeFileAtomic(u.CachePath, body); err != nil {
			return err
		}
	}
	return u.writeMeta()
}

func (u *Updater) writeMeta() error {
	if u.CachePath == "" {
		return nil
	}
	raw, err := json.MarshalIndent(u.meta, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(u.metaPath(), append(raw, '\n'))
}

// writeFileAtomic writes through a temporary file in the same directory and
// renames it over path, so a reader (or a crash) never sees half a list.
func writeFileAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Run loads the cache, then checks whenever a check is due, until ctx is
// done. Failures are logged and retried after RetryInterval; the current
// list keeps serving meanwhile.
func (u *Updater) Run(ctx context.Context) {
	log := u.logger()
	if err := u.LoadCache(); err != nil {
		log.LogAttrs(ctx, slog.LevelWarn, "ignoring disposable list cache", slog.Any("error", err))
	}
	for {
		changed, err := u.RefreshIfStale(ctx)
		if err != nil && ctx.Err() == nil {
			log.LogAttrs(ctx, slog.LevelWarn, "disposable list update failed; keeping the current list", slog.Any("error", err))
		}
		if u.afterCheck != nil {
			u.afterCheck(changed, err)
		}
		wait := u.NextCheck().Sub(u.clock())
		// At least a second, so a clock jump cannot spin the loop; at most
		// MaxAge, so a clock jump cannot stall it.
		wait = min(max(wait, time.Second), u.maxAge())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
