package goproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// benchEntries is how many cached files the operations benchmarks run on.
const benchEntries = 100_000

// populateCache writes a cache of n files quickly (no fsync, no Put):
// modules of ten versions, each an .info, a .mod and a small .zip, stored
// over the last year and last used at random since.
func populateCache(b *testing.B, dir string, n int) (versions int) {
	b.Helper()
	start := time.Now()
	base := start.Add(-365 * 24 * time.Hour)
	info, mod, zip := []byte(`{"Version":"v1.0.0","Time":"2026-01-02T03:04:05Z"}`), []byte("module example.com/m\n"), make([]byte, 200)
	for m := 0; versions*3 < n; m++ {
		vdir := filepath.Join(dir, "example.com", fmt.Sprintf("m%05d", m), "@v")
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			b.Fatal(err)
		}
		for v := 0; v < 10 && versions*3 < n; v++ {
			stored := base.Add(time.Duration(rand.Int64N(int64(300 * 24 * time.Hour))))
			used := stored.Add(time.Duration(rand.Int64N(int64(start.Sub(stored)))))
			for ext, content := range map[string][]byte{".info": info, ".mod": mod, ".zip": zip} {
				p := filepath.Join(vdir, fmt.Sprintf("v1.0.%d%s", v, ext))
				if err := os.WriteFile(p, content, 0o644); err != nil {
					b.Fatal(err)
				}
				os.Chtimes(p, used, stored)
			}
			versions++
		}
	}
	b.Logf("wrote %d files (%d versions) in %v", versions*3, versions, time.Since(start).Round(time.Millisecond))
	return versions
}

