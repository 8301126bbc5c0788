package goproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// These tests run eviction through a Proxy: what it serves is what it
// records as used, and what a run removes is fetched again. Entries are
// made old by setting their times back, on disk or in memory, so that
// the Proxy's own clocks stay real.

// evictionUpstream serves versions of the modules named, each with a zip
// of zipSize bytes or more.
func evictionUpstream(t *testing.T, zipSize int, mods ...string) (*moduletest.Server, map[string][]byte) {
	t.Helper()
	files := map[string][]byte{}
	for _, mod := range mods {
		base := "/" + mod + "/@v/v1.0.0"
		files[base+".info"] = []byte(`{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}`)
		files[base+".mod"] = []byte("module " + mod + "\n")
		files[base+".zip"] = makeZip(t, mod+"@v1.0.0/go.mod", "module "+mod+"\n",
			mod+"@v1.0.0/data.txt", strings.Repeat(mod+"\n", zipSize/len(mod)+1))
	}
	return newUpstream(t, files), files
}

// versionFiles are the request paths of a module's v1.0.0.
func versionFiles(mod string) []string {
	base := "/" + mod + "/@v/v1.0.0"
	return []string{base + ".info", base + ".mod", base + ".zip"}
}

// evictingProxy is a test Proxy over c with eviction cfg, whose metrics
// count eviction runs and remember the last request's cache outcome. It
// returns once the run made at start is over, so that no other run
// happens while a test looks (cfg.Interval should be long).
func evictingProxy(t *testing.T, c Cacher, upURL string, cfg Eviction) (*Proxy, *evictionWatch) {
	t.Helper()
	p := newTestProxy(t, upURL)
	p.Cacher = c
	p.Eviction = cfg
	w := &evictionWatch{}
	p.Metrics = Metrics{
		CacheSize: func(CacheSizeMetric) { w.runs.Add(1) },
		Request: func(r RequestMetric) {
			w.mu.Lock()
			w.last = r
			w.mu.Unlock()
		},
	}
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	p.start() // as the first request would
	testwait.For(t, func() bool { return w.runs.Load() > 0 }, "the eviction run made at start")
	return p, w
}

type evictionWatch struct {
	runs atomic.Int64
	mu   sync.Mutex
	last RequestMetric
}

func (w *evictionWatch) lastRequest() RequestMetric {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// getAll requests paths through p, each of which must answer 200 with
// the upstream's content.
func getAll(t *testing.T, p *Proxy, files map[string][]byte, paths ...string) {
	t.Helper()
	for _, path := range paths {
		w := do(p, "GET", path)
		if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), files[path]) {
			t.Fatalf("GET %s: %d, %d bytes; want 200 with the upstream's %d", path, w.Code, w.Body.Len(), len(files[path]))
		}
	}
}

// settle waits for the files fetched to be stored, and hands the uses
// recorded so far to the cacher. Then the recorder's clock moves on (the
// tests backdate the cache after settling, as if time had passed): a hot
// file used again within the same second would not be recorded again.
func settle(t *testing.T, p *Proxy) {
	t.Helper()
	testwait.For(t, p.flights.idle)
	if err := p.usage.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.usage.clock.Load() == 0 {
		t.Fatal("the usage recorder has not started")
	}
	p.usage.clock.Add(int64(time.Second))
}

// backdate makes every cached entry whose name starts with prefix look
// stored and last used at the time given.
func backdate(t *testing.T, c Cacher, prefix string, at time.Time) {
	t.Helper()
	for name := range cachedSet(t, c) {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		switch c := c.(type) {
		case DirCacher:
			if err := os.Chtimes(filepath.Join(string(c), filepath.FromSlash(name)), at, at); err != nil {
				t.Fatal(err)
			}
		case *MemCacher:
			e, ok := c.cache().Peek(name)
			if !ok {
				continue
			}
			old := &memEntry{data: e.data, modTime: at}
			old.lastUse.Store(at.UnixNano())
			c.cache().Put(name, old)
		default:
			t.Fatalf("cannot backdate a %T", c)
		}
	}
}

