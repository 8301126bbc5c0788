package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy"
)

// operations measures figure 8: what eviction, the index feed and the
// metrics cost, over a DirCacher of n files (-opentries) written for it:
// modules of ten versions, each an .info, a .mod and a 200-byte .zip,
// stored over the last year and last used at random since.
//
//   - A warm hit through Proxy.ServeHTTP, called in this process (no
//     network, which would drown the difference), with Eviction on
//     against the same Proxy configuration with it off, over the same
//     cache: an .info from the hot tier, and one from the DirCacher
//     (HotCacheBytes -1). The two sides alternate in batches of 200 hits
//     for -opreps rounds of -opdur each; the medians of the rounds'
//     per-hit times are compared. Target: at most 1.05x. Every metric
//     hook set (each an atomic add) on top of eviction is timed the same
//     way, for reference.
//   - One eviction run that finds the cache within its limits (what
//     every periodic run of a well-sized cache does): from a Proxy's first
//     request, which starts the run, to its CacheSize metric; the baseline
//     is DirCacher.Walk of the same cache. Medians of -opreps runs.
//   - The first /index request to a Proxy started anew over the cache,
//     whose feed was created by an earlier Proxy; the baseline is what
//     /index did before the feed was kept on the store: walk the cache,
//     stat every .info, sort the versions in memory. Medians of -opreps.
//
// The memory the bookkeeping keeps per entry is measured by
// "go test -bench BenchmarkOperations/Memory" instead: it needs the live
// heap of a process doing nothing else.
func operations(tmp string, n, reps int, dur time.Duration) (rows []row, raw []string) {
	dir := filepath.Join(tmp, "operations-cache")
	progress("operations: writing a cache of %d files", n)
	versions := populate(dir, n)
	c := goproxy.DirCacher(dir)
	discard := slog.New(slog.DiscardHandler)
	newProxy := func(opts ...func(*goproxy.Proxy)) *goproxy.Proxy {
		p := &goproxy.Proxy{Cacher: c, Env: []string{"GOPROXY=off", "GOSUMDB=off"}, TempDir: tmp, Logger: discard}
		for _, o := range opts {
			o(p)
		}
		if err := p.Init(); err != nil {
			fatalf("%v", err)
		}
		atExit(func() { p.Close() })
		return p
	}
	// Eviction that finds the cache within its limits: it lists, and
	// removes nothing.
	within := goproxy.Eviction{MaxAge: 10 * 365 * 24 * time.Hour, MaxBytes: 1 << 40, Interval: time.Hour}
	// runEnded, set as the CacheSize hook, tells when a run is over.
	runEnded := func(ended chan<- time.Time) func(goproxy.CacheSizeMetric) {
		return func(goproxy.CacheSizeMetric) {
			select {
			case ended <- time.Now():
			default:
			}
		}
	}
	get := func(p *goproxy.Proxy, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		p.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != http.StatusOK {
			fatalf("operations: GET %s: %d %s", path, w.Code, w.Body)
		}
		return w
	}

	// The index feed is created once, from the cache, by the first Proxy
	// over it: here, before anything is timed.
	get(newProxy(), "/index")

	// The eviction run, against a walk.
	progress("operations: eviction runs and walks, %d each", reps)
	var runs, walks []time.Duration
	for range reps {
		start := time.Now()
		err := c.Walk(context.Background(), "", func(string) error { return nil })
		if err != nil {
			fatalf("%v", err)
		}
		walks = append(walks, time.Since(start))
		ended := make(chan time.Time, 1)
		p := newProxy(func(p *goproxy.Proxy) {
			p.Eviction = within
			p.Metrics.CacheSize = runEnded(ended)
		})
		start = time.Now()
		get(p, "/example.com/m00000/@v/v1.0.0.info")
		runs = append(runs, (<-ended).Sub(start))
		p.Close()
	}
	er, ew := median(runs), median(walks)
	r := durRow(fmt.Sprintf("eviction run, %d files", n), er, ew, 0)
	r.target, r.met = "-", ""
	rows = append(rows, r)
	raw = append(raw, fmt.Sprintf("eviction run (within limits)  median %s (%.0f ns/file)  runs %s; DirCacher.Walk median %s  runs %s",
		secs(er), float64(er.Nanoseconds())/float64(n), durList(runs), secs(ew), durList(walks)))

	// The first /index of a restarted Proxy, against the walk /index
	// made before.
	progress("operations: first /index after a restart, and the old walk, %d each", reps)
	var firsts, walked []time.Duration
	for range reps {
		p := newProxy()
		start := time.Now()
		w := get(p, "/index")
		firsts = append(firsts, time.Since(start))
		p.Close()
		if lines := bytes.Count(w.Body.Bytes(), []byte("\n")); lines != min(2000, versions) {
			fatalf("operations: /index gave %d lines, want %d", lines, min(2000, versions))
		}
		start = time.Now()
		walkIndex(c)
		walked = append(walked, time.Since(start))
	}
	fi, fw := median(firsts), median(walked)
	r = durRow(fmt.Sprintf("first /index after restart, %d versions", versions), fi, fw, 0)
	r.ratio, r.target, r.met = fmt.Sprintf("%.4fx", fi.Seconds()/fw.Seconds()), "-", ""
	rows = append(rows, r)
	raw = append(raw, fmt.Sprintf("first /index  median %s  runs %s; walk and stat of the cache median %s  runs %s",
		secs(fi), durList(firsts), secs(fw), durList(walked)))

	// Warm hits, eviction on against off.
	for _, tier := range []struct {
		name     string
		hotBytes int64
	}{{"hot tier", 0}, {"DirCacher", -1}} {
		progress("operations: warm hits (%s), %d rounds of %s each side", tier.name, reps, secs(dur))
		path := "/example.com/m00001/@v/v1.0.1.info"
		hit := func(opts ...func(*goproxy.Proxy)) func() {
			ended := make(chan time.Time, 1)
			p := newProxy(append(opts, func(p *goproxy.Proxy) {
				p.HotCacheBytes = tier.hotBytes
				p.Metrics.CacheSize = runEnded(ended)
			})...)
			get(p, path)
			if p.Eviction != (goproxy.Eviction{}) {
				<-ended // the run at start walks the cache: not while timing
			}
			w := &discardWriter{h: http.Header{}}
			r := httptest.NewRequest("GET", path, nil)
			return func() {
				clear(w.h)
				p.ServeHTTP(w, r)
			}
		}
		sides := []func(){
			hit(),
			hit(func(p *goproxy.Proxy) { p.Eviction = within }),
			hit(func(p *goproxy.Proxy) {
				p.Eviction = within
				p.Metrics = everyMetric()
			}),
		}
		perHit := timeHits(sides, reps, dur)
		off, on, metered := median(perHit[0]), median(perHit[1]), median(perHit[2])
		rows = append(rows, nsRow("warm hit ("+tier.name+"), eviction on vs off", on, off, 1.05))
		mr := nsRow("  (eviction and every metric hook)", metered, off, 0)
		mr.target, mr.met = "-", ""
		rows = append(rows, mr)
		raw = append(raw, fmt.Sprintf("warm hit, %s: off median %s/hit  rounds %s; eviction on %s/hit  rounds %s; and metrics %s/hit  rounds %s",
			tier.name, nsString(off), nsList(perHit[0]), nsString(on), nsList(perHit[1]), nsString(metered), nsList(perHit[2])))
	}
	return rows, raw
}

