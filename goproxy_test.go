package goproxy

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// newTestProxy returns a Proxy with a fresh MemCacher whose upstream list is
// goproxy, logging to the test's output. Checksum verification is off unless
// env sets GOSUMDB: most tests are about other things.
func newTestProxy(t *testing.T, goproxy string, env ...string) *Proxy {
	t.Helper()
	p := &Proxy{
		Cacher:  &MemCacher{},
		Env:     append([]string{"GOPROXY=" + goproxy, "GOSUMDB=off"}, env...),
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		TempDir: t.TempDir(),
		// The default transport, which TestMain keeps on loopback.
		Transport: http.DefaultTransport,
		// Retries stay on, but quick: tests wait on conditions, not clocks.
		Download: DownloadOptions{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond},
	}
	// Files are stored in the background while clients are served: let
	// that finish before the test's directories are removed.
	t.Cleanup(func() {
		testwait.For(t, p.idle)
		p.Close()
	})
	return p
}

// filesUnder lists the regular files below dir.
func filesUnder(t *testing.T, dir string) []string {
	var files []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	return files
}

// recorded is a response as do recorded it.
type recorded struct {
	*httptest.ResponseRecorder
	// Aborted is set when the handler aborted the response
	// (panic(http.ErrAbortHandler)), as a server then cuts the
	// connection: what the recorder holds is what the client got first.
	Aborted bool
}

// do sends one request to h and returns the recorded response.
func do(h http.Handler, method, target string, header ...string) *recorded {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := &recorded{ResponseRecorder: httptest.NewRecorder()}
	func() {
		defer func() {
			if v := recover(); v != nil {
				if v != http.ErrAbortHandler {
					panic(v)
				}
				w.Aborted = true
			}
		}()
		h.ServeHTTP(w.ResponseRecorder, r)
	}()
	return w
}

// makeZip builds a module zip from name/content pairs, names relative to
// the zip root (so a test can place files outside the module prefix).
func makeZip(t *testing.T, files ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := 0; i+1 < len(files); i += 2 {
		w, err := zw.Create(files[i])
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, files[i+1])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newUpstream starts an upstream serving files verbatim by URL path (see
// moduletest.Server.SetFile), closed when the test ends.
func newUpstream(t *testing.T, files map[string][]byte) *moduletest.Server {
	up := moduletest.NewServer(nil)
	for path, body := range files {
		up.SetFile(path, body)
	}
	t.Cleanup(up.Close)
	return up
}

const testInfo = `{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}`

func testModuleFiles(t *testing.T) map[string][]byte {
	return map[string][]byte{
		"/example.com/a/@v/list":        []byte("v1.0.0\n"),
		"/example.com/a/@latest":        []byte(testInfo),
		"/example.com/a/@v/v1.0.0.info": []byte(testInfo),
		"/example.com/a/@v/v1.0.0.mod":  []byte("module example.com/a\n"),
		"/example.com/a/@v/v1.0.0.zip": makeZip(t,
			"example.com/a@v1.0.0/go.mod", "module example.com/a\n",
			"example.com/a@v1.0.0/a.go", "package a\n"),
	}
}

func TestServesAndCachesEachKind(t *testing.T) {
	files := testModuleFiles(t)
	up := newUpstream(t, files)
	p := newTestProxy(t, up.URL)
	// Through a server: for a short body, Content-Length may be left to
	// net/http, as the hot tier does.
	srv := httptest.NewServer(p)
	defer srv.Close()
	for _, path := range []string{"/example.com/a/@v/list", "/example.com/a/@latest", "/example.com/a/@v/v1.0.0.info", "/example.com/a/@v/v1.0.0.mod", "/example.com/a/@v/v1.0.0.zip"} {
		for range 2 {
			resp, err := srv.Client().Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET %s: %d %s %v", path, resp.StatusCode, body, err)
			}
			if !bytes.Equal(body, files[path]) {
				t.Errorf("GET %s: body differs from upstream's", path)
			}
			if resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) > 0 {
				t.Errorf("GET %s: Content-Length %d (transfer encoding %q) for %d bytes", path, resp.ContentLength, resp.TransferEncoding, len(body))
			}
		}
		if n := up.Requests(path); n != 1 {
			t.Errorf("%s reached the upstream %d times, want 1", path, n)
		}
	}
	w := do(p, "GET", "/example.com/a/@v/v1.0.0.zip")
	if got := w.Header().Get("Cache-Control"); !strings.Contains(got, "immutable") {
		t.Errorf("zip Cache-Control = %q, want immutable", got)
	}
	if w.Header().Get("ETag") == "" || w.Header().Get("Content-Type") != "application/zip" {
		t.Errorf("zip headers: %v", w.Header())
	}
	if got := do(p, "GET", "/example.com/a/@v/list").Header().Get("Cache-Control"); got != "public, max-age=60" {
		t.Errorf("list Cache-Control = %q", got)
	}
}

