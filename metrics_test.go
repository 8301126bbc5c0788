package goproxy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

func TestMetricsReportWithoutAllocating(t *testing.T) {
	var requests, bytes atomic.Int64
	var hits [5]atomic.Int64 // by CacheOutcome, in the order of the constants
	outcomes := []CacheOutcome{CacheHot, CacheHit, CacheMiss, CacheStale, CacheNotFoundMemo}
	m := &Metrics{
		Request: func(r RequestMetric) {
			requests.Add(1)
			bytes.Add(r.Bytes)
			for i, o := range outcomes {
				if r.Cache == o {
					hits[i].Add(1)
				}
			}
		},
		UpstreamFetch: func(UpstreamFetchMetric) { requests.Add(1) },
		Download:      func(DownloadMetric) { requests.Add(1) },
	}
	req := &request{kind: kindInfo}
	upstream := "https://proxy.example.com"
	allocs := testing.AllocsPerRun(1000, func() {
		m.request(RequestMetric{Kind: req.metricKind(), Status: 200, Cache: CacheHot, Bytes: 120, Duration: time.Microsecond})
		m.upstreamFetch(UpstreamFetchMetric{Upstream: upstream, Kind: RequestZip, Outcome: FetchOK, Status: 200, Bytes: 1 << 20})
		m.download(DownloadMetric{Upstream: upstream, Event: DownloadProgress, InFlight: 1, Bytes: 32 << 10})
	})
	if allocs != 0 {
		t.Errorf("reporting allocates %v times", allocs)
	}
	if hits[0].Load() == 0 || bytes.Load() == 0 {
		t.Error("the hooks were not called")
	}
}

func TestMetricsWithoutHooksReportNothing(t *testing.T) {
	var m *Metrics
	m.request(RequestMetric{})
	m.eviction(EvictionMetric{})
	(&Metrics{}).cacheSize(CacheSizeMetric{})
}

func BenchmarkMetricsRequest(b *testing.B) {
	var n atomic.Int64
	m := &Metrics{Request: func(r RequestMetric) { n.Add(int64(r.Status)) }}
	b.ReportAllocs()
	for b.Loop() {
		m.request(RequestMetric{Kind: RequestInfo, Status: 200, Cache: CacheHit, Bytes: 100})
	}
}

// metricsLog keeps every metric a Proxy reports.
type metricsLog struct {
	mu            sync.Mutex
	requests      []RequestMetric
	fetches       []UpstreamFetchMetric
	retries       []RetryMetric
	verifications []VerificationMetric
	downloads     []DownloadMetric
	shared        []SharedFetchMetric
	sizes         []CacheSizeMetric
	evictions     []EvictionMetric
}

func (l *metricsLog) hooks() Metrics {
	add := func(f func()) { l.mu.Lock(); f(); l.mu.Unlock() }
	return Metrics{
		Request:       func(m RequestMetric) { add(func() { l.requests = append(l.requests, m) }) },
		UpstreamFetch: func(m UpstreamFetchMetric) { add(func() { l.fetches = append(l.fetches, m) }) },
		Retry:         func(m RetryMetric) { add(func() { l.retries = append(l.retries, m) }) },
		Verification:  func(m VerificationMetric) { add(func() { l.verifications = append(l.verifications, m) }) },
		Download:      func(m DownloadMetric) { add(func() { l.downloads = append(l.downloads, m) }) },
		SharedFetch:   func(m SharedFetchMetric) { add(func() { l.shared = append(l.shared, m) }) },
		CacheSize:     func(m CacheSizeMetric) { add(func() { l.sizes = append(l.sizes, m) }) },
		Eviction:      func(m EvictionMetric) { add(func() { l.evictions = append(l.evictions, m) }) },
	}
}

// count counts the items of s by the key k gives them.
func count[T any](s []T, k func(T) string) map[string]int {
	m := map[string]int{}
	for _, v := range s {
		m[k(v)]++
	}
	return m
}

func sameCounts(t *testing.T, what string, got, want map[string]int) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

