// Package goproxy is a Go module proxy as an embeddable [http.Handler].
//
// A [Proxy] serves the module proxy protocol the go command speaks
// (https://go.dev/ref/mod#goproxy-protocol) from a [Cacher], fetching what it
// lacks from the upstreams named in GOPROXY syntax, validating everything
// before it is cached. Its zero value works and reads its upstream settings
// from the same environment variables as the go command.
package goproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy/internal/lru"
)

// Proxy is an [http.Handler] serving the Go module proxy protocol. Mount it at
// the root of a server, or under a prefix with [http.StripPrefix].
//
// The zero value is ready to use. Set the fields before calling Init (or
// before the first request, which calls it): changes made afterwards are
// not seen.
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
	// this environment too. If nil, the process environment is read when
	// the Proxy is initialized.
	Env []string

	// Transport makes the requests to upstreams and checksum databases.
	// If nil, one is built from Dialer. The Egress policy checks the
	// connections of that one; of a Transport of your own, only redirects.
	Transport http.RoundTripper

	// Dialer sets up outbound connections when Transport is nil: the
	// egress proxy, DNS resolvers and timeouts. If nil, the proxy
	// variables of the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY,
	// ALL_PROXY, SOCKS5_PROXY) and the system resolver are used.
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

	// TempDir holds downloads while they are validated. If empty,
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
	// value disables it.
	HotCacheBytes int64

	// Hosted stores the module versions published to the proxy, by PUT of
	// a .zip or by Publish. They are served ahead of upstream versions,
	// merged into version lists and @latest, never fetched and never
	// removed, so Hosted must keep everything it is given: a DirCacher or
	// an object store, not a MemCacher. If nil, publishing is refused.
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

	// Logger receives one line per upstream fetch, and cache hits at debug
	// level. If nil, [slog.Default] is used.
	Logger *slog.Logger

	initOnce      sync.Once
	initErr       error
	settings      *settings
	cacher        Cacher
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
	index         versionIndex

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
	env := p.Env
	if env == nil {
		env = os.Environ()
	}
	var err error
	if p.settings, err = readSettings(env); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	p.cacher = p.Cacher
	if p.cacher == nil {
		dir, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("goproxy: no Cacher set and no user cache directory: %w", err)
		}
		p.cacher = DirCacher(filepath.Join(dir, "goproxy"))
	}
	if p.egress, err = newEgressPolicy(p.Egress, p.logger()); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	p.dialer = p.Dialer.withPolicy(p.egress)
	p.directEgress = p.egress.forDirect()
	transport := p.Transport
	if transport == nil {
		t, err := p.dialer.Transport()
		if err != nil {
			return fmt.Errorf("goproxy: %w", err)
		}
		transport = t
	}
	if err := p.initRoutes(); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	if p.direct, err = newDirectRunner(p); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	transport = newCredentialsTransport(transport, p.routes, p.settings.netrc)
	client := &http.Client{Transport: transport, CheckRedirect: p.egress.checkRedirect(refuseDowngrade)}
	var id [8]byte
	rand.Read(id[:])
	p.via = "1.1 goproxy-" + hex.EncodeToString(id[:])
	p.downloader = newDownloader(p.Download.withDefaults(p.TempDir), client, p.logger(), p.via)
	p.flights.abandonAfter = p.downloader.opts.BodyIdleTimeout
	p.notFound.ttl = ttlOrDefault(p.NotFoundTTL)
	p.initHotCache()
	if sameStore(p.cacher, p.Hosted) {
		return errors.New("goproxy: Hosted and Cacher must be different stores: published versions would be evicted or removed with cached ones")
	}
	if err := p.initSumDBs(); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	p.egress.allowEndpoints(p.configuredEndpoints()...)
	for _, db := range p.sumdbs {
		// The go command verifies direct fetches against them itself.
		p.directEgress.allowEndpoints(db.url)
	}
	return nil
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

