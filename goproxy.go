package goproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/sync/semaphore"

	"github.com/goproxy-team/goproxy/internal/lru"
)

// Proxy is an [http.Handler] serving the Go module proxy protocol. Mount it at
// the root of a server, or under a prefix with [http.StripPrefix].
//
// The zero value is ready to use. Set the fields before calling Init (or
// before the first request, which calls it): Init takes its own copy of
// them, slices and maps included, so changes made afterwards are not seen.
type Proxy struct {
	// Cacher stores what the proxy has fetched. If nil, a [DirCacher] in the
	// "goproxy" directory of [os.UserCacheDir] is used.
	Cacher Cacher

	// Env holds the go command's settings the proxy follows, in the form of
	// [os.Environ]: GOPROXY (the upstreams), GONOPROXY, GOPRIVATE, GOSUMDB
	// (the checksum database that every .mod and .zip is verified against
	// before it is cached), GONOSUMDB, GOINSECURE (for direct fetches) and
	// NETRC. They mean what they mean to the go command, with the same
	// defaults (GOPROXY=https://proxy.golang.org,direct,
	// GOSUMDB=sum.golang.org). The go command run for direct fetches gets
	// this environment too. Env also holds the egress proxy variables
	// (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, ALL_PROXY, SOCKS5_PROXY, in
	// upper or lower case) for a Dialer whose own Env is nil: once Env is
	// set, the process's are not read. If nil, the process environment is
	// read when the Proxy is initialized.
	Env []string

	// Transport makes the requests to upstreams and checksum databases.
	// If nil, one is built from Dialer. The Egress policy checks the
	// connections of that one; of a Transport of your own, only redirects.
	Transport http.RoundTripper

	// Dialer sets up outbound connections when Transport is nil, and
	// those of the go command for direct fetches: the egress proxy, DNS
	// resolvers and timeouts. A Dialer whose Env is nil reads the proxy
	// variables from the Proxy's Env (or, when that is nil too, from the
	// process environment). If nil, a zero Dialer is used: those proxy
	// variables and the system resolver.
	Dialer *Dialer

	// MutableTTL is how long a version list, @latest answer or query answer is
	// served from the cache before it is fetched again. Zero means one minute;
	// a negative value means it is always fetched again. A cached answer past
	// its time is still served, marked stale, when every upstream fails.
	MutableTTL time.Duration

	// NotFoundTTL is how long the proxy remembers that the upstreams have no
	// such file, so that the go command's probing of module path prefixes
	// does not repeat upstream requests. Zero means one minute; a negative
	// value disables the memory.
	NotFoundTTL time.Duration

	// TempDir holds downloads while they are validated, uploads while
	// they are published, and the default directories of
	// DownloadOptions.PartialDir and DirectOptions.Dir. If empty,
	// [os.TempDir] is used.
	TempDir string

	// Routes send modules matching their patterns to upstreams of their
	// own, ahead of GONOPROXY (which goes direct) and GOPROXY. The first
	// matching route wins.
	Routes []Route

	// HotCacheBytes bounds the memory that keeps small immutable files
	// (.info, .mod, checksum database lookups and full tiles), with their
	// compressed forms, in front of Cacher, so the most frequent requests
	// are answered without touching it. Zero means 64 MiB; a negative
	// value disables it. A hot answer shorter than 2 KB leaves its
	// Content-Length to net/http, which works it out when the handler
	// returns: a ResponseWriter wrapped around the proxy that flushes
	// early sends it chunked instead.
	HotCacheBytes int64

	// Hosted stores the module versions published to the proxy, by PUT of
	// a .zip or by Publish. They are served ahead of upstream versions,
	// merged into version lists and @latest, never fetched and never
	// removed, so Hosted must keep everything it is given: a DirCacher or
	// an object store, not a MemCacher, and a DirCacher neither within
	// Cacher's directory nor holding it. If nil, publishing is refused.
	// Published modules are usually private: exempt them from checksum
	// databases with GONOSUMDB or a Private route. Unlike Cacher, a Hosted
	// store that fails answers 502: falling back on the upstreams would
	// send private module paths to them.
	Hosted Cacher

	// Authorize, if set, decides every request: op is what it asks to do
	// and modulePath the module it concerns ("" for requests about no one
	// module, such as checksum database tiles or the index feed). It
	// returns nil to allow; an error wrapping ErrUnauthenticated answers
	// 401 with a WWW-Authenticate challenge, any other error 403.
	// StaticAuth.Authorize is a ready-made one. If nil, everything may be
	// read, published (when Hosted is set) and administered.
	Authorize func(r *http.Request, op Operation, modulePath string) error

	// SumDBs names more checksum databases to serve at /sumdb/<name>/,
	// each "name" or "name URL" (the URL defaults to https://name).
	// sum.golang.org and the database GOSUMDB names are always served;
	// requests for any other database get 404, so the proxy is no open
	// relay.
	SumDBs []string

	// SumDBTTL is how long a checksum database's latest tree and partial
	// tiles are served from the cache before they are fetched again. Full
	// tiles and lookups never change and are kept. Zero means 30 seconds.
	SumDBTTL time.Duration

	// AllowUnverified lets .mod and .zip files through unverified (and
	// uncached) when the checksum database cannot be reached. By default
	// the proxy fails closed and answers 502.
	AllowUnverified bool

	// Direct tunes fetching from origin repositories with the go command.
	Direct DirectOptions

	// Egress decides where the proxy, and the go command and git it runs
	// for direct fetches, may connect. The zero value refuses loopback,
	// link-local, cloud metadata and private addresses, except for the
	// endpoints the configuration names; see [EgressPolicy].
	Egress EgressPolicy

	// Download tunes the download engine: parallel Range requests, retries,
	// resumption and concurrency. The zero value gives sensible defaults.
	Download DownloadOptions

	// Prefetch tunes the prefetching of the go.mod files of the
	// requirements of every go.mod served; see [PrefetchOptions]. The
	// zero value prefetches.
	Prefetch PrefetchOptions

	// Redirect answers requests for cached zips with a redirect to the
	// store, so that the bytes flow from it rather than through the proxy,
	// when the Cacher is a [CacheRedirector]. Off by default; see
	// [DownloadRedirect].
	Redirect DownloadRedirect

	// Eviction removes from the Cacher what nobody uses, and keeps it
	// under a size; see [Eviction]. The zero value evicts nothing. With
	// MaxAge or MaxBytes set, the Cacher must list its entries with their
	// times ([CacheInfoWalker]), keep last uses ([CacheUsageRecorder]) and
	// remove entries ([CacheUnchangedDeleter], or [CacheDeleter]), as
	// DirCacher and MemCacher do, or Init fails. Runs start with the
	// Proxy's first request (or Publish) and end with Close.
	Eviction Eviction

	// Metrics receives the proxy's measurements: requests, upstream
	// fetches, retries, verifications, downloads, shared fetches, cache
	// size, evictions, store errors, admission decisions and prefetches;
	// see [Metrics]. A nil field is not reported, so the zero value
	// reports nothing.
	Metrics Metrics

	// Offline makes the proxy serve only what it has: the cache and the
	// published versions. It never contacts an upstream or a checksum
	// database: version lists, @latest and query answers are served from
	// the cache however old, a version list the cache lacks is made of the
	// versions cached (for a Cacher that is a [CacheWalker]), and what is
	// not cached answers 404 saying that the proxy is offline. For a proxy
	// filled in advance ([Proxy.Fill]) or from a bundle
	// ([Proxy.ImportBundle]) where there is no network. The zero value
	// fetches what is missing, as usual.
	Offline bool

	// StaleWhileRevalidate is how long past MutableTTL a cached version
	// list, @latest or query answer is still answered at once, marked
	// stale, while one fetch in the background refreshes it for the
	// next client. Zero waits for the upstreams as soon as the entry is
	// past its time (and serves the stale copy only when they fail).
	StaleWhileRevalidate time.Duration

	// Scrub re-checks the cached .mod and .zip files against the checksum
	// database and golang.org/x/mod/zip.CheckZip, removing those that no
	// longer pass; see [ScrubOptions] and [Proxy.ScrubNow]. The zero value
	// never scrubs on its own.
	Scrub ScrubOptions

	// Admission, if set, decides which module versions the proxy serves,
	// lists and fetches; [AdmissionPolicy.Decide] is a ready-made one. It
	// is asked about every version of a list being served (those it does
	// not list are left out), about the answer of @latest and of version
	// queries (resolved first: when the answer is not listed, @latest and
	// the queries "latest", "v1" and "v1.2" answer the highest version of
	// the filtered list that matches, by the go command's preference of a
	// release over a pre-release over a pseudo-version), about every
	// request for a version's .info, .mod or .zip, and before a prefetch,
	// fill or import fetches a version. A refused version answers 403
	// Forbidden with the decision's reason, never 404 or 410, which would
	// send the go command on to its next GOPROXY entry; a version hidden
	// is served when asked for by name. Decisions other than the zero one
	// are logged and reported to Metrics.Admission. It is called on the
	// serving path, from many goroutines: it must be quick (look-ups in
	// memory). If nil, every version is admitted.
	//
	// The Proxy keeps its own record of when it first saw each version:
	// in an upstream's list, as the answer to @latest or a query, or
	// asked for by name (once its list or .info shows that it exists: a
	// name alone must not start the clock of a release not made yet),
	// admitted or not. It is kept in the Cacher (one
	// small entry per module, under firstseen/, never evicted) and read
	// by [Proxy.FirstSeen], which makes the Proxy a FirstSeenSource for a
	// Cooldown. The record is kept only while Admission is set.
	Admission func(ctx context.Context, c AdmissionCandidate) AdmissionDecision

	// Logger receives one line per upstream fetch, and one per answer at
	// debug level, saying where the file came from. If nil,
	// [slog.Default] is used.
	Logger *slog.Logger

	initOnce      sync.Once
	initErr       error
	conf          *config
	downloader    *downloader
	routes        []*route
	hot           *lru.Cache[*hotFile]
	hotMu         sync.Mutex // orders hot-cache writes with publishing
	hotGeneration uint64
	sumdbs        map[string]*sumDB
	verifier      *sumDB
	flights       flightGroup
	notFound      notFoundMemo
	direct        *directRunner
	via           string // the Via entry of this proxy's upstream requests
	publishing    keyedMutex
	feed          *indexLog // the /index feed
	downloads     downloadTracker
	prefetcher    *prefetcher // nil when prefetching is off
	// What was read of the Cacher and of Hosted.
	storedMemo, hostedMemo storedMemo
	revalidating           sync.Map         // names of stale entries being fetched again in the background
	scrubbing              sync.Mutex       // held by the scrub running
	firstSeen              *firstSeenRecord // nil without Admission
	client                 *http.Client     // the upstreams' client; see Client

	// With eviction on: the evictor, the uses gathered for it, and the
	// cache entries being read by clients, which it leaves alone.
	evictor *evictor
	usage   *usageRecorder
	serving servingSet

	// The background work starts with the first use (see start) and ends
	// with Close; what the flight group does not count runs under
	// stopWork and is counted in working.
	lifeMu       sync.Mutex // orders start and Close
	startOnce    sync.Once
	closed       atomic.Bool
	stopWork     context.CancelFunc
	working      sync.WaitGroup
	ownTransport *http.Transport // built by Init, its connections closed by Close

	egress *egressPolicy
	dialer *Dialer // Dialer, checking every connection with egress
	// directEgress is egress for the go command's direct fetches: the
	// checksum databases are its only configured endpoints.
	directEgress *egressPolicy
}

