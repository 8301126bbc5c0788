package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"

	"github.com/goproxy-team/goproxy"
)

// cacheSnapshot is what a walk of a repository's stores found.
type cacheSnapshot struct {
	Scanned   time.Time // when the walk ended
	Took      time.Duration
	Err       string    // why the walk failed, if it did
	Cached    storeSize // the cache
	Published storeSize // the hosted store
	// Modules are the modules with a version cached or published, by path.
	Modules []moduleSummary
}

// storeSize is the size of a store.
type storeSize struct {
	Bytes   int64
	Entries int64
	// Walkable is false for a store that cannot be listed.
	Walkable bool
}

// moduleSummary is a module as a store walk saw it.
type moduleSummary struct {
	Path      string
	Cached    int   // versions in the cache
	Published int   // versions in the hosted store
	Bytes     int64 // of the versions' files and the module's lists, in both
}

// storeWalkSource gives the status page what a walk of a repository's
// stores found: nil before the first walk. The cache's size is the
// newer of the walk's and the last eviction run's (cacheStatsSource);
// the module list is the walk's.
type storeWalkSource interface {
	cacheSnapshot(repo string) *cacheSnapshot
}

// cacheScanner walks the stores of every repository now and then, one
// repository at a time, and keeps what it found. A repository can be
// asked for again at once (after an admin action changed it).
type cacheScanner struct {
	logger *slog.Logger
	// measured, if set, is told the cache's size found by each walk.
	measured func(repo string, size cacheSize)

	mu    sync.Mutex
	snaps map[string]*cacheSnapshot // by repository name
	due   map[string]bool           // asked for before the next round
	kick  chan struct{}
}

func newCacheScanner(logger *slog.Logger) *cacheScanner {
	return &cacheScanner{logger: logger, snaps: map[string]*cacheSnapshot{}, due: map[string]bool{},
		kick: make(chan struct{}, 1)}
}

func (c *cacheScanner) cacheSnapshot(repo string) *cacheSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snaps[repo]
}

