package goproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
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
// JSON, oldest first, in the format of index.golang.org, from the feed
// kept on the cache (see indexLog): a page is read from there, whatever
// the size of the feed.
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
	page, err := p.feed.page(r.Context(), since, limit)
	if err != nil {
		p.writeFailure(w, failed(failInternal, "%w", err))
		return
	}
	var body []byte
	for _, e := range page {
		body = indexLine(body, e)
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
		// The index feed keeps listing it, as index.golang.org lists
		// what entered the proxy: a feed only grows.
		names = append(names, base+".info", base+".mod", base+".zip")
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
