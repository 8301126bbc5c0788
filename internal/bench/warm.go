package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// warm times warm go mod downloads through a proxy whose cache an earlier
// run filled, against http.FileServer over the same files, and then the
// requests per second for small files.
func (b *bench) warm() {
	progress("warm go mod download, %d runs each side", *warmReps)
	tree := filepath.Join(b.tmp, "tree")
	if err := moduletest.WriteDir(tree, b.vs); err != nil {
		fatalf("%v", err)
	}
	warm, _ := b.newProxy(b.upURL)
	warmSrv := serve(warm)
	atExit(warmSrv.Close)
	static := serve(http.FileServer(http.Dir(tree)))
	atExit(static.Close)
	proxyGo := newGoRunner(filepath.Join(b.godir, "warm-proxy"), warmSrv.URL, b.goMod, b.wantZips)
	staticGo := newGoRunner(filepath.Join(b.godir, "warm-static"), static.URL, b.goMod, b.wantZips)
	fileGo := newGoRunner(filepath.Join(b.godir, "warm-file"), "file://"+filepath.ToSlash(tree), b.goMod, b.wantZips)
	proxyGo.modDownload() // fills the proxy's cache
	waitQuiet(b.counted, 300*time.Millisecond, 20*time.Second)
	staticGo.modDownload() // and the page cache, for fairness
	fileGo.modDownload()
	b.counted.take()
	var tProxy, tStatic, tFile []time.Duration
	for i := range *warmReps {
		sides := []func(){
			func() {
				if *warmProfile != "" && i == *warmReps-1 {
					stop := startProfile(*warmProfile)
					defer stop()
				}
				tProxy = append(tProxy, proxyGo.modDownload())
			},
			func() { tStatic = append(tStatic, staticGo.modDownload()) },
			func() { tFile = append(tFile, fileGo.modDownload()) },
		}
		for j := range sides {
			sides[(i+j)%len(sides)]()
		}
		progress("  run %d: proxy %s, http.FileServer %s, file:// %s", i+1, secs(tProxy[i]), secs(tStatic[i]), secs(tFile[i]))
	}
	upReqs := b.counted.take().requests
	wp, ws, wf := median(tProxy), median(tStatic), median(tFile)
	ref := durRow("  (reference: vs a file:// tree)", wp, wf, 0)
	ref.target, ref.met = "-", ""
	b.rows = append(b.rows, durRow(fmt.Sprintf("warm go mod download (%d modules), fresh client vs http.FileServer", b.wantZips), wp, ws, 1.1), ref)
	b.raw = append(b.raw,
		fmt.Sprintf("warm proxy    median %s  runs %s  (upstream requests during the warm runs: %d)", secs(wp), durList(tProxy), upReqs),
		fmt.Sprintf("warm static   median %s  runs %s  (http.FileServer over the tree)", secs(ws), durList(tStatic)),
		fmt.Sprintf("warm file://  median %s  runs %s", secs(wf), durList(tFile)))
	b.requestsPerSecond(warmSrv.URL)
}

