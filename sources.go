package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strconv"
	"time"
)

// A file is read from a chain of sources, the first that has it
// answering: the hot tier (memory), the published store (Hosted), the
// cache (Cacher) and the upstreams. open walks the chain for clients. The
// checksum verifier reads through sumDBFile instead, which asks the hot
// tier and openStored only: nothing published is a checksum database's.

// provenance says which source answered a request.
type provenance int

const (
	fromHot       provenance = iota // the hot tier, in memory
	fromPublished                   // the published store
	fromMerged                      // published versions merged with the upstreams' answer
	fromCache                       // a fresh copy from the cache: a hit
	fromStale                       // a cached copy past its time, the upstreams failing or not asked
	fromUpstream                    // fetched for this request: a miss
)

// String names the provenance in logs and metrics.
func (o provenance) String() string {
	switch o {
	case fromHot:
		return "hot"
	case fromPublished:
		return "published"
	case fromMerged:
		return "merged"
	case fromCache:
		return "hit"
	case fromStale:
		return "stale"
	case fromUpstream:
		return "miss"
	}
	return "provenance(" + strconv.Itoa(int(o)) + ")"
}

// content is a file ready to serve, from whichever source had it.
type content struct {
	// body reads the content; nil for content in memory, which reader
	// reads.
	body io.ReadSeeker
	// data is the whole content when it is in memory: every file but a
	// zip, which the body reads from a file.
	data    []byte
	modTime time.Time
	etag    string
	from    provenance
	hot     *hotFile // set when the content is a hot file
	// stream is set for a zip that clients read while it arrives.
	stream *zipStream
	close  func()
}

// memContent is content held in memory, data never modified.
func memContent(data []byte, modTime time.Time, o provenance) *content {
	return &content{data: data, modTime: modTime, etag: digestETag(data), from: o, close: func() {}}
}

// reader returns a reader of the content from its start.
func (c *content) reader() io.ReadSeeker {
	if c.body != nil {
		return c.body
	}
	return bytes.NewReader(c.data)
}

// storedContent is req's file as read from a store: a zip read from it
// as it is served, anything else (all size-capped) read into memory,
// closing cf.
//
// memo, if not nil, remembers what it read (see storedMemo).
func storedContent(req *request, cf CachedFile, o provenance, memo *storedMemo) (*content, error) {
	if req.kind == kindZip {
		etag, err := storedETagOf(cf)
		if err != nil {
			cf.Close()
			return nil, err
		}
		var body io.ReadSeeker = cf
		if df, ok := cf.(*dirFile); ok {
			body = df.File // sent with sendfile
		}
		return &content{body: body, modTime: cf.ModTime(), etag: etag, from: o, close: func() { cf.Close() }}, nil
	}
	defer cf.Close()
	modTime := cf.ModTime()
	var data []byte
	var err error
	df, sized := cf.(*dirFile)
	var ident fs.FileInfo
	if sized {
		ident = df.info
	}
	switch {
	case sized && df.size <= req.maxSize():
		if f, ok := memo.lookup(req.name, modTime, df.size, ident); ok {
			return &content{data: f.data, modTime: modTime, etag: f.etag, from: o, close: func() {}}, nil
		}
		// Its size is known: one read, no buffer grown on the way.
		data = make([]byte, df.size)
		if _, err = io.ReadFull(df.File, data); err != nil {
			return nil, err
		}
	default:
		if data, err = io.ReadAll(io.LimitReader(cf, req.maxSize()+1)); err != nil {
			return nil, err
		}
	}
	if int64(len(data)) > req.maxSize() {
		return nil, fmt.Errorf("%s is larger than its limit of %d bytes", req.name, req.maxSize())
	}
	return &content{data: data, modTime: modTime, etag: memo.etag(req.name, modTime, ident, data, sized), from: o, close: func() {}}, nil
}

// fetchedContent is what a fetch brought, served until release to a
// client whose request lives in ctx.
func fetchedContent(ctx context.Context, f *fetched, release func()) *content {
	if f.file != nil {
		return &content{body: f.readerFor(ctx), modTime: f.modTime, etag: storedETag(f.modTime, f.size), from: fromUpstream,
			stream: f.stream, close: release}
	}
	c := memContent(f.data, f.modTime, fromUpstream)
	c.close = release
	return c
}