// TestMetricsOfAScriptedSequence sends a fixed sequence of requests (cold,
// warm, stale, not found, a checksum mismatch, a retry, a shared fetch,
// refusals) and an eviction run through a Proxy verifying against a real
// checksum database, and checks every metric reported against the
// sequence.
func TestMetricsOfAScriptedSequence(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	var (
		listRefused  atomic.Bool
		infoFailures atomic.Int32
		release      = make(chan struct{})
	)
	mod0, mod1, mod2 := "/"+moduletest.GraphPath(0), "/"+moduletest.GraphPath(1), "/"+moduletest.GraphPath(2)
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case mod0 + "/@v/list":
			if listRefused.Load() {
				w.WriteHeader(http.StatusForbidden)
				return true
			}
		case mod1 + "/@v/v1.0.0.mod":
			w.Write([]byte("module " + moduletest.GraphPath(1) + "\n// altered\n"))
			return true
		case mod2 + "/@v/v1.0.0.info":
			if infoFailures.Add(1) == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			}
		case mod2 + "/@v/list":
			<-release
		}
		return false
	})
	var log metricsLog
	c := &MemCacher{}
	p := newVerifyingProxy(t, up.URL, db)
	p.Cacher = c
	p.MutableTTL = -1 // lists are fetched every time, and served stale when that fails
	p.Metrics = log.hooks()
	p.Eviction = Eviction{MaxAge: time.Hour, Interval: time.Hour}
	p.Prefetch.Off = true // the script counts the clients' fetches only
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	p.start()
	testwait.For(t, func() bool { log.mu.Lock(); defer log.mu.Unlock(); return len(log.sizes) == 1 }, "the run at start")

	get := func(path string, wantStatus int) {
		t.Helper()
		if w := do(p, "GET", path); w.Code != wantStatus {
			t.Fatalf("GET %s: %d %q, want %d", path, w.Code, w.Body, wantStatus)
		}
	}
	version := mod0 + "/@v/v1.0.0"
	// Cold, then warm: from memory, and the zip from the cache.
	get(version+".info", 200)
	get(version+".mod", 200)
	get(version+".zip", 200)
	testwait.For(t, p.flights.idle)
	get(version+".info", 200)
	get(version+".mod", 200)
	get(version+".zip", 200)
	// Stale: a list fetched, then served from the cache when its
	// upstream refuses.
	get(mod0+"/@v/list", 200)
	listRefused.Store(true)
	get(mod0+"/@v/list", 200)
	// Not found, then remembered.
	get("/example.com/none/@v/list", 404)
	get("/example.com/none/@v/list", 404)
	// A .mod that is not what the checksum database recorded.
	get(mod1+"/@v/v1.0.0.mod", 502)
	// A 503, retried.
	get(mod2+"/@v/v1.0.0.info", 200)
	// Two clients, one fetch.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { get(mod2+"/@v/list", 200) })
	}
	testwait.For(t, func() bool { return p.flights.users(mod2[1:]+"/@v/list") == 2 }, "both clients waiting")
	close(release)
	wg.Wait()
	// Refused before reaching the cache.
	get("/example.com/Upper/@v/list", 400)
	if w := do(p, "PUT", version+".zip"); w.Code != 405 {
		t.Fatalf("PUT without Hosted: %d", w.Code)
	}
	get("/index", 200)
	testwait.For(t, p.flights.idle)
	// Everything but the checksum database's files unused for a day.
	backdate(t, c, "example.com/", time.Now().Add(-24*time.Hour))
	evictNow(t, p)

	log.mu.Lock()
	defer log.mu.Unlock()
	sameCounts(t, "requests by kind, status and cache outcome", count(log.requests, func(m RequestMetric) string {
		return fmt.Sprintf("%s %d %s", m.Kind, m.Status, m.Cache)
	}), map[string]int{
		"info 200 miss": 2, "mod 200 miss": 1, "zip 200 miss": 1, // cold, and the retried .info
		"info 200 hot": 1, "mod 200 hot": 1, "zip 200 hit": 1, // warm
		"list 200 miss": 3, "list 200 stale": 1, // fetched (once alone, once shared), stale
		"list 404 miss": 1, "list 404 not-found-memo": 1,
		"mod 502 miss": 1,
		"other 400 ":   1, "publish 405 ": 1, "admin 200 ": 1,
	})
	for _, m := range log.requests {
		if m.Duration <= 0 || (m.Status == 200 && m.Bytes == 0) {
			t.Errorf("request metric %+v: no duration, or no bytes for a 200", m)
		}
		if m.Kind == RequestZip && m.Bytes != int64(len(vs[0].Zip)) {
			t.Errorf("zip request metric of %d bytes, want the zip's %d", m.Bytes, len(vs[0].Zip))
		}
	}

	sumdb := "sumdb/" + db.name
	moduleFetches := count(log.fetches, func(m UpstreamFetchMetric) string {
		if m.Upstream == sumdb {
			return ""
		}
		if m.Upstream != up.URL {
			t.Errorf("fetch metric of upstream %q", m.Upstream)
		}
		return fmt.Sprintf("%s %s %d", m.Kind, m.Outcome, m.Status)
	})
	sumdbFetches := moduleFetches[""]
	delete(moduleFetches, "")
	sameCounts(t, "upstream fetches by kind, outcome and status", moduleFetches, map[string]int{
		"info ok 200": 2, "mod ok 200": 1, "zip ok 200": 1,
		"list ok 200": 2, "list error 403": 1, "list not-found 404": 1,
		"mod invalid 200": 1,
	})
	// The verifications' own fetches: one per request the database saw.
	if sumdbFetches != db.total() || sumdbFetches == 0 {
		t.Errorf("%d checksum database fetches reported, the database saw %d requests", sumdbFetches, db.total())
	}
	sameCounts(t, "retries", count(log.retries, func(m RetryMetric) string {
		return fmt.Sprintf("%v %s attempt %d status %d", m.Upstream == up.URL, m.Kind, m.Attempt, m.Status)
	}), map[string]int{"true info attempt 1 status 503": 1})
	sameCounts(t, "verifications", count(log.verifications, func(m VerificationMetric) string {
		return fmt.Sprintf("%s %s %s", m.DB, m.Kind, m.Outcome)
	}), map[string]int{"sumdb.test mod ok": 1, "sumdb.test zip ok": 1, "sumdb.test mod mismatch": 1})
	// The verifier's lookups that met another's are not clients': only
	// the clients' sharing is counted.
	shared := count(log.shared, func(m SharedFetchMetric) string { return string(m.Kind) })
	sameCounts(t, "shared fetches", shared, map[string]int{"list": 1})

	events := count(log.downloads, func(m DownloadMetric) string { return string(m.Event) })
	var received int64
	for _, m := range log.downloads {
		received += m.Bytes
	}
	var fetched int64
	for _, m := range log.fetches {
		fetched += m.Bytes
	}
	if events["started"] != len(log.fetches) || events["ended"] != len(log.fetches) || p.downloads.inFlight.Load() != 0 {
		t.Errorf("downloads %v, %d in flight; want %d started and ended", events, p.downloads.inFlight.Load(), len(log.fetches))
	}
	if received < fetched {
		t.Errorf("downloads received %d bytes, less than the %d the fetches brought", received, fetched)
	}

	// The run removed what the sequence cached of the modules: the
	// version (its three files at once), its list, the retried .info, the
	// shared list. The checksum database's files were used too recently.
	sameCounts(t, "evictions", count(log.evictions, func(m EvictionMetric) string {
		return fmt.Sprintf("%s %d files", m.Reason, m.Files)
	}), map[string]int{"age 3 files": 1, "age 1 files": 3})
	if len(log.sizes) != 2 || log.sizes[1].Entries == 0 {
		t.Errorf("cache sizes %+v: want one at start, one after the run, the database's files left", log.sizes)
	}
}