// Init validates the configuration and prepares the Proxy. Calling it is
// optional: the first request calls it, and answers 500 with its error. Call
// it at start-up to learn of a bad configuration before serving.
func (p *Proxy) Init() error {
	p.initOnce.Do(func() { p.initErr = p.init() })
	return p.initErr
}

func (p *Proxy) init() error {
	conf, err := p.configure()
	if err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	p.conf = conf
	if sharedStore(conf.cacher, conf.hosted) {
		return errors.New("goproxy: Hosted and Cacher must be different stores, neither directory within the other: published versions would be evicted or removed with cached ones")
	}
	if err := conf.redirect.check(conf.cacher); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	if p.egress, err = newEgressPolicy(conf.egress, conf.logger); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	p.dialer = conf.dialer.withPolicy(p.egress)
	p.directEgress = p.egress.forDirect()
	transport := conf.transport
	if transport == nil {
		t, err := p.dialer.Transport()
		if err != nil {
			return fmt.Errorf("goproxy: %w", err)
		}
		transport, p.ownTransport = t, t
	}
	if err := p.initRoutes(); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	if p.direct, err = newDirectRunner(p); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	transport = newCredentialsTransport(transport, p.routes, conf.goEnv.netrc)
	client := &http.Client{Transport: transport, CheckRedirect: p.egress.checkRedirect(refuseDowngrade)}
	p.client = client
	var id [8]byte
	rand.Read(id[:])
	p.via = "1.1 goproxy-" + hex.EncodeToString(id[:])
	p.downloader = newDownloader(conf.download, client, conf.logger, p.via, conf.tempDir)
	p.downloader.prefetchSem = semaphore.NewWeighted(int64(conf.prefetch.Concurrency))
	if !conf.offline {
		// Offline, nothing may be fetched: there is nothing to prefetch.
		p.prefetcher = newPrefetcher(p, conf.prefetch)
	}
	p.flights.abandonAfter = conf.download.BodyIdleTimeout
	p.notFound.ttl = conf.notFoundTTL
	p.initHotCache()
	if err := p.initSumDBs(); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	p.egress.allowEndpoints(p.configuredEndpoints()...)
	for _, db := range p.sumdbs {
		// The go command verifies direct fetches against them itself.
		p.directEgress.allowEndpoints(db.url)
	}
	p.downloads.metrics = conf.metrics
	p.feed = newIndexLog(conf.cacher, conf.hosted, conf.logger)
	if conf.admission != nil {
		p.firstSeen = newFirstSeenRecord(conf.cacher, conf.logger)
	}
	if err := p.initEviction(); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	return nil
}