func TestInfoAndModDoNotFetchZip(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	do(p, "GET", "/example.com/a/@v/v1.0.0.info")
	do(p, "GET", "/example.com/a/@v/v1.0.0.mod")
	if n := up.Requests("/example.com/a/@v/v1.0.0.zip"); n != 0 {
		t.Errorf("zip fetched %d times for .info and .mod requests", n)
	}
}

func TestRangeAndConditionalRequests(t *testing.T) {
	files := testModuleFiles(t)
	up := newUpstream(t, files)
	p := newTestProxy(t, up.URL)
	zipBody := files["/example.com/a/@v/v1.0.0.zip"]
	do(p, "GET", "/example.com/a/@v/v1.0.0.zip") // fill the cache
	w := do(p, "GET", "/example.com/a/@v/v1.0.0.zip", "Range", "bytes=10-19")
	if w.Code != http.StatusPartialContent || !bytes.Equal(w.Body.Bytes(), zipBody[10:20]) {
		t.Errorf("Range: %d, %q", w.Code, w.Body)
	}
	etag := w.Header().Get("ETag")
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.zip", "If-None-Match", etag); w.Code != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", w.Code)
	}
	if w := do(p, "HEAD", "/example.com/a/@v/v1.0.0.zip"); w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("Content-Length") != "0" && w.Header().Get("Content-Length") == "" {
		t.Errorf("HEAD: %d, body %d bytes, Content-Length %q", w.Code, w.Body.Len(), w.Header().Get("Content-Length"))
	}
}

func TestGzipsLargeTextWithContentLength(t *testing.T) {
	var list strings.Builder
	for i := range 300 {
		list.WriteString("v1.0." + strconv.Itoa(i) + "\n")
	}
	up := newUpstream(t, map[string][]byte{"/example.com/a/@v/list": []byte(list.String())})
	p := newTestProxy(t, up.URL)
	w := do(p, "GET", "/example.com/a/@v/list", "Accept-Encoding", "gzip")
	if w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("Content-Length") != strconv.Itoa(w.Body.Len()) {
		t.Fatalf("headers %v for %d body bytes", w.Header(), w.Body.Len())
	}
	zr, err := gzip.NewReader(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(zr)
	if string(got) != list.String() {
		t.Error("gzip body does not decode to the list")
	}
	if w := do(p, "GET", "/example.com/a/@v/list", "Accept-Encoding", "gzip;q=0"); w.Header().Get("Content-Encoding") != "" {
		t.Error("gzip used although the client refused it")
	}
}

func TestMountedUnderPrefix(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	mux := http.NewServeMux()
	mux.Handle("/go/", http.StripPrefix("/go", newTestProxy(t, up.URL)))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	if w := do(mux, "GET", "/go/example.com/a/@v/v1.0.0.mod"); w.Code != 200 || w.Body.String() != "module example.com/a\n" {
		t.Errorf("mounted proxy: %d %q", w.Code, w.Body)
	}
	if w := do(mux, "GET", "/healthz"); w.Body.String() != "ok" {
		t.Errorf("neighbouring route: %q", w.Body)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	p := newTestProxy(t, "off")
	w := do(p, "POST", "/example.com/a/@v/list")
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD, PUT, DELETE" {
		t.Errorf("POST: %d, Allow %q", w.Code, w.Header().Get("Allow"))
	}
}

func TestMutableEntriesExpireAndServeStale(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	p.MutableTTL = -1 // always refetch
	do(p, "GET", "/example.com/a/@v/list")
	up.SetFile("/example.com/a/@v/list", []byte("v1.0.0\nv1.1.0\n"))
	if w := do(p, "GET", "/example.com/a/@v/list"); w.Body.String() != "v1.0.0\nv1.1.0\n" {
		t.Errorf("list after expiry: %q", w.Body)
	}
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "upstream down", http.StatusServiceUnavailable)
		return true
	})
	w := do(p, "GET", "/example.com/a/@v/list")
	if w.Code != 200 || w.Body.String() != "v1.0.0\nv1.1.0\n" || !strings.Contains(w.Header().Get("Warning"), "Stale") {
		t.Errorf("stale list: %d %q %v", w.Code, w.Body, w.Header())
	}
	// A file never cached cannot be served stale: the failure shows.
	if w := do(p, "GET", "/example.com/a/@latest"); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "upstream down") {
		t.Errorf("uncached @latest with upstream down: %d %q", w.Code, w.Body)
	}
}

