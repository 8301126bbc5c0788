package goproxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// indexLog keeps the proxy's module index feed (/index) in the cacher's
// [CacheIndexLog], or in memory for a cacher without one. The feed is
// created once from a walk of the cache and the hosted store (the
// migration from caches that had none); from then on versions are appended
// as they are stored or published, and pages are read from the log.
type indexLog struct {
	log    CacheIndexLog
	stores []Cacher // walked to create the feed: the cache, then the hosted store
	logger *slog.Logger

	prepareMu sync.Mutex // one creation at a time

	mu      sync.Mutex
	ready   bool         // the feed is known to exist
	pending []IndexEntry // added while it did not
}

// maxPendingIndex bounds the entries kept while the feed is being created.
// Past it they are dropped: the walk that creates the feed finds every
// version stored before it passes, so only those stored during the walk
// itself depend on being kept.
const maxPendingIndex = 100_000

// newIndexLog keeps the feed in cacher if it can, else in memory; hosted
// (which may be nil) is walked with it when the feed is created.
func newIndexLog(cacher, hosted Cacher, logger *slog.Logger) *indexLog {
	x := &indexLog{logger: logger, stores: []Cacher{cacher}}
	if hosted != nil {
		x.stores = append(x.stores, hosted)
	}
	if l, ok := cacher.(CacheIndexLog); ok {
		x.log = l
	} else {
		x.log = &memIndexLog{}
	}
	return x
}

// persistent reports whether the feed outlives the process, which makes it
// worth creating at start rather than at the first request for it.
func (x *indexLog) persistent() bool {
	_, inMemory := x.log.(*memIndexLog)
	return !inMemory
}

// add lists a version that was just stored or published.
func (x *indexLog) add(ctx context.Context, path, version string, t time.Time) {
	e := IndexEntry{Path: path, Version: version, Timestamp: t.UTC()}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.ready {
		err := x.log.AppendIndex(ctx, []IndexEntry{e})
		if err == nil {
			return
		}
		if !errors.Is(err, fs.ErrNotExist) {
			x.logger.LogAttrs(ctx, slog.LevelError, "adding to the index feed failed",
				slog.String("module", path), slog.String("version", version), slog.String("error", err.Error()))
			return
		}
		x.ready = false // removed from under us: create it again
	}
	if len(x.pending) < maxPendingIndex {
		x.pending = append(x.pending, e)
	}
}

// page returns up to limit entries listed at or after since, creating the
// feed first if it does not exist.
func (x *indexLog) page(ctx context.Context, since time.Time, limit int) ([]IndexEntry, error) {
	if err := x.prepare(ctx); err != nil {
		return nil, err
	}
	entries, err := x.log.ReadIndex(ctx, since, limit)
	if errors.Is(err, fs.ErrNotExist) {
		x.mu.Lock()
		x.ready = false
		x.mu.Unlock()
		if err = x.prepare(ctx); err == nil {
			entries, err = x.log.ReadIndex(ctx, since, limit)
		}
	}
	return entries, err
}