// start starts the background work, once, at the Proxy's first use (a
// request or a Publish), rather than in Init, which a configuration check
// may call alone: eviction, and the index feed's creation from the cache
// when it has none yet (once ever, for caches that predate it), so that
// the feed is ready before anyone asks for it, and the removal of what
// processes that died left in the cache. Close ends it.
func (p *Proxy) start() {
	p.startOnce.Do(func() {
		p.lifeMu.Lock()
		defer p.lifeMu.Unlock()
		if p.closed.Load() {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		p.stopWork = cancel
		if p.evictor != nil {
			p.usage.start()
			p.evictor.start()
		}
		if p.conf.scrub.Interval > 0 {
			p.working.Go(func() { p.scrubOnSchedule(ctx) })
		}
		p.working.Go(func() { p.removeLeftovers(ctx) })
		if p.feed.persistent() {
			p.working.Go(func() {
				if err := p.feed.prepare(ctx); err != nil && ctx.Err() == nil {
					p.logger().LogAttrs(ctx, slog.LevelError, "preparing the index feed", slog.String("error", err.Error()))
				}
			})
		}
	})
}

// Close stops what the Proxy does in the background, for a server that is
// shutting down or a Proxy no longer used: it ends eviction (a run under
// way stops where it is) and scheduled scrubs (one under way keeps its
// place for the next), hands the uses of cached files recorded since
// the last flush to the Cacher, ends the probes of upstream hosts that are
// down, cancels the fetches no client waits for any more (a large
// download keeps what it got for the next start), waits for files being
// stored, and closes the idle connections of the Transport Init built.
//
// Call it once the Proxy serves no more requests, after
// [http.Server.Shutdown]: requests that arrive after Close answer 503
// Service Unavailable, and fetches started after it fail. Close returns
// when the background work has ended. Calling it again does nothing;
// closing a Proxy that was never initialized only keeps it from
// starting. The error is for future use: it is always nil today.
func (p *Proxy) Close() error {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.closed.Swap(true) {
		return nil
	}
	p.initOnce.Do(func() { p.initErr = errClosed })
	if p.initErr != nil {
		return nil
	}
	if p.stopWork != nil {
		p.stopWork()
	}
	if p.evictor != nil {
		p.evictor.stop()
		p.usage.close()
	}
	p.downloader.close()
	p.flights.close()
	// Prefetches and checksum lookups run on flights, which fail at
	// once from now on.
	p.prefetcher.close()
	if p.verifier != nil {
		p.verifier.lookups.wait()
	}
	p.working.Wait()
	if p.ownTransport != nil {
		p.ownTransport.CloseIdleConnections()
	}
	return nil
}

// ServeHTTP implements [http.Handler].
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := p.Init(); err != nil {
		if !errors.Is(err, errClosed) {
			err = failed(failInternal, "%w", err)
		}
		p.writeFailure(w, err)
		return
	}
	if p.conf.metrics.Request != nil {
		m := measureResponse(w, r)
		defer func() {
			if v := recover(); v != nil {
				p.reportRequestPanicking(m, v)
			}
			p.reportRequest(m)
		}()
		w = m
	}
	if isOperationPath(r.URL.Path) {
		noteRequestKind(w, RequestAdmin)
		p.serveOperation(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete:
	default:
		p.writeFailure(w, &failure{kind: failMethod, allow: "GET, HEAD, PUT, DELETE", msg: "method " + r.Method + " is not allowed"})
		return
	}
	if p.closed.Load() {
		p.writeFailure(w, errClosed)
		return
	}
	p.start()
	for _, via := range r.Header.Values("Via") {
		if strings.Contains(via, p.via) {
			// Waiting for our own fetch would only end at its timeout.
			p.writeFailure(w, failed(failLoop, "this proxy is its own upstream: check GOPROXY and the routes"))
			return
		}
	}
	if raw := r.URL.RawPath; raw != "" && (strings.Contains(raw, "%2F") || strings.Contains(raw, "%2f")) {
		// Decoded, it would pass for a path separator. (RawPath is set
		// whenever the path had escapes that its decoding would lose.)
		p.writeFailure(w, failed(failBadRequest, "the path holds an encoded slash (%%2F), which the go command never sends"))
		return
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && p.hot != nil {
		// The most frequent request: a small immutable file in memory,
		// whose path was checked when it got there.
		if hf, ok := p.hot.Get(strings.TrimPrefix(r.URL.Path, "/")); ok {
			p.serveHot(w, r, hf)
			return
		}
	}
	if r.URL.Path == indexPath || strings.HasPrefix(r.URL.Path, cachedPath) {
		noteRequestKind(w, RequestAdmin)
		p.serveAdmin(w, r)
		return
	}
	req, err := p.parseRequest(r.URL.Path)
	if err != nil {
		p.writeFailure(w, err)
		return
	}
	switch r.Method {
	case http.MethodPut:
		noteRequestKind(w, RequestPublish)
		if p.authorize(w, r, OpPublish, req.modPath) {
			p.servePublish(w, r, req)
		}
	case http.MethodDelete:
		noteRequestKind(w, RequestAdmin)
		if p.authorize(w, r, OpAdminister, req.modPath) {
			p.serveDelete(w, r, req)
		}
	default:
		noteRequestKind(w, req.metricKind())
		if p.authorize(w, r, OpRead, req.modPath) {
			p.serveRead(w, r, req)
		}
	}
}

// serveAdmin answers the administration paths other than DELETE: the
// index feed and the listing of what is cached for a module.
func (p *Proxy) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		p.writeFailure(w, &failure{kind: failMethod, allow: "GET, HEAD", msg: "method " + r.Method + " is not allowed here"})
		return
	}
	if r.URL.Path == indexPath {
		if p.authorize(w, r, OpAdminister, "") {
			p.serveIndex(w, r)
		}
		return
	}
	escPath := strings.TrimPrefix(r.URL.Path, cachedPath)
	modPath, err := module.UnescapePath(escPath)
	if err != nil {
		p.writeFailure(w, failed(failBadRequest, "%w", err))
		return
	}
	if p.authorize(w, r, OpAdminister, modPath) {
		p.serveCached(w, r, modPath, escPath)
	}
}

