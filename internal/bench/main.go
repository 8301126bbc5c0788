// Command bench measures the goproxy.Proxy against baselines taken in the
// same run, on this machine, with everything on 127.0.0.1, and prints the
// headline figures as a table of ratios with their targets:
//
//  1. Cold "go mod download" through the proxy. The upstream is an
//     in-process moduletest.Server serving moduletest.RealisticGraph(-modules)
//     (the zips "go mod download" fetches range from 1 KB to 40 MB, with a
//     median of 60 KB and a tenth above 2 MB, so about a quarter are above
//     the proxy's Range threshold) with
//     -latency added to every request; the proxy is a goproxy.Proxy with a
//     fresh goproxy.DirCacher (and a fresh Proxy) for every run, with
//     GOPROXY=<upstream URL> and GOSUMDB=off, served by an http.Server on
//     127.0.0.1. The baseline is the go command fetching from the same
//     upstream directly. Target: at most 1.05x.
//  2. Checksum verification cost: the same cold download with
//     verification on, against the proxy run of figure 1 (verification
//     off) as the baseline. The checksum database is real and in this
//     process: golang.org/x/mod/sumdb's NewServer over NewTestServer,
//     signing with a key from note.GenerateKey, recording the true hashes
//     of the graph's versions after -sumdbpad made-up records (so that a
//     verification needs tiles of several levels, as with a real log),
//     served on 127.0.0.1 with the same -latency on every request, since
//     a real database is remote too. Verification on means the proxy runs
//     with GOSUMDB="<key> <database URL>" and the go command with
//     GOSUMDB=<key> and no URL, so that it verifies too, through the
//     proxy's /sumdb/ (as a go command does whose GOPROXY is the proxy);
//     off means GOSUMDB=off for both. With -proxyverify, a fourth side
//     times the verifying proxy for a go command with GOSUMDB=off, to
//     tell the proxy's share from the go command's. Target: at most 1.1x.
//     The cold sides (direct, proxy, verifying, and proxy-only verifying)
//     run -reps times each, in rotating order, each in a fresh proxy and
//     a fresh module cache; the medians are compared.
//  3. Warm "go mod download" through the proxy, its cache filled by an
//     earlier run, against the go command reading the same modules from a
//     moduletest.WriteDir tree with GOPROXY=file://. Target: at most 1.1x.
//     For reference, the go command is also timed against a plain
//     http.FileServer over that tree: the floor for any HTTP proxy.
//     Every go command runs in a fresh module cache (gocmdtest: isolated
//     GOPATH, GOMODCACHE, GOCACHE and HOME, GOTOOLCHAIN=local,
//     GOSUMDB=off unless said otherwise, GOFLAGS=-mod=mod -modcacherw)
//     from a pristine go.mod requiring the whole graph
//     (moduletest.RootGoMod), and must leave every module's zip in the
//     module cache. Each side runs -reps times, the sides taking turns so
//     that drift hits all; the medians are compared. The go commands'
//     directories are on /dev/shm when there is one (-godir): their
//     module cache writes are the same on both sides, but on a virtual
//     machine's disk they vary several times over between runs and drown
//     the proxy's share. The proxy's own cache and temporary files stay
//     on disk (-tmpdir), fsyncs included.
//  4. Warm requests per second for small files: the .info and .mod files
//     of every version of the graph, all cached, over keep-alive HTTP/1.1
//     connections, in -rpsreps rounds of -duration alternating with the
//     baseline; the medians are compared. The baseline is the same load
//     against a trivial http.HandlerFunc writing a fixed 60-byte body, so
//     the ratio is the proxy's cost over the bare net/http server. The
//     load comes from wrk (Debian's wrk package) when it is installed:
//     "wrk -t1 -c<-clients> -d<-duration> -s <script>", the Lua script
//     rotating over the paths, its "Requests/sec:" taken as the rate; one
//     wrk thread costs far less CPU than a Go client, so the server keeps
//     most of the second core. wrk's -d takes whole seconds (rounded up),
//     -maxrequests does not apply to it, and each side gets one untimed
//     wrk run of -warmup (at least a second) before its first round.
//     Without wrk, or with -loadgen go (or both), -clients goroutines of
//     this process GET the files for -duration (after -warmup, and at
//     most -maxrequests), sharing the two CPUs with the server, which
//     makes that figure a lower bound. Target: at least 40,000 req/s.
//  5. Peak heap while one client reads a cold -bigzip module zip
//     (moduletest.LargeVersion) through a fresh proxy, sampled every
//     -interval with runtime/metrics (/memory/classes/heap/objects:bytes)
//     and reported over the level before the download; the baseline is the
//     same transfer straight from the upstream. The transfer times (and
//     when the response header arrived) are reported too. Target: under
//     64 MiB.
//  6. The download engine: the same zip through a fresh proxy whose
//     upstream (the moduletest.Server behind moduletest.Faults with
//     BytesPerSecond -connrate, and -latency per request) caps every
//     connection, with goproxy.DownloadOptions{Connections: n} for each n
//     of -conns; the time until the client has read the whole zip (the
//     proxy's download, its checks and the transfer to the client), as a
//     ratio to the time with one connection, and the peak heap as in 5.
//     Each n runs -dlreps times, in rotating order, after each run waiting
//     for the proxy to finish storing the zip; the medians are compared,
//     the heap peaks are the highest seen. Targets: 8 connections at
//     least 5x faster than one (a ratio of at most 0.20x); peak heap
//     under 64 MiB.
//  7. Cold "go mod download" while the upstream fails: the cold proxy run
//     of figure 1 (a fresh proxy and module cache each time, GOSUMDB=off,
//     default download options) against an upstream answering 30% of its
//     requests with 502, and against one cutting 30% of its response
//     bodies midway after removing their ETag and Last-Modified (moduletest.
//     Faults: FailFraction, CutUnvalidatedFraction), each as a ratio to the
//     same runs against the same upstream with no fault. The -latency is
//     added in front of the faults, so an injected answer takes as long as
//     a real one. The three sides take turns, -reps runs each; the medians
//     of the runs that succeeded are compared, and every failed go mod
//     download is reported. Targets: no failed run, at most 1.5x.
//  8. Operations, over a DirCacher of -opentries files (see operations):
//     a warm hit through Proxy.ServeHTTP with Eviction on against off
//     (target: at most 1.05x), and with every metric hook set too; one
//     eviction run against a walk of the cache; the first /index request
//     to a restarted Proxy against the walk /index made before the feed
//     was kept on the store.
//
// Run a full measurement (about eight minutes on two cores) from the
// module root with
//
//	go run ./internal/bench
//
// and a quick one (about two and a half minutes) with
//
//	go run ./internal/bench -short
//
// Flags set explicitly win over -short's smaller defaults, for example
// "go run ./internal/bench -short -modules 60 -bigzip 200MB".
// -cpuprofile writes a CPU profile of the proxy's last requests-per-second
// round (with wrk, of the server alone; with the in-process load generator
// only, of that too; baseline excluded), for "go tool pprof -top". Progress
// goes to standard error, the table and the raw figures (every run,
// medians, request counts) to standard output.
//
// The proxies log to a discarding slog.Logger and use their default
// download options (but for figure 6's Connections) and the transport a
// Proxy builds for itself (goproxy.Dialer.Transport), with no egress
// proxy. Nothing leaves the machine: every dial is checked to be loopback.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