func TestMutableEntriesFreshWithinTTL(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	p.MutableTTL = time.Hour
	do(p, "GET", "/example.com/a/@v/list")
	do(p, "GET", "/example.com/a/@v/list")
	if n := up.Requests("/example.com/a/@v/list"); n != 1 {
		t.Errorf("list fetched %d times within its TTL", n)
	}
}

func TestNotFoundRemembered(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	for range 3 {
		w := do(p, "GET", "/example.com/missing/@v/list")
		if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "not found: example.com/missing") {
			t.Fatalf("missing module: %d %q", w.Code, w.Body)
		}
	}
	if n := up.Requests("/example.com/missing/@v/list"); n != 1 {
		t.Errorf("not-found asked upstream %d times, want 1", n)
	}
	p2 := newTestProxy(t, up.URL)
	p2.NotFoundTTL = -1
	do(p2, "GET", "/example.com/missing/@v/list")
	do(p2, "GET", "/example.com/missing/@v/list")
	if n := up.Requests("/example.com/missing/@v/list"); n != 3 {
		t.Errorf("with the memo off, upstream asked %d times in all, want 3", n)
	}
}

func TestDisableModuleFetch(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod", "Disable-Module-Fetch", "true"); w.Code != http.StatusNotFound {
		t.Errorf("uncached with Disable-Module-Fetch: %d", w.Code)
	}
	if up.Requests("/example.com/a/@v/v1.0.0.mod") != 0 {
		t.Error("Disable-Module-Fetch still fetched")
	}
	do(p, "GET", "/example.com/a/@v/v1.0.0.mod")
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod", "Disable-Module-Fetch", "true"); w.Code != 200 {
		t.Errorf("cached with Disable-Module-Fetch: %d", w.Code)
	}
}

func TestConcurrentMissesShareOneFetch(t *testing.T) {
	files := testModuleFiles(t)
	up := newUpstream(t, files)
	release := make(chan struct{})
	var arrived atomic.Int32
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		arrived.Add(1)
		<-release // hold the upstream until every client is waiting
		return false
	})
	p := newTestProxy(t, up.URL)
	srv := httptest.NewServer(p)
	defer srv.Close()

	const clients = 50
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for range clients {
		wg.Go(func() {
			resp, err := http.Get(srv.URL + "/example.com/a/@v/v1.0.0.zip")
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !bytes.Equal(body, files["/example.com/a/@v/v1.0.0.zip"]) {
				errs <- resp.Status
			}
		})
	}
	// Every client is inside the proxy once it has counted 50 waiters on
	// the flight; poll the flight's user count rather than sleeping.
	testwait.For(t, func() bool { return p.flights.users("example.com/a/@v/v1.0.0.zip") == clients })
	close(release)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := arrived.Load(); n != 1 {
		t.Errorf("upstream received %d requests for the zip, want 1", n)
	}
}

