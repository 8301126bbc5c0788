package s3cacher

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// benchProxy serves c through a Proxy over up, with the hot tier off so
// that every answer comes from the store.
func benchProxy(b *testing.B, c goproxy.Cacher, up string, redirect bool) *httptest.Server {
	p := &goproxy.Proxy{
		Cacher:        c,
		Env:           []string{"GOPROXY=" + up, "GOSUMDB=off"},
		TempDir:       b.TempDir(),
		Transport:     http.DefaultTransport,
		HotCacheBytes: -1,
		Redirect:      goproxy.DownloadRedirect{Enabled: redirect},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	srv := httptest.NewServer(p)
	b.Cleanup(srv.Close)
	return srv
}

// BenchmarkWarm measures warm requests through a Proxy whose hot tier is
// off, from a DirCacher (the baseline) and from the bucket, with 8
// clients at once: a .info, a zip of the median size of a real graph (60
// KB) and one of 4 MB, and the zips again redirected to the bucket (the
// client following the redirect). Besides ns/op and MB/s, it reports the
// latency of the median request and of the 99th percentile.
func BenchmarkWarm(b *testing.B) {
	s, bucket := sharedServer(b)
	small, err := moduletest.LargeVersion(b.TempDir(), "example.com/small", "v1.0.0", 60<<10)
	if err != nil {
		b.Fatal(err)
	}
	big, err := moduletest.LargeVersion(b.TempDir(), "example.com/big", "v1.0.0", 4<<20)
	if err != nil {
		b.Fatal(err)
	}
	up := moduletest.NewServer([]*moduletest.Version{small, big})
	defer up.Close()
	files := []struct{ name, path string }{
		{"info", "/" + escapedName(small, ".info")},
		{"zip-60KB", "/" + escapedName(small, ".zip")},
		{"zip-4MB", "/" + escapedName(big, ".zip")},
	}
	stores := []struct {
		name     string
		cacher   goproxy.Cacher
		redirect bool
	}{
		{"DirCacher", goproxy.DirCacher(b.TempDir()), false},
		{"s3cacher", cacherFor(b, s, bucket, fmt.Sprintf("bench%d", prefixes.Add(1))), false},
		{"s3cacher-redirect", nil, true}, // the bucket above, redirecting
	}
	stores[2].cacher = stores[1].cacher
	for _, f := range files {
		for _, st := range stores {
			if st.redirect && f.name == "info" {
				continue
			}
			b.Run(f.name+"/"+st.name, func(b *testing.B) {
				srv := benchProxy(b, st.cacher, up.URL, st.redirect)
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
				get := func() int64 {
					resp, err := client.Get(srv.URL + f.path)
					if err != nil {
						b.Fatal(err)
					}
					n, err := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != http.StatusOK {
						b.Fatalf("GET %s: %s, %v", f.path, resp.Status, err)
					}
					return n
				}
				size := get()
				// Stored in the background: wait until it is.
				testwait.Within(b, time.Minute, func() bool {
					_, err := st.cacher.(goproxy.CacheStater).Stat(b.Context(), f.path[1:])
					return err == nil
				}, f.path, " stored")
				get()
				b.SetBytes(size)
				lat := make([]time.Duration, b.N)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for range 8 {
					wg.Go(func() {
						for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
							start := time.Now()
							get()
							lat[i] = time.Since(start)
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}

// withoutLeases is the bucket without its leases: what the proxies do
// when nothing coordinates their fetches.
type withoutLeases struct{ c *Cacher }

func (w withoutLeases) Get(ctx context.Context, name string) (goproxy.CachedFile, error) {
	return w.c.Get(ctx, name)
}

func (w withoutLeases) Put(ctx context.Context, name string, r io.ReadSeeker) error {
	return w.c.Put(ctx, name, r)
}

func (w withoutLeases) Stat(ctx context.Context, name string) (fs.FileInfo, error) {
	return w.c.Stat(ctx, name)
}

// BenchmarkColdGraphThreeProxies fetches a cold graph through three
// proxies sharing a store, 30 clients spread over them asking for every
// .info, .mod and .zip, and reports the upstream fetches per file: with
// the bucket (leases coordinate the proxies) against a directory shared
// by three proxies and the bucket without leases (the baselines: nothing
// coordinates them but the timing). Proxies here are in one process; the replica test runs them as
// processes.
func BenchmarkColdGraphThreeProxies(b *testing.B) {
	s, bucket := sharedServer(b)
	vs := moduletest.Graph(30)
	var paths []string
	for _, v := range vs {
		for _, ext := range []string{".info", ".mod", ".zip"} {
			paths = append(paths, "/"+escapedName(v, ext))
		}
	}
	for _, st := range []struct {
		name  string
		store func(b *testing.B) goproxy.Cacher
	}{
		{"shared-DirCacher", func(b *testing.B) goproxy.Cacher { return goproxy.DirCacher(b.TempDir()) }},
		{"s3cacher-without-leases", func(b *testing.B) goproxy.Cacher {
			return withoutLeases{cacherFor(b, s, bucket, fmt.Sprintf("bench%d", prefixes.Add(1)))}
		}},
		{"s3cacher", func(b *testing.B) goproxy.Cacher {
			return cacherFor(b, s, bucket, fmt.Sprintf("bench%d", prefixes.Add(1)), func(c *Cacher) { c.LeaseTTL = 5 * time.Second })
		}},
	} {
		b.Run(st.name, func(b *testing.B) {
			var fetches, files int
			for b.Loop() {
				b.StopTimer()
				up := moduletest.NewServer(vs)
				counter := &fetchCounter{h: up.Handler(), n: map[string]int{}}
				upSrv := httptest.NewServer(counter)
				store := st.store(b)
				var srvs []*httptest.Server
				for range 3 {
					srvs = append(srvs, benchProxy(b, store, upSrv.URL, false))
				}
				b.StartTimer()
				var wg sync.WaitGroup
				for i := range 30 {
					wg.Go(func() {
						for k := range paths {
							// Each file asked through the three proxies at once.
							path := paths[((i/3)*7+k)%len(paths)]
							resp, err := http.Get(srvs[i%3].URL + path)
							if err != nil {
								b.Error(err)
								return
							}
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if resp.StatusCode != http.StatusOK {
								b.Errorf("GET %s: %s", path, resp.Status)
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				for _, path := range paths {
					fetches += counter.fetches(path)
				}
				files += len(paths)
				upSrv.Close()
				up.Close()
				for _, srv := range srvs {
					srv.Close()
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(fetches)/float64(files), "upstream-fetches/file")
		})
	}
}