var (
	modules     = flag.Int("modules", 60, "generated modules in the graph (`n` >= 10; 3 special modules are added)")
	latency     = flag.Duration("latency", 50*time.Millisecond, "latency the upstream and the checksum database add to every request")
	reps        = flag.Int("reps", 5, "timed runs of each go command side")
	sumdbPad    = flag.Int("sumdbpad", 100000, "made-up records logged in the checksum database before the graph's")
	proxyVerify = flag.Bool("proxyverify", true, "also time the verifying proxy for a go command with GOSUMDB=off")
	clients     = flag.Int("clients", 64, "concurrent connections of the requests-per-second runs")
	duration    = flag.Duration("duration", 5*time.Second, "length of each requests-per-second run")
	warmup      = flag.Duration("warmup", 500*time.Millisecond, "untimed load before each requests-per-second run (wrk: before each side's first)")
	maxRequests = flag.Int64("maxrequests", 5_000_000, "cap on requests of each in-process requests-per-second run")
	loadGen     = flag.String("loadgen", "auto", "requests-per-second load generator: auto (wrk if installed, else go), wrk, go (in-process) or both")
	bigZip      = byteSize(200e6)
	connRate    = byteSize(20 << 20)
	conns       = flag.String("conns", "1,4,8", "connection counts of the download engine runs (1 is the baseline)")
	dlReps      = flag.Int("dlreps", 2, "timed runs of each download engine connection count")
	interval    = flag.Duration("interval", 5*time.Millisecond, "heap sampling interval")
	short       = flag.Bool("short", false, "quick run: smaller defaults for the flags not set explicitly")
	rpsReps     = flag.Int("rpsreps", 3, "rounds of the requests-per-second runs, alternating baseline and proxy")
	cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the proxy's last requests-per-second round to `file`")
	tmpRoot     = flag.String("tmpdir", "", "directory for the proxy's caches, its temporary files and the big zip (default: the system's temporary directory)")
	goRoot      = flag.String("godir", "", "directory for the go commands' module caches, GOPATH, GOCACHE and HOME (default: /dev/shm if usable, else -tmpdir)")
	opEntries   = flag.Int("opentries", 100_000, "files in the cache of the operations figures (eviction, index feed, warm hits)")
	opReps      = flag.Int("opreps", 3, "runs (or rounds) of each side of the operations figures")
	opDur       = flag.Duration("opdur", 2*time.Second, "length of each round of the operations figures' warm hits")
)

