package goproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strconv"
	"time"
)

// content is a file ready to serve, from the cache or just fetched.
type content struct {
	io.ReadSeeker
	modTime time.Time
	etag    string
	// stale marks a mutable entry past its time, served because it could
	// not be refreshed (or fetching was disabled).
	stale bool
	hot   *hotFile // set when the content is a hot file
	close func()
}

// open finds req's file: in the cache while it is valid, else from
// upstream unless mayFetch is false, falling back on a stale cached copy
// of a mutable entry when every upstream fails. The caller must call
// close on the result.
func (p *Proxy) open(ctx context.Context, req *request, mayFetch bool) (*content, error) {
	if h, ok := p.hotGet(req); ok {
		return h.content(), nil
	}
	if c, ok, err := p.openHosted(ctx, req); ok || err != nil {
		return c, err
	}
	if c, ok, err := p.openMerged(ctx, req, mayFetch); ok || err != nil {
		return c, err
	}
	return p.openUpstream(ctx, req, mayFetch)
}

// openUpstream is open for files that are not published: from the cache,
// or from the upstreams.
func (p *Proxy) openUpstream(ctx context.Context, req *request, mayFetch bool) (*content, error) {
	// A version published while this runs must not be shadowed by the
	// upstream copy in the hot cache.
	gen := p.hotGen()
	ttl := p.ttl(req)
	cached, err := p.cacheGet(ctx, req)
	if err == nil {
		age := time.Since(cached.ModTime())
		if !req.mutable() || age < ttl || !mayFetch {
			p.logger().LogAttrs(ctx, slog.LevelDebug, "cache hit", slog.String("file", req.name))
			if h, ok := p.hotPut(req, cached, cached.ModTime(), etagOf(cached), gen); ok {
				cached.Close()
				return h.content(), nil
			}
			return &content{ReadSeeker: cached, modTime: cached.ModTime(), etag: etagOf(cached),
				stale: req.mutable() && age >= ttl, close: func() { cached.Close() }}, nil
		}
	} else {
		cached = nil
		if !mayFetch {
			// Not to be kept by shared caches: other clients may fetch.
			return nil, failed(failNotCached, "%s is not cached and Disable-Module-Fetch is set", req)
		}
	}
	f, release, err := p.fetch(ctx, req)
	if errors.Is(err, errStoredMeanwhile) {
		if cached, err := p.cacheGet(ctx, req); err == nil {
			return &content{ReadSeeker: cached, modTime: cached.ModTime(), etag: etagOf(cached), close: func() { cached.Close() }}, nil
		}
		f, release, err = p.fetch(ctx, req)
	}
	if err != nil {
		if cached == nil {
			return nil, err
		}
		if notFound(err) || ctx.Err() != nil {
			cached.Close()
			return nil, err
		}
		p.logger().LogAttrs(ctx, slog.LevelWarn, "serving stale", slog.String("file", req.name), slog.String("error", err.Error()))
		return &content{ReadSeeker: cached, modTime: cached.ModTime(), etag: etagOf(cached), stale: true, close: func() { cached.Close() }}, nil
	}
	if cached != nil {
		cached.Close()
	}
	if !f.unverified {
		if h, ok := p.hotPut(req, f.reader(), f.modTime, "", gen); ok {
			release()
			return h.content(), nil
		}
	}
	return &content{ReadSeeker: f.reader(), modTime: f.modTime, etag: fmt.Sprintf(`"%x-%x"`, f.modTime.UnixNano(), f.size), close: release}, nil
}

// ttl is how long a mutable entry of req's kind stays fresh.
func (p *Proxy) ttl(req *request) time.Duration {
	if req.db != nil {
		return p.conf.sumDBTTL
	}
	return p.conf.mutableTTL
}

// cacheControl says how long clients and shared caches may keep c.
func (p *Proxy) cacheControl(req *request, c *content) string {
	switch {
	case !req.mutable():
		return p.cacheScope() + ", max-age=31536000, immutable"
	case c.stale:
		return "no-cache"
	}
	return p.cacheScope() + ", max-age=" + strconv.Itoa(int(p.ttl(req).Seconds()))
}

// cacheScope is "public", unless access is controlled: then a shared cache
// in front of the proxy must not hand one user's answers to another.
func (p *Proxy) cacheScope() string {
	if p.conf.authorize != nil {
		return "private"
	}
	return "public"
}

// cacheGet looks req up in the cache. A cache that fails is logged and
// treated as a miss: the upstreams can still answer.
func (p *Proxy) cacheGet(ctx context.Context, req *request) (CachedFile, error) {
	cf, err := p.conf.cacher.Get(ctx, req.name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		p.logger().LogAttrs(ctx, slog.LevelError, "cache get failed", slog.String("file", req.name), slog.String("error", err.Error()))
	}
	return cf, err
}
