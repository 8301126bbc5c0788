package goproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"golang.org/x/mod/module"
)

// IndexFeed reads a module index feed in the format of index.golang.org
// (https://index.golang.org/index?since=TIME&limit=N: newline-delimited
// JSON objects {"Path", "Version", "Timestamp"}, oldest first) and tells
// when each version appeared in it: a [FirstSeenSource] for a [Cooldown].
// A goproxy Proxy serves such a feed at /index too.
//
// It remembers only the versions that appeared in the last Window, in
// about 50 bytes each; for any other version it answers the start of the
// Window, which the cooldown takes for old enough when Window is at least
// its Age. A version that has not reached the feed yet (index.golang.org
// lags proxy.golang.org by a few minutes, and never lists what it did not
// serve) would be taken for old too: Local closes that gap, with the
// proxy's own record of when it saw each version.
//
// The feed is read on demand: FirstSeen starts a read in the background
// when the last one is older than PollInterval, and answers from memory
// meanwhile. Call Update at start-up: until the feed has been read to its
// end once, and when it could not be read to its end for ten
// PollIntervals, FirstSeen dates a version the feed does not list by
// Local's record alone, and fails for one Local has not seen, which the
// cooldown then refuses.
type IndexFeed struct {
	// URL is the feed's address, without query: for example
	// "https://index.golang.org/index". It must be set.
	URL string

	// Client makes the requests. If nil, [http.DefaultClient] is used,
	// which follows the environment's proxy variables but neither a
	// Proxy's Dialer (resolvers, egress proxy) nor its EgressPolicy: give
	// it a client over the Proxy's transport to have them.
	Client *http.Client

	// Window is how far back versions are remembered. It must be at least
	// the cooldown's Age. Zero means 7 days.
	Window time.Duration

	// PollInterval is how often, at most, the feed is read again. Zero
	// means one minute.
	PollInterval time.Duration

	// MaxEntries bounds the versions remembered; past it, the oldest are
	// forgotten, which shortens the Window. Zero means 1<<20 (about 50
	// MiB).
	MaxEntries int

	// Local, if set, is this proxy's own record of when it first saw each
	// version (a [Proxy] is one: give the Proxy whose Admission the
	// cooldown decides), asked about the versions the feed does not list.
	// One that the proxy first saw after the newest entry the feed has
	// read, less FeedLag, may be new and not in the feed yet: it cannot
	// be dated (FirstSeen fails, and the cooldown holds it back, saying
	// so) until the feed has moved FeedLag past that sighting, a few
	// minutes; then, still unlisted, it is taken for older than the
	// Window. A version the feed lists is first seen at the earlier of
	// the two times. If nil, a version the feed does not list is taken
	// for older than the Window at once. The feed dates what the proxy
	// it indexes serves: with other upstreams (direct, a private proxy),
	// a version it never lists passes after that delay, and a cooldown
	// over the Proxy's own record alone is the one to use.
	Local FirstSeenSource

	// Logger receives read failures, and each read at debug level. If
	// nil, [slog.Default] is used.
	Logger *slog.Logger

	// pageSize is the limit asked for each page; tests make it small.
	pageSize int

	update   sync.Mutex // held by the one read under way
	bg       sync.WaitGroup
	initOnce sync.Once
	seed     maphash.Seed // set once

	// Under mu. Times of versions are in Unix nanoseconds, half the
	// size of a time.Time.
	mu        sync.RWMutex
	seen      map[uint64]int64
	queue     []feedMark // what seen holds, in the order it was read
	head      int        // queue[:head] has been forgotten
	start     time.Time  // nothing before it is remembered
	cursor    time.Time  // the newest timestamp read
	caughtUp  time.Time  // when a read last reached the end of the feed
	lastStart time.Time  // when the last read started
	lastErr   error
}

// feedMark is one remembered version.
type feedMark struct {
	key uint64
	t   int64
}

const (
	// indexPageSize is the most index.golang.org gives in one page.
	indexPageSize = 2000
	// maxFeedPages bounds one read, however many pages the feed has.
	maxFeedPages = 5000
	// maxFeedLine bounds one line of the feed.
	maxFeedLine = 64 << 10
	// feedPageTimeout bounds the request for one page.
	feedPageTimeout = time.Minute
)

// IndexFeedStatus describes what an IndexFeed knows, for a status page.
type IndexFeedStatus struct {
	// Versions is how many versions are remembered.
	Versions int
	// Since is the start of what is remembered.
	Since time.Time
	// Newest is the timestamp of the newest version read.
	Newest time.Time
	// CaughtUp is when a read last reached the end of the feed; zero if
	// none has yet.
	CaughtUp time.Time
	// Err is the failure of the last read; nil if it succeeded.
	Err error
}

func (f *IndexFeed) window() time.Duration {
	if f.Window <= 0 {
		return 7 * 24 * time.Hour
	}
	return f.Window
}

