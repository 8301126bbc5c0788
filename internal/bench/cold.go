package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goproxy-team/goproxy"
)

// coldRun is one cold go mod download.
type coldRun struct {
	d        time.Duration
	up       requestCounts // upstream requests for module files
	db       [3]int64      // checksum database requests: all, lookups, tiles
	viaSumDB int64         // the go command's /sumdb/ requests to the proxy
	// Prefetching: files fetched ahead, of which the go command asked
	// for used.
	prefetched, used int64
	asked            map[string]bool // the paths the go command asked the proxy
}

// coldSide is one way of running the cold download.
type coldSide struct {
	name string
	run  func() coldRun
	res  []coldRun
}

func (s *coldSide) times() []time.Duration {
	var ds []time.Duration
	for _, r := range s.res {
		ds = append(ds, r.d)
	}
	return ds
}

// cold times cold go mod downloads of the graph, verification on: straight
// from the upstream, and through a fresh proxy with prefetching off and on.
func (b *bench) cold() {
	direct := newGoRunner(filepath.Join(b.godir, "cold-direct"), b.upURL, b.goMod, b.wantZips)
	direct.env.Set("GOSUMDB", b.db.vkey+" "+b.db.URL)
	viaProxy := newGoRunner(filepath.Join(b.godir, "cold-proxy"), "", b.goMod, b.wantZips)
	viaProxy.env.Set("GOSUMDB", b.db.vkey) // no URL: through the proxy
	viaPrefetch := newGoRunner(filepath.Join(b.godir, "cold-prefetch"), "", b.goMod, b.wantZips)
	viaPrefetch.env.Set("GOSUMDB", b.db.vkey)
	viaModOnly := newGoRunner(filepath.Join(b.godir, "cold-prefetch-modonly"), "", b.goMod, b.wantZips)
	viaModOnly.env.Set("GOSUMDB", b.db.vkey)
	viaInfo := newGoRunner(filepath.Join(b.godir, "cold-prefetch-info"), "", b.goMod, b.wantZips)
	viaInfo.env.Set("GOSUMDB", b.db.vkey)

	proxied := func(g *goRunner, prefetch goproxy.PrefetchOptions) coldRun {
		var prefetched, used atomic.Int64
		p, _ := b.newProxy(b.upURL, func(p *goproxy.Proxy) {
			p.Prefetch = prefetch
			p.Metrics.Prefetch = func(m goproxy.PrefetchMetric) {
				switch m.Event {
				case goproxy.PrefetchFetched:
					prefetched.Add(1)
				case goproxy.PrefetchUsed:
					used.Add(1)
				}
			}
		})
		var via atomic.Int64
		var mu sync.Mutex
		asked := map[string]bool{}
		srv := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/sumdb/") {
				via.Add(1)
			} else {
				mu.Lock()
				asked[r.URL.Path] = true
				mu.Unlock()
			}
			p.ServeHTTP(w, r)
		}))
		g.env.Set("GOPROXY", srv.URL)
		b.counted.take()
		dbBefore := b.db.counts()
		d := g.modDownload()
		// Prefetches may run on after the go command is done: they
		// count, and must not burden the next run.
		waitQuiet(b.counted, 300*time.Millisecond, 20*time.Second)
		res := coldRun{d: d, up: b.counted.take(), viaSumDB: via.Load(), prefetched: prefetched.Load(), used: used.Load(), asked: asked}
		dbAfter := b.db.counts()
		for k := range res.db {
			res.db[k] = dbAfter[k] - dbBefore[k]
		}
		srv.Close()
		p.Close()
		return res
	}
	sides := []*coldSide{
		{name: "direct", run: func() coldRun {
			b.counted.take()
			dbBefore := b.db.counts()
			d := direct.modDownload()
			res := coldRun{d: d, up: b.counted.take()}
			dbAfter := b.db.counts()
			for k := range res.db {
				res.db[k] = dbAfter[k] - dbBefore[k]
			}
			return res
		}},
		{name: "proxy", run: func() coldRun { return proxied(viaProxy, goproxy.PrefetchOptions{Off: true}) }},
		{name: "prefetch", run: func() coldRun { return proxied(viaPrefetch, goproxy.PrefetchOptions{}) }},
		{name: "prefetch .mod only", run: func() coldRun { return proxied(viaModOnly, goproxy.PrefetchOptions{NoInfo: true}) }},
		{name: "prefetch+info", run: func() coldRun { return proxied(viaInfo, goproxy.PrefetchOptions{Info: true}) }},
	}
	progress("cold go mod download, verification on, %d runs each of %d sides", *reps, len(sides))
	for i := range *reps {
		for j := range sides {
			s := sides[(i+j)%len(sides)]
			s.res = append(s.res, s.run())
		}
		var line []string
		for _, s := range sides {
			line = append(line, fmt.Sprintf("%s %s", s.name, secs(s.res[i].d)))
		}
		progress("  run %d: %s", i+1, strings.Join(line, ", "))
	}
	directSide, proxySide, defaultSide, modOnlySide, infoSide := sides[0], sides[1], sides[2], sides[3], sides[4]
	cd, cp, cf := median(directSide.times()), median(proxySide.times()), median(defaultSide.times())
	cm, ci := median(modOnlySide.times()), median(infoSide.times())
	modLabel := fmt.Sprintf("(%d modules)", b.wantZips)
	modOnly := durRow("  (prefetch .mod only: NoInfo)", cm, cd, 0)
	modOnly.target, modOnly.met = "-", ""
	withInfo := durRow("  (prefetch with the requirements' .info: Info)", ci, cd, 0)
	withInfo.target, withInfo.met = "-", ""
	b.rows = append(b.rows,
		durRow("cold go mod download "+modLabel+", verifying, prefetch off", cp, cd, 1.05),
		durRow("  the same, prefetch on (the default: .mod, and the served version's .info)", cf, cd, 0.75),
		modOnly, withInfo)

	// One request per file fetched, prefetching off.
	oneEach := true
	var reqs, files []string
	for _, r := range proxySide.res {
		oneEach = oneEach && r.up.requests == r.up.files && r.up.ranged == 0
		reqs = append(reqs, fmt.Sprint(r.up.requests))
		files = append(files, fmt.Sprint(r.up.files))
	}
	last := proxySide.res[len(proxySide.res)-1]
	b.rows = append(b.rows, row{
		figure:   "  upstream requests per file fetched, prefetch off",
		proxy:    fmt.Sprintf("%d req", last.up.requests),
		baseline: fmt.Sprintf("%d files", last.up.files),
		ratio:    fmt.Sprintf("%.2f", float64(last.up.requests)/float64(last.up.files)),
		target:   "=1.00",
		met:      yesNo(oneEach),
	})
	// What prefetching fetched, and what of it the go command used.
	var prefetchRaw []string
	for _, s := range []*coldSide{defaultSide, modOnlySide, infoSide} {
		var fetched, used, extra []string
		var fetchedSum, usedSum int64
		for i, r := range s.res {
			fetched = append(fetched, fmt.Sprint(r.prefetched))
			used = append(used, fmt.Sprint(r.used))
			extra = append(extra, fmt.Sprint(r.up.requests-proxySide.res[i].up.requests))
			fetchedSum += r.prefetched
			usedSum += r.used
		}
		last := s.res[len(s.res)-1]
		b.rows = append(b.rows, row{
			figure:   "  " + s.name + ": files prefetched, used by the go command",
			proxy:    fmt.Sprintf("%d fetched", last.prefetched),
			baseline: fmt.Sprintf("%d used", last.used),
			ratio:    fmt.Sprintf("%.0f%% used", 100*float64(usedSum)/float64(max(fetchedSum, 1))),
			target:   "-",
		})
		prefetchRaw = append(prefetchRaw, fmt.Sprintf("%s: fetched per run [%s], used [%s], upstream requests beyond the prefetch-off run of the same round [%s]",
			s.name, strings.Join(fetched, " "), strings.Join(used, " "), strings.Join(extra, " ")))
	}
	counts := func(s *coldSide, withDB bool) string {
		var up, kinds, dbAll, dbLookups, dbTiles, via []string
		for _, r := range s.res {
			up = append(up, fmt.Sprintf("%d (%d files, %d repeated, %d ranged)", r.up.requests, r.up.files, r.up.repeated, r.up.ranged))
			kinds = append(kinds, fmt.Sprint(r.up.kinds()))
			dbAll = append(dbAll, fmt.Sprint(r.db[0]))
			dbLookups = append(dbLookups, fmt.Sprint(r.db[1]))
			dbTiles = append(dbTiles, fmt.Sprint(r.db[2]))
			via = append(via, fmt.Sprint(r.viaSumDB))
		}
		out := "upstream requests per run [" + strings.Join(up, " ") + "], by kind [" + strings.Join(kinds, " ") + "]; checksum database requests [" +
			strings.Join(dbAll, " ") + "], of which lookups [" + strings.Join(dbLookups, " ") + "], tiles [" + strings.Join(dbTiles, " ") + "]"
		if withDB {
			out += "; go command /sumdb/ requests to the proxy [" + strings.Join(via, " ") + "]"
		}
		return out
	}
	b.raw = append(b.raw,
		fmt.Sprintf("cold direct    median %s  runs %s  (%s)", secs(cd), durList(directSide.times()), counts(directSide, false)),
		fmt.Sprintf("cold proxy     median %s  runs %s  (%s)", secs(cp), durList(proxySide.times()), counts(proxySide, true)),
		fmt.Sprintf("cold prefetch  median %s  runs %s  (%s)", secs(cf), durList(defaultSide.times()), counts(defaultSide, true)),
		fmt.Sprintf("cold prefetch .mod only  median %s  runs %s  (%s)", secs(cm), durList(modOnlySide.times()), counts(modOnlySide, true)),
		fmt.Sprintf("cold prefetch+info  median %s  runs %s  (%s)", secs(ci), durList(infoSide.times()), counts(infoSide, true)))
	b.raw = append(b.raw, prefetchRaw...)
}

// waitQuiet waits until c has counted no request for quiet, at most max.
func waitQuiet(c *pathCounter, quiet, max time.Duration) {
	deadline := time.Now().Add(max)
	n, since := c.requestsSoFar(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if m := c.requestsSoFar(); m != n {
			n, since = m, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
	}
	progress("  WARNING: the upstream still got requests %v after the run", max)
}
