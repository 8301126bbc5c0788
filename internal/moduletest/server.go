package moduletest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// Server is an in-process upstream speaking the module proxy protocol,
// instrumented so tests can assert how often, how concurrently and how
// much a proxy under test fetched, and with knobs to make it slow or
// misbehave.
type Server struct {
	// URL is the base URL to use as GOPROXY or as a proxy's upstream.
	URL string

	ts      *httptest.Server
	handler http.Handler
	done    chan struct{}
	once    sync.Once

	mu   sync.RWMutex
	mods map[string]map[string]*Version // path -> version -> Version
	// files are served verbatim by URL path; see SetFile.
	files map[string][]byte
	// zipTime overrides Version.Time as a zip's Last-Modified once Add
	// has replaced a zip; see Add.
	zipTime map[*Version]time.Time

	latency atomic.Int64 // time.Duration
	hook    atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]

	statsMu     sync.Mutex
	counts      map[string]int
	total       int
	inFlight    int
	maxInFlight int
	bytesSent   atomic.Int64
}

// NewServer starts serving vs on a loopback address; call Close when done.
func NewServer(vs []*Version) *Server {
	s := &Server{
		done:    make(chan struct{}),
		mods:    make(map[string]map[string]*Version),
		zipTime: make(map[*Version]time.Time),
		files:   make(map[string][]byte),
		counts:  make(map[string]int),
	}
	for _, v := range vs {
		s.Add(v)
	}
	s.handler = http.HandlerFunc(s.serveHTTP)
	s.ts = httptest.NewServer(s.handler)
	s.URL = s.ts.URL
	return s
}

// Close makes the upstream unreachable, as a crashed or partitioned
// origin would be: open connections are cut, including requests stalled
// in SetLatency, and later connections are refused. A hook that blocks
// must honor the request context or Close will wait for it.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.done)
		s.ts.CloseClientConnections()
		s.ts.Close()
	})
}

// Handler returns the instrumented handler, so tests can mount the same
// upstream in their own server (TLS, a different listener, middleware)
// and still have its requests counted.
func (s *Server) Handler() http.Handler { return s.handler }

// Add publishes v, replacing any version with the same path and version,
// so tests can model an upstream that gains (or rewrites) versions while
// a proxy is running.
//
// Replacing a zip with different content changes both its ETag and its
// Last-Modified (moved at least a second past the old one if v.Time
// does not already do so), so that a client resuming with If-Range,
// whichever validator it sends, gets the whole new zip rather than a
// range of it spliced onto the old one. A ZipFile (of a version with a
// Time) counts as different whenever it is added again, even under the
// same name, since its content cannot be compared cheaply.
func (s *Server) Add(v *Version) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mods[v.Path]
	if m == nil {
		m = make(map[string]*Version)
		s.mods[v.Path] = m
	}
	delete(s.zipTime, v)
	if old := m[v.Version]; old != nil && old != v && old.hasZip() && v.hasZip() &&
		(old.ZipFile != "" || v.ZipFile != "" || !bytes.Equal(old.Zip, v.Zip)) {
		if prev := s.zipModTimeLocked(old); !prev.IsZero() && v.Time.Unix() <= prev.Unix() {
			s.zipTime[v] = time.Unix(prev.Unix()+1, 0).UTC()
		}
	}
	m[v.Version] = v
}

// zipModTimeLocked returns the Last-Modified of v's zip; s.mu must be held.
func (s *Server) zipModTimeLocked(v *Version) time.Time {
	if t, ok := s.zipTime[v]; ok {
		return t
	}
	return v.Time
}

// SetFile serves body at the URL path (such as "/example.com/a/@v/list"),
// ahead of the versions Add published, verbatim and without validators
// (no ETag, no Last-Modified), as the plainest static upstream would: for
// content the protocol would not produce (invalid, damaged, hostile), or
// paths outside it. A nil body removes the file.
func (s *Server) SetFile(path string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if body == nil {
		delete(s.files, path)
		return
	}
	s.files[path] = body
}