func (f *IndexFeed) pollInterval() time.Duration {
	if f.PollInterval <= 0 {
		return time.Minute
	}
	return f.PollInterval
}

func (f *IndexFeed) logger() *slog.Logger {
	if f.Logger != nil {
		return f.Logger
	}
	return slog.Default()
}

// Status reports what f knows.
func (f *IndexFeed) Status() IndexFeedStatus {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return IndexFeedStatus{Versions: len(f.seen), Since: f.start, Newest: f.cursor, CaughtUp: f.caughtUp, Err: f.lastErr}
}

// FeedLag is how long after a version is first fetched it may take to
// appear in an index feed: index.golang.org lists a version a few minutes
// after proxy.golang.org first serves it. See IndexFeed.Local.
const FeedLag = 10 * time.Minute

// FirstSeen implements [FirstSeenSource]: when path@version appeared in the
// feed, or, for a version it does not remember, the start of its Window;
// it fails for a version Local saw too recently to tell (see Local). Until
// the feed has been read to its end (or when it has not been for ten
// polls), a version it does not list is dated by Local's record, and fails
// without one.
func (f *IndexFeed) FirstSeen(ctx context.Context, path, version string) (time.Time, error) {
	f.init()
	f.refreshInBackground()
	key := f.key(path, version)
	f.mu.RLock()
	t, listed := f.seen[key]
	start, newest, caughtUp, lastErr := f.start, f.cursor, f.caughtUp, f.lastErr
	f.mu.RUnlock()
	seen := time.Unix(0, t)
	if !listed {
		var unread error
		switch {
		case caughtUp.IsZero() && lastErr != nil:
			unread = fmt.Errorf("the index feed has not been read yet: %w", lastErr)
		case caughtUp.IsZero():
			unread = errors.New("the index feed has not been read yet")
		case time.Since(caughtUp) > 10*f.pollInterval():
			unread = fmt.Errorf("the index feed has not been read since %s", caughtUp.UTC().Format(time.RFC3339))
		}
		if unread != nil {
			// Until the feed is read (after every start, for minutes
			// against index.golang.org), what this proxy saw itself
			// dates the versions it has: a restart does not hold back
			// every cached version. Only the unseen wait for the feed.
			if f.Local != nil {
				if local, err := f.Local.FirstSeen(ctx, path, version); err == nil && !local.IsZero() {
					return local, nil
				}
			}
			return time.Time{}, unread
		}
		seen = start
	}
	if f.Local == nil {
		return seen, nil
	}
	local, err := f.Local.FirstSeen(ctx, path, version)
	switch {
	case err != nil || local.IsZero():
		// Nothing known here: the feed alone decides.
	case listed && local.Before(seen):
		seen = local
	case !listed && local.After(newest.Add(-FeedLag)):
		// Seen here after the feed's newest entries (less the feed's
		// lag): new and not in the feed yet, or older than the feed
		// remembers; the feed tells once it has moved past.
		return time.Time{}, fmt.Errorf("first seen here %s ago and not in the index feed yet, whose newest entry is from %s; the feed tells by %s whether it is new",
			roughDuration(time.Since(local)), newest.UTC().Format("2006-01-02 15:04 MST"), local.Add(FeedLag).UTC().Format("15:04 MST"))
	}
	return seen, nil
}

func (f *IndexFeed) init() {
	f.initOnce.Do(func() {
		f.seed = maphash.MakeSeed()
		f.seen = make(map[uint64]int64)
	})
}

func (f *IndexFeed) key(path, version string) uint64 {
	var h maphash.Hash
	h.SetSeed(f.seed)
	h.WriteString(path)
	h.WriteByte(0)
	h.WriteString(version)
	// 64 bits: two versions of a million share a key with a chance of
	// about 1 in 10^7, and then one of them looks newer than it is.
	return h.Sum64()
}

// refreshInBackground starts a read if the last one is older than
// PollInterval and none is under way.
func (f *IndexFeed) refreshInBackground() {
	f.mu.RLock()
	due := time.Since(f.lastStart) >= f.pollInterval()
	f.mu.RUnlock()
	if !due || !f.update.TryLock() {
		return
	}
	f.bg.Add(1)
	go func() {
		defer f.bg.Done()
		defer f.update.Unlock()
		f.read(context.Background())
	}()
}

// Update reads the feed from where the last read stopped (or from the
// start of the Window) to its end, waiting for a read under way to end
// first. It returns the read's error; what was read before an error is
// kept.
func (f *IndexFeed) Update(ctx context.Context) error {
	f.update.Lock()
	defer f.update.Unlock()
	return f.read(ctx)
}

// read reads the feed to its end. The caller holds f.update.
func (f *IndexFeed) read(ctx context.Context) error {
	f.init()
	now := time.Now()
	f.mu.Lock()
	if f.start.IsZero() {
		f.start = now.Add(-f.window())
		f.cursor = f.start
	}
	f.lastStart = now
	f.mu.Unlock()
	err := f.readPages(ctx)
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
	if err != nil {
		f.logger().LogAttrs(ctx, slog.LevelWarn, "reading the index feed failed", slog.String("feed", redactURL(f.URL)), slog.String("error", err.Error()))
	}
	return err
}