// startProfile starts a CPU profile written to name; the func stops it.
func startProfile(name string) func() {
	f, err := os.Create(name)
	if err != nil {
		fatalf("%v", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fatalf("%v", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fatalf("%v", err)
		}
	}
}

// loadGenerator runs one kind of requests-per-second load.
type loadGenerator struct {
	name     string
	warmEach bool // warm up before every round, else before each side's first
	warm     func(url string)
	timed    func(url string) loadResult
}

// requestsPerSecond loads the warm proxy at proxyURL with the .info and
// .mod files of the graph, against a trivial handler serving the same
// bytes.
func (b *bench) requestsPerSecond(proxyURL string) {
	var small []string
	for _, v := range b.vs {
		esc, err1 := module.EscapePath(v.Path)
		escV, err2 := module.EscapeVersion(v.Version)
		if err1 != nil || err2 != nil {
			fatalf("escaping %s@%s", v.Path, v.Version)
		}
		small = append(small, "/"+esc+"/@v/"+escV+".info")
		if v.Mod != nil {
			small = append(small, "/"+esc+"/@v/"+escV+".mod")
		}
	}
	lc := loadClient(*clients)
	fill(lc, proxyURL, small)            // whatever go mod download did not ask for
	answers := fill(lc, proxyURL, small) // as the runs will see them: hot
	lc.CloseIdleConnections()
	trivial := serve(sameBytesHandler(answers))
	atExit(trivial.Close)
	sameAnswers := serve(sameAnswersHandler(answers))
	atExit(sameAnswers.Close)

	useWrk, useGo := false, false
	wrkBin, note := "", ""
	switch *loadGen {
	case "auto", "wrk", "both":
		if wrkBin = findWrk(); wrkBin == "" {
			var why string
			if wrkBin, why = installWrk(); wrkBin == "" {
				note = "wrk could not be installed (" + why + "): the in-process load generator instead"
				if *loadGen != "auto" {
					fatalf("-loadgen %s: %s", *loadGen, note)
				}
			}
		}
		useWrk = wrkBin != ""
		useGo = !useWrk || *loadGen == "both"
	case "go":
		useGo = true
	default:
		fatalf("-loadgen: want auto, wrk, go or both, not %q", *loadGen)
	}
	if note != "" {
		progress("%s", note)
		b.raw = append(b.raw, note)
	}
	var gens []loadGenerator
	if useWrk {
		script := writeWrkScript(b.tmp, small)
		gens = append(gens, loadGenerator{
			name:  "wrk",
			warm:  func(url string) { runWrk(wrkBin, script, url, *clients, *warmup) },
			timed: func(url string) loadResult { return runWrk(wrkBin, script, url, *clients, *duration) },
		})
	}
	if useGo {
		gens = append(gens, loadGenerator{
			name:     "in-process",
			warmEach: true,
			warm:     func(url string) { loadPhase(lc, url, small, *clients, *warmup, *maxRequests) },
			timed: func(url string) loadResult {
				r := loadPhase(lc, url, small, *clients, *duration, *maxRequests)
				lc.CloseIdleConnections()
				return r
			},
		})
	}
	for gi, g := range gens {
		dur := secs(*duration)
		if g.name == "wrk" {
			dur = fmt.Sprintf("%ds", wrkSeconds(*duration))
		}
		progress("warm requests per second (%s): %d files, %d connections, %d rounds of %s each side", g.name, len(small), *clients, *rpsReps, dur)
		b.counted.take()
		// The sides take turns in an order rotating from round to
		// round: on this machine a side's rate drifts down over the
		// seconds of a round, and a fixed order charged it all to the
		// side that came last.
		results := make([][]loadResult, 3) // proxy, bare bytes, same answers
		urls := []string{proxyURL, trivial.URL, sameAnswers.URL}
		for i := range *rpsReps {
			for k := range urls {
				side := (i + k) % len(urls)
				if i == 0 || g.warmEach {
					g.warm(urls[side])
				}
				if side == 0 && *cpuProfile != "" && gi == 0 && i == *rpsReps-1 {
					stop := startProfile(*cpuProfile)
					results[side] = append(results[side], g.timed(urls[side]))
					stop()
				} else {
					results[side] = append(results[side], g.timed(urls[side]))
				}
			}
			progress("  round %d: proxy %.0f req/s (p99 %s), baseline %.0f req/s (p99 %s), same answers %.0f req/s (p99 %s)",
				i+1, results[0][i].rps(), results[0][i].p99, results[1][i].rps(), results[1][i].p99, results[2][i].rps(), results[2][i].p99)
		}
		proxy, base, same := results[0], results[1], results[2]
		upReqs := b.counted.take().requests
		rp, rb, rs := medianRPS(proxy), medianRPS(base), medianRPS(same)
		r, sameRow := rpsRow(rp, rb), rpsRow(rp, rs)
		if g.name == "wrk" {
			r.figure = fmt.Sprintf("warm req/s, .info+.mod, wrk -t1 -c%d", *clients)
		} else {
			r.figure = fmt.Sprintf("warm req/s, .info+.mod, in-process load (%d conns)", *clients)
			if useWrk {
				r.figure = fmt.Sprintf("  (in-process load generator, %d conns)", *clients)
				r.target, r.met = "-", ""
			}
		}
		sameRow.figure = "  vs the same answers (headers too) from a map"
		if r.target == "-" {
			sameRow.target, sameRow.met = "-", ""
		}
		b.rows = append(b.rows, r, sameRow)
		if g.name == "wrk" {
			b.rows = append(b.rows, row{figure: "  p99 latency (proxy; bodies; same answers)", proxy: medianP99(proxy).String(), baseline: medianP99(base).String(),
				ratio: medianP99(same).String(), target: "-"})
		}
		b.raw = append(b.raw,
			fmt.Sprintf("rps proxy (%s)    median %.0f req/s  rounds %s  (upstream requests %d)", g.name, rp, rpsList(proxy), upReqs),
			fmt.Sprintf("rps baseline (%s) median %.0f req/s  rounds %s", g.name, rb, rpsList(base)),
			fmt.Sprintf("rps same answers (%s) median %.0f req/s  rounds %s", g.name, rs, rpsList(same)))
		for _, r := range append(append(proxy, base...), same...) {
			if r.errors > 0 {
				b.raw = append(b.raw, "WARNING: requests failed during the requests-per-second runs ("+g.name+")")
				break
			}
		}
	}
}

// rpsRow is a row comparing the proxy's rate with a baseline's, target at
// least 0.9x.
func rpsRow(proxy, baseline float64) row {
	return row{
		proxy:    fmt.Sprintf("%.0f/s", proxy),
		baseline: fmt.Sprintf("%.0f/s", baseline),
		ratio:    fmt.Sprintf("%.2fx", proxy/baseline),
		target:   ">=0.90x",
		met:      yesNo(proxy/baseline >= 0.9),
	}
}

// fill GETs every path once through the proxy, concurrently, so that the
// requests-per-second run finds them all cached, checks each is 200, and
// returns the answers by path.
func fill(client *http.Client, base string, paths []string) map[string]answer {
	work := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	answers := map[string]answer{}
	for range 16 {
		wg.Go(func() {
			for p := range work {
				resp, err := client.Get(base + p)
				if err != nil {
					mu.Lock()
					failures = append(failures, p+": "+err.Error())
					mu.Unlock()
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, p+": "+err.Error())
				case resp.StatusCode != http.StatusOK:
					failures = append(failures, p+": "+resp.Status)
				default:
					answers[p] = answer{body: body, header: resp.Header}
				}
				mu.Unlock()
			}
		})
	}
	for _, p := range paths {
		work <- p
	}
	close(work)
	wg.Wait()
	if len(failures) > 0 {
		fatalf("filling the proxy cache:\n%s", strings.Join(failures, "\n"))
	}
	return answers
}
