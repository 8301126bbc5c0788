package s3cacher

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
	"github.com/goproxy-team/goproxy/s3cacher/internal/miniotest"
)

// proxyLoad sends GETs of files to a proxy until stopped, checking every
// answer against the upstream's bytes, and counts the outcomes of the
// requests that started in each phase of a test.
type proxyLoad struct {
	phase   atomic.Int64 // the phase requests starting now belong to
	mu      sync.Mutex
	ok      map[int64]int
	failed  map[int64][]string
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	started atomic.Int64
}

// fileWant is a file a load asks for and what it must get.
type fileWant struct {
	path string
	body []byte
}

func startProxyLoad(t *testing.T, url string, files []fileWant, workers int) *proxyLoad {
	l := &proxyLoad{ok: map[int64]int{}, failed: map[int64][]string{}, stop: make(chan struct{})}
	client := &http.Client{Timeout: time.Minute}
	for w := range workers {
		l.wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				f := files[i%len(files)]
				phase := l.phase.Load()
				l.started.Add(1)
				err := func() error {
					resp, err := client.Get(url + f.path)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					body, err := io.ReadAll(resp.Body)
					if err != nil {
						return err
					}
					if resp.StatusCode != http.StatusOK {
						return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
					}
					if !bytes.Equal(body, f.body) {
						return fmt.Errorf("%d bytes that are not the upstream's %d", len(body), len(f.body))
					}
					return nil
				}()
				l.mu.Lock()
				if err != nil {
					l.failed[phase] = append(l.failed[phase], f.path+": "+err.Error())
				} else {
					l.ok[phase]++
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

// next starts a new phase, waiting until n requests have started in it.
func (l *proxyLoad) next(t *testing.T, phase int64, n int64) {
	t.Helper()
	l.phase.Store(phase)
	start := l.started.Load()
	testwait.Within(t, 2*time.Minute, func() bool { return l.started.Load() >= start+n }, n, " requests in phase ", phase)
}

func (l *proxyLoad) end() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

func (l *proxyLoad) outcome(phase int64) (ok int, failed []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok[phase], l.failed[phase]
}

func TestAProxyBypassesAStoppedCacheAndFailsClosedOnAStoppedHostedStore(t *testing.T) {
	if testing.Short() {
		t.Skip("stops and starts a store under load")
	}
	t.Parallel() // a server of its own, mostly waiting
	s := miniotest.Start(t)
	bucket := s.NewBucket(t)
	quick := func(c *Cacher) { c.Timeout = outageTimeout; c.LeaseTTL = 2 * time.Second }
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	var storeErrors [2]atomic.Int64 // the cache's, the hosted store's
	countStoreError := func(m goproxy.StoreErrorMetric) {
		if m.Role == goproxy.StoreHosted {
			storeErrors[1].Add(1)
		} else {
			storeErrors[0].Add(1)
		}
	}
	newProxy := func(cache, hosted goproxy.Cacher) (*goproxy.Proxy, *httptest.Server) {
		p := &goproxy.Proxy{
			Metrics:   goproxy.Metrics{StoreError: countStoreError},
			Cacher:    cache,
			Hosted:    hosted,
			Env:       []string{"GOPROXY=" + up.URL, "GOSUMDB=off"},
			TempDir:   t.TempDir(),
			Transport: http.DefaultTransport,
			// The hot tier would answer .info and .mod from memory,
			// store or no store: keep every answer on the stores and the
			// upstream.
			HotCacheBytes: -1,
			// Upstream requests are counted: the clients' alone.
			Prefetch: goproxy.PrefetchOptions{Off: true},
			Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		srv := httptest.NewServer(p)
		t.Cleanup(srv.Close)
		return p, srv
	}
	// The bucket in the cache role of one proxy, in the hosted role of
	// another (whose cache is in memory).
	cache := cacherFor(t, s, bucket, "cache", quick)
	_, cacheSrv := newProxy(cache, nil)
	hosting, hostingSrv := newProxy(&goproxy.MemCacher{}, cacherFor(t, s, bucket, "hosted", quick))
	if err := hosting.Publish(t.Context(), "corp.example.com/lib", "v1.0.0", bytes.NewReader(corpZip(t))); err != nil {
		t.Fatal(err)
	}
	var files []fileWant
	for _, v := range vs {
		files = append(files,
			fileWant{"/" + escapedName(v, ".mod"), v.Mod},
			fileWant{"/" + escapedName(v, ".zip"), upstreamZip(t, v)})
	}
	l := startProxyLoad(t, cacheSrv.URL, files, 6)
	defer l.end()
	l.next(t, 1, 3*int64(len(files))) // cold, then from the store

	s.Stop()
	l.next(t, 2, int64(len(files))) // those under way when it stopped
	l.next(t, 3, int64(len(files))) // all started with the store down
	// In the hosted role the store alone knows what is published: a
	// published version, and any module (which may be published), answer
	// 502, and nothing is asked of the upstream.
	for _, path := range []string{"/corp.example.com/lib/@v/v1.0.0.zip", "/corp.example.com/lib/@v/list", "/example.com/mod000/@v/list"} {
		resp, err := http.Get(hostingSrv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("GET %s with the hosted store stopped: %s, want 502", path, resp.Status)
		}
		if n := up.Requests(path); n != 0 {
			t.Errorf("GET %s with the hosted store stopped asked the upstream %d times", path, n)
		}
	}

	if storeErrors[0].Load() == 0 || storeErrors[1].Load() == 0 {
		t.Errorf("with the store stopped, %d cache and %d hosted store errors reported to Metrics", storeErrors[0].Load(), storeErrors[1].Load())
	}

	s.Start(t)
	l.next(t, 4, int64(len(files))) // those under way when it started
	l.next(t, 5, int64(len(files))) // all started with the store back
	l.end()
	for phase, what := range map[int64]string{1: "before the outage", 3: "with the store stopped", 5: "after the restart"} {
		ok, failed := l.outcome(phase)
		t.Logf("%s: %d answers, %d failed", what, ok, len(failed))
		if len(failed) > 0 {
			t.Errorf("%s, %d requests failed, the first: %s", what, len(failed), failed[0])
		}
	}
	for phase, what := range map[int64]string{2: "as the store stopped", 4: "as the store started"} {
		ok, failed := l.outcome(phase)
		t.Logf("%s: %d answers, %d failed (zips read from the store when it went)", what, ok, len(failed))
	}
	// Cached again: what the outage kept from the store is stored by the
	// next request for it, and then the upstream is not asked.
	get := func(url string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s after the restart: %s", url, resp.Status)
		}
	}
	for _, f := range files {
		get(cacheSrv.URL + f.path)
	}
	for _, f := range files {
		name := strings.TrimPrefix(f.path, "/")
		testwait.Within(t, time.Minute, func() bool { _, err := cache.Stat(t.Context(), name); return err == nil }, name, " stored after the restart")
	}
	before := up.TotalRequests()
	for _, f := range files {
		get(cacheSrv.URL + f.path)
	}
	if n := up.TotalRequests() - before; n != 0 {
		t.Errorf("after the restart, %d upstream requests for files the store has", n)
	}
	get(hostingSrv.URL + "/corp.example.com/lib/@v/v1.0.0.zip")
}

// corpZip is a valid zip of corp.example.com/lib@v1.0.0, to publish.
func corpZip(t *testing.T) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for name, content := range map[string]string{
		"go.mod": "module corp.example.com/lib\n\ngo 1.21\n",
		"lib.go": "package lib\n",
	} {
		w, err := zw.Create("corp.example.com/lib@v1.0.0/" + name)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, content)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