func TestClientGoingAwayDoesNotCancelSharedFetch(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	release := make(chan struct{})
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool { <-release; return false })
	p := newTestProxy(t, up.URL)

	ctx, cancel := context.WithCancel(context.Background())
	quitter := make(chan int)
	go func() {
		r := httptest.NewRequestWithContext(ctx, "GET", "/example.com/a/@v/v1.0.0.zip", nil)
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		quitter <- w.Code
	}()
	testwait.For(t, func() bool { return p.flights.users("example.com/a/@v/v1.0.0.zip") == 1 })
	stayer := make(chan *recorded)
	go func() { stayer <- do(p, "GET", "/example.com/a/@v/v1.0.0.zip") }()
	testwait.For(t, func() bool { return p.flights.users("example.com/a/@v/v1.0.0.zip") == 2 })
	cancel()
	<-quitter
	close(release)
	if w := <-stayer; w.Code != 200 {
		t.Errorf("remaining client got %d %q", w.Code, w.Body)
	}
}

func TestCacheFailureFallsBackToUpstream(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	p.Cacher = brokenCacher{}
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod"); w.Code != 200 {
		t.Errorf("with a failing cache: %d %q", w.Code, w.Body)
	}
}

type brokenCacher struct{}

func (brokenCacher) Get(context.Context, string) (CachedFile, error) {
	return nil, &fs.PathError{Op: "get", Err: fs.ErrPermission}
}
func (brokenCacher) Put(context.Context, string, io.ReadSeeker) error { return fs.ErrPermission }

func TestZeroValueUsesEnvironment(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	t.Setenv("GOPROXY", up.URL)
	t.Setenv("GOSUMDB", "off")
	cacheHome := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cacheHome)
	var p Proxy
	// Registered after the cache's TempDir, so run before its removal:
	// the prefetch of the version's .info writes there too.
	t.Cleanup(func() {
		testwait.For(t, p.idle)
		p.Close()
	})
	if w := do(&p, "GET", "/example.com/a/@v/v1.0.0.mod"); w.Code != 200 {
		t.Fatalf("zero Proxy: %d %q", w.Code, w.Body)
	}
	// The immutable .mod is stored while the client is served.
	testwait.For(t, func() bool {
		_, err := os.Stat(filepath.Join(cacheHome, "goproxy", "example.com/a/@v/v1.0.0.mod"))
		return err == nil
	})
}

func TestInitReportsBadConfiguration(t *testing.T) {
	p := &Proxy{Env: []string{"GOPROXY=ftp://example.com"}}
	if err := p.Init(); err == nil || !strings.Contains(err.Error(), "scheme") {
		t.Errorf("Init with an ftp upstream: %v", err)
	}
	if w := do(p, "GET", "/example.com/a/@v/list"); w.Code != http.StatusInternalServerError {
		t.Errorf("request to a misconfigured proxy: %d", w.Code)
	}
}

// newBufferLogger logs into a buffer that a test may read while the
// Proxy logs from the background.
func newBufferLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// cachedNames lists every entry of a cacher that can walk.
func cachedNames(c Cacher) []string {
	var names []string
	c.(CacheWalker).Walk(context.Background(), "", func(name string) error {
		names = append(names, name)
		return nil
	})
	return names
}

// failingFile fails reads after the first bytes, like a disk going bad.
type failingFile struct {
	*bytes.Reader
	read int
}

func (f *failingFile) Read(p []byte) (int, error) {
	if f.read >= 64<<10 {
		return 0, errors.New("disk error")
	}
	n, err := f.Reader.Read(p)
	f.read += n
	return n, err
}
func (f *failingFile) ModTime() time.Time { return time.Unix(1, 0) }
func (f *failingFile) Close() error       { return nil }

type failingReadCacher struct{ data []byte }

func (c failingReadCacher) Get(context.Context, string) (CachedFile, error) {
	return &failingFile{Reader: bytes.NewReader(c.data)}, nil
}
func (failingReadCacher) Put(context.Context, string, io.ReadSeeker) error { return nil }