// rescan asks for repo to be walked again soon.
func (c *cacheScanner) rescan(repo string) {
	c.mu.Lock()
	c.due[repo] = true
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run walks every repository that state returns, every interval, until
// ctx ends. interval is read again after each round (a reload may
// change it).
func (c *cacheScanner) run(ctx context.Context, state func() *serverState) {
	next := time.Now()
	for {
		st := state()
		if st.plan.cfg.Status.Disabled {
			// No page to show it on: look again after a reload.
			next = time.Now().Add(time.Minute)
		} else if !time.Now().Before(next) {
			for _, r := range st.repos {
				c.scanRepo(ctx, r)
			}
			next = time.Now().Add(time.Duration(st.plan.cfg.Status.ScanInterval))
			c.forget(st)
		} else {
			c.mu.Lock()
			due := c.due
			c.due = map[string]bool{}
			c.mu.Unlock()
			for _, r := range st.repos {
				if due[r.Name] {
					c.scanRepo(ctx, r)
				}
			}
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-c.kick:
			t.Stop()
		}
	}
}

// forget drops the snapshots of repositories no longer served.
func (c *cacheScanner) forget(st *serverState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.snaps {
		if !slices.ContainsFunc(st.repos, func(r *repository) bool { return r.Name == name }) {
			delete(c.snaps, name)
		}
	}
}

func (c *cacheScanner) scanRepo(ctx context.Context, r *repository) {
	start := time.Now()
	snap := &cacheSnapshot{}
	mods := map[string]*moduleSummary{}
	err := scanStore(ctx, r.inst.proxy.Cacher, false, &snap.Cached, mods)
	if r.inst.proxy.Hosted != nil {
		err = errors.Join(err, scanStore(ctx, r.inst.proxy.Hosted, true, &snap.Published, mods))
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		snap.Err = err.Error()
		c.logger.Warn("walking the cache for the status page", "repository", r.Name, "error", err)
	}
	for _, m := range mods {
		if m.Cached+m.Published > 0 {
			snap.Modules = append(snap.Modules, *m)
		}
	}
	slices.SortFunc(snap.Modules, func(a, b moduleSummary) int { return cmp.Compare(a.Path, b.Path) })
	snap.Scanned = time.Now()
	snap.Took = snap.Scanned.Sub(start)
	c.mu.Lock()
	c.snaps[r.Name] = snap
	c.mu.Unlock()
	if c.measured != nil && err == nil && snap.Cached.Walkable {
		// As of the walk's start: an eviction run that ended during it
		// may have removed what it counted.
		c.measured(r.Name, cacheSize{Bytes: snap.Cached.Bytes, Entries: snap.Cached.Entries, At: start, By: "walk", Known: true})
	}
}

// scanStore walks a store, adding up its size into size and its modules
// into mods.
func scanStore(ctx context.Context, c goproxy.Cacher, published bool, size *storeSize, mods map[string]*moduleSummary) error {
	if _, ok := c.(goproxy.CacheWalker); !ok {
		return nil
	}
	size.Walkable = true
	seen := map[string]bool{} // module@version, counted once for its three files
	return walkEntries(ctx, c, "", func(name string, n int64, _ time.Time) error {
		size.Bytes += n
		size.Entries++
		path, version, ok := parseCacheName(name)
		if !ok {
			return nil // a checksum database tile, or a name not ours
		}
		m := mods[path]
		if m == nil {
			m = &moduleSummary{Path: path}
			mods[path] = m
		}
		m.Bytes += n
		if version != "" && !seen[path+"@"+version] {
			seen[path+"@"+version] = true
			if published {
				m.Published++
			} else {
				m.Cached++
			}
		}
		return nil
	})
}

// walkEntries calls fn for every entry of c whose name starts with
// prefix, with its size and time: from the listing itself where the store
// lists them (an object store: no request per entry), else from a Stat of
// each. Entries removed while the walk goes on are skipped.
func walkEntries(ctx context.Context, c goproxy.Cacher, prefix string, fn func(name string, size int64, modTime time.Time) error) error {
	if w, ok := c.(goproxy.CacheInfoWalker); ok {
		return w.WalkInfo(ctx, prefix, func(e goproxy.CacheEntryInfo) error { return fn(e.Name, e.Size, e.ModTime) })
	}
	walker, ok := c.(goproxy.CacheWalker)
	if !ok {
		return nil
	}
	return walker.Walk(ctx, prefix, func(name string) error {
		n, err := entrySize(ctx, c, name)
		if err != nil {
			return nil // removed meanwhile
		}
		t, err := modTime(ctx, c, name)
		if err != nil {
			return nil
		}
		return fn(name, n, t)
	})
}

// entrySize returns the size of an entry, statting it if the store can.
func entrySize(ctx context.Context, c goproxy.Cacher, name string) (int64, error) {
	if s, ok := c.(goproxy.CacheStater); ok {
		fi, err := s.Stat(ctx, name)
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	f, err := c.Get(ctx, name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

// parseCacheName finds the module of a cache name and, for the .info,
// .mod and .zip of a canonical version, the version.
func parseCacheName(name string) (path, version string, ok bool) {
	escPath, file, found := strings.Cut(name, "/@v/")
	if !found {
		escPath, found = strings.CutSuffix(name, "/@latest")
		if !found {
			return "", "", false
		}
	}
	path, err := module.UnescapePath(escPath)
	if err != nil {
		return "", "", false
	}
	for _, ext := range []string{".info", ".mod", ".zip"} {
		if escVersion, ok := strings.CutSuffix(file, ext); ok {
			v, err := module.UnescapeVersion(escVersion)
			if err == nil && module.CanonicalVersion(v) == v {
				return path, v, true
			}
		}
	}
	return path, "", true
}

// versionFiles is a version of a module, as the module page shows it.
type versionFiles struct {
	Version   string
	Published bool
	Files     []string // .info, .mod, .zip: those stored
	Bytes     int64
	Time      time.Time // when it was stored
}

// moduleVersions lists the versions of a module in a repository's
// stores, newest first, and the size of its other entries (lists,
// @latest, query answers).
func moduleVersions(ctx context.Context, p *goproxy.Proxy, modPath string) (versions []versionFiles, otherBytes int64, err error) {
	escPath, err := module.EscapePath(modPath)
	if err != nil {
		return nil, 0, err
	}
	byVersion := map[string]*versionFiles{}
	walk := func(c goproxy.Cacher, published bool) error {
		return walkEntries(ctx, c, escPath+"/@", func(name string, n int64, mt time.Time) error {
			if !strings.HasPrefix(name, escPath+"/@v/") && name != escPath+"/@latest" {
				return nil
			}
			_, version, _ := parseCacheName(name)
			if version == "" {
				otherBytes += n
				return nil
			}
			v := byVersion[version]
			if v == nil {
				v = &versionFiles{Version: version}
				byVersion[version] = v
			}
			v.Published = v.Published || published
			v.Files = append(v.Files, strings.TrimPrefix(name, escPath+"/@v/"+mustEscapeVersion(version)))
			v.Bytes += n
			if strings.HasSuffix(name, ".info") {
				v.Time = mt
			}
			return nil
		})
	}
	if err := walk(p.Cacher, false); err != nil {
		return nil, 0, fmt.Errorf("walking the cache for %s: %w", modPath, err)
	}
	if p.Hosted != nil {
		if err := walk(p.Hosted, true); err != nil {
			return nil, 0, fmt.Errorf("walking the hosted store for %s: %w", modPath, err)
		}
	}
	for _, v := range byVersion {
		slices.Sort(v.Files)
		v.Files = slices.Compact(v.Files) // in the cache and the hosted store
		versions = append(versions, *v)
	}
	slices.SortFunc(versions, func(a, b versionFiles) int { return semver.Compare(b.Version, a.Version) })
	return versions, otherBytes, nil
}

func mustEscapeVersion(v string) string {
	e, _ := module.EscapeVersion(v)
	return e
}

// modTime returns when name was stored.
func modTime(ctx context.Context, c goproxy.Cacher, name string) (time.Time, error) {
	if s, ok := c.(goproxy.CacheStater); ok {
		fi, err := s.Stat(ctx, name)
		if err != nil {
			return time.Time{}, err
		}
		return fi.ModTime(), nil
	}
	f, err := c.Get(ctx, name)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	return f.ModTime(), nil
}