func ttlOrDefault(d time.Duration) time.Duration {
	if d == 0 {
		return time.Minute
	}
	return max(d, 0)
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

// ServeHTTP implements [http.Handler].
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete:
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, DELETE")
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed")
		return
	}
	if err := p.Init(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	for _, via := range r.Header.Values("Via") {
		if strings.Contains(via, p.via) {
			// Waiting for our own fetch would only end at its timeout.
			writeError(w, http.StatusLoopDetected, "this proxy is its own upstream: check GOPROXY and the routes")
			return
		}
	}
	if raw := r.URL.RawPath; raw != "" && (strings.Contains(raw, "%2F") || strings.Contains(raw, "%2f")) {
		// Decoded, it would pass for a path separator. (RawPath is set
		// whenever the path had escapes that its decoding would lose.)
		writeError(w, http.StatusBadRequest, "the path holds an encoded slash (%2F), which the go command never sends")
		return
	}
	if r.URL.Path == indexPath || strings.HasPrefix(r.URL.Path, cachedPath) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed here")
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
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if p.authorize(w, r, OpAdminister, modPath) {
			p.serveCached(w, r, modPath, escPath)
		}
		return
	}
	req, err := p.parseRequest(r.URL.Path)
	if err != nil {
		p.writeFetchError(w, err)
		return
	}
	switch r.Method {
	case http.MethodPut:
		if p.authorize(w, r, OpPublish, req.modPath) {
			p.servePublish(w, r, req)
		}
		return
	case http.MethodDelete:
		if p.authorize(w, r, OpAdminister, req.modPath) {
			p.serveDelete(w, r, req)
		}
		return
	}
	if !p.authorize(w, r, OpRead, req.modPath) {
		return
	}
	if req.supported {
		// The go command asks this before sending checksum database
		// requests through the proxy; answering it is all it needs.
		writeError(w, http.StatusOK, "")
		return
	}
	c, err := p.open(r.Context(), req, !fetchDisabled(r))
	if err != nil {
		p.writeFetchError(w, err)
		return
	}
	defer c.close()
	if c.stale {
		w.Header().Set("Warning", `110 - "Response is Stale"`)
	}
	serveFile(w, r, req, c, p.cacheControl(req, c))
}

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
			return nil, &fetchError{status: http.StatusNotFound, msg: req.String() + " is not cached and Disable-Module-Fetch is set", noStore: true}
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
		if errors.Is(err, fs.ErrNotExist) || ctx.Err() != nil {
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
		if p.SumDBTTL == 0 {
			return 30 * time.Second
		}
		return max(p.SumDBTTL, 0)
	}
	return ttlOrDefault(p.MutableTTL)
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
	if p.Authorize != nil {
		return "private"
	}
	return "public"
}

// cacheGet looks req up in the cache. A cache that fails is logged and
// treated as a miss: the upstreams can still answer.
func (p *Proxy) cacheGet(ctx context.Context, req *request) (CachedFile, error) {
	cf, err := p.cacher.Get(ctx, req.name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		p.logger().LogAttrs(ctx, slog.LevelError, "cache get failed", slog.String("file", req.name), slog.String("error", err.Error()))
	}
	return cf, err
}

// fetch gets req's file from the upstreams and caches it, sharing the work
// with concurrent requests for the same file. Not-found answers are
// remembered for NotFoundTTL. The caller must call release when done.
func (p *Proxy) fetch(ctx context.Context, req *request) (f *fetched, release func(), err error) {
	if err := p.notFound.get(req.name); err != nil {
		return nil, nil, err
	}
	var storeLater func(context.Context, *fetched)
	if !req.mutable() {
		// Immutable files are stored while the waiting clients are
		// served: a write (and its fsync) to a disk or an object store
		// need not delay them, and any copy is as good as another.
		storeLater = func(ctx context.Context, f *fetched) {
			ctx, cancel := context.WithTimeout(ctx, p.downloader.opts.Timeout)
			defer cancel()
			p.store(ctx, req, f)
		}
	}
	f, release, err = p.flights.do(ctx, req.name, func(ctx context.Context) (*fetched, error) {
		ctx = withEgressModule(ctx, req.modPath)
		ctx, cancel := context.WithTimeout(ctx, p.downloader.opts.Timeout)
		defer cancel()
		if storeLater != nil {
			// A fetch that ended just before this one started stored
			// the file after the caller looked for it.
			if cf, err := p.cacher.Get(ctx, req.name); err == nil {
				cf.Close()
				return nil, errStoredMeanwhile
			}
		}
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
	}, storeLater)
	return f, release, err
}