// SetLatency delays every later request by d before it is handled, to
// expose request coalescing and timeouts in the proxy under test. The
// wait ends early if the client goes away or the server is closed.
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// SetHandlerHook installs h to run before normal handling (and after the
// latency); if h returns true the request is considered answered. This
// lets tests inject status codes, corrupt or truncated bodies, or hangs
// for chosen requests only. A nil h removes the hook.
func (s *Server) SetHandlerHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	if h == nil {
		s.hook.Store(nil)
		return
	}
	s.hook.Store(&h)
}

// Requests reports how many requests had exactly this URL path (for
// example "/example.com/mod000/@v/list"), the usual way to assert that a
// proxy cached or coalesced fetches.
func (s *Server) Requests(path string) int {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.counts[path]
}

// TotalRequests reports the number of requests since start or Reset.
func (s *Server) TotalRequests() int {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.total
}

// MaxInFlight reports the peak number of concurrently handled requests
// since start or Reset, to check a proxy's upstream concurrency limits.
func (s *Server) MaxInFlight() int {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.maxInFlight
}

// BytesSent reports response body bytes written since start or Reset
// (headers excluded), to check that a proxy did not refetch big zips.
func (s *Server) BytesSent() int64 { return s.bytesSent.Load() }

// Reset zeroes the counters so a test can measure one phase alone.
// Requests still in flight keep counting toward MaxInFlight.
func (s *Server) Reset() {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	clear(s.counts)
	s.total = 0
	s.maxInFlight = s.inFlight
	s.bytesSent.Store(0)
}

func (s *Server) begin(path string) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.counts[path]++
	s.total++
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
}

func (s *Server) end() {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.inFlight--
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.begin(r.URL.Path)
	defer s.end()
	cw := &countingWriter{ResponseWriter: w, n: &s.bytesSent}
	if d := time.Duration(s.latency.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.done:
			// Returning would send an empty 200; an upstream that is
			// gone must look gone, so drop the connection instead.
			t.Stop()
			panic(http.ErrAbortHandler)
		}
	}
	if h := s.hook.Load(); h != nil && (*h)(cw, r) {
		return
	}
	s.mu.RLock()
	body, ok := s.files[r.URL.Path]
	s.mu.RUnlock()
	if ok {
		http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(body))
		return
	}
	s.serveProxy(cw, r)
}

// serveProxy implements the protocol proper; see
// https://go.dev/ref/mod#goproxy-protocol.
func (s *Server) serveProxy(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeText(w, http.StatusMethodNotAllowed, "method not allowed\n")
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	escPath, query, ok := strings.Cut(p, "/@v/")
	if !ok {
		escPath, ok = strings.CutSuffix(p, "/@latest")
		query = "@latest" // cannot clash with a version, unlike "latest"
	}
	path, err := module.UnescapePath(escPath)
	if !ok || err != nil {
		notFound(w, r.URL.Path, "")
		return
	}
	// version is the @v/$version of a file request, or else the query
	// itself ("list", "latest"), and only serves error messages there.
	var ext string
	version := strings.TrimPrefix(query, "@")
	if query != "list" && query != "@latest" {
		for _, e := range []string{".info", ".mod", ".zip"} {
			if strings.HasSuffix(query, e) {
				ext = e
			}
		}
		version, err = module.UnescapeVersion(strings.TrimSuffix(query, ext))
		if ext == "" || err != nil {
			notFound(w, r.URL.Path, "")
			return
		}
	}
	s.mu.RLock()
	var vs []*Version
	for _, v := range s.mods[path] {
		vs = append(vs, v)
	}
	s.mu.RUnlock()
	if len(vs) == 0 {
		notFound(w, path, version)
		return
	}

	switch query {
	case "list":
		var b strings.Builder
		for _, v := range listVersions(vs) {
			b.WriteString(v + "\n")
		}
		var mod time.Time
		for _, v := range vs {
			if v.Time.After(mod) {
				mod = v.Time
			}
		}
		serveBytes(w, r, "text/plain; charset=utf-8", mod, []byte(b.String()))
		return
	case "@latest":
		v := newest(vs)
		serveBytes(w, r, "application/json", v.Time, v.Info())
		return
	}

	v := find(vs, version)
	if v == nil && ext == ".info" && module.CanonicalVersion(version) != version {
		// The go command asks .info for queries it cannot resolve from
		// the list itself (branch names, "latest", "v1"); real proxies
		// answer with the version they resolve to.
		v = resolveQuery(vs, version)
	}
	if v == nil {
		notFound(w, path, version)
		return
	}
	switch ext {
	case ".info":
		serveBytes(w, r, "application/json", v.Time, v.Info())
	case ".mod":
		if v.Mod == nil {
			notFound(w, path, version)
			return
		}
		serveBytes(w, r, "text/plain; charset=utf-8", v.Time, v.Mod)
	case ".zip":
		s.serveZip(w, r, v)
	}
}

