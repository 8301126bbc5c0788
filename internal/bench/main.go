// Command bench measures the goproxy.Proxy against baselines taken in the
// same run, on this machine, with everything on 127.0.0.1, and prints the
// headline figures as a table of ratios with their targets. The upstream
// is an in-process moduletest.Server serving
// moduletest.RealisticGraph(-modules) (the zips "go mod download" fetches
// range from 1 KB to 40 MB, with a median of 60 KB and a tenth above
// 2 MB) and one -bigzip zip (moduletest.LargeVersion), adding -latency to
// every request; the checksum database is real and in this process too:
// golang.org/x/mod/sumdb's NewServer over NewTestServer, signing with a
// key from note.GenerateKey, recording the true hashes of every version
// after -sumdbpad made-up records (so that a verification needs tiles of
// several levels, as with a real log), with the same -latency. Every proxy
// is a fresh goproxy.Proxy with a fresh goproxy.DirCacher, its default
// settings and the transport it builds for itself (goproxy.Dialer), served
// by an http.Server on 127.0.0.1, verifying against that database
// (GOSUMDB="<key> <URL>") unless said otherwise. Every go command runs in
// a fresh module cache (gocmdtest: isolated GOPATH, GOMODCACHE, GOCACHE
// and HOME, GOTOOLCHAIN=local, GOFLAGS=-mod=mod -modcacherw) from a
// pristine go.mod requiring the whole graph (moduletest.RootGoMod), and
// must leave every module's zip in the module cache. Sides take turns,
// in rotating order, so that drift hits all; medians are compared.
//
//  1. Cold "go mod download", verification on: the go command straight
//     from the upstream, verifying against the database itself
//     (GOSUMDB="<key> <URL>"), against the same go command through a
//     fresh proxy, verifying through the proxy's /sumdb/ (GOSUMDB=<key>),
//     with prefetching off (target at most 1.05x) and on, its default
//     (target at most 0.75x), and for reference with .mod files only
//     (NoInfo) and with the requirements' .info (Info). -reps runs each. The upstream requests of
//     the proxy runs are counted by path: with prefetching off, every file
//     fetched must have been asked once, with one request (target 1.00);
//     with it on, the prefetches (Metrics.Prefetch) and how many of them
//     the go command then asked for.
//  2. A cold -bigzip zip on loopback, -bigreps times: the zip straight
//     from the upstream, against the same through a fresh proxy; the
//     first byte within 2x the direct first byte, the last byte within
//     1.2x the larger of the direct total time and the time to verify the
//     file alone (golang.org/x/mod/zip.CheckZip and dirhash.HashZip on the
//     file as the upstream has it, in the same run); peak heap under
//     64 MiB, sampled every -interval with runtime/metrics
//     (/memory/classes/heap/objects:bytes) over the level before the
//     download, everything in this process (client, proxy, upstream)
//     included. Each download also reports the process's CPU time over
//     it (getrusage), which says what the proxy costs the machine when
//     other work on it moves the elapsed times.
//  3. The same zip from an upstream pacing every connection at -connrate
//     (moduletest.Faults.BytesPerSecond), through a proxy with its default
//     settings against one with DownloadOptions.Connections = 1, -dlreps
//     runs each: the time until the client has read the whole zip, target
//     at most 0.20x; peak heap under 64 MiB.
//  4. Warm "go mod download", a fresh client against a proxy whose cache
//     an earlier run filled, against the same client reading the same
//     files from http.FileServer over a moduletest.WriteDir tree (target
//     at most 1.1x; -warmreps runs each), and for reference from that tree with
//     GOPROXY=file://. The go commands' directories are on /dev/shm when
//     there is one (-godir): their module cache writes are the same on
//     both sides, but on a virtual machine's disk they vary several times
//     over between runs and drown the proxy's share. The proxy's own
//     cache and temporary files stay on disk (-tmpdir), fsyncs included.
//  5. Warm requests per second for small files: the .info and .mod files
//     of every version of the graph, all cached, over keep-alive HTTP/1.1
//     connections, in -rpsreps rounds of -duration, each of the proxy and
//     its two baselines in an order rotating from round to round (the
//     rates of a side drift over a round's seconds, and in a fixed order
//     the drift fell on the last side): a trivial net/http handler
//     answering the same paths with the same bytes from a map, and one
//     answering with the same bytes and the headers the proxy sent (its
//     hot answers, captured from it), which is what serving those answers
//     costs net/http and wrk without the proxy's work; the medians are
//     compared, target at least 0.9x,
//     and the p99 latencies are shown. Each round reports the CPU per
//     request of this process and of wrk (getrusage). The load comes from
//     wrk (Debian's wrk package, which the benchmark installs with
//     apt-get when it is missing): "wrk -t1 -c<-clients> -d<-duration>
//     --latency -s <script>", in a process of its own, the Lua script
//     rotating over the paths; one wrk thread costs far less CPU than a Go
//     client, so the server keeps most of the second core. With -loadgen
//     go (or when wrk cannot be installed), -clients goroutines of this
//     process GET the files instead, sharing the CPUs with the server,
//     which makes that figure a lower bound.
//  6. Cold "go mod download" while the upstream fails: a fresh proxy
//     (GOSUMDB=off) against an upstream answering 30% of its requests with
//     502, and against one cutting 30% of its response bodies midway after
//     removing their ETag and Last-Modified (moduletest.Faults:
//     FailFraction, CutUnvalidatedFraction), each as a ratio to the same
//     runs against the same upstream with no fault; -faultreps runs each.
//     Targets: no failed run, at most 1.5x.
//  7. Operations, over a DirCacher of -opentries files (see operations):
//     a warm hit through Proxy.ServeHTTP with Eviction on against off
//     (target: at most 1.05x), and with every metric hook set too; one
//     eviction run against a walk of the cache; the first /index request
//     to a restarted Proxy against the walk /index made before the feed
//     was kept on the store.
//  8. Fill: Proxy.Fill of the graph's go.mod (the plan, which reads the
//     graph's .mod files through the proxy, then the fill at the default
//     concurrency, every file stored before it counts) into a fresh proxy
//     and cache, against "go mod download all" in the same main module
//     through a fresh proxy and cache; both cold, GOSUMDB=off, -reps runs
//     each, taking turns; the medians are compared. Target: at most 1.0x.
//
// Run a full measurement (about ten minutes on two cores) from the
// module root with
//
//	go run ./internal/bench
//
// and a quick one (about three minutes) with
//
//	go run ./internal/bench -short
//
// Flags set explicitly win over -short's smaller defaults, for example
// "go run ./internal/bench -short -modules 60". -cpuprofile writes a CPU
// profile of the proxy's last requests-per-second round (with wrk, of the
// server alone), -warmprofile one of the warm go mod download runs through
// the proxy, -bigprofile one of the big zip through the proxy on loopback,
// for "go tool pprof -top". Progress goes to standard error,
// the table and the raw figures (every run, medians, request counts) to
// standard output.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