// heapAfterGC is the live heap once garbage is collected.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkOperations measures, over a DirCacher of 100,000 files, what
// eviction and the index feed cost: the time of an eviction run (against
// a plain walk) and the memory it allocates and keeps per entry, the first
// /index request to a restarted Proxy against a walk of the cache (what
// /index cost before the feed was kept), and a warm hit through ServeHTTP
// with eviction and metrics on against one with both off.
func BenchmarkOperations(b *testing.B) {
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "cache")
	versions := populateCache(b, dir, benchEntries)
	c := DirCacher(dir)
	quiet := slog.New(slog.DiscardHandler)

	// What any listing of the cache costs, the baseline of a run.
	b.Run("Walk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Walk(ctx, "", func(string) error { return nil })
		}
	})
	// A run that only lists: every periodic run of a cache within its limits.
	b.Run("EvictionRun/within-limits", func(b *testing.B) {
		e, _ := newEvictor(Eviction{MaxAge: 10 * 365 * 24 * time.Hour, MaxBytes: 1 << 40}, c, nil, quiet, nil)
		b.ReportAllocs()
		for b.Loop() {
			res, err := e.run(ctx)
			if err != nil || res.Entries != versions*3 {
				b.Fatalf("run = %+v, %v", res, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchEntries, "ns/entry")
	})
	// A run over the size limit: both passes and the sort, with removals
	// counted rather than done so that every iteration has the same work
	// (a removal is one rename and one unlink more per file).
	b.Run("EvictionRun/over-MaxBytes", func(b *testing.B) {
		var total int64
		c.WalkInfo(ctx, "", func(e CacheEntryInfo) error { total += e.Size; return nil })
		dry := dryRemover{c}
		e, _ := newEvictor(Eviction{MaxBytes: total * 8 / 10}, dry, nil, quiet, nil)
		b.ReportAllocs()
		for b.Loop() {
			res, err := e.run(ctx)
			if err != nil || res.Removed == 0 {
				b.Fatalf("run = %+v, %v", res, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchEntries, "ns/entry")
	})
	// What a real removal adds per file: a run that removes a tenth of
	// the cache costs the over-MaxBytes run plus this for each file.
	b.Run("DeleteUnchanged", func(b *testing.B) {
		work := DirCacher(filepath.Join(b.TempDir(), "cache"))
		b.StopTimer()
		var infos []CacheEntryInfo
		for i := range b.N {
			p := filepath.Join(string(work), fmt.Sprintf("example.com/m%03d/@v/v1.0.%d.zip", i%1000, i/1000))
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte("zip"), 0o644)
		}
		work.WalkInfo(ctx, "", func(e CacheEntryInfo) error { infos = append(infos, e); return nil })
		b.StartTimer()
		for _, info := range infos {
			if removed, err := work.DeleteUnchanged(ctx, info); !removed || err != nil {
				b.Fatalf("DeleteUnchanged(%s) = %v, %v", info.Name, removed, err)
			}
		}
	})

	// Memory kept between runs by the eviction and index bookkeeping, and
	// by today's in-memory index (the baseline), per cached file.
	b.Run("Memory", func(b *testing.B) {
		for b.Loop() {
			before := heapAfterGC()
			e, _ := newEvictor(Eviction{MaxAge: 10 * 365 * 24 * time.Hour}, c, nil, quiet, nil)
			e.run(ctx)
			x := newIndexLog(c, nil, quiet)
			if _, err := x.page(ctx, time.Time{}, 10); err != nil {
				b.Fatal(err)
			}
			after := heapAfterGC()
			runtime.KeepAlive(e)
			runtime.KeepAlive(x)
			b.ReportMetric(float64(int64(after)-int64(before))/benchEntries, "kept-B/entry")

			names := make([]string, benchEntries)
			for i := range names {
				names[i] = fmt.Sprintf("example.com/m%05d/@v/v1.0.%d.info", i/10, i%10)
			}
			before = heapAfterGC()
			r := newUsageRecorder(c, quiet)
			for _, n := range names {
				r.record(n)
			}
			after = heapAfterGC()
			runtime.KeepAlive(r)
			b.ReportMetric(float64(int64(after)-int64(before))/benchEntries, "pending-use-B/name")

			before = heapAfterGC()
			baseline := newIndexLog(walkAndStatCacher{c}, nil, quiet)
			if _, err := baseline.page(ctx, time.Time{}, 10); err != nil {
				b.Fatal(err)
			}
			after = heapAfterGC()
			runtime.KeepAlive(baseline)
			b.ReportMetric(float64(int64(after)-int64(before))/benchEntries, "baseline-index-B/entry")
		}
	})

	// The first page after a restart: the journal is read where it is.
	// The feed was created once, from the walk.
	if err := newIndexLog(c, nil, quiet).prepare(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("IndexFirstPage/journal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			page, err := newIndexLog(DirCacher(dir), nil, quiet).page(ctx, time.Time{}, maxIndexLimit)
			if err != nil || len(page) != maxIndexLimit {
				b.Fatalf("page of %d, %v", len(page), err)
			}
		}
	})
	// The same through a Proxy started anew over the cache: its first
	// request, Init and the feed's check included.
	b.Run("IndexFirstPage/restarted-Proxy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p := &Proxy{Cacher: DirCacher(dir), Env: []string{"GOPROXY=off", "GOSUMDB=off"}, Logger: quiet}
			w := httptest.NewRecorder()
			p.ServeHTTP(w, httptest.NewRequest("GET", "/index", nil))
			if w.Code != 200 || bytes.Count(w.Body.Bytes(), []byte("\n")) != maxIndexLimit {
				b.Fatalf("GET /index: %d, %d lines", w.Code, bytes.Count(w.Body.Bytes(), []byte("\n")))
			}
			p.Close()
		}
	})
	b.Run("IndexFirstPage/journal-middle", func(b *testing.B) {
		all, _ := c.ReadIndex(ctx, time.Time{}, versions)
		since := all[len(all)/2].Timestamp
		b.ReportAllocs()
		for b.Loop() {
			page, err := newIndexLog(DirCacher(dir), nil, quiet).page(ctx, since, maxIndexLimit)
			if err != nil || len(page) != maxIndexLimit {
				b.Fatalf("page of %d, %v", len(page), err)
			}
		}
	})
	b.Run("IndexFirstPage/journal-1M-versions", func(b *testing.B) {
		big := DirCacher(filepath.Join(b.TempDir(), "cache"))
		entries := make([]IndexEntry, 1_000_000)
		for i := range entries {
			entries[i] = IndexEntry{fmt.Sprintf("example.com/m%07d", i/10), fmt.Sprintf("v1.0.%d", i%10), t0.Add(time.Duration(i) * time.Millisecond)}
		}
		if err := big.CreateIndex(ctx, entries); err != nil {
			b.Fatal(err)
		}
		since := entries[len(entries)/2].Timestamp
		b.ResetTimer()
		b.ReportAllocs()
		for b.Loop() {
			page, err := newIndexLog(big, nil, quiet).page(ctx, since, maxIndexLimit)
			if err != nil || len(page) != maxIndexLimit {
				b.Fatalf("page of %d, %v", len(page), err)
			}
		}
	})
	b.Run("IndexFirstPage/baseline-walk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			page, err := newIndexLog(walkAndStatCacher{DirCacher(dir)}, nil, quiet).page(ctx, time.Time{}, maxIndexLimit)
			if err != nil || len(page) != maxIndexLimit {
				b.Fatalf("page of %d, %v", len(page), err)
			}
		}
	})

	// A warm hit read from the DirCacher, without and with recording its
	// use, alternating so that both see the same machine.
	b.Run("WarmHit/DirCacher", func(b *testing.B) {
		name := "example.com/m00001/@v/v1.0.1.info"
		r := newUsageRecorder(c, quiet)
		r.start()
		defer r.close()
		hit := func() {
			f, err := c.Get(ctx, name)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, f)
			f.Close()
		}
		compareHits(b, []string{"plain", "recorded"}, hit, func() { hit(); r.record(name) })
	})
	// Warm hits through ServeHTTP, from the hot tier and from the
	// DirCacher of 100,000 files: a Proxy with eviction and every metric
	// on against one with both off, over the same cache, alternating.
	for _, tier := range []struct {
		name     string
		hotBytes int64
		path     string
	}{
		{"hot-info", 0, "/example.com/m00001/@v/v1.0.1.info"},
		{"DirCacher-info", -1, "/example.com/m00001/@v/v1.0.1.info"},
		{"DirCacher-zip", -1, "/example.com/m00001/@v/v1.0.1.zip"},
	} {
		b.Run("WarmHit/ServeHTTP/"+tier.name, func(b *testing.B) {
			newProxy := func(eviction, metrics bool) func() {
				p := &Proxy{Cacher: c, Env: []string{"GOPROXY=off", "GOSUMDB=off"}, HotCacheBytes: tier.hotBytes, Logger: quiet}
				var runs atomic.Int64
				if eviction {
					p.Eviction = Eviction{MaxAge: 10 * 365 * 24 * time.Hour, MaxBytes: 1 << 40, Interval: time.Hour}
				}
				if metrics {
					p.Metrics = countingMetrics(&runs)
				} else {
					// Not on a hit's path: it tells when the run is over.
					p.Metrics.CacheSize = func(CacheSizeMetric) { runs.Add(1) }
				}
				b.Cleanup(func() { p.Close() })
				r := httptest.NewRequest("GET", tier.path, nil)
				w := &discardWriter{h: http.Header{}}
				p.ServeHTTP(w, r)
				for i := 0; eviction && runs.Load() == 0; i++ {
					// The run at start walks the cache: not while timing.
					if i == 6000 {
						b.Fatal("no eviction run in a minute")
					}
					time.Sleep(10 * time.Millisecond)
				}
				return func() {
					clear(w.h)
					p.ServeHTTP(w, r)
				}
			}
			hits := []func(){newProxy(false, false), newProxy(true, false), newProxy(true, true)}
			names := []string{"plain", "evicting", "evicting-metered"}
			var allocs []float64
			for _, hit := range hits {
				allocs = append(allocs, testing.AllocsPerRun(1000, hit))
			}
			compareHits(b, names, hits...)
			for i, n := range names {
				b.ReportMetric(allocs[i], "allocs/"+n+"-hit")
			}
		})
	}
}

