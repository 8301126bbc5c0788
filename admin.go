package goproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/module"
)

// Administration endpoints. Their paths cannot be module paths: "index"
// has no dot in its first element, and no module path element starts
// with "-".
const (
	indexPath  = "/index"
	cachedPath = "/-/cached/"
)

// maxIndexLimit caps one page of the index feed, as index.golang.org does.
const maxIndexLimit = 2000

// indexEntry is one line of the index feed.
type indexEntry struct {
	Path      string
	Version   string
	Timestamp time.Time
}

// versionIndex lists module versions in the order they entered the cache
// or were published. It is built from the cache the first time it is asked
// for, then kept up to date as versions arrive.
type versionIndex struct {
	mu      sync.Mutex
	loaded  bool
	entries []indexEntry // by Timestamp
	seen    map[string]bool
}

// add records a version that just entered the cache. Before the index is
// loaded there is nothing to do: loading finds it.
func (x *versionIndex) add(path, version string, t time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.loaded || x.seen[path+"@"+version] {
		return
	}
	x.seen[path+"@"+version] = true
	x.entries = append(x.entries, indexEntry{path, version, t.UTC()})
}

func (x *versionIndex) remove(path, version string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.seen[path+"@"+version] {
		return
	}
	delete(x.seen, path+"@"+version)
	x.entries = slices.DeleteFunc(x.entries, func(e indexEntry) bool { return e.Path == path && e.Version == version })
}

// load builds the index from the .info files of the cache and the hosted
// store, timed by when they were stored.
func (p *Proxy) loadIndex(ctx context.Context) error {
	x := &p.index
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.loaded {
		return nil
	}
	// Built aside and kept only when complete: a failed walk leaves the
	// index unloaded and empty, for the next request to try again.
	seen := map[string]bool{}
	var entries []indexEntry
	for _, c := range []Cacher{p.conf.cacher, p.conf.hosted} {
		walker, ok := c.(CacheWalker)
		if !ok {
			continue
		}
		err := walker.Walk(ctx, "", func(name string) error {
			path, version, ok := versionInfoName(name)
			if !ok || seen[path+"@"+version] {
				return nil
			}
			t, err := modTime(ctx, c, name)
			if err != nil {
				return nil
			}
			seen[path+"@"+version] = true
			entries = append(entries, indexEntry{path, version, t.UTC()})
			return nil
		})
		if err != nil {
			return err
		}
	}
	slices.SortStableFunc(entries, func(a, b indexEntry) int { return a.Timestamp.Compare(b.Timestamp) })
	x.seen, x.entries, x.loaded = seen, entries, true
	return nil
}

// modTime returns when name was stored, without opening it if c can stat.
func modTime(ctx context.Context, c Cacher, name string) (time.Time, error) {
	if s, ok := c.(CacheStater); ok {
		fi, err := s.Stat(ctx, name)
		if err != nil {
			return time.Time{}, err
		}
		return fi.ModTime(), nil
	}
	cf, err := c.Get(ctx, name)
	if err != nil {
		return time.Time{}, err
	}
	defer cf.Close()
	return cf.ModTime(), nil
}

// versionInfoName recognizes the cache name of a canonical version's .info.
func versionInfoName(name string) (path, version string, ok bool) {
	escPath, file, found := strings.Cut(name, "/@v/")
	if !found {
		return "", "", false
	}
	escVersion, found := strings.CutSuffix(file, ".info")
	if !found {
		return "", "", false
	}
	path, err := module.UnescapePath(escPath)
	if err != nil {
		return "", "", false
	}
	version, err = module.UnescapeVersion(escVersion)
	if err != nil || module.CanonicalVersion(version) != version {
		return "", "", false
	}
	return path, version, true
}

