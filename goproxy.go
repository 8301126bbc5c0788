// Package goproxy is a Go module proxy as an embeddable [http.Handler].
//
// A [Proxy] serves the module proxy protocol the go command speaks
// (https://go.dev/ref/mod#goproxy-protocol) from a [Cacher], fetching what it
// lacks from the upstreams named in GOPROXY syntax, validating everything
// before it is cached. Its zero value works and reads its upstream settings
// from the same environment variables as the go command.
package goproxy

import (
	"bytes"
	"context"
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

	"github.com/klauspost/compress/gzip"
	"golang.org/x/mod/module"
)

// Proxy is an [http.Handler] serving the Go module proxy protocol. Mount it at
// the root of a server, or under a prefix with [http.StripPrefix].
//
// The zero value is ready to use. Fields must not be changed once the Proxy
// has served a request.
type Proxy struct {
	// Cacher stores what the proxy has fetched. If nil, a [DirCacher] in the
	// "goproxy" directory of [os.UserCacheDir] is used.
	Cacher Cacher

	// Env holds the go command's settings the proxy follows, in the form of
	// [os.Environ]: GOPROXY (the upstreams), GONOPROXY and GOPRIVATE. They
	// mean what they mean to the go command, with the same defaults
	// (GOPROXY=https://proxy.golang.org,direct). If nil, the process
	// environment is read when the Proxy is initialized.
	Env []string

	// Transport makes the requests to upstreams. If nil,
	// [http.DefaultTransport] is used.
	Transport http.RoundTripper

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

	// Download tunes the download engine: parallel Range requests, retries,
	// resumption and concurrency. The zero value gives sensible defaults.
	Download DownloadOptions

	// Logger receives one line per upstream fetch, and cache hits at debug
	// level. If nil, [slog.Default] is used.
	Logger *slog.Logger

	initOnce   sync.Once
	initErr    error
	settings   *settings
	cacher     Cacher
	downloader *downloader
	flights    flightGroup
	notFound   notFoundMemo
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
	transport := p.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	p.downloader = newDownloader(p.Download.withDefaults(p.TempDir), &http.Client{Transport: transport}, p.logger())
	p.notFound.ttl = ttlOrDefault(p.NotFoundTTL)
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
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed: the module proxy protocol is read-only")
		return
	}
	if err := p.Init(); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	req, err := parseRequest(r.URL.Path)
	if err != nil {
		var fe *fetchError
		errors.As(err, &fe)
		writeError(w, fe.status, fe.msg)
		return
	}
	if req.mutable() {
		p.serveMutable(w, r, req)
	} else {
		p.serveImmutable(w, r, req)
	}
}

// serveImmutable serves a canonical version's .info, .mod or .zip, which
// never change once published: from the cache if there, else fetched once.
func (p *Proxy) serveImmutable(w http.ResponseWriter, r *http.Request, req *request) {
	ctx := r.Context()
	if cf, err := p.cacheGet(ctx, req); err == nil {
		defer cf.Close()
		p.logger().LogAttrs(ctx, slog.LevelDebug, "cache hit", slog.String("file", req.name))
		serveFile(w, r, req, cf, cf.ModTime(), etagOf(cf), immutableCacheControl)
		return
	}
	if fetchDisabled(r) {
		writeError(w, http.StatusNotFound, req.String()+" is not cached and Disable-Module-Fetch is set")
		return
	}
	f, release, err := p.fetch(ctx, req)
	if err != nil {
		p.writeFetchError(w, err)
		return
	}
	defer release()
	serveFile(w, r, req, f.reader(), f.modTime, "", immutableCacheControl)
}

