package goproxy

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy/internal/lru"
)

// PrefetchOptions tunes prefetching. The go command walks a module graph a
// level at a time with little parallelism, paying the upstream's latency
// (and the checksum database's) on every go.mod. A proxy that has just
// served a go.mod knows what the go command will ask next: the go.mod of
// every requirement. Prefetching fetches them in the background, through
// the same validation and checksum verification as any fetch, so that the
// go command's next requests are hits. It never delays a client's own
// request: it has download slots of its own, and a request for a file
// being prefetched shares that download. Before a version is prefetched
// the Admission hook is asked, as before any fetch the proxy makes for
// itself: a version it refuses is not fetched. A prefetch takes the fetch
// lease of a store shared by several proxies ([CacheLeaser]) as any fetch
// does, so a file another proxy is fetching is waited for, not fetched
// twice. An Offline proxy never prefetches.
//
// The zero value prefetches the .mod files of the requirements of every
// go.mod served, and that version's .info, four at a time.
type PrefetchOptions struct {
	// Off turns prefetching off.
	Off bool

	// NoInfo turns off the prefetch of the .info of the version whose
	// go.mod is served, which the zero value makes: go mod download (the
	// first step of most CI jobs and Dockerfiles) asks for the .info of
	// every module, one module at a time per core, between the go.mod
	// files and the zips, so having them cached saves a round trip per
	// module. A .info is a few dozen bytes; builds and go mod tidy, which
	// never ask for it, pay one upstream request per go.mod fetched. A
	// module whose route tries direct first is left out: its .info would
	// be a run of the go command of its own.
	NoInfo bool

	// Info prefetches the .info files of the requirements too (go list
	// -m asks for them), whatever NoInfo says of that of the version
	// served. Off by default: it doubles the requests of the
	// requirements' prefetch.
	Info bool

	// Depth is how many levels of requirements below a go.mod served to
	// a client are prefetched: 1 is the go.mod's own requirements. Every
	// go.mod a client then asks for (a hit, once prefetched) starts from
	// there again, so that the prefetches stay that far ahead of the go
	// command's walk. Zero means 1.
	Depth int

	// Concurrency bounds the prefetch downloads in progress across the
	// proxy (checksum database requests included, but for the record
	// lookup a version's files share, which a client may wait on and so
	// takes the clients' slots); they do not take the
	// slots of DownloadOptions.MaxConcurrent. Zero means 4.
	Concurrency int
}