func find(vs []*Version, version string) *Version {
	for _, v := range vs {
		if v.Version == version {
			return v
		}
	}
	return nil
}

// resolveQuery answers a non-canonical .info query: a major or
// major.minor prefix ("v1", "v1.2") picks the newest matching version,
// anything else (branch names, "latest") the newest version overall.
func resolveQuery(vs []*Version, q string) *Version {
	if !semver.IsValid(q) {
		return newest(vs)
	}
	var matching []*Version
	for _, v := range vs {
		if semver.Major(v.Version) == q || semver.MajorMinor(v.Version) == q {
			matching = append(matching, v)
		}
	}
	return newest(matching)
}

func (s *Server) serveZip(w http.ResponseWriter, r *http.Request, v *Version) {
	if !v.hasZip() {
		notFound(w, v.Path, v.Version)
		return
	}
	s.mu.RLock()
	modtime := s.zipModTimeLocked(v)
	s.mu.RUnlock()
	w.Header().Set("Content-Type", "application/zip")
	// The ETags are strong (no W/ prefix): http.ServeContent honors an
	// If-Range ETag only on a strong match.
	if v.ZipFile == "" {
		w.Header().Set("ETag", etag(v.Zip))
		http.ServeContent(w, r, "", modtime, bytes.NewReader(v.Zip))
		return
	}
	f, err := os.Open(v.ZipFile)
	if err != nil {
		w.Header().Del("Content-Type")
		writeText(w, http.StatusInternalServerError, err.Error()+"\n")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		w.Header().Del("Content-Type")
		writeText(w, http.StatusInternalServerError, err.Error()+"\n")
		return
	}
	// Hashing a huge file per request would dominate test time; identity,
	// size and mtime change whenever the content does in practice, and
	// modtime changes whenever Add replaces the file.
	w.Header().Set("ETag", etag(fmt.Appendf(nil, "%s@%s %s %d %d %d",
		v.Path, v.Version, v.ZipFile, fi.Size(), fi.ModTime().UnixNano(), modtime.UnixNano())))
	http.ServeContent(w, r, "", modtime, f)
}

// serveBytes uses http.ServeContent for every body so conditional and
// range requests behave as on a real static-file proxy.
func serveBytes(w http.ResponseWriter, r *http.Request, contentType string, modtime time.Time, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("ETag", etag(body))
	http.ServeContent(w, r, "", modtime, bytes.NewReader(body))
}

func etag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// notFound answers the way proxy.golang.org does, so the go command and
// the proxy under test see a realistic "no such module or version".
func notFound(w http.ResponseWriter, path, version string) {
	msg := "not found: " + path
	if version != "" {
		msg += "@" + version
	}
	writeText(w, http.StatusNotFound, msg)
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// countingWriter tallies body bytes; Unwrap keeps http.ResponseController
// (Flush, Hijack, deadlines) usable from hooks.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
