package goproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"
)

// escapeURLPath escapes a cache name for a URL: names hold decoded query
// versions, which may contain '%', '#' or spaces that must reach the
// upstream as the go command sent them, never decoded a second time.
func escapeURLPath(name string) string {
	return (&url.URL{Path: name}).EscapedPath()
}

// errProxyOff answers requests that reach "off", in the go command's words.
var errProxyOff = failed(failRefused, "module lookup disabled by GOPROXY=off")

// fetchFromUpstreams walks req's route, following the go command's rules
// for GOPROXY: after ',' fall through only when the upstream says the file
// does not exist, after '|' on any error. Within a group of equal
// priority, each request starts with the next upstream in turn and falls
// through to the others on any failure. The error returned is the one the
// go command would report (cmd/go/internal/modfetch.TryProxies), of the
// upstreams in the order they were asked: direct's, else the last proxy
// failure other than a not-found, else the last not-found ("off" counts
// as one).
func (p *Proxy) fetchFromUpstreams(ctx context.Context, req *request) (*fetched, error) {
	const (
		notFoundRank = iota
		proxyRank
		directRank
	)
	var bestErr error
	bestRank := notFoundRank
	passing := false // an upstream failed in a way that may soon pass
	for _, g := range p.routeFor(req.modPath).groups {
		n := uint32(len(g.members))
		first := g.next.Add(1) - 1
		fallThrough := true
		for k := range n {
			up := g.members[(first+k)%n]
			f, err := p.fetchFrom(ctx, up, req)
			if err == nil {
				return f, nil
			}
			if ctx.Err() != nil || publisherFrom(ctx).published() {
				// Clients hold this upstream's bytes already: another's
				// cannot follow them.
				return nil, err
			}
			passing = passing || !remembered(err)
			missing := notFound(err)
			switch {
			case up.URL == "direct":
				bestErr, bestRank = err, directRank
			case bestRank <= proxyRank && !missing && up.URL != "off":
				bestErr, bestRank = err, proxyRank
			case bestRank == notFoundRank:
				bestErr = err
			}
			if !missing && !up.FallBackOnError {
				fallThrough = false
			}
		}
		if !fallThrough {
			break
		}
	}
	var f *failure
	if passing && remembered(bestErr) && errors.As(bestErr, &f) {
		// The answer chosen holds, but the walk's outcome also rests on
		// a failure that may pass: the next request must walk again.
		c := *f
		c.mayPass = true
		return nil, &c
	}
	return nil, bestErr
}

// fetchFrom gets req's file from one upstream, validates it and verifies
// it against the checksum database. A zip is handed to the clients waiting
// for it while it arrives, all but its end (see zipstream.go), and checked
// as it lands.
func (p *Proxy) fetchFrom(ctx context.Context, up Upstream, req *request) (f *fetched, err error) {
	if up.URL == "off" {
		return nil, errProxyOff
	}
	if err := p.cannotVerify(req); err != nil {
		// Reported as any verification is.
		return nil, p.verify(ctx, req, nil)
	}
	start := time.Now()
	upstream := redactURL(up.URL)
	ctx, tracked := p.trackFetch(ctx, req, upstream)
	var zs *zipStream
	if up.URL == "direct" {
		f, err = p.fetchDirect(ctx, req)
	} else {
		t := target{module: req.modPath, version: req.version, toFile: req.kind == kindZip, limit: req.maxSize(),
			probe: up.URL + "/"}
		if req.kind == kindZip {
			zs = newZipStream()
			if pub := publisherFrom(ctx); pub != nil {
				zs.publish = pub.publish
			}
			// Whatever happens, the readers stop: a panic too.
			defer zs.finish(errors.New("the fetch ended"))
			t.sink = zs
		}
		f, err = p.downloader.get(ctx, up.URL+"/"+escapeURLPath(req.name), t)
		if zs != nil {
			f, err = zs.downloaded(f, err)
		}
	}
	if err == nil {
		meterFrom(ctx).step() // validating takes time, bringing no bytes
		err = req.validate(f)
		if err == nil && req.kind == kindZip && !p.verifies(req) {
			// Hashing for the checksum database reads every entry, which
			// checks their CRCs; without it, they are checked here.
			err = checkZipEntries(ctx, f)
		}
		if err != nil {
			err = failed(failInvalidContent, "invalid %s from upstream %s: %w", req, redactURL(up.URL), err)
		} else if err = p.verify(ctx, req, f); errors.Is(err, errUnverified) {
			f.unverified, err = true, nil
		}
	}
	if zs != nil {
		zs.finish(err)
	}
	if err != nil && f != nil {
		f.close()
		f = nil
	}
	tracked(f, err)
	outcome := "ok"
	var size int64
	if f != nil {
		size = f.size
	} else {
		outcome = err.Error()
	}
	p.logger().LogAttrs(ctx, levelFor(err), "upstream fetch",
		slog.String("module", req.modPath), slog.String("version", req.version), slog.String("file", req.name),
		slog.String("upstream", upstream), slog.Int64("bytes", size),
		slog.Duration("duration", time.Since(start)), slog.String("outcome", outcome))
	return f, err
}

// refuseDowngrade follows redirects as net/http does, except from https to
// http, which the go command refuses too: what was asked over a secure
// connection must not arrive over an insecure one.
func refuseDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing the redirect from %s to insecure %s", redactURL(via[0].URL.String()), redactURL(req.URL.String()))
	}
	return nil
}