// serveRead answers GET and HEAD of a module proxy or checksum database
// path.
func (p *Proxy) serveRead(w http.ResponseWriter, r *http.Request, req *request) {
	if req.supported {
		// The go command asks this before sending checksum database
		// requests through the proxy; answering it is all it needs.
		writeMessage(w, http.StatusOK, "")
		return
	}
	req.client = true
	c, err := p.open(r.Context(), req, !fetchDisabled(r))
	if err != nil {
		status := p.writeFailure(w, err)
		p.answered(w, r, req, failedOutcome(err), status)
		return
	}
	defer c.close()
	if c.stream != nil && r.Method == http.MethodHead {
		// A zip still arriving: a HEAD has no body to cut if it fails,
		// so it waits for the verdict.
		if err := c.stream.wait(r.Context()); err != nil {
			status := p.writeFailure(w, err)
			p.answered(w, r, req, failedOutcome(err), status)
			return
		}
	}
	if p.redirect(w, r, req, c) {
		p.answered(w, r, req, c.from.String(), http.StatusTemporaryRedirect)
		return
	}
	status := p.serve(w, r, req, c)
	p.answered(w, r, req, c.from.String(), status)
	p.prefetcher.served(r, req, c, status)
}

// serveHot answers a read of a file of the hot tier.
func (p *Proxy) serveHot(w http.ResponseWriter, r *http.Request, hf *hotFile) {
	req := hf.req
	noteRequestKind(w, req.metricKind())
	if !p.authorize(w, r, OpRead, req.modPath) {
		return
	}
	// As open decides before it looks in the hot tier. (Checked here
	// first: reading the request's headers for admitFile's argument costs
	// a third of a hit.)
	if p.conf.admission != nil {
		if err := p.admitFile(r.Context(), req, !fetchDisabled(r)); err != nil {
			status := p.writeFailure(w, err)
			p.answered(w, r, req, failedOutcome(err), status)
			return
		}
	}
	status := p.serve(w, r, req, hf.served)
	p.answered(w, r, req, fromHot.String(), status)
	p.prefetcher.served(r, req, hf.served, status)
}

// answered is told of every answer to a read of a file, once it is
// written: where the file came from (hot, published, merged, hit, stale,
// miss; for a failure, remembered or failed) and the status. It logs at
// debug level, and gives the Request metric its cache outcome.
func (p *Proxy) answered(w http.ResponseWriter, r *http.Request, req *request, outcome string, status int) {
	noteCacheOutcome(w, outcome)
	if log := p.logger(); log.Enabled(r.Context(), slog.LevelDebug) {
		log.LogAttrs(r.Context(), slog.LevelDebug, "answered", slog.String("file", req.name),
			slog.String("outcome", outcome), slog.Int("status", status))
	}
}

func fetchDisabled(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Disable-Module-Fetch"), "true")
}