func (o PrefetchOptions) withDefaults() PrefetchOptions {
	if o.Depth <= 0 {
		o.Depth = 1
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	return o
}

// Bounds of the prefetcher's memory.
const (
	// prefetchQueue is how many files may wait to be prefetched; past
	// it, new ones are dropped.
	prefetchQueue = 4096
	// prefetchExpanded is how many go.mod files are remembered as
	// expanded (their requirements queued), and .info files as queued,
	// so that a graph's files are each queued once.
	prefetchExpanded = 100_000
)

// prefetcher runs the prefetches.
type prefetcher struct {
	p    *Proxy
	opts PrefetchOptions
	jobs chan prefetchJob

	mu      sync.Mutex
	workers int  // running, at most opts.Concurrency; guarded by mu
	closed  bool // Close was called: nothing more is queued; guarded by mu
	// stopped is broadcast when a worker stops.
	stopped sync.Cond
	// ctx ends with Close.
	ctx    context.Context
	cancel context.CancelFunc

	// expanded holds the names of the go.mod files whose requirements
	// were queued, and of the .info files queued for the versions
	// served.
	expanded *lru.Cache[struct{}]

	// Counts, for tests and the benchmark; Metrics gets them as events.
	fetched, used, dropped atomic.Int64
}

// prefetchJob is a go.mod whose requirements to queue, or a file to
// fetch, level levels below the go.mod a client asked for.
type prefetchJob struct {
	name  string // the file's name
	gomod []byte // set for a go.mod to expand
	level int
}

func newPrefetcher(p *Proxy, opts PrefetchOptions) *prefetcher {
	if opts.Off {
		return nil
	}
	pf := &prefetcher{p: p, opts: opts, jobs: make(chan prefetchJob, prefetchQueue),
		expanded: lru.New(prefetchExpanded, func(struct{}) int64 { return 1 })}
	pf.stopped.L = &pf.mu
	pf.ctx, pf.cancel = context.WithCancel(withPrefetch(context.Background()))
	return pf
}

// close stops the prefetching: what waits is dropped, and close returns
// once the prefetches running have ended.
func (pf *prefetcher) close() {
	if pf == nil {
		return
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	pf.closed = true
	pf.cancel()
	for len(pf.jobs) > 0 {
		<-pf.jobs
	}
	for pf.workers > 0 {
		pf.stopped.Wait()
	}
}

type prefetchKey struct{}

// withPrefetch marks ctx as a prefetch's: its downloads take the
// prefetch slots.
func withPrefetch(ctx context.Context) context.Context {
	return context.WithValue(ctx, prefetchKey{}, true)
}

// prefetching reports whether ctx is a prefetch's.
func prefetching(ctx context.Context) bool {
	return ctx.Value(prefetchKey{}) != nil
}

type clientSlotsKey struct{}

// withClientSlots marks ctx, a prefetch's or not, as one whose downloads
// take the clients' slots: work that a client may come to wait on, such as
// a checksum lookup shared by a version's files, must not queue behind the
// prefetches (a prefetch worker's own download holds a prefetch slot while
// its lookup would want another). It stays a prefetch's for the metrics.
func withClientSlots(ctx context.Context) context.Context {
	return context.WithValue(ctx, clientSlotsKey{}, true)
}

// onPrefetchSlots reports whether ctx's downloads take the prefetch slots.
func onPrefetchSlots(ctx context.Context) bool {
	return prefetching(ctx) && ctx.Value(clientSlotsKey{}) == nil
}

// served is told of every file served to a client with status: a go.mod's
// requirements, and its version's .info, are queued, and a file the
// prefetcher brought counts as used. Nothing is queued for a client that
// asked the proxy not to fetch (Disable-Module-Fetch). It must stay cheap:
// it runs on the serving path.
func (pf *prefetcher) served(r *http.Request, req *request, c *content, status int) {
	if pf == nil || status != 200 || (req.kind != kindMod && req.kind != kindInfo) {
		return
	}

	// Loads first: every hot .mod answer passes here, and a write would
	// have the serving cores fight over the file's cache line.
	if c.hot != nil && c.hot.prefetched.Load() && c.hot.prefetched.CompareAndSwap(true, false) {
		pf.used.Add(1)
		pf.p.reportPrefetch(req, PrefetchUsed)
	}
	if req.kind != kindMod || c.data == nil {
		return
	}
	if c.hot == nil {
		// Rare (no hot tier, or a huge go.mod): what was queued is
		// remembered in the expanded names alone.
		if fetchDisabled(r) {
			return
		}
		pf.queueOwnInfo(req)
		if _, ok := pf.expanded.Peek(req.name); !ok {
			pf.enqueue(prefetchJob{name: req.name, gomod: c.data})
		}
		return
	}
	// The version's .info once it is asked for, even if its go.mod was
	// expanded ahead, by a prefetch deeper than one level.
	infoDue := !pf.opts.NoInfo && !c.hot.infoQueued.Load()
	expandDue := !c.hot.expanded.Load()
	if (!infoDue && !expandDue) || fetchDisabled(r) {
		return
	}
	if infoDue && !c.hot.infoQueued.Swap(true) {
		pf.queueOwnInfo(req)
	}
	if expandDue && !c.hot.expanded.Swap(true) {
		pf.enqueue(prefetchJob{name: req.name, gomod: c.data})
	}
}

// queueOwnInfo queues the .info of the version whose go.mod req names,
// once (the names queued are remembered with the expanded go.mod files,
// so that a go.mod back in the hot tier does not queue it again): go mod
// download asks for it next. Not with NoInfo, nor for a module whose route
// tries direct first: there a .info is a run of the go command of its
// own, taking one of the slots the clients' runs wait for. (A module that
// only direct has, behind a proxy of the same route that answers 404, is
// not told apart: its .info runs the go command once. GONOPROXY, or a
// route of its own, sends such modules direct first.)
func (pf *prefetcher) queueOwnInfo(req *request) {
	if pf.opts.NoInfo || pf.p.routeFor(req.modPath).triesDirectFirst() {
		return
	}
	info := strings.TrimSuffix(req.name, ".mod") + ".info"
	if _, ok := pf.expanded.Get(info); ok {
		return
	}
	if pf.enqueue(prefetchJob{name: info}) {
		pf.expanded.Put(info, struct{}{})
	}
}

// enqueue queues j, dropping it if the queue is full, and starts a worker
// if fewer than allowed run. It reports whether j was queued.
func (pf *prefetcher) enqueue(j prefetchJob) (queued bool) {
	pf.mu.Lock()
	closed := pf.closed
	pf.mu.Unlock()
	if closed {
		return false
	}
	select {
	case pf.jobs <- j:
	default:
		pf.dropped.Add(1)
		kind := RequestMod
		if strings.HasSuffix(j.name, ".info") {
			kind = RequestInfo
		}
		pf.p.conf.metrics.prefetch(PrefetchMetric{Kind: kind, Event: PrefetchDropped})
		return false
	}
	pf.mu.Lock()
	if pf.workers < pf.opts.Concurrency && !pf.closed {
		pf.workers++
		go pf.work()
	}
	pf.mu.Unlock()
	return true
}

// work runs jobs until the queue is empty.
func (pf *prefetcher) work() {
	for {
		select {
		case j := <-pf.jobs:
			pf.run(j)
			continue
		default:
		}
		pf.mu.Lock()
		if len(pf.jobs) > 0 && !pf.closed {
			pf.mu.Unlock()
			continue
		}
		pf.workers--
		pf.stopped.Broadcast()
		pf.mu.Unlock()
		return
	}
}

// idle reports whether nothing is queued or running.
func (pf *prefetcher) idle() bool {
	if pf == nil {
		return true
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	return pf.workers == 0 && len(pf.jobs) == 0
}

func (pf *prefetcher) run(j prefetchJob) {
	if j.gomod != nil {
		pf.expand(j)
		return
	}
	ctx, cancel := context.WithTimeout(pf.ctx, pf.p.conf.download.Timeout)
	defer cancel()
	req, err := pf.p.parseRequest(j.name)
	if err != nil || !pf.p.admitPrefetch(ctx, req) {
		return
	}
	if _, ok := pf.p.hotGet(req); ok {
		return
	}
	c, err := pf.p.open(ctx, req, true)
	if err != nil {
		return
	}
	defer c.close()
	if c.from == fromUpstream {
		pf.fetched.Add(1)
		pf.p.reportPrefetch(req, PrefetchFetched)
		if c.hot != nil {
			c.hot.prefetched.Store(true)
		}
	}
	if req.kind == kindMod && c.data != nil && j.level < pf.opts.Depth {
		if c.hot != nil {
			c.hot.expanded.Store(true)
		}
		pf.expand(prefetchJob{name: j.name, gomod: c.data, level: j.level})
	}
}

// expand queues the files of j's go.mod's requirements, unless they are
// too deep or the go.mod was expanded before.
func (pf *prefetcher) expand(j prefetchJob) {
	if j.level >= pf.opts.Depth {
		return
	}
	if _, ok := pf.expanded.Get(j.name); ok {
		return
	}
	pf.expanded.Put(j.name, struct{}{})
	f, err := modfile.ParseLax("go.mod", j.gomod, nil)
	if err != nil {
		return
	}
	for _, r := range f.Require {
		escPath, err1 := module.EscapePath(r.Mod.Path)
		escVersion, err2 := module.EscapeVersion(r.Mod.Version)
		if err1 != nil || err2 != nil || module.CanonicalVersion(r.Mod.Version) != r.Mod.Version {
			continue
		}
		base := escPath + "/@v/" + escVersion
		pf.enqueue(prefetchJob{name: base + ".mod", level: j.level + 1})
		if pf.opts.Info {
			pf.enqueue(prefetchJob{name: base + ".info", level: j.level + 1})
		}
	}
}

// admitPrefetch decides whether req's file may be prefetched: the
// admission policy is asked, as before any fetch the proxy makes for
// itself (admitFetch), and a version it refuses is never prefetched.
func (p *Proxy) admitPrefetch(ctx context.Context, req *request) bool {
	return p.admitFetch(ctx, req.modPath, req.version) == nil
}

// reportPrefetch reports a prefetch event for req's file.
func (p *Proxy) reportPrefetch(req *request, e PrefetchEvent) {
	p.conf.metrics.prefetch(PrefetchMetric{Kind: req.metricKind(), Event: e})
}