// fetch gets req's file from the upstreams and caches it, sharing the work
// with concurrent requests for the same file. Not-found answers are
// remembered for NotFoundTTL. The caller must call release when done.
func (p *Proxy) fetch(ctx context.Context, req *request) (f *fetched, release func(), err error) {
	if p.conf.offline {
		// Every fetch comes here, whoever asks (a client, a fill, the
		// checksum verifier, a prefetch): offline, none may leave.
		return nil, nil, errOffline(req)
	}
	if err := p.notFound.get(req.name); err != nil {
		return nil, nil, err
	}
	// The checksum database's answer for the version will be needed by
	// its .mod and .zip: it is asked for now, beside the download.
	p.startLookup(ctx, req)
	var storeLater func(context.Context, *fetched)
	var claim *fetchClaim // taken by the fetch, given up once the file is stored
	if !req.mutable() {
		// Immutable files are stored while the waiting clients are
		// served: a write (and its fsync) to a disk or an object store
		// need not delay them, and any copy is as good as another.
		storeLater = func(ctx context.Context, f *fetched) {
			defer claim.done()
			ctx, cancel := context.WithTimeout(ctx, p.conf.download.Timeout)
			defer cancel()
			p.store(ctx, req, f)
		}
	}
	var started atomic.Bool // this caller's fetch ran: it shared none
	f, release, err = p.flights.do(ctx, req.name, func(ctx context.Context) (*fetched, error) {
		started.Store(true)
		ctx = withEgressModule(ctx, req.modPath)
		ctx, cancel := context.WithTimeout(ctx, p.conf.download.Timeout)
		defer cancel()
		if storeLater == nil {
			return p.fetchFromSources(ctx, req)
		}
		// A fetch that ended just before this one started stored the
		// file after the caller looked for it (unless the caller found
		// it stored but unreadable).
		if cf, err := p.conf.cacher.Get(ctx, req.name); err == nil {
			cf.Close()
			if !cacheUnreadable(ctx, req.name) {
				return nil, errStoredMeanwhile
			}
		}
		// Other proxies sharing the cache may be fetching it.
		var err error
		if claim, err = p.claimFetch(ctx, req); err != nil {
			return nil, err
		}
		handedOver := false // to storeLater, which runs after a success
		defer func() {
			if !handedOver {
				claim.done()
			}
		}()
		f, err := p.fetchFromSources(ctx, req)
		handedOver = err == nil
		return f, err
	}, storeLater)
	if !started.Load() && ctx.Err() == nil && req.client {
		p.conf.metrics.sharedFetch(SharedFetchMetric{Kind: req.metricKind()})
	}
	return f, release, err
}

// fetchFromSources gets req's file from the checksum database or the
// upstreams, remembering a lasting failure, and stores a mutable file.
func (p *Proxy) fetchFromSources(ctx context.Context, req *request) (*fetched, error) {
	var f *fetched
	var err error
	if req.kind == kindSumDB {
		f, err = p.fetchFromSumDB(ctx, req)
	} else {
		f, err = p.fetchFromUpstreams(ctx, req)
	}
	if remembered(err) {
		p.notFound.put(req.name, err)
	}
	if err == nil && req.mutable() {
		// Stored before anyone is served, so that a later fetch's
		// newer answer can never be overwritten by this one.
		p.store(ctx, req, f)
	}
	return f, err
}

// errStoredMeanwhile tells the callers of a fetch that the file is in the
// cache now: an earlier fetch stored it while they looked for it.
var errStoredMeanwhile = errors.New("stored by an earlier fetch meanwhile")

// remembered reports whether a failed fetch's answer holds for NotFoundTTL:
// a not-found, or a refusal, which the go command's probing of module path
// prefixes would repeat, unless the walk that chose it also met a failure
// that may pass.
func remembered(err error) bool {
	var f *failure
	return kindOf(err).lasting() && !(errors.As(err, &f) && f.mayPass)
}

// store puts what was fetched into the cache, unless it is unverified.
func (p *Proxy) store(ctx context.Context, req *request, f *fetched) {
	if f.unverified {
		return
	}
	var content io.ReadSeeker = timedReader{f.reader(), f.modTime}
	if f.file != nil {
		content = fileContent{timedReader{f.reader(), f.modTime}, f.file, f.size}
	}
	if err := p.conf.cacher.Put(ctx, req.name, content); err != nil {
		// What is served was validated; the next request tries again.
		p.logger().LogAttrs(ctx, slog.LevelError, "cache put failed", slog.String("file", req.name), slog.String("error", err.Error()))
		p.conf.metrics.storeError(StoreErrorMetric{Role: StoreCache, Op: StorePut})
		return
	}
	p.evictor.noteStored(f.size)
	if req.kind == kindInfo && req.canonical {
		p.feed.add(ctx, req.modPath, req.version, time.Now())
	}
}

func levelFor(err error) slog.Level {
	if err == nil || notFound(err) {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// timedReader is content for Cacher.Put with the time it was fetched, which
// a Cacher keeps as the entry's ModTime: the answers from the cache then
// have the validators of the answer that fetched it.
type timedReader struct {
	io.ReadSeeker
	modTime time.Time
}

func (t timedReader) ModTime() time.Time { return t.modTime }

// ReadAt lets a Cacher read the content at offsets, as an object store
// uploading parts of a large file several at once does: without it one
// must hold a whole part in memory per upload. What a fetch brings always
// reads at offsets (a section of its file, or bytes in memory).
func (t timedReader) ReadAt(p []byte, off int64) (int, error) {
	if ra, ok := t.ReadSeeker.(io.ReaderAt); ok {
		return ra.ReadAt(p, off)
	}
	return 0, errors.ErrUnsupported
}

// fileContent is content for Cacher.Put that is the whole of a file on
// disk (a downloaded zip, verified, which nothing writes any more): a
// DirCacher copies it file to file, in the kernel where the system can.
type fileContent struct {
	timedReader
	file *os.File
	size int64
}

// backingFile returns the file whose first size bytes are the content.
func (c fileContent) backingFile() (*os.File, int64) { return c.file, c.size }