func (f *IndexFeed) readPages(ctx context.Context) error {
	if f.URL == "" {
		return errors.New("the index feed has no URL")
	}
	u, err := url.Parse(f.URL)
	if err != nil {
		// Not the parser's error: it would repeat the URL, which may
		// hold credentials.
		return errors.New("the index feed's URL cannot be parsed")
	}
	limit := f.pageSize
	if limit <= 0 {
		limit = indexPageSize
	}
	added := 0
	for range maxFeedPages {
		f.mu.RLock()
		since := f.cursor
		f.mu.RUnlock()
		q := u.Query()
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
		q.Set("limit", strconv.Itoa(limit))
		u.RawQuery = q.Encode()
		page, err := f.readPage(ctx, u.String(), limit)
		if err != nil {
			return err
		}
		n, newest := f.remember(page)
		added += n
		if len(page) < limit {
			f.mu.Lock()
			f.caughtUp = time.Now()
			f.mu.Unlock()
			f.logger().LogAttrs(ctx, slog.LevelDebug, "read the index feed", slog.String("feed", redactURL(f.URL)), slog.Int("new", added))
			return nil
		}
		if !newest.After(since) {
			// A full page of one timestamp: asking again from it would
			// give the same page forever. What else has that timestamp
			// is lost.
			f.logger().LogAttrs(ctx, slog.LevelWarn, "index feed page without progress; skipping a nanosecond",
				slog.String("feed", redactURL(f.URL)), slog.Time("since", since))
			f.mu.Lock()
			f.cursor = since.Add(time.Nanosecond)
			f.mu.Unlock()
		}
	}
	return fmt.Errorf("the index feed did not end after %d pages", maxFeedPages)
}

// readPage fetches one page and decodes its valid lines.
func (f *IndexFeed) readPage(ctx context.Context, pageURL string, limit int) ([]IndexEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, feedPageTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pageURL, nil)
	if err != nil {
		return nil, err
	}
	client := f.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		// The error names the URL; it may hold credentials.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("reading the index feed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading the index feed: %s", resp.Status)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, int64(limit+1)*maxFeedLine))
	sc.Buffer(make([]byte, 0, 4096), maxFeedLine)
	var page []IndexEntry
	bad := 0
	tooNew := time.Now().Add(time.Minute)
	for len(page) < limit && sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var e IndexEntry
		if err := json.Unmarshal(line, &e); err != nil || e.Timestamp.IsZero() || e.Timestamp.After(tooNew) ||
			module.Check(e.Path, e.Version) != nil || module.CanonicalVersion(e.Version) != e.Version {
			// Counted in the page, so that a page of bad lines is
			// still read past; skipped.
			bad++
			page = append(page, IndexEntry{})
			continue
		}
		page = append(page, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the index feed: %w", err)
	}
	if bad > 0 {
		f.logger().LogAttrs(ctx, slog.LevelWarn, "index feed lines skipped", slog.String("feed", redactURL(f.URL)), slog.Int("lines", bad))
	}
	return page, nil
}

// remember records the entries of a page, forgets what is older than the
// Window or past MaxEntries, and returns how many versions were new and
// the newest timestamp of the page.
func (f *IndexFeed) remember(page []IndexEntry) (added int, newest time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range page {
		if e.Path == "" {
			continue
		}
		if e.Timestamp.After(newest) {
			newest = e.Timestamp
		}
		if e.Timestamp.Before(f.start) {
			continue
		}
		key := f.key(e.Path, e.Version)
		if _, ok := f.seen[key]; ok {
			continue
		}
		f.seen[key] = e.Timestamp.UnixNano()
		f.queue = append(f.queue, feedMark{key, e.Timestamp.UnixNano()})
		added++
	}
	if newest.After(f.cursor) {
		f.cursor = newest
	}
	f.forget()
	return added, newest
}

// forget drops what is older than the Window, and the oldest versions
// past MaxEntries. The caller holds f.mu.
func (f *IndexFeed) forget() {
	if start := time.Now().Add(-f.window()); start.After(f.start) {
		f.start = start
	}
	maxEntries := f.MaxEntries
	if maxEntries <= 0 {
		maxEntries = 1 << 20
	}
	start := f.start.UnixNano()
	for f.head < len(f.queue) {
		m := f.queue[f.head]
		if m.t >= start && len(f.seen) <= maxEntries {
			break
		}
		if m.t >= start {
			// Forgotten for room: the memory now starts after it.
			start = m.t + 1
			f.start = time.Unix(0, start)
		}
		if f.seen[m.key] == m.t {
			delete(f.seen, m.key)
		}
		f.head++
	}
	if f.head > len(f.queue)/2 {
		f.queue = append(f.queue[:0], f.queue[f.head:]...)
		f.head = 0
	}
}