// open finds req's file for a client: in the hot tier, among the
// published versions, in the cache while it is fresh, else from the
// upstreams unless mayFetch is false, falling back on a stale cached copy
// of a mutable entry when every upstream fails. Lists, @latest and version
// queries take the published versions into account. The caller must call
// close on the result.
func (p *Proxy) open(ctx context.Context, req *request, mayFetch bool) (*content, error) {
	// The admission policy first: a refused version is not served from
	// anywhere. (A prefetch asked it before it came here, as a fetch of
	// the proxy's own, not a client's request.)
	if !prefetching(ctx) {
		if err := p.admitFile(ctx, req, mayFetch); err != nil {
			return nil, err
		}
	}
	if c, ok := p.openHot(req); ok {
		return c, nil
	}
	// Taken before the published store is asked: a version published
	// after that look must not be shadowed by the upstream copy that
	// openStored may then put in the hot tier.
	gen := p.hotGen()
	if c, ok, err := p.openPublished(ctx, req); ok || err != nil {
		return c, err
	}
	published, err := p.publishedVersions(ctx, req)
	if err != nil {
		return nil, err
	}
	c, err := p.openStored(ctx, req, mayFetch, gen)
	if len(published) > 0 {
		// The upstreams failing does not hide the published versions.
		c, err = p.mergePublished(ctx, req, published, c)
	}
	if err != nil {
		return nil, err
	}
	return p.admitAnswer(ctx, req, c, published, mayFetch)
}

// openHot returns req's file from the hot tier, if it is there.
func (p *Proxy) openHot(req *request) (*content, bool) {
	h, ok := p.hotGet(req)
	if !ok {
		return nil, false
	}
	return h.content(fromHot), true
}

// openStored returns req's file from the cache while it is fresh, else
// from the upstreams unless mayFetch is false, falling back on the stale
// cached copy of a mutable entry when they fail. What it reads is kept in
// the hot tier only if its generation is still gen (see hotGen): a version
// published since must not be shadowed by the upstream copy.
func (p *Proxy) openStored(ctx context.Context, req *request, mayFetch bool, gen uint64) (*content, error) {
	mayFetch = mayFetch && !p.conf.offline
	cached := p.cacheGet(ctx, req)
	if p.conf.offline && req.kind == kindList {
		cached = p.offlineList(ctx, req, cached)
	}
	if cached != nil {
		age := time.Since(cached.modTime)
		fresh := !req.mutable() || age < p.ttl(req)
		if !fresh && mayFetch && p.revalidates(req, age) {
			// Answered now; the next client gets the refreshed copy.
			p.revalidate(req)
			mayFetch = false
		}
		if fresh || !mayFetch {
			if !fresh {
				cached.from = fromStale
			}
			return p.keepHot(req, cached, gen), nil
		}
	} else if !mayFetch {
		if p.conf.offline {
			return nil, errOffline(req)
		}
		// Not to be kept by shared caches: other clients may fetch.
		return nil, failed(failNotCached, "%s is not cached and Disable-Module-Fetch is set", req)
	}
	f, release, err := p.fetch(ctx, req)
	for try := 0; errors.Is(err, errStoredMeanwhile) && try < 2; try++ {
		if c := p.cacheGet(ctx, req); c != nil {
			return c, nil
		}
		// Stored, yet it cannot be read (the failure is logged): fetch it
		// as if it were not, and store it again, rather than fail.
		f, release, err = p.fetch(withCacheUnreadable(ctx, req.name), req)
	}
	if err != nil {
		if cached == nil || notFound(err) || ctx.Err() != nil {
			if cached != nil {
				cached.close()
			}
			return nil, err
		}
		p.logger().LogAttrs(ctx, slog.LevelWarn, "serving stale", slog.String("file", req.name), slog.String("error", err.Error()))
		cached.from = fromStale
		return cached, nil
	}
	if cached != nil {
		cached.close()
	}
	c := fetchedContent(ctx, f, release)
	if f.unverified {
		return c, nil
	}
	return p.keepHot(req, c, gen), nil
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
	case c.from == fromStale:
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

// cacheGet returns req's file from the cache, or nil. A cache that fails
// is logged and treated as a miss: the upstreams can still answer.
func (p *Proxy) cacheGet(ctx context.Context, req *request) *content {
	cf, err := p.conf.cacher.Get(ctx, req.name)
	if err == nil {
		var c *content
		if c, err = storedContent(req, cf, fromCache, &p.storedMemo); err == nil {
			return c
		}
	}
	if !errors.Is(err, fs.ErrNotExist) {
		p.logger().LogAttrs(ctx, slog.LevelError, "cache get failed", slog.String("file", req.name), slog.String("error", err.Error()))
		p.conf.metrics.storeError(StoreErrorMetric{Role: StoreCache, Op: StoreGet})
	}
	return nil
}