// TestAHitAllocatesNoMoreWithMetricsAndEviction: reporting a request and
// recording its use for eviction cost a warm hit no allocation, from the
// hot tier or from either cacher.
func TestAHitAllocatesNoMoreWithMetricsAndEviction(t *testing.T) {
	files := testModuleFiles(t)
	up := newUpstream(t, files)
	var n atomic.Int64
	hooks := Metrics{
		Request:       func(RequestMetric) { n.Add(1) },
		UpstreamFetch: func(UpstreamFetchMetric) { n.Add(1) },
		Download:      func(DownloadMetric) { n.Add(1) },
		SharedFetch:   func(SharedFetchMetric) { n.Add(1) },
	}
	for _, tier := range []struct {
		name     string
		cacher   func() Cacher
		hotBytes int64
	}{
		{"hot", func() Cacher { return &MemCacher{} }, 0},
		{"MemCacher", func() Cacher { return &MemCacher{} }, -1},
		{"DirCacher", func() Cacher { return DirCacher(t.TempDir()) }, -1},
	} {
		t.Run(tier.name, func(t *testing.T) {
			allocs := func(metrics Metrics, eviction Eviction) float64 {
				p := newTestProxy(t, up.URL)
				p.Cacher, p.HotCacheBytes = tier.cacher(), tier.hotBytes
				p.Logger = slog.New(slog.DiscardHandler)
				p.Metrics, p.Eviction = metrics, eviction
				r := httptest.NewRequest("GET", "/example.com/a/@v/v1.0.0.info", nil)
				w := &discardWriter{h: http.Header{}}
				p.ServeHTTP(w, r)
				testwait.For(t, p.flights.idle)
				p.ServeHTTP(w, r) // warm
				return testing.AllocsPerRun(200, func() {
					clear(w.h)
					p.ServeHTTP(w, r)
				})
			}
			plain := allocs(Metrics{}, Eviction{})
			measured := allocs(hooks, Eviction{MaxAge: time.Hour, MaxBytes: 1 << 30, Interval: time.Hour})
			t.Logf("allocations per hit: %v plain, %v with metrics and eviction", plain, measured)
			if measured > plain {
				t.Errorf("a hit allocates %v times with metrics and eviction, %v without", measured, plain)
			}
			if n.Load() == 0 {
				t.Error("no metric was reported")
			}
		})
	}
}