// evictNow runs eviction once, as the Proxy's own runs do.
func evictNow(t *testing.T, p *Proxy) evictionRun {
	t.Helper()
	res, err := p.evictor.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func cachedNamesOf(t *testing.T, c Cacher, mod string) []string {
	t.Helper()
	var names []string
	for name := range cachedSet(t, c) {
		if strings.HasPrefix(name, mod+"/") {
			names = append(names, name)
		}
	}
	return names
}

func TestProxyEvictsWhatIsUnusedAndKeepsWhatWasServedFromAnyTier(t *testing.T) {
	for _, impl := range evictionCachers {
		t.Run(impl.name, func(t *testing.T) {
			up, files := evictionUpstream(t, 1000, "example.com/used", "example.com/unused")
			c := impl.open(t)
			p, watch := evictingProxy(t, c, up.URL, Eviction{MaxAge: time.Hour, Interval: time.Hour})
			getAll(t, p, files, append(versionFiles("example.com/used"), versionFiles("example.com/unused")...)...)
			settle(t, p)
			backdate(t, c, "", time.Now().Add(-2*time.Hour))

			// Served from memory, the hot tier: a use all the same, of
			// the whole version.
			getAll(t, p, files, "/example.com/used/@v/v1.0.0.info")
			if got := watch.lastRequest().Cache; got != CacheHot {
				t.Fatalf("the .info came from %q, want the hot tier", got)
			}
			settle(t, p)
			res := evictNow(t, p)
			if got := cachedNamesOf(t, c, "example.com/used"); len(got) != 3 {
				t.Errorf("left of the version used: %v, want its three files", got)
			}
			if got := cachedNamesOf(t, c, "example.com/unused"); len(got) != 0 {
				t.Errorf("left of the version unused for two hours: %v", got)
			}
			if res.Removed != 3 || res.Entries != 3 {
				t.Errorf("run = %+v, want 3 removed, 3 left", res)
			}

			// Removed from every tier: fetched again, whole.
			before := up.TotalRequests()
			getAll(t, p, files, versionFiles("example.com/unused")...)
			if n := up.TotalRequests() - before; n != 3 {
				t.Errorf("the evicted version took %d upstream requests, want its 3 files", n)
			}
			before = up.TotalRequests()
			getAll(t, p, files, versionFiles("example.com/used")...)
			if n := up.TotalRequests() - before; n != 0 {
				t.Errorf("the version kept took %d upstream requests", n)
			}
		})
	}
}

func TestProxyEvictionKeepsTheCacheUnderMaxBytesLeastRecentlyUsedFirst(t *testing.T) {
	for _, impl := range evictionCachers {
		t.Run(impl.name, func(t *testing.T) {
			mods := []string{"example.com/m1", "example.com/m2", "example.com/m3", "example.com/m4"}
			up, files := evictionUpstream(t, 10_000, mods...)
			c := impl.open(t)
			var size int64 // of one version, zips compressing alike
			for _, path := range versionFiles(mods[0]) {
				size += int64(len(files[path]))
			}
			// Room for two and a half versions: a run over it goes down
			// to nine tenths, two versions.
			cfg := Eviction{MaxBytes: size * 5 / 2, Interval: time.Hour}
			p, _ := evictingProxy(t, c, up.URL, cfg)
			for _, mod := range mods {
				getAll(t, p, files, versionFiles(mod)...)
			}
			settle(t, p)
			// Used an hour apart, m4 last; then m1 and m2 served again.
			for i, mod := range mods {
				backdate(t, c, mod+"/", time.Now().Add(time.Duration(i-5)*time.Hour))
			}
			getAll(t, p, files, versionFiles(mods[0])[2], versionFiles(mods[1])[0])
			settle(t, p)
			res := evictNow(t, p)
			for i, mod := range mods {
				want := 0
				if i < 2 {
					want = 3
				}
				if got := cachedNamesOf(t, c, mod); len(got) != want {
					t.Errorf("%s: %d files left, want %d", mod, len(got), want)
				}
			}
			if res.Bytes > cfg.MaxBytes/10*9 || res.Bytes != 2*size {
				t.Errorf("run = %+v: %d bytes left, want two versions' %d, under nine tenths of %d", res, res.Bytes, 2*size, cfg.MaxBytes)
			}
		})
	}
}

func TestProxyEvictionLastUseSurvivesARestart(t *testing.T) {
	for _, impl := range evictionCachers {
		t.Run(impl.name, func(t *testing.T) {
			up, files := evictionUpstream(t, 1000, "example.com/used", "example.com/unused")
			c := impl.open(t)
			cfg := Eviction{MaxAge: time.Hour, Interval: time.Hour}
			p, _ := evictingProxy(t, c, up.URL, cfg)
			getAll(t, p, files, append(versionFiles("example.com/used"), versionFiles("example.com/unused")...)...)
			settle(t, p)
			backdate(t, c, "", time.Now().Add(-2*time.Hour))
			getAll(t, p, files, "/example.com/used/@v/v1.0.0.zip")
			// Close hands over the uses not flushed yet.
			p.Close()

			// A new Proxy over the same store runs at start: it knows
			// what the first served.
			evictingProxy(t, c, up.URL, cfg)
			if got := cachedNamesOf(t, c, "example.com/used"); len(got) != 3 {
				t.Errorf("left of the version used before the restart: %v", got)
			}
			if got := cachedNamesOf(t, c, "example.com/unused"); len(got) != 0 {
				t.Errorf("left of the version unused: %v", got)
			}
		})
	}
}

// slowWriter is a client that reads the first write, then nothing until
// released.
type slowWriter struct {
	h       http.Header
	status  int
	body    bytes.Buffer
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func newSlowWriter() *slowWriter {
	return &slowWriter{h: http.Header{}, started: make(chan struct{}), release: make(chan struct{})}
}

func (w *slowWriter) Header() http.Header    { return w.h }
func (w *slowWriter) WriteHeader(status int) { w.status = status }
func (w *slowWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, _ := w.body.Write(b)
	w.once.Do(func() {
		close(w.started)
		<-w.release
	})
	return n, nil
}

func TestProxyServesAFileWholeWhileEvictionRuns(t *testing.T) {
	for _, impl := range evictionCachers {
		t.Run(impl.name, func(t *testing.T) {
			up, files := evictionUpstream(t, 2<<20, "example.com/big")
			c := impl.open(t)
			p, _ := evictingProxy(t, c, up.URL, Eviction{MaxAge: time.Hour, Interval: time.Hour})
			getAll(t, p, files, versionFiles("example.com/big")...)
			settle(t, p)
			backdate(t, c, "", time.Now().Add(-2*time.Hour))

			zip := "/example.com/big/@v/v1.0.0.zip"
			w := newSlowWriter()
			served := make(chan struct{})
			go func() {
				defer close(served)
				p.ServeHTTP(w, httptest.NewRequest("GET", zip, nil))
			}()
			<-w.started // the client has the first bytes, the rest waits
			if !p.serving.has(zip[1:]) {
				t.Error("the zip being served is not marked so")
			}
			res := evictNow(t, p)
			if got := cachedNamesOf(t, c, "example.com/big"); len(got) != 3 || res.Removed != 0 {
				t.Errorf("a run while the zip is served removed %d files, left %v; want the version left whole", res.Removed, got)
			}
			close(w.release)
			<-served
			if w.status != http.StatusOK || !bytes.Equal(w.body.Bytes(), files[zip]) {
				t.Fatalf("served %d, %d bytes; want the whole %d", w.status, w.body.Len(), len(files[zip]))
			}
			if p.serving.has(zip[1:]) {
				t.Error("the zip is still marked as being served")
			}
			// Served since, so used: a run a day later removes it.
			p.evictor.now = func() time.Time { return time.Now().Add(24 * time.Hour) }
			settle(t, p)
			if res := evictNow(t, p); res.Removed != 3 {
				t.Errorf("run once served = %+v, want the version removed", res)
			}
		})
	}
}

func TestProxyEvictionNeverRemovesPublishedVersions(t *testing.T) {
	for _, impl := range evictionCachers {
		t.Run(impl.name, func(t *testing.T) {
			up, files := evictionUpstream(t, 1000, "example.com/cached")
			c := impl.open(t)
			hosted := DirCacher(t.TempDir())
			p := newHostingProxy(t, up.URL)
			p.Cacher, p.Hosted = c, hosted
			p.Eviction = Eviction{MaxAge: time.Hour, MaxBytes: 1, Interval: time.Hour}
			if err := p.Publish(context.Background(), "corp.example.com/lib", "v1.0.0", bytes.NewReader(corpZip(t, "v1.0.0", "x"))); err != nil {
				t.Fatal(err)
			}
			for _, path := range versionFiles("example.com/cached") {
				if w := getAs(p, path, "reader", "reader-pw"); w.Code != 200 || !bytes.Equal(w.Body.Bytes(), files[path]) {
					t.Fatalf("GET %s: %d", path, w.Code)
				}
			}
			settle(t, p)
			backdate(t, c, "", time.Now().Add(-48*time.Hour))
			backdate(t, hosted, "", time.Now().Add(-48*time.Hour))
			evictNow(t, p)
			if got := cachedSet(t, c); len(got) != 0 {
				t.Errorf("left in the cache: %v", keys(got))
			}
			if got := cachedSet(t, hosted); len(got) != 3 {
				t.Errorf("published files left: %v, want the version's three", keys(got))
			}
			for _, path := range versionFiles("corp.example.com/lib") {
				if w := getAs(p, path, "reader", "reader-pw"); w.Code != 200 {
					t.Errorf("GET %s after eviction: %d %s", path, w.Code, w.Body)
				}
			}
		})
	}
}

// TestProxiesSharingADirectoryNeverCorruptIt runs two Proxies with
// eviction on, in this process and a second one, over one DirCacher
// directory kept far below what they fetch: they fetch, store, serve and
// evict the same files at once. Every answer is the upstream's file,
// every file left is whole, and the index feed's lines are whole and in
// order.
func TestProxiesSharingADirectoryNeverCorruptIt(t *testing.T) {
	var mods []string
	for i := range 30 {
		mods = append(mods, fmt.Sprintf("example.com/shared%02d", i))
	}
	up, files := evictionUpstream(t, 4000, mods...)
	dir := filepath.Join(t.TempDir(), "cache")
	cfg := Eviction{MaxBytes: 40_000, Interval: 5 * time.Millisecond}

	helper := helperProcess(t, "TestHelperSharingProxy", "HELPER_CACHE_DIR="+dir, "HELPER_UPSTREAM="+up.URL,
		"HELPER_MODULES="+strings.Join(mods, ","))
	var out bytes.Buffer
	helper.Stdout, helper.Stderr = &out, &out
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	p := newTestProxy(t, up.URL)
	p.Cacher = DirCacher(dir)
	p.Eviction = cfg
	for range 3 {
		for _, mod := range mods {
			getAll(t, p, files, versionFiles(mod)...)
		}
	}
	if err := helper.Wait(); err != nil {
		t.Fatalf("second process: %v\n%s", err, out.String())
	}
	testwait.For(t, p.flights.idle)
	p.Close()

	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		name, _ := filepath.Rel(dir, path)
		name = filepath.ToSlash(name)
		if name == indexJournal {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if want, ok := files["/"+name]; !ok || !bytes.Equal(data, want) {
			t.Errorf("%s: %d bytes that are not its content (a known name: %v)", name, len(data), ok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	feed, err := DirCacher(dir).ReadIndex(context.Background(), time.Time{}, 10_000)
	if err != nil || len(feed) < len(mods) {
		t.Fatalf("index feed of %d entries, %v; want every module at least once", len(feed), err)
	}
	for i := 1; i < len(feed); i++ {
		if !feed[i].Timestamp.After(feed[i-1].Timestamp) {
			t.Errorf("index feed entry %d at %v, not after %v", i, feed[i].Timestamp, feed[i-1].Timestamp)
		}
	}
}

func TestHelperSharingProxy(t *testing.T) {
	if os.Getenv("HELPER_PROCESS") != "1" {
		t.Skip("run by TestProxiesSharingADirectoryNeverCorruptIt")
	}
	upURL := os.Getenv("HELPER_UPSTREAM")
	p := newTestProxy(t, upURL)
	p.Cacher = DirCacher(os.Getenv("HELPER_CACHE_DIR"))
	p.Eviction = Eviction{MaxBytes: 40_000, Interval: 5 * time.Millisecond}
	for range 3 {
		for _, mod := range strings.Split(os.Getenv("HELPER_MODULES"), ",") {
			for _, path := range versionFiles(mod) {
				resp, err := http.Get(upURL + path)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if w := do(p, "GET", path); w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) {
					t.Fatalf("GET %s: %d, %d bytes; want the upstream's %d", path, w.Code, w.Body.Len(), len(want))
				}
			}
		}
	}
}

// TestGoCommandRefetchesWhatWasEvicted: go mod download through a Proxy
// with eviction, a run once everything has been unused past MaxAge, and
// go mod download again in a fresh module cache, which the Proxy serves
// by fetching every file again.
func TestGoCommandRefetchesWhatWasEvicted(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	c := DirCacher(t.TempDir())
	p, _ := evictingProxy(t, c, up.URL, Eviction{MaxAge: time.Hour, Interval: time.Hour})
	srv := httptest.NewServer(p)
	defer srv.Close()

	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	gocmd.WriteGoMod(moduletest.RootGoMod(vs))
	gocmd.MustRun(t, "mod", "download")
	settle(t, p)
	zips := 0
	for name := range cachedSet(t, c) {
		if strings.HasSuffix(name, ".zip") {
			zips++
		}
	}
	if zips < 10 {
		t.Fatalf("%d zips cached, want at least 10", zips)
	}

	backdate(t, c, "", time.Now().Add(-2*time.Hour))
	res := evictNow(t, p)
	if left := cachedSet(t, c); len(left) != 0 {
		t.Fatalf("left after the run: %v (run %+v)", keys(left), res)
	}
	before := up.TotalRequests()
	gocmd.FreshModCache(t)
	gocmd.MustRun(t, "mod", "download")
	if n := up.TotalRequests() - before; n < zips {
		t.Errorf("go mod download after eviction took %d upstream requests, want the %d zips fetched again at least", n, zips)
	}
}