// populate writes n files into dir without going through Put (no fsync:
// it is only the benchmark's set-up) and returns how many versions they
// make.
func populate(dir string, n int) (versions int) {
	now := time.Now()
	base := now.Add(-365 * 24 * time.Hour)
	info, mod, zip := []byte(`{"Version":"v1.0.0","Time":"2026-01-02T03:04:05Z"}`), []byte("module example.com/m\n"), make([]byte, 200)
	for m := 0; versions*3 < n; m++ {
		vdir := filepath.Join(dir, "example.com", fmt.Sprintf("m%05d", m), "@v")
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			fatalf("%v", err)
		}
		for v := 0; v < 10 && versions*3 < n; v++ {
			stored := base.Add(time.Duration(rand.Int64N(int64(300 * 24 * time.Hour))))
			used := stored.Add(time.Duration(rand.Int64N(int64(now.Sub(stored)))))
			for _, f := range []struct {
				ext     string
				content []byte
			}{{".info", info}, {".mod", mod}, {".zip", zip}} {
				p := filepath.Join(vdir, fmt.Sprintf("v1.0.%d%s", v, f.ext))
				if err := os.WriteFile(p, f.content, 0o644); err != nil {
					fatalf("%v", err)
				}
				os.Chtimes(p, used, stored)
			}
			versions++
		}
	}
	return versions
}