// serveMutable serves a version list, @latest or query answer: from the
// cache while fresh, else fetched again, falling back on the stale copy when
// every upstream fails.
func (p *Proxy) serveMutable(w http.ResponseWriter, r *http.Request, req *request) {
	ctx := r.Context()
	ttl := ttlOrDefault(p.MutableTTL)
	cached, err := p.cacheGet(ctx, req)
	if err == nil {
		defer cached.Close()
		age := time.Since(cached.ModTime())
		if age < ttl || fetchDisabled(r) {
			p.logger().LogAttrs(ctx, slog.LevelDebug, "cache hit", slog.String("file", req.name))
			serveMutableFile(w, r, req, cached, cached.ModTime(), ttl)
			return
		}
	} else if fetchDisabled(r) {
		writeError(w, http.StatusNotFound, req.String()+" is not cached and Disable-Module-Fetch is set")
		return
	}
	f, release, err := p.fetch(ctx, req)
	if err != nil {
		if cached != nil && !errors.Is(err, fs.ErrNotExist) && ctx.Err() == nil {
			p.logger().LogAttrs(ctx, slog.LevelWarn, "serving stale", slog.String("file", req.name), slog.String("error", err.Error()))
			serveMutableFile(w, r, req, cached, cached.ModTime(), ttl)
			return
		}
		p.writeFetchError(w, err)
		return
	}
	defer release()
	serveMutableFile(w, r, req, f.reader(), f.modTime, ttl)
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
	f, release, err = p.flights.do(ctx, req.name, func(ctx context.Context) (*fetched, error) {
		ctx, cancel := context.WithTimeout(ctx, p.downloader.opts.Timeout)
		defer cancel()
		f, err := p.fetchFromUpstreams(ctx, req)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				p.notFound.put(req.name, err)
			}
			return nil, err
		}
		if err := p.cacher.Put(ctx, req.name, f.reader()); err != nil {
			// Still serve what was fetched and validated; the next request
			// will try the cache again.
			p.logger().LogAttrs(ctx, slog.LevelError, "cache put failed", slog.String("file", req.name), slog.String("error", err.Error()))
		}
		return f, nil
	})
	return f, release, err
}

func fetchDisabled(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Disable-Module-Fetch"), "true")
}

func (p *Proxy) writeFetchError(w http.ResponseWriter, err error) {
	var fe *fetchError
	if errors.As(err, &fe) {
		if fe.Is(fs.ErrNotExist) && p.notFound.ttl > 0 {
			w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(p.notFound.ttl.Seconds())))
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

// writeError answers with a plain-text message, which the go command shows
// its user.
func writeError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(msg)+1))
	h.Set("X-Content-Type-Options", "nosniff")
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-store")
	}
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

const immutableCacheControl = "public, max-age=31536000, immutable"

// serveMutableFile serves a list, @latest or query answer, marking it stale
// when it is older than ttl.
func serveMutableFile(w http.ResponseWriter, r *http.Request, req *request, content io.ReadSeeker, modTime time.Time, ttl time.Duration) {
	cacheControl := "public, max-age=" + strconv.Itoa(int(ttl.Seconds()))
	if age := time.Since(modTime); age >= ttl {
		w.Header().Set("Warning", `110 - "Response is Stale"`)
		cacheControl = "no-cache"
	}
	serveFile(w, r, req, content, modTime, "", cacheControl)
}

// gzipMinSize is the smallest text response worth compressing.
const gzipMinSize = 1 << 10

// serveFile writes content with the headers for req's kind. Zips and
// requests with Range or conditions go through http.ServeContent. Other
// text bodies are gzip-compressed whole in memory (they are size-capped),
// so that the response still has a Content-Length.
func serveFile(w http.ResponseWriter, r *http.Request, req *request, content io.ReadSeeker, modTime time.Time, etag, cacheControl string) {
	h := w.Header()
	h.Set("Content-Type", req.contentType())
	h.Set("Cache-Control", cacheControl)
	if etag != "" {
		h.Set("ETag", etag)
	}
	if req.kind != kindZip {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) && r.Header.Get("Range") == "" && r.Header.Get("If-None-Match") == "" && r.Header.Get("If-Modified-Since") == "" {
			if size, err := content.Seek(0, io.SeekEnd); err == nil && size >= gzipMinSize {
				if _, err := content.Seek(0, io.SeekStart); err == nil && serveGzip(w, r, content, modTime) {
					return
				}
			}
			content.Seek(0, io.SeekStart)
		}
	}
	http.ServeContent(w, r, "", modTime, content)
}

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

// serveGzip writes content gzip-compressed, reporting false without writing
// anything if compression failed.
func serveGzip(w http.ResponseWriter, r *http.Request, content io.Reader, modTime time.Time) bool {
	var buf bytes.Buffer
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&buf)
	if _, err := io.Copy(zw, content); err != nil {
		return false
	}
	if err := zw.Close(); err != nil {
		return false
	}
	h := w.Header()
	h.Set("Content-Encoding", "gzip")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	if !modTime.IsZero() {
		h.Set("Last-Modified", modTime.UTC().Format(http.TimeFormat))
	}
	h.Del("ETag") // the tag names the identity encoding
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
	return true
}

func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for coding := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(coding, ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
				continue
			}
			q := 1.0
			for param := range strings.SplitSeq(params, ";") {
				if k, v, _ := strings.Cut(strings.TrimSpace(param), "="); k == "q" {
					q, _ = strconv.ParseFloat(v, 64)
				}
			}
			return q > 0
		}
	}
	return false
}