// prepare makes sure the feed exists, creating it from a walk of the stores
// if it does not, then appends what was added meanwhile.
func (x *indexLog) prepare(ctx context.Context) error {
	x.mu.Lock()
	ready := x.ready
	x.mu.Unlock()
	if ready {
		return nil
	}
	x.prepareMu.Lock()
	defer x.prepareMu.Unlock()
	var listed map[string]bool // of the entries pending, those the feed lists already
	_, err := x.log.ReadIndex(ctx, time.Time{}, 1)
	if errors.Is(err, fs.ErrNotExist) {
		start := time.Now()
		var entries []IndexEntry
		if entries, err = x.walk(ctx); err != nil {
			return fmt.Errorf("listing the cache for the index feed: %w", err)
		}
		walked := make(map[string]bool, len(entries))
		for _, e := range entries {
			walked[e.Path+"@"+e.Version] = true
		}
		// Versions added during the walk go in now, unless it found them.
		x.mu.Lock()
		taken := x.pending
		for _, e := range taken {
			if !walked[e.Path+"@"+e.Version] {
				entries = append(entries, e)
			}
		}
		x.pending = nil
		x.mu.Unlock()
		err = x.log.CreateIndex(ctx, entries)
		if err != nil {
			// Kept for the next try, or, when another process created
			// the feed first (from a walk that may have passed before
			// this process stored them), appended below: a version
			// twice in the feed beats one missing, and those the feed
			// lists already are left out.
			x.mu.Lock()
			x.pending = append(taken, x.pending...)
			x.mu.Unlock()
		}
		if errors.Is(err, fs.ErrExist) {
			listed, err = x.listed(ctx, taken)
		} else if err == nil && len(entries) > 0 { // a cache that predates the feed: worth a line
			x.logger.LogAttrs(ctx, slog.LevelInfo, "created the index feed from the cache",
				slog.Int("versions", len(entries)), slog.Duration("took", time.Since(start)))
		}
	}
	if err != nil {
		return fmt.Errorf("reading the index feed: %w", err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	pending := slices.DeleteFunc(x.pending, func(e IndexEntry) bool { return listed[e.Path+"@"+e.Version] })
	if err := x.log.AppendIndex(ctx, pending); err != nil {
		return fmt.Errorf("adding to the index feed: %w", err)
	}
	x.pending, x.ready = nil, true
	return nil
}

// listed returns which of entries the feed lists, reading it from a
// minute before the earliest of them (a version is listed at its storing,
// which comes before its adding).
func (x *indexLog) listed(ctx context.Context, entries []IndexEntry) (map[string]bool, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	since := entries[0].Timestamp
	for _, e := range entries {
		if e.Timestamp.Before(since) {
			since = e.Timestamp
		}
	}
	since = since.Add(-time.Minute)
	listed := map[string]bool{}
	for {
		page, err := x.log.ReadIndex(ctx, since, 2000)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			return listed, nil
		}
		for _, e := range page {
			listed[e.Path+"@"+e.Version] = true
		}
		since = page[len(page)-1].Timestamp.Add(time.Nanosecond)
	}
}

// walk lists the canonical versions in the stores, timed by when their
// .info was stored, each version once.
func (x *indexLog) walk(ctx context.Context) ([]IndexEntry, error) {
	seen := map[string]bool{}
	var entries []IndexEntry
	found := func(name string, t time.Time) {
		path, version, ok := versionInfoName(name)
		if ok && !seen[path+"@"+version] {
			seen[path+"@"+version] = true
			entries = append(entries, IndexEntry{Path: path, Version: version, Timestamp: t.UTC()})
		}
	}
	for _, c := range x.stores {
		var err error
		switch c := c.(type) {
		case CacheInfoWalker:
			err = c.WalkInfo(ctx, "", func(e CacheEntryInfo) error {
				found(e.Name, e.ModTime)
				return nil
			})
		case CacheWalker:
			err = c.Walk(ctx, "", func(name string) error {
				if _, _, ok := versionInfoName(name); ok {
					if t, err := modTime(ctx, c.(Cacher), name); err == nil {
						found(name, t)
					}
				}
				return nil
			})
		}
		if err != nil {
			return nil, err
		}
	}
	return entries, nil
}

// memIndexLog is a [CacheIndexLog] in memory, for MemCacher and for
// cachers that keep no feed of their own.
type memIndexLog struct {
	mu      sync.Mutex
	created bool
	entries []IndexEntry // by Timestamp, strictly increasing
}

func (l *memIndexLog) AppendIndex(ctx context.Context, entries []IndexEntry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.created {
		return fmt.Errorf("appending to the index feed: %w", fs.ErrNotExist)
	}
	var last time.Time
	if n := len(l.entries); n > 0 {
		last = l.entries[n-1].Timestamp
	}
	start := len(l.entries)
	l.entries = append(l.entries, entries...)
	spreadTimestamps(l.entries[start:], last)
	return nil
}

func (l *memIndexLog) ReadIndex(ctx context.Context, since time.Time, limit int) ([]IndexEntry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.created {
		return nil, fmt.Errorf("reading the index feed: %w", fs.ErrNotExist)
	}
	i, _ := slices.BinarySearchFunc(l.entries, since, func(e IndexEntry, t time.Time) int { return e.Timestamp.Compare(t) })
	return slices.Clone(l.entries[i:min(i+limit, len(l.entries))]), nil
}

func (l *memIndexLog) CreateIndex(ctx context.Context, entries []IndexEntry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.created {
		return fmt.Errorf("creating the index feed: %w", fs.ErrExist)
	}
	l.entries = slices.Clone(entries)
	slices.SortStableFunc(l.entries, func(a, b IndexEntry) int { return a.Timestamp.Compare(b.Timestamp) })
	spreadTimestamps(l.entries, time.Time{})
	l.created = true
	return nil
}