// serveIndex answers /index?since=RFC3339&limit=N with newline-delimited
// JSON, oldest first, in the format of index.golang.org.
func (p *Proxy) serveIndex(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if s := r.URL.Query().Get("since"); s != "" {
		var err error
		if since, err = time.Parse(time.RFC3339, s); err != nil {
			p.writeFailure(w, failed(failBadRequest, "since must be an RFC 3339 time: %w", err))
			return
		}
	}
	limit := maxIndexLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			p.writeFailure(w, failed(failBadRequest, "limit must be a positive number"))
			return
		}
		limit = min(n, maxIndexLimit)
	}
	if err := p.loadIndex(r.Context()); err != nil {
		p.writeFailure(w, failed(failInternal, "reading the cache for the index: %w", err))
		return
	}
	p.index.mu.Lock()
	i, _ := slices.BinarySearchFunc(p.index.entries, since, func(e indexEntry, t time.Time) int { return e.Timestamp.Compare(t) })
	page := slices.Clone(p.index.entries[i:min(i+limit, len(p.index.entries))])
	p.index.mu.Unlock()
	var body []byte
	for _, e := range page {
		line, _ := json.Marshal(e)
		body = append(append(body, line...), '\n')
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}

// isPublished reports whether the version whose names start with base
// ("<module>/@v/<version>") is published.
func (p *Proxy) isPublished(ctx context.Context, base string) bool {
	if p.conf.hosted == nil {
		return false
	}
	cf, err := p.conf.hosted.Get(ctx, base+".info")
	if err != nil {
		return false
	}
	cf.Close()
	return true
}

// serveCached answers /-/cached/<module>: the names cached for a module,
// published ones apart.
func (p *Proxy) serveCached(w http.ResponseWriter, r *http.Request, modPath, escPath string) {
	list := func(c Cacher) ([]string, error) {
		walker, ok := c.(CacheWalker)
		if !ok {
			return nil, nil
		}
		var names []string
		err := walker.Walk(r.Context(), escPath+"/", func(name string) error {
			if strings.HasPrefix(name, escPath+"/@") {
				names = append(names, name)
			}
			return nil
		})
		slices.Sort(names)
		return names, err
	}
	cached, err := list(p.conf.cacher)
	if err != nil {
		p.writeFailure(w, failed(failInternal, "%w", err))
		return
	}
	var published []string
	if p.conf.hosted != nil {
		if published, err = list(p.conf.hosted); err != nil {
			p.writeFailure(w, failed(failInternal, "%w", err))
			return
		}
	}
	body, _ := json.MarshalIndent(struct {
		Path      string
		Cached    []string
		Published []string
	}{modPath, cached, published}, "", "\t")
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}

// serveDelete removes cached entries so that the next request fetches them
// again: DELETE of a version's .info, .mod or .zip removes all three;
// DELETE of a module's list or @latest removes its mutable entries (list,
// @latest, query answers). Published versions never change and are not
// removed.
func (p *Proxy) serveDelete(w http.ResponseWriter, r *http.Request, req *request) {
	deleter, ok := p.conf.cacher.(CacheDeleter)
	if !ok || req.kind == kindSumDB {
		p.writeFailure(w, failed(failNotImplemented, "this cache cannot remove entries"))
		return
	}
	ctx := r.Context()
	escPath, _ := module.EscapePath(req.modPath)
	var names []string
	switch {
	case req.kind == kindList || req.kind == kindLatest:
		names = append(names, escPath+"/@v/list", escPath+"/@latest")
		if walker, ok := p.conf.cacher.(CacheWalker); ok {
			walker.Walk(ctx, escPath+"/@v/", func(name string) error {
				if _, _, canonical := versionInfoName(name); !canonical && strings.HasSuffix(name, ".info") {
					names = append(names, name)
				}
				return nil
			})
		}
		p.notFound.forget(escPath + "/")
	case req.canonical:
		escVersion, _ := module.EscapeVersion(req.version)
		base := escPath + "/@v/" + escVersion
		names = append(names, base+".info", base+".mod", base+".zip")
		if !p.isPublished(ctx, base) {
			p.index.remove(req.modPath, req.version)
		}
	default:
		p.writeFailure(w, failed(failBadRequest, "only canonical versions, lists and @latest can be removed"))
		return
	}
	for _, name := range names {
		if err := deleter.Delete(ctx, name); err != nil {
			p.writeFailure(w, failed(failInternal, "removing %s: %w", name, err))
			return
		}
		if p.hot != nil {
			p.hot.Delete(name)
		}
		p.notFound.forget(name)
	}
	p.logger().Info("removed from the cache", "module", req.modPath, "version", req.version, "files", len(names))
	writeMessage(w, http.StatusOK, fmt.Sprintf("removed %d cached files of %s", len(names), req))
}