// etagOf returns the cached file's tag, or one derived from size and time.
func etagOf(cf CachedFile) string {
	if t, ok := cf.(interface{ ETag() string }); ok {
		return t.ETag()
	}
	size, err := cf.Seek(0, io.SeekEnd)
	if err != nil {
		return ""
	}
	cf.Seek(0, io.SeekStart)
	return fmt.Sprintf(`"%x-%x"`, cf.ModTime().UnixNano(), size)
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

// kind is the kind of file a request asks for.
type kind int

const (
	kindList kind = iota
	kindLatest
	kindInfo
	kindMod
	kindZip
)

// request is a validated module proxy request.
type request struct {
	modPath   string // decoded module path
	version   string // decoded version or query; empty for list and @latest
	kind      kind
	canonical bool   // version is a canonical semantic version
	name      string // escaped name: the cache name and the upstream path
}

// maxPathLen bounds request paths; module paths are far shorter in practice.
const maxPathLen = 1024

// parseRequest decodes and validates a module proxy path (without a leading
// slash) with golang.org/x/mod/module, so nothing unchecked reaches a cacher
// or an upstream.
func parseRequest(urlPath string) (*request, error) {
	p := strings.TrimPrefix(urlPath, "/")
	bad := func(status int, format string, args ...any) error {
		return &fetchError{status: status, msg: fmt.Sprintf(format, args...)}
	}
	if len(p) > maxPathLen {
		return nil, bad(http.StatusRequestURITooLong, "request path is longer than %d bytes", maxPathLen)
	}
	req := &request{}
	var escPath, file string
	if esc, ok := strings.CutSuffix(p, "/@latest"); ok {
		escPath, req.kind = esc, kindLatest
	} else if i := strings.LastIndex(p, "/@v/"); i >= 0 {
		escPath, file = p[:i], p[i+len("/@v/"):]
		switch {
		case file == "list":
			req.kind = kindList
		case strings.HasSuffix(file, ".info"):
			req.kind = kindInfo
		case strings.HasSuffix(file, ".mod"):
			req.kind = kindMod
		case strings.HasSuffix(file, ".zip"):
			req.kind = kindZip
		default:
			return nil, bad(http.StatusNotFound, "unknown file %q: a module proxy serves list, .info, .mod and .zip", file)
		}
	} else {
		return nil, bad(http.StatusNotFound, "not a module proxy path: %q", p)
	}
	var err error
	if req.modPath, err = module.UnescapePath(escPath); err != nil {
		return nil, bad(http.StatusBadRequest, "%v", err)
	}
	if req.kind == kindList || req.kind == kindLatest {
		req.name = p
		return req, nil
	}
	escVersion := file[:strings.LastIndexByte(file, '.')]
	if req.version, err = module.UnescapeVersion(escVersion); err != nil {
		return nil, bad(http.StatusBadRequest, "%v", err)
	}
	req.canonical = module.CanonicalVersion(req.version) == req.version
	if req.canonical || req.kind != kindInfo {
		if err := module.Check(req.modPath, req.version); err != nil {
			return nil, bad(http.StatusBadRequest, "%v", err)
		}
		if !req.canonical {
			return nil, bad(http.StatusBadRequest, "%s@%s: version is not canonical (want %s)", req.modPath, req.version, module.CanonicalVersion(req.version))
		}
	}
	req.name = p
	return req, nil
}

// mutable reports whether the answer to req may change over time.
func (req *request) mutable() bool {
	return req.kind == kindList || req.kind == kindLatest || !req.canonical
}

func (req *request) maxSize() int64 {
	switch req.kind {
	case kindList:
		return maxListSize
	case kindMod:
		return maxModSize
	case kindZip:
		return maxZipSize
	}
	return maxInfoSize
}

func (req *request) contentType() string {
	switch req.kind {
	case kindLatest, kindInfo:
		return "application/json"
	case kindZip:
		return "application/zip"
	}
	return "text/plain; charset=utf-8"
}

// String names the requested file for messages, as module@version.ext.
func (req *request) String() string {
	switch req.kind {
	case kindList:
		return req.modPath + " version list"
	case kindLatest:
		return req.modPath + "@latest"
	}
	ext := map[kind]string{kindInfo: ".info", kindMod: ".mod", kindZip: ".zip"}[req.kind]
	return req.modPath + "@" + req.version + ext
}

func levelFor(err error) slog.Level {
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}