var (
	modules     = flag.Int("modules", 60, "generated modules in the graph (`n` >= 10; 3 special modules are added)")
	latency     = flag.Duration("latency", 50*time.Millisecond, "latency the upstream and the checksum database add to every request")
	reps        = flag.Int("reps", 5, "timed runs of each go command side")
	warmReps    = flag.Int("warmreps", 9, "timed runs of each warm go command side (each well under a second, their medians need more runs)")
	sumdbPad    = flag.Int("sumdbpad", 100000, "made-up records logged in the checksum database before the graph's")
	clients     = flag.Int("clients", 64, "concurrent connections of the requests-per-second runs")
	duration    = flag.Duration("duration", 3*time.Second, "length of each requests-per-second run")
	warmup      = flag.Duration("warmup", time.Second, "untimed load before each requests-per-second side's first run")
	maxRequests = flag.Int64("maxrequests", 5_000_000, "cap on requests of each in-process requests-per-second run")
	loadGen     = flag.String("loadgen", "auto", "requests-per-second load generator: auto (wrk, installed if missing, else go), wrk, go (in-process) or both")
	bigZip      = byteSize(300e6)
	connRate    = byteSize(20e6)
	bigReps     = flag.Int("bigreps", 3, "timed runs of each side of the big zip on loopback")
	dlReps      = flag.Int("dlreps", 2, "timed runs of each side of the big zip from the paced upstream")
	faultReps   = flag.Int("faultreps", 3, "timed runs of each side of the cold runs under faults (0 skips them)")
	interval    = flag.Duration("interval", 5*time.Millisecond, "heap sampling interval")
	short       = flag.Bool("short", false, "quick run: smaller defaults for the flags not set explicitly")
	rpsReps     = flag.Int("rpsreps", 9, "rounds of the requests-per-second runs, the proxy and both baselines in each, in an order rotating from round to round")
	cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the proxy's last requests-per-second round to `file`")
	warmProfile = flag.String("warmprofile", "", "write a CPU profile of the last warm go mod download run through the proxy to `file`")
	bigProfile  = flag.String("bigprofile", "", "write a CPU profile of the last big zip download through the proxy on loopback to `file`")
	tmpRoot     = flag.String("tmpdir", "", "directory for the proxy's caches, its temporary files and the big zip (default: the system's temporary directory)")
	figures     = flag.String("figures", "cold,bigzip,paced,warm,faults,ops,fill", "the figures to measure, of cold, bigzip, paced, warm (with req/s), faults, ops and fill")
	opEntries   = flag.Int("opentries", 100_000, "files in the cache of the operations figures (eviction, index feed, warm hits)")
	opReps      = flag.Int("opreps", 3, "runs (or rounds) of each side of the operations figures")
	opDur       = flag.Duration("opdur", 2*time.Second, "length of each round of the operations figures' warm hits")
	goRoot      = flag.String("godir", "", "directory for the go commands' module caches, GOPATH, GOCACHE and HOME (default: /dev/shm if usable, else -tmpdir)")
)