func init() {
	flag.Var(&bigZip, "bigzip", "size of the big zip (units B, KB, MB, GB, KiB, MiB, GiB)")
	flag.Var(&connRate, "connrate", "bandwidth cap per upstream connection of the download engine runs, per second (units as -bigzip)")
}

// applyShort lowers the defaults of the flags not set on the command line.
func applyShort() {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	short := map[string]string{
		"modules":   "20",
		"reps":      "3",
		"duration":  "2s",
		"rpsreps":   "2",
		"warmup":    "200ms",
		"bigzip":    "40MB",
		"dlreps":    "1",
		"opentries": "30000",
		"opdur":     "1s",
	}
	for name, v := range short {
		if !set[name] {
			flag.Set(name, v)
		}
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
}

// row is one line of the result table.
type row struct {
	figure, proxy, baseline, ratio, target, met string
}

// coldResult is one cold go mod download.
type coldResult struct {
	d        time.Duration
	upReqs   int      // requests to the upstream
	db       [3]int64 // requests to the checksum database: all, lookups, tiles
	viaSumDB int64    // the go command's /sumdb/ requests to the proxy
}

// coldSide is one way of running the cold download.
type coldSide struct {
	name string
	run  func() coldResult
	res  []coldResult
}

func (s *coldSide) times() []time.Duration {
	var ds []time.Duration
	for _, r := range s.res {
		ds = append(ds, r.d)
	}
	return ds
}

// counts describes the request counts of a side's runs for the raw lines.
func (s *coldSide) counts(withDB bool) string {
	var up, dbAll, dbLookups, dbTiles, via []string
	for _, r := range s.res {
		up = append(up, fmt.Sprint(r.upReqs))
		dbAll = append(dbAll, fmt.Sprint(r.db[0]))
		dbLookups = append(dbLookups, fmt.Sprint(r.db[1]))
		dbTiles = append(dbTiles, fmt.Sprint(r.db[2]))
		via = append(via, fmt.Sprint(r.viaSumDB))
	}
	out := "upstream requests per run [" + strings.Join(up, " ") + "]"
	if withDB {
		out += "; checksum database requests [" + strings.Join(dbAll, " ") + "], of which lookups [" + strings.Join(dbLookups, " ") +
			"], tiles [" + strings.Join(dbTiles, " ") + "]; go command /sumdb/ requests to the proxy [" + strings.Join(via, " ") + "]"
	}
	return out
}

// loadGenerator runs one kind of requests-per-second load.
type loadGenerator struct {
	name     string
	warmEach bool // warm up before every round, else before each side's first
	warm     func(url string)
	timed    func(url string) loadResult
}

func main() {
	flag.Parse()
	if *short {
		applyShort()
	}
	connList, err := parseConns(*conns)
	if err != nil {
		fatalf("-conns: %v", err)
	}
	if *modules < 10 || *reps < 1 || *rpsReps < 1 || *clients < 1 || *duration <= 0 || *maxRequests < 1 || *interval <= 0 ||
		*dlReps < 1 || connRate <= 0 || *sumdbPad < 0 {
		fatalf("invalid flags")
	}
	wrkBin := findWrk()
	var useWrk, useGo bool
	wrkNote := ""
	switch *loadGen {
	case "auto":
		useWrk = wrkBin != ""
		useGo = !useWrk
		if !useWrk {
			wrkNote = "wrk not installed (apt-get install wrk): using the in-process load generator"
		}
	case "wrk", "both":
		if wrkBin == "" {
			fatalf("-loadgen %s: wrk not installed (apt-get install wrk)", *loadGen)
		}
		useWrk, useGo = true, *loadGen == "both"
	case "go":
		useGo = true
	default:
		fatalf("-loadgen: want auto, wrk, go or both, not %q", *loadGen)
	}
	restrictDefaultTransport()
	defer runExitFuncs()

	tmp, err := os.MkdirTemp(*tmpRoot, "goproxy-bench-")
	if err != nil {
		fatalf("%v", err)
	}
	atExit(func() { os.RemoveAll(tmp) })
	godir := goDir(tmp)
	discard := slog.New(slog.DiscardHandler)
	// newProxy returns a fresh proxy over up with a fresh cache, with
	// GOSUMDB=off unless an option sets Env otherwise.
	newProxy := func(up string, opts ...func(*goproxy.Proxy)) (*goproxy.Proxy, string) {
		cache, err := os.MkdirTemp(tmp, "cache-")
		if err != nil {
			fatalf("%v", err)
		}
		p := &goproxy.Proxy{
			Cacher:    goproxy.DirCacher(cache),
			Env:       []string{"GOPROXY=" + up, "GOSUMDB=off"},
			Transport: proxyTransport(),
			TempDir:   tmp,
			Logger:    discard,
		}
		for _, o := range opts {
			o(p)
		}
		if err := p.Init(); err != nil {
			fatalf("%v", err)
		}
		atExit(func() { p.Close() })
		return p, cache
	}

	// The upstream and the same modules as a file tree.
	progress("graph: writing the zips of %d modules", *modules)
	vs, err := moduletest.RealisticGraph(filepath.Join(tmp, "graph"), *modules)
	if err != nil {
		fatalf("%v", err)
	}
	var graphBytes int64
	var zipSizes []int64
	for _, v := range vs {
		if v.ZipFile != "" {
			if fi, err := os.Stat(v.ZipFile); err == nil {
				graphBytes += fi.Size()
				zipSizes = append(zipSizes, fi.Size())
			}
		}
	}
	paths := map[string]bool{}
	for _, v := range vs {
		paths[v.Path] = true
	}
	up := moduletest.NewServer(vs)
	atExit(up.Close)
	up.SetLatency(*latency)
	tree := filepath.Join(tmp, "tree")
	if err := moduletest.WriteDir(tree, vs); err != nil {
		fatalf("%v", err)
	}
	goMod := moduletest.RootGoMod(vs)
	progress("checksum database: logging %d padding records and the graph's %d versions", *sumdbPad, len(vs))
	db := newChecksumDB(vs, *sumdbPad, *latency)
	atExit(db.Close)
	fmt.Printf("goproxy bench: %s, GOMAXPROCS=%d, NumCPU=%d\n", runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Printf("graph: RealisticGraph(%d) = %d modules, %d versions; the zips go mod download fetches: %s, %s; upstream and checksum database latency %v; %d reps per go command side\n",
		*modules, len(paths), len(vs), formatMB(graphBytes), sizeSpread(zipSizes), *latency, *reps)
	fmt.Printf("checksum database: sumdb.NewServer(sumdb.NewTestServer) on 127.0.0.1, %d records (%d padding, then the graph's)\n",
		*sumdbPad+len(vs), *sumdbPad)
	fmt.Printf("proxy caches in %s, go command caches in %s\n", tmp, godir)
	if wrkNote != "" {
		fmt.Println(wrkNote)
		progress("%s", wrkNote)
	}
	fmt.Println()
	start := time.Now()

	var rows []row
	var raw []string
	modLabel := fmt.Sprintf("(%d modules)", len(paths))

	// 1 and 2. Cold go mod download: a fresh proxy and cache for every
	// run, with and without verification, and direct.
	coldDirectGo := newGoRunner(filepath.Join(godir, "cold-direct"), up.URL, goMod, len(paths))
	coldProxyGo := newGoRunner(filepath.Join(godir, "cold-proxy"), "", goMod, len(paths))
	coldVerifyGo := newGoRunner(filepath.Join(godir, "cold-verify"), "", goMod, len(paths))
	coldVerifyGo.env.Set("GOSUMDB", db.vkey) // no URL: through the proxy
	coldProxyVerifyGo := newGoRunner(filepath.Join(godir, "cold-proxyverify"), "", goMod, len(paths))
	verifyEnv := func(p *goproxy.Proxy) {
		p.Env = []string{"GOPROXY=" + up.URL, "GOSUMDB=" + db.vkey + " " + db.URL}
	}
	// proxied runs the go command g against a fresh proxy.
	proxied := func(g *goRunner, opts ...func(*goproxy.Proxy)) coldResult {
		// The cache stays until the end, like the module caches: its
		// deletion would burden the next timed run's disk.
		p, _ := newProxy(up.URL, opts...)
		var via atomic.Int64
		srv := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/sumdb/") {
				via.Add(1)
			}
			p.ServeHTTP(w, r)
		}))
		g.env.Set("GOPROXY", srv.URL)
		upBefore, dbBefore := up.TotalRequests(), db.counts()
		d := g.modDownload()
		dbAfter := db.counts()
		res := coldResult{d: d, upReqs: up.TotalRequests() - upBefore, viaSumDB: via.Load()}
		for k := range res.db {
			res.db[k] = dbAfter[k] - dbBefore[k]
		}
		srv.Close()
		return res
	}
	sides := []*coldSide{
		{name: "proxy", run: func() coldResult { return proxied(coldProxyGo) }},
		{name: "direct", run: func() coldResult {
			before := up.TotalRequests()
			d := coldDirectGo.modDownload()
			return coldResult{d: d, upReqs: up.TotalRequests() - before}
		}},
		{name: "verify", run: func() coldResult { return proxied(coldVerifyGo, verifyEnv) }},
	}
	if *proxyVerify {
		sides = append(sides, &coldSide{name: "proxy-verify", run: func() coldResult { return proxied(coldProxyVerifyGo, verifyEnv) }})
	}
	coldProxy, coldDirect, coldVerify := sides[0], sides[1], sides[2]
	progress("cold go mod download, %d runs each of %d sides", *reps, len(sides))
	for i := range *reps {
		// Rotate the order, so that each side goes first as often.
		for j := range sides {
			s := sides[(i+j)%len(sides)]
			s.res = append(s.res, s.run())
		}
		var b strings.Builder
		for j, s := range sides {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %s", s.name, secs(s.res[i].d))
		}
		progress("  run %d: %s", i+1, b.String())
	}
	cp, cd, cv := median(coldProxy.times()), median(coldDirect.times()), median(coldVerify.times())
	rows = append(rows, durRow("cold go mod download "+modLabel, cp, cd, 1.05))
	rows = append(rows, durRow("cold, checksum verification on vs off", cv, cp, 1.1))
	raw = append(raw,
		fmt.Sprintf("cold proxy   median %s  runs %s  (%s)", secs(cp), durList(coldProxy.times()), coldProxy.counts(false)),
		fmt.Sprintf("cold direct  median %s  runs %s  (%s)", secs(cd), durList(coldDirect.times()), coldDirect.counts(false)),
		fmt.Sprintf("cold verify  median %s  runs %s  (proxy and go command verifying: %s)", secs(cv), durList(coldVerify.times()), coldVerify.counts(true)))
	if *proxyVerify {
		pv := sides[3]
		cpv := median(pv.times())
		r := durRow("  (proxy verifies, go cmd GOSUMDB=off)", cpv, cp, 0)
		r.target, r.met = "-", ""
		rows = append(rows, r)
		raw = append(raw, fmt.Sprintf("cold proxy-verify  median %s  runs %s  (only the proxy verifying: %s)", secs(cpv), durList(pv.times()), pv.counts(true)))
	}

	// 3. Warm go mod download: one proxy whose cache an untimed run filled.
	// A static file server over the tree is measured too, for reference:
	// it is what the go command's HTTP path costs with no proxy logic.
	progress("warm go mod download, %d runs each side", *reps)
	warm, _ := newProxy(up.URL)
	warmSrv := serve(warm)
	atExit(warmSrv.Close)
	static := serve(http.FileServer(http.Dir(tree)))
	atExit(static.Close)
	warmProxyGo := newGoRunner(filepath.Join(godir, "warm-proxy"), warmSrv.URL, goMod, len(paths))
	warmFileGo := newGoRunner(filepath.Join(godir, "warm-file"), "file://"+filepath.ToSlash(tree), goMod, len(paths))
	warmStaticGo := newGoRunner(filepath.Join(godir, "warm-static"), static.URL, goMod, len(paths))
	warmProxyGo.modDownload() // fills the proxy's cache
	warmFileGo.modDownload()  // and the page cache, for fairness
	warmStaticGo.modDownload()
	upBefore := up.TotalRequests()
	var warmProxy, warmFile, warmStatic []time.Duration
	for i := range *reps {
		sides := []func(){
			func() { warmProxy = append(warmProxy, warmProxyGo.modDownload()) },
			func() { warmFile = append(warmFile, warmFileGo.modDownload()) },
			func() { warmStatic = append(warmStatic, warmStaticGo.modDownload()) },
		}
		// Rotate the order, so that each side goes first as often.
		for j := range sides {
			sides[(i+j)%len(sides)]()
		}
		progress("  run %d: proxy %s, file %s, static %s", i+1, secs(warmProxy[i]), secs(warmFile[i]), secs(warmStatic[i]))
	}
	warmUpReqs := up.TotalRequests() - upBefore
	wp, wf, ws := median(warmProxy), median(warmFile), median(warmStatic)
	rows = append(rows, durRow("warm go mod download "+modLabel, wp, wf, 1.1))
	sr := durRow("  (reference: vs http.FileServer)", wp, ws, 0)
	sr.target, sr.met = "-", ""
	rows = append(rows, sr)
	raw = append(raw,
		fmt.Sprintf("warm proxy   median %s  runs %s  (upstream requests during all warm runs: %d)", secs(wp), durList(warmProxy), warmUpReqs),
		fmt.Sprintf("warm file    median %s  runs %s", secs(wf), durList(warmFile)),
		fmt.Sprintf("warm static  median %s  runs %s  (http.FileServer over the file:// tree)", secs(ws), durList(warmStatic)))

	// 4. Warm small-file requests per second.
	var small []string
	for _, v := range vs {
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
	fill(lc, warmSrv.URL, small) // whatever go mod download did not ask for
	lc.CloseIdleConnections()
	trivial := serve(trivialHandler)
	atExit(trivial.Close)
	var gens []loadGenerator
	// wrk first: its row is the headline, and a CPU profile covers the
	// first generator's last proxy round.
	if useWrk {
		script := writeWrkScript(tmp, small)
		gens = append(gens, loadGenerator{
			name: "wrk",
			warm: func(url string) {
				if *warmup > 0 {
					runWrk(wrkBin, script, url, *clients, *warmup)
				}
			},
			timed: func(url string) loadResult { return runWrk(wrkBin, script, url, *clients, *duration) },
		})
	}
	if useGo {
		gens = append(gens, loadGenerator{
			name:     "in-process",
			warmEach: true,
			warm: func(url string) {
				if *warmup > 0 {
					loadPhase(lc, url, small, *clients, *warmup, *maxRequests)
				}
			},
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
		upBefore = up.TotalRequests()
		// Rounds alternate baseline and proxy, the proxy last, so that a
		// CPU profile can cover the last proxy round alone.
		var rpsBase, rpsProxy []loadResult
		for i := range *rpsReps {
			if i == 0 || g.warmEach {
				g.warm(trivial.URL)
			}
			rpsBase = append(rpsBase, g.timed(trivial.URL))
			if i == 0 || g.warmEach {
				g.warm(warmSrv.URL)
			}
			var r loadResult
			if *cpuProfile != "" && gi == 0 && i == *rpsReps-1 {
				f, err := os.Create(*cpuProfile)
				if err != nil {
					fatalf("%v", err)
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					fatalf("%v", err)
				}
				r = g.timed(warmSrv.URL)
				pprof.StopCPUProfile()
				if err := f.Close(); err != nil {
					fatalf("%v", err)
				}
			} else {
				r = g.timed(warmSrv.URL)
			}
			rpsProxy = append(rpsProxy, r)
			progress("  round %d: proxy %.0f req/s, baseline %.0f req/s", i+1, rpsProxy[i].rps(), rpsBase[i].rps())
		}
		rpsUpReqs := up.TotalRequests() - upBefore
		rp, rb := medianRPS(rpsProxy), medianRPS(rpsBase)
		r := row{
			proxy:    fmt.Sprintf("%.0f/s", rp),
			baseline: fmt.Sprintf("%.0f/s", rb),
			ratio:    fmt.Sprintf("%.2fx", rp/rb),
			target:   ">=40000/s",
			met:      yesNo(rp >= 40000),
		}
		if g.name == "wrk" {
			r.figure = fmt.Sprintf("warm req/s, .info+.mod, wrk -t1 -c%d", *clients)
		} else {
			r.figure = fmt.Sprintf("warm req/s, .info+.mod, in-process load (%d conns)", *clients)
			if useWrk {
				r.figure = fmt.Sprintf("  (in-process load generator, %d conns)", *clients)
				r.target, r.met = "-", ""
			}
		}
		rows = append(rows, r)
		raw = append(raw,
			fmt.Sprintf("rps proxy (%s)    median %.0f req/s  rounds %s  (upstream requests %d)", g.name, rp, rpsList(rpsProxy), rpsUpReqs),
			fmt.Sprintf("rps trivial (%s)  median %.0f req/s  rounds %s  (%d-byte body)", g.name, rb, rpsList(rpsBase), len(fixedBody)))
		for _, r := range append(rpsProxy, rpsBase...) {
			if r.errors > 0 {
				raw = append(raw, "WARNING: requests failed during the requests-per-second runs ("+g.name+")")
				break
			}
		}
	}

	// 5. Peak heap during a cold big zip.
	progress("big zip: writing %s", formatBytes(int64(bigZip)))
	large, err := moduletest.LargeVersion(tmp, "example.com/large", "v1.0.0", int64(bigZip))
	if err != nil {
		fatalf("%v", err)
	}
	fi, err := os.Stat(large.ZipFile)
	if err != nil {
		fatalf("%v", err)
	}
	up.Add(large)
	zipPath := "/example.com/large/@v/v1.0.0.zip"
	progress("big zip: straight from the upstream")
	upBefore = up.TotalRequests()
	heapDirect := measureDownload(up.URL+zipPath, fi.Size(), *interval)
	directUpReqs := up.TotalRequests() - upBefore
	progress("  %v", heapDirect)
	progress("big zip: through a cold proxy")
	bigProxy, bigCache := newProxy(up.URL)
	bigSrv := serve(bigProxy)
	upBefore = up.TotalRequests()
	heapProxy := measureDownload(bigSrv.URL+zipPath, fi.Size(), *interval)
	proxyUpReqs := up.TotalRequests() - upBefore
	waitCached(bigProxy, strings.TrimPrefix(zipPath, "/"), 2*time.Minute)
	bigSrv.Close()
	os.RemoveAll(bigCache)
	progress("  %v", heapProxy)
	zipSize := formatBytes(fi.Size() / 1e6 * 1e6)
	zipLabel := "cold " + zipSize + " zip"
	rows = append(rows,
		row{
			figure:   "peak heap, " + zipLabel,
			proxy:    mib(heapProxy.peak),
			baseline: mib(heapDirect.peak),
			ratio:    "-",
			target:   "<64MiB",
			met:      yesNo(heapProxy.peak < 64<<20),
		},
		row{
			figure:   "transfer time, " + zipLabel,
			proxy:    secs(heapProxy.elapsed),
			baseline: secs(heapDirect.elapsed),
			ratio:    fmt.Sprintf("%.2fx", heapProxy.elapsed.Seconds()/heapDirect.elapsed.Seconds()),
			target:   "-",
			met:      "",
		})
	raw = append(raw,
		fmt.Sprintf("zip proxy    %v; %d upstream requests", heapProxy, proxyUpReqs),
		fmt.Sprintf("zip direct   %v; %d upstream requests", heapDirect, directUpReqs))

	// 6. The download engine: the same zip from an upstream capping each
	// connection, with 1, 4 and 8 connections.
	rate := int64(connRate)
	faults := &moduletest.Faults{BytesPerSecond: rate}
	capped := serve(faults.Wrap(up.Handler()))
	atExit(capped.Close)
	progress("download engine: %s zip, %s per upstream connection, connections %v, %d runs each",
		zipSize, formatRate(rate), connList, *dlReps)
	var engine []engineRun
	for i := range *dlReps {
		for j := range connList {
			n := connList[(i+j)%len(connList)]
			p, cache := newProxy(capped.URL, func(p *goproxy.Proxy) { p.Download = goproxy.DownloadOptions{Connections: n} })
			srv := serve(p)
			reqs, ranges := faults.Requests(), faults.RangeRequests()
			res := measureDownload(srv.URL+zipPath, fi.Size(), *interval)
			run := engineRun{conns: n, res: res, upReqs: faults.Requests() - reqs, rangeReq: faults.RangeRequests() - ranges}
			waitCached(p, strings.TrimPrefix(zipPath, "/"), 2*time.Minute)
			srv.Close()
			os.RemoveAll(cache)
			engine = append(engine, run)
			progress("  %d conns: %v", n, res)
		}
	}
	os.Remove(large.ZipFile)
	oneTimes, onePeak := engineStats(engine, 1)
	t1 := median(oneTimes)
	var multiPeak int64
	for _, n := range connList {
		times, peak := engineStats(engine, n)
		tn := median(times)
		var rs []string
		for _, r := range engine {
			if r.conns == n {
				rs = append(rs, fmt.Sprintf("%s (header %s, peak heap %s, %d upstream requests, %d with Range)",
					secs(r.res.elapsed), secs(r.res.header), mib(r.res.peak), r.upReqs, r.rangeReq))
			}
		}
		raw = append(raw, fmt.Sprintf("download engine, %d conns  median %s (%.1f MB/s, %.2fx faster than 1 conn)  runs %s",
			n, secs(tn), float64(fi.Size())/1e6/tn.Seconds(), t1.Seconds()/tn.Seconds(), strings.Join(rs, "  ")))
		if n == 1 {
			continue
		}
		multiPeak = max(multiPeak, peak)
		ratio := tn.Seconds() / t1.Seconds()
		r := row{
			figure:   fmt.Sprintf("download %s at %s/conn, %d conns", zipSize, formatRate(rate), n),
			proxy:    secs(tn),
			baseline: secs(t1),
			ratio:    fmt.Sprintf("%.2fx", ratio),
			target:   "-",
		}
		if n == 8 {
			r.target, r.met = "<=0.20x", yesNo(ratio <= 0.2)
		}
		rows = append(rows, r)
	}
	if len(connList) > 1 {
		var multi []string
		for _, n := range connList[1:] {
			multi = append(multi, fmt.Sprint(n))
		}
		rows = append(rows, row{
			figure:   fmt.Sprintf("  peak heap, %s-conn downloads", strings.Join(multi, "/")),
			proxy:    mib(multiPeak),
			baseline: mib(onePeak),
			ratio:    "-",
			target:   "<64MiB",
			met:      yesNo(multiPeak < 64<<20),
		})
	}

	// 7. Cold go mod download while the upstream fails 30% of its
	// requests, against the same run with no fault.
	faultRows, faultRaw := coldUnderFaults(vs, goMod, len(paths), godir, newProxy)
	rows = append(rows, faultRows...)
	raw = append(raw, faultRaw...)

	// 8. Operations: eviction runs, the index feed, and what eviction and
	// the metrics add to a warm hit.
	opRows, opRaw := operations(tmp, *opEntries, *opReps, *opDur)
	rows = append(rows, opRows...)
	raw = append(raw, opRaw...)

	// The table.
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "figure\tproxy\tbaseline\tratio\ttarget\tmet")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.figure, r.proxy, r.baseline, r.ratio, r.target, r.met)
	}
	tw.Flush()
	fmt.Println("\nbaselines:")
	fmt.Println("- cold: the go command straight from the upstream")
	fmt.Println("- verification on vs off: the same cold proxy run with the proxy and the go command at GOSUMDB=off;")
	fmt.Println("  on: the proxy with GOSUMDB=\"<key> <database URL>\", the go command with GOSUMDB=<key>, verifying")
	fmt.Println("  through the proxy's /sumdb/; the proxy-only row keeps the go command at GOSUMDB=off")
	fmt.Println("- warm: the go command from a file:// tree (and for reference from http.FileServer over that tree)")
	if useWrk {
		fmt.Printf("- req/s: a trivial 60-byte http.HandlerFunc, both loaded by wrk -t1 -c%d (a separate process)\n", *clients)
	}
	if useGo {
		fmt.Println("- req/s (in-process): the same handler, loaded by goroutines of this process sharing its CPUs")
	}
	fmt.Println("- zip heap and time: the zip straight from the upstream")
	fmt.Printf("- download engine: the same proxy download with 1 connection; ratio = time with n / time with 1\n")
	fmt.Printf("  (<=0.20x: at least 5x faster); the upstream caps each connection at %s and adds %v per request;\n", formatRate(rate), *latency)
	fmt.Println("  the time runs until the client has read the whole zip; peak heap: highest over the runs with more")
	fmt.Println("  than 1 conn (baseline: the 1-conn runs), everything in this process (client, proxy, upstream) included")
	fmt.Println("- faults: the same cold proxy run against an upstream failing no request (the latency added in front of")
	fmt.Println("  the faults, so injected answers pay it too); default retry settings; a failed go mod download counts")
	fmt.Println("- eviction run: DirCacher.Walk of the same cache (the run finds it within its limits: it lists, removes nothing)")
	fmt.Println("- first /index: a walk of the cache that stats every .info and sorts in memory, what /index did before the feed")
	fmt.Println("- warm hit: the same Proxy.ServeHTTP call with eviction off, sides alternating in batches, in this process")
	fmt.Println("\nraw:")
	for _, l := range raw {
		fmt.Println("  " + l)
	}
	fmt.Printf("\ntotal %s\n", secs(time.Since(start).Round(time.Millisecond)))
}