// walkIndex is what /index did before the feed was kept on the store:
// list the cache, stat every canonical version's .info, and sort the
// versions by when they were stored, in memory.
func walkIndex(c goproxy.DirCacher) []goproxy.IndexEntry {
	ctx := context.Background()
	var entries []goproxy.IndexEntry
	err := c.Walk(ctx, "", func(name string) error {
		escPath, file, ok := strings.Cut(name, "/@v/")
		escVersion, isInfo := strings.CutSuffix(file, ".info")
		if !ok || !isInfo {
			return nil
		}
		path, err1 := module.UnescapePath(escPath)
		version, err2 := module.UnescapeVersion(escVersion)
		if err1 != nil || err2 != nil || module.CanonicalVersion(version) != version {
			return nil
		}
		fi, err := c.Stat(ctx, name)
		if err != nil {
			return nil
		}
		entries = append(entries, goproxy.IndexEntry{Path: path, Version: version, Timestamp: fi.ModTime()})
		return nil
	})
	if err != nil {
		fatalf("%v", err)
	}
	slices.SortStableFunc(entries, func(a, b goproxy.IndexEntry) int { return a.Timestamp.Compare(b.Timestamp) })
	return entries
}

// everyMetric sets every metric hook, each an atomic add, as a counter
// of a monitoring library would be.
func everyMetric() goproxy.Metrics {
	var n atomic.Int64
	return goproxy.Metrics{
		Request:       func(goproxy.RequestMetric) { n.Add(1) },
		UpstreamFetch: func(goproxy.UpstreamFetchMetric) { n.Add(1) },
		Retry:         func(goproxy.RetryMetric) { n.Add(1) },
		Verification:  func(goproxy.VerificationMetric) { n.Add(1) },
		Download:      func(goproxy.DownloadMetric) { n.Add(1) },
		SharedFetch:   func(goproxy.SharedFetchMetric) { n.Add(1) },
		CacheSize:     func(goproxy.CacheSizeMetric) { n.Add(1) },
		Eviction:      func(goproxy.EvictionMetric) { n.Add(1) },
	}
}

// timeHits runs the sides' hits in alternating batches for rounds of dur
// each, and returns each side's time per hit in every round.
func timeHits(sides []func(), rounds int, dur time.Duration) [][]time.Duration {
	const batch = 200
	for range batch { // warm all
		for _, hit := range sides {
			hit()
		}
	}
	perHit := make([][]time.Duration, len(sides))
	for range rounds {
		spent := make([]time.Duration, len(sides))
		hits := 0
		for end := time.Now().Add(dur); time.Now().Before(end); hits += batch {
			for i, hit := range sides {
				start := time.Now()
				for range batch {
					hit()
				}
				spent[i] += time.Since(start)
			}
		}
		for i := range sides {
			perHit[i] = append(perHit[i], spent[i]/time.Duration(hits))
		}
	}
	return perHit
}

// discardWriter is a ResponseWriter that keeps nothing but its header.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

func nsRow(figure string, proxy, base time.Duration, target float64) row {
	ratio := float64(proxy) / float64(base)
	return row{
		figure:   figure,
		proxy:    nsString(proxy),
		baseline: nsString(base),
		ratio:    fmt.Sprintf("%.3fx", ratio),
		target:   fmt.Sprintf("<=%.2fx", target),
		met:      yesNo(ratio <= target),
	}
}

func nsString(d time.Duration) string { return fmt.Sprintf("%dns", d.Nanoseconds()) }

func nsList(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, nsString(d))
	}
	return "[" + strings.Join(s, " ") + "]"
}