func init() {
	flag.Var(&bigZip, "bigzip", "size of the big zip (units B, KB, MB, GB, KiB, MiB, GiB)")
	flag.Var(&connRate, "connrate", "bandwidth cap per upstream connection of the paced big zip runs, per second (units as -bigzip)")
}

// applyShort lowers the defaults of the flags not set on the command line.
func applyShort() {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	short := map[string]string{
		"modules":   "20",
		"reps":      "3",
		"warmreps":  "5",
		"duration":  "2s",
		"rpsreps":   "3",
		"bigzip":    "100MB",
		"bigreps":   "2",
		"dlreps":    "1",
		"faultreps": "1",
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

// bench is what the figures share.
type bench struct {
	tmp, godir string
	vs         []*moduletest.Version // the graph
	large      *moduletest.Version   // the big zip's version
	goMod      []byte
	wantZips   int
	up         *moduletest.Server
	counted    *pathCounter // the upstream, its requests counted by path
	upURL      string       // of counted
	db         *checksumDB
	verifyEnv  func(*goproxy.Proxy)
	rows       []row
	raw        []string
}

// newProxy returns a fresh proxy over up with a fresh cache, verifying
// against the checksum database, changed by opts.
func (b *bench) newProxy(up string, opts ...func(*goproxy.Proxy)) (*goproxy.Proxy, string) {
	cache, err := os.MkdirTemp(b.tmp, "cache-")
	if err != nil {
		fatalf("%v", err)
	}
	p := &goproxy.Proxy{
		Cacher:    goproxy.DirCacher(cache),
		Env:       []string{"GOPROXY=" + up, "GOSUMDB=" + b.db.vkey + " " + b.db.URL},
		Transport: proxyTransport(),
		TempDir:   b.tmp,
		Logger:    slog.New(slog.DiscardHandler),
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

// noSumDB is an option of newProxy: GOSUMDB=off.
func noSumDB(up string) func(*goproxy.Proxy) {
	return func(p *goproxy.Proxy) { p.Env = []string{"GOPROXY=" + up, "GOSUMDB=off"} }
}

func main() {
	flag.Parse()
	if *short {
		applyShort()
	}
	if *modules < 10 || *reps < 1 || *warmReps < 1 || *rpsReps < 1 || *clients < 1 || *duration <= 0 || *maxRequests < 1 || *interval <= 0 ||
		*dlReps < 1 || *bigReps < 1 || *faultReps < 0 || connRate <= 0 || *sumdbPad < 0 {
		fatalf("invalid flags")
	}
	restrictDefaultTransport()
	defer runExitFuncs()

	tmp, err := os.MkdirTemp(*tmpRoot, "goproxy-bench-")
	if err != nil {
		fatalf("%v", err)
	}
	atExit(func() { os.RemoveAll(tmp) })
	b := &bench{tmp: tmp, godir: goDir(tmp)}

	// The upstream: the graph, and the big zip beside it.
	progress("graph: writing the zips of %d modules", *modules)
	b.vs, err = moduletest.RealisticGraph(filepath.Join(tmp, "graph"), *modules)
	if err != nil {
		fatalf("%v", err)
	}
	var graphBytes int64
	var zipSizes []int64
	paths := map[string]bool{}
	for _, v := range b.vs {
		paths[v.Path] = true
		if v.ZipFile != "" {
			if fi, err := os.Stat(v.ZipFile); err == nil {
				graphBytes += fi.Size()
				zipSizes = append(zipSizes, fi.Size())
			}
		}
	}
	b.wantZips = len(paths)
	b.goMod = moduletest.RootGoMod(b.vs)
	progress("big zip: writing %s", formatBytes(int64(bigZip)))
	b.large, err = moduletest.LargeVersion(tmp, "example.com/large", "v1.0.0", int64(bigZip))
	if err != nil {
		fatalf("%v", err)
	}
	b.up = moduletest.NewServer(b.vs)
	atExit(b.up.Close)
	b.up.Add(b.large)
	b.up.SetLatency(*latency)
	b.counted = newPathCounter(b.up.Handler())
	upSrv := serve(b.counted)
	atExit(upSrv.Close)
	b.upURL = upSrv.URL
	progress("checksum database: logging %d padding records and the %d versions", *sumdbPad, len(b.vs)+1)
	b.db = newChecksumDB(append(b.vs[:len(b.vs):len(b.vs)], b.large), *sumdbPad, *latency)
	atExit(b.db.Close)

	fmt.Printf("goproxy bench: %s, GOMAXPROCS=%d, NumCPU=%d, load average %s\n", runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), loadAverage())
	fmt.Printf("graph: RealisticGraph(%d) = %d modules, %d versions; the zips go mod download fetches: %s, %s; upstream and checksum database latency %v\n",
		*modules, len(paths), len(b.vs), formatMB(graphBytes), sizeSpread(zipSizes), *latency)
	fmt.Printf("checksum database: sumdb.NewServer(sumdb.NewTestServer) on 127.0.0.1, %d records (%d padding, then the graph's and the big zip's)\n",
		*sumdbPad+len(b.vs)+1, *sumdbPad)
	fmt.Printf("proxy caches in %s, go command caches in %s\n", tmp, b.godir)
	start := time.Now()

	want := map[string]bool{}
	for f := range strings.SplitSeq(*figures, ",") {
		want[strings.TrimSpace(f)] = true
	}
	if want["cold"] {
		b.cold()
	}
	if want["bigzip"] {
		b.bigZipLoopback()
	}
	if want["paced"] {
		b.bigZipPaced()
	}
	if want["warm"] {
		b.warm()
	}
	if want["faults"] && *faultReps > 0 {
		faultRows, faultRaw := coldUnderFaults(b)
		b.rows = append(b.rows, faultRows...)
		b.raw = append(b.raw, faultRaw...)
	}
	if want["ops"] {
		// Eviction runs, the index feed, and what eviction and the
		// metrics add to a warm hit.
		opRows, opRaw := operations(tmp, *opEntries, *opReps, *opDur)
		b.rows = append(b.rows, opRows...)
		b.raw = append(b.raw, opRaw...)
	}
	if want["fill"] {
		// Fill of the graph's go.mod against go mod download all
		// through the proxy, both without checksum verification.
		newProxy := func(up string, opts ...func(*goproxy.Proxy)) (*goproxy.Proxy, string) {
			return b.newProxy(up, append([]func(*goproxy.Proxy){noSumDB(up)}, opts...)...)
		}
		fillRows, fillRaw := fillFigure(b.upURL, b.goMod, b.wantZips, b.godir, *reps, newProxy)
		b.rows = append(b.rows, fillRows...)
		b.raw = append(b.raw, fillRaw...)
	}

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "figure\tproxy\tbaseline\tratio\ttarget\tmet")
	for _, r := range b.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.figure, r.proxy, r.baseline, r.ratio, r.target, r.met)
	}
	tw.Flush()
	fmt.Println("\nbaselines, each measured in this run:")
	fmt.Println("- cold: the go command straight from the upstream, verifying against the checksum database itself;")
	fmt.Println("  through the proxy it verifies through the proxy's /sumdb/, and the proxy verifies every .mod and .zip")
	fmt.Println("- requests per file: the proxy's upstream requests for module files over the distinct files it fetched,")
	fmt.Println("  prefetching off; checksum database requests apart")
	fmt.Println("- big zip: the zip straight from the upstream; verify alone: zip.CheckZip and dirhash.HashZip on the file")
	fmt.Printf("- paced: the same proxy download with DownloadOptions.Connections = 1; the upstream paces each connection at %s\n", formatRate(int64(connRate)))
	fmt.Println("  and adds the latency per request; times run until the client has read the whole zip")
	fmt.Println("- warm: the same go command against http.FileServer over the same files (reference: a file:// tree)")
	fmt.Println("- req/s: a trivial net/http handler answering the same paths with the same bytes from a map;")
	fmt.Println("  same answers: one answering with the bytes and the headers the proxy sent (Cache-Control, ETag, ...)")
	fmt.Println("- faults: the same cold proxy run (GOSUMDB=off) against an upstream failing no request")
	if want["ops"] {
		fmt.Println("- eviction run: DirCacher.Walk of the same cache (the run finds it within its limits: it lists, removes nothing)")
		fmt.Println("- first /index: a walk of the cache that stats every .info and sorts in memory, what /index did before the feed")
		fmt.Println("- warm hit: the same Proxy.ServeHTTP call with eviction off, sides alternating in batches, in this process")
	}
	if want["fill"] {
		fmt.Println("- fill: go mod download all through a fresh proxy (GOSUMDB=off), the same graph and upstream")
	}
	fmt.Println("\nraw:")
	for _, l := range b.raw {
		fmt.Println("  " + l)
	}
	fmt.Printf("\ntotal %s, load average at the end %s\n", secs(time.Since(start).Round(time.Millisecond)), loadAverage())
}

// loadAverage reads the machine's load averages, as uptime shows them.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	var one, five, fifteen string
	fmt.Sscan(string(b), &one, &five, &fifteen)
	return one + " " + five + " " + fifteen
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