// TestTheRequestMetricCarriesTheRequestsContext: an embedder finds in the
// Request metric the context of the request it describes, and with it
// what it put there (such as the holder of its access log line), for a
// miss, a hit and a refusal.
func TestTheRequestMetricCarriesTheRequestsContext(t *testing.T) {
	type holderKey struct{}
	type holder struct{ cache CacheOutcome }
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	p.Metrics.Request = func(m RequestMetric) {
		if h, ok := m.Context.Value(holderKey{}).(*holder); ok {
			h.cache = m.Cache
		}
	}
	for _, tc := range []struct {
		method string
		want   CacheOutcome
	}{{"GET", CacheMiss}, {"GET", CacheHot}, {"POST", ""}} {
		h := &holder{cache: "unset"}
		r := httptest.NewRequest(tc.method, "/example.com/a/@v/v1.0.0.info", nil)
		r = r.WithContext(context.WithValue(r.Context(), holderKey{}, h))
		p.ServeHTTP(httptest.NewRecorder(), r)
		if h.cache != tc.want {
			t.Errorf("%s: the holder in the request's context got %q, want %q", tc.method, h.cache, tc.want)
		}
		testwait.For(t, p.flights.idle)
	}
}

// TestAnAbortedAnswerIsReportedAsAborted: a response cut after it
// started (panic(http.ErrAbortHandler), here a cache read failing midway)
// is reported with Aborted set, and the panic goes on to net/http.
func TestAnAbortedAnswerIsReportedAsAborted(t *testing.T) {
	p := newTestProxy(t, "off")
	p.Cacher = failingReadCacher{data: bytes.Repeat([]byte("z"), 100<<10)}
	var got []RequestMetric
	p.Metrics.Request = func(m RequestMetric) { got = append(got, m) }
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.zip"); !w.Aborted {
		t.Errorf("handler ended with %d, want panic(http.ErrAbortHandler)", w.Code)
	}
	if len(got) != 1 || !got[0].Aborted {
		t.Errorf("reported %+v, want one aborted request", got)
	}
	got = nil
	do(p, "GET", "/example.com/a/@v/v1.0.0.info")
	if len(got) != 1 || got[0].Aborted {
		t.Errorf("reported %+v, want one request not aborted", got)
	}
}

// TestAPrefetchJoiningAClientsFetchIsNoSharedFetch: the prefetch of a
// requirement's go.mod that a client is already fetching joins that
// fetch; no client was served by another's fetch, so no SharedFetch is
// reported.
func TestAPrefetchJoiningAClientsFetchIsNoSharedFetch(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := newTestProxy(t, up.URL)
	var shared atomic.Int32
	p.Metrics.SharedFetch = func(SharedFetchMetric) { shared.Add(1) }
	// mod000 v1.0.0 requires mod001 v1.0.0, whose go.mod is answered
	// once both a client and the prefetch wait for it.
	required := moduletest.GraphPath(1) + "/@v/v1.0.0.mod"
	var joined atomic.Bool
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, required) {
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if p.flights.users(required) >= 2 {
					joined.Store(true)
					break
				}
			}
		}
		return false
	})
	done := make(chan *recorded)
	go func() { done <- do(p, "GET", "/"+required) }()
	testwait.For(t, func() bool { return p.flights.users(required) == 1 })
	if w := do(p, "GET", "/"+moduletest.GraphPath(0)+"/@v/v1.0.0.mod"); w.Code != 200 {
		t.Fatalf("GET the requiring go.mod: %d %s", w.Code, w.Body)
	}
	if w := <-done; w.Code != 200 {
		t.Fatalf("GET the required go.mod: %d %s", w.Code, w.Body)
	}
	testwait.For(t, p.flights.idle)
	if !joined.Load() {
		t.Fatal("the prefetch never joined the client's fetch: the test shows nothing")
	}
	if n := shared.Load(); n != 0 {
		t.Errorf("%d shared fetches reported, want none: no client joined another's fetch", n)
	}
}