func durRow(figure string, proxy, base time.Duration, target float64) row {
	ratio := proxy.Seconds() / base.Seconds()
	return row{
		figure:   figure,
		proxy:    secs(proxy),
		baseline: secs(base),
		ratio:    fmt.Sprintf("%.2fx", ratio),
		target:   fmt.Sprintf("<=%.2fx", target),
		met:      yesNo(ratio <= target),
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

// fill GETs every path once through the proxy, concurrently, so that the
// requests-per-second run finds them all cached, and checks each is 200.
func fill(client *http.Client, base string, paths []string) {
	work := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
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
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					mu.Lock()
					failures = append(failures, p+": "+resp.Status)
					mu.Unlock()
				}
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
}

// goDir picks where the go commands keep their caches. Their module cache
// writes are the same work on both sides of every comparison, but on a
// virtual machine's disk their cost varies several times over from run to
// run; in memory they leave the proxy's share visible.
func goDir(tmp string) string {
	root := *goRoot
	if root == "" {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			root = "/dev/shm"
		}
	}
	if root == "" {
		return filepath.Join(tmp, "go")
	}
	d, err := os.MkdirTemp(root, "goproxy-bench-go-")
	if err != nil {
		if *goRoot != "" {
			fatalf("%v", err)
		}
		return filepath.Join(tmp, "go")
	}
	atExit(func() { os.RemoveAll(d) })
	return d
}