func TestReadErrorAbortsTheResponse(t *testing.T) {
	p := newTestProxy(t, "off")
	p.Cacher = failingReadCacher{data: bytes.Repeat([]byte("z"), 100<<10)}
	// The handler itself aborts, rather than returning with a short body.
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.zip"); !w.Aborted {
		t.Errorf("handler ended without panic(http.ErrAbortHandler): %d", w.Code)
	}
	// And the client sees a started response that then fails.
	srv := httptest.NewServer(p)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/example.com/a/@v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(body) == 0 || err == nil {
		t.Errorf("%s, %d bytes, %v: want a started response that then fails", resp.Status, len(body), err)
	}
}

// Init takes its own copy of the configuration: fields changed afterwards,
// slices and maps included, change nothing.
func TestFieldsChangedAfterInitAreNotSeen(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	p.MutableTTL = time.Hour
	p.Routes = []Route{{Pattern: "example.com/routed", Upstreams: []Upstream{{URL: up.URL}}}}
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	p.MutableTTL = -1
	p.Routes[0].Upstreams[0].URL = "off"
	p.Hosted = &MemCacher{}
	p.Authorize = func(*http.Request, Operation, string) error { return errors.New("no") }
	do(p, "GET", "/example.com/a/@v/list")
	if w := do(p, "GET", "/example.com/a/@v/list"); w.Code != 200 || up.Requests("/example.com/a/@v/list") != 1 {
		t.Errorf("list: %d, fetched %d times; want 200, fetched once within the TTL Init saw", w.Code, up.Requests("/example.com/a/@v/list"))
	}
	if w := do(p, "PUT", "/example.com/a/@v/v1.1.0.zip"); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("PUT with Hosted set after Init: %d, want 405 (publishing disabled)", w.Code)
	}
}

// Env holds the egress proxy variables for a Dialer without an Env of its
// own; a Dialer's own Env wins, and without either the process's are read.
func TestEnvCoversEgressProxyVariables(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://from-process.test:1")
	proxyOf := func(p *Proxy) string {
		t.Helper()
		if err := p.Init(); err != nil {
			t.Fatal(err)
		}
		for _, kv := range p.dialer.Environ() {
			if v, ok := strings.CutPrefix(kv, "HTTPS_PROXY="); ok {
				return v
			}
		}
		return ""
	}
	env := []string{"GOPROXY=off", "GOSUMDB=off", "HTTPS_PROXY=http://from-env.test:2"}
	if got := proxyOf(&Proxy{Cacher: &MemCacher{}, Env: env}); got != "http://from-env.test:2" {
		t.Errorf("with Env: HTTPS_PROXY %q, want Env's", got)
	}
	if got := proxyOf(&Proxy{Cacher: &MemCacher{}, Env: []string{"GOPROXY=off", "GOSUMDB=off"}}); got != "" {
		t.Errorf("with an Env without proxy variables: HTTPS_PROXY %q, want none (the process's is not read)", got)
	}
	if got := proxyOf(&Proxy{Cacher: &MemCacher{}, Env: env, Dialer: &Dialer{Env: []string{"HTTPS_PROXY=http://from-dialer.test:3"}}}); got != "http://from-dialer.test:3" {
		t.Errorf("with the Dialer's own Env: HTTPS_PROXY %q, want the Dialer's", got)
	}
	t.Setenv("GOPROXY", "off")
	if got := proxyOf(&Proxy{Cacher: &MemCacher{}}); got != "http://from-process.test:1" {
		t.Errorf("without Env: HTTPS_PROXY %q, want the process's", got)
	}
	p := &Proxy{Cacher: &MemCacher{}, Env: append(env, "GOPROXY=direct"), TempDir: t.TempDir()}
	proxyOf(p)
	if got := p.direct.dialer.Environ(); !slices.Contains(got, "HTTPS_PROXY=http://from-env.test:2") {
		t.Errorf("the go command's way out: %q, want Env's HTTPS_PROXY", got)
	}
}

// idle reports whether p does nothing in the background: no fetch, no
// prefetch, no checksum lookup.
func (p *Proxy) idle() bool {
	if !p.prefetcher.idle() {
		return false
	}
	if p.verifier != nil && !p.verifier.lookups.idle() {
		return false
	}
	return p.flights.idle()
}