// countingMetrics sets every metric hook, each counting into n; CacheSize
// (reported after each eviction run) counts into runs.
func countingMetrics(runs *atomic.Int64) Metrics {
	var n atomic.Int64
	return Metrics{
		Request:       func(RequestMetric) { n.Add(1) },
		UpstreamFetch: func(UpstreamFetchMetric) { n.Add(1) },
		Retry:         func(RetryMetric) { n.Add(1) },
		Verification:  func(VerificationMetric) { n.Add(1) },
		Download:      func(DownloadMetric) { n.Add(1) },
		SharedFetch:   func(SharedFetchMetric) { n.Add(1) },
		CacheSize:     func(CacheSizeMetric) { runs.Add(1) },
		Eviction:      func(EvictionMetric) { n.Add(1) },
	}
}

// compareHits times hits of each kind in alternating batches, so that
// all see the same machine, and reports each one's time and the overhead
// of each over the first.
func compareHits(b *testing.B, names []string, hits ...func()) {
	const batch = 200
	for range batch { // warm them all
		for _, hit := range hits {
			hit()
		}
	}
	b.ReportAllocs()
	spent := make([]time.Duration, len(hits))
	for b.Loop() {
		for i, hit := range hits {
			start := time.Now()
			for range batch {
				hit()
			}
			spent[i] += time.Since(start)
		}
	}
	n := float64(b.N * batch)
	for i, name := range names {
		b.ReportMetric(float64(spent[i].Nanoseconds())/n, "ns/"+name+"-hit")
		if i > 0 {
			b.ReportMetric(100*(float64(spent[i])/float64(spent[0])-1), "%overhead-"+name)
		}
	}
}

// dryRemover counts removals as done without doing them.
type dryRemover struct{ DirCacher }

func (dryRemover) DeleteUnchanged(ctx context.Context, e CacheEntryInfo) (bool, error) {
	return true, nil
}

func BenchmarkUsageRecord(b *testing.B) {
	r := newUsageRecorder(&MemCacher{}, slog.New(slog.DiscardHandler))
	r.start()
	defer r.close()
	name := "example.com/a/@v/v1.0.0.info"
	b.ReportAllocs()
	for b.Loop() {
		r.record(name)
	}
}

// walkAndStatCacher is a DirCacher that keeps no index feed and lists its
// entries without their times: its feed is built in memory by a walk that
// stats every .info, as the proxy's /index did before the feed was kept
// on the store. It is the baseline of the index benchmarks.
type walkAndStatCacher struct{ d DirCacher }

func (c walkAndStatCacher) Get(ctx context.Context, name string) (CachedFile, error) {
	return c.d.Get(ctx, name)
}
func (c walkAndStatCacher) Put(ctx context.Context, name string, r io.ReadSeeker) error {
	return c.d.Put(ctx, name, r)
}
func (c walkAndStatCacher) Stat(ctx context.Context, name string) (fs.FileInfo, error) {
	return c.d.Stat(ctx, name)
}
func (c walkAndStatCacher) Walk(ctx context.Context, prefix string, fn func(string) error) error {
	return c.d.Walk(ctx, prefix, fn)
}
