package goproxy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// hostedVersions lists the published versions of a module.
func (p *Proxy) hostedVersions(ctx context.Context, escPath string) ([]string, error) {
	if p.conf.hosted == nil {
		return nil, nil
	}
	walker, ok := p.conf.hosted.(CacheWalker)
	if !ok {
		return nil, nil
	}
	prefix := escPath + "/@v/"
	var versions []string
	err := walker.Walk(ctx, prefix, func(name string) error {
		rest := strings.TrimPrefix(name, prefix)
		if escVersion, ok := strings.CutSuffix(rest, ".info"); ok && !strings.Contains(rest, "/") {
			if v, err := module.UnescapeVersion(escVersion); err == nil {
				versions = append(versions, v)
			}
		}
		return nil
	})
	return versions, err
}

// openPublished returns a published file, if req asks for one. A version
// counts as published once its .info is stored, which Publish does last.
// A Hosted store that fails is an error, not a miss: falling through
// would send a private module's path upstream.
func (p *Proxy) openPublished(ctx context.Context, req *request) (*content, bool, error) {
	if p.conf.hosted == nil || req.kind == kindSumDB || req.mutable() {
		return nil, false, nil
	}
	gen := p.hotGen()
	name := req.name
	if req.kind != kindInfo {
		name = strings.TrimSuffix(strings.TrimSuffix(name, ".zip"), ".mod") + ".info"
	}
	info, err := p.conf.hosted.Get(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		p.conf.metrics.storeError(StoreErrorMetric{Role: StoreHosted, Op: StoreGet})
		return nil, false, failed(failUnavailable, "reading the published versions: %w", err)
	}
	cf := info
	if req.kind != kindInfo {
		info.Close()
		if cf, err = p.conf.hosted.Get(ctx, req.name); err != nil {
			return nil, false, failed(failUnavailable, "reading the published %s: %w", req, err)
		}
	}
	c, err := storedContent(req, cf, fromPublished, &p.hostedMemo)
	if err != nil {
		return nil, false, failed(failUnavailable, "reading the published %s: %w", req, err)
	}
	return p.keepHot(req, c, gen), true, nil
}

// mergeQuery reports whether req's answer merges published versions with
// the upstreams' (a list, @latest, or a version query: the .info of
// "latest", "v1" or "v1.2"), and the query of an .info.
func mergeQuery(req *request) (query string, ok bool) {
	switch {
	case req.kind == kindList, req.kind == kindLatest:
		return "", true
	case req.kind == kindInfo && !req.canonical && (req.version == "latest" || isVersionPrefix(req.version)):
		return req.version, true
	}
	return "", false
}

// publishedVersions lists the published versions that req's answer must
// take into account: none unless it is a list, @latest or version query.
func (p *Proxy) publishedVersions(ctx context.Context, req *request) ([]string, error) {
	if _, ok := mergeQuery(req); !ok || p.conf.hosted == nil {
		return nil, nil
	}
	escPath, _ := module.EscapePath(req.modPath)
	versions, err := p.hostedVersions(ctx, escPath)
	if err != nil {
		p.conf.metrics.storeError(StoreErrorMetric{Role: StoreHosted, Op: StoreList})
		return nil, failed(failUnavailable, "listing the published versions of %s: %w", req.modPath, err)
	}
	return versions, nil
}

// mergePublished answers a list, @latest or version query for a module
// with published versions: the published ones merged with the upstreams'
// answer (upstream, which may be nil when they failed) by the go command's
// rules, a published version winning over an upstream one.
func (p *Proxy) mergePublished(ctx context.Context, req *request, published []string, upstream *content) (*content, error) {
	query, _ := mergeQuery(req)
	var body []byte
	if upstream != nil {
		body, _ = io.ReadAll(io.LimitReader(upstream.reader(), maxListSize))
		upstream.close()
	}
	if req.kind == kindList {
		seen := map[string]bool{}
		var all []string
		for _, v := range append(strings.Fields(string(body)), published...) {
			if !seen[v] && semver.IsValid(v) {
				seen[v] = true
				all = append(all, v)
			}
		}
		semver.Sort(all)
		return memContent([]byte(strings.Join(all, "\n")+"\n"), time.Now(), fromMerged), nil
	}

	best := ""
	var upInfo struct{ Version string }
	if json.Unmarshal(body, &upInfo) == nil && semver.IsValid(upInfo.Version) && matchesQuery(upInfo.Version, query) {
		best = upInfo.Version
	}
	fromUpstream := best != ""
	for _, v := range published {
		if matchesQuery(v, query) && (best == "" || preferLatest(v, best)) {
			best, fromUpstream = v, false
		}
	}
	switch {
	case best == "":
		return nil, failed(failNotFound, "%s: no matching versions for query %q", req.modPath, cmp.Or(query, "latest"))
	case !fromUpstream:
		escPath, _ := module.EscapePath(req.modPath)
		escVersion, _ := module.EscapeVersion(best)
		cf, err := p.conf.hosted.Get(ctx, escPath+"/@v/"+escVersion+".info")
		if err != nil {
			return nil, failed(failUnavailable, "reading the published %s@%s.info: %w", req.modPath, best, err)
		}
		body, err = io.ReadAll(io.LimitReader(cf, maxInfoSize))
		cf.Close()
		if err != nil {
			return nil, failed(failUnavailable, "reading the published %s@%s.info: %w", req.modPath, best, err)
		}
	}
	return memContent(body, time.Now(), fromMerged), nil
}

// isVersionPrefix reports whether q is a query for the newest version with
// a major, or major and minor, version: "v1" or "v1.2".
func isVersionPrefix(q string) bool {
	return semver.IsValid(q) && semver.Canonical(q) != q && semver.Prerelease(q) == "" && semver.Build(q) == "" && strings.Count(q, ".") < 2
}

// matchesQuery reports whether v answers the query: any version for
// "latest" (or no query), the same major or major.minor for a prefix.
func matchesQuery(v, query string) bool {
	switch {
	case query == "" || query == "latest":
		return true
	case strings.Contains(query, "."):
		return semver.MajorMinor(v) == query
	}
	return semver.Major(v) == query
}

// preferLatest reports whether a is a better @latest than b, as the go
// command chooses: a release over a pre-release over a pseudo-version,
// then the higher version.
func preferLatest(a, b string) bool {
	rank := func(v string) int {
		switch {
		case module.IsPseudoVersion(v):
			return 0
		case semver.Prerelease(v) != "":
			return 1
		}
		return 2
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra > rb
	}
	return semver.Compare(a, b) > 0
}

// sharedStore reports whether two stores evidently share files: one
// value, or two directories one of which holds the other. A walk of the
// outer directory (eviction's, the index feed's) lists the inner one's
// files as its own: published versions would be evicted as cached ones,
// or cached versions pass for published ones.
func sharedStore(a, b Cacher) bool {
	if a == nil || b == nil {
		return false
	}
	if da, ok := a.(DirCacher); ok {
		db, ok := b.(DirCacher)
		return ok && (dirWithin(string(da), string(db)) || dirWithin(string(db), string(da)))
	}
	if ma, ok := a.(*MemCacher); ok {
		mb, ok := b.(*MemCacher)
		return ok && ma == mb
	}
	return false
}

// dirWithin reports whether directory inner is outer or lies under it,
// as their paths say.
func dirWithin(outer, inner string) bool {
	o, err1 := filepath.Abs(outer)
	i, err2 := filepath.Abs(inner)
	if err1 != nil || err2 != nil {
		return filepath.Clean(outer) == filepath.Clean(inner)
	}
	rel, err := filepath.Rel(o, i)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