// errStoredMeanwhile tells the callers of a fetch that the file is in the
// cache now: an earlier fetch stored it while they looked for it.
var errStoredMeanwhile = errors.New("stored by an earlier fetch meanwhile")

// remembered reports whether a failed fetch's answer holds for NotFoundTTL:
// a not-found, or an upstream's refusal (a 4xx other than 408 and 429),
// which the go command's probing of module path prefixes would repeat.
func remembered(err error) bool {
	var fe *fetchError
	return errors.As(err, &fe) && !fe.noStore && fe.status >= 400 && fe.status < 500 &&
		fe.status != http.StatusRequestTimeout && fe.status != http.StatusTooManyRequests
}

// store puts what was fetched into the cache, unless it is unverified.
func (p *Proxy) store(ctx context.Context, req *request, f *fetched) {
	if f.unverified {
		return
	}
	if err := p.cacher.Put(ctx, req.name, f.reader()); err != nil {
		// What is served was validated; the next request tries again.
		p.logger().LogAttrs(ctx, slog.LevelError, "cache put failed", slog.String("file", req.name), slog.String("error", err.Error()))
		return
	}
	if req.kind == kindInfo && req.canonical {
		p.index.add(req.modPath, req.version, time.Now())
	}
}

func fetchDisabled(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Disable-Module-Fetch"), "true")
}

func (p *Proxy) writeFetchError(w http.ResponseWriter, err error) {
	var fe *fetchError
	if errors.As(err, &fe) {
		if fe.Is(fs.ErrNotExist) && p.notFound.ttl > 0 && !fe.noStore {
			w.Header().Set("Cache-Control", p.cacheScope()+", max-age="+strconv.Itoa(int(p.notFound.ttl.Seconds())))
		}
		writeError(w, fe.status, fe.msg)
		return
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		writeError(w, http.StatusGatewayTimeout, "fetch did not finish: "+err.Error())
		return
	}
	writeError(w, http.StatusBadGateway, err.Error())
}

// notFoundMemo remembers not-found answers for a while.
type notFoundMemo struct {
	ttl     time.Duration
	mu      sync.Mutex
	entries map[string]notFoundEntry
}

type notFoundEntry struct {
	err     error
	expires time.Time
}

// maxNotFound bounds the memo; past it, expired entries go first, then any.
const maxNotFound = 10000

func (m *notFoundMemo) get(name string) error {
	if m.ttl <= 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[name]
	if !ok {
		return nil
	}
	if time.Now().After(e.expires) {
		delete(m.entries, name)
		return nil
	}
	return e.err
}

// forget drops the memory of names starting with prefix.
func (m *notFoundMemo) forget(prefix string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.entries {
		if strings.HasPrefix(k, prefix) {
			delete(m.entries, k)
		}
	}
}

func (m *notFoundMemo) put(name string, err error) {
	if m.ttl <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil {
		m.entries = make(map[string]notFoundEntry)
	}
	now := time.Now()
	if len(m.entries) >= maxNotFound {
		for k, e := range m.entries {
			if now.After(e.expires) {
				delete(m.entries, k)
			}
		}
		for k := range m.entries {
			if len(m.entries) < maxNotFound {
				break
			}
			delete(m.entries, k)
		}
	}
	m.entries[name] = notFoundEntry{err: err, expires: now.Add(m.ttl)}
}

func levelFor(err error) slog.Level {
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}
