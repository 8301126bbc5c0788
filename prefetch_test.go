package goproxy

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// graphMod is the name of the .mod of moduletest.Graph's module i at
// version v.
func graphMod(i int, v string) string { return moduletest.GraphPath(i) + "/@v/" + v + ".mod" }

// prefetchCounts counts a Proxy's prefetch events.
type prefetchCounts struct{ tally[PrefetchEvent] }

func (c *prefetchCounts) hook(m PrefetchMetric) { c.add(m.Event) }

func cached(t *testing.T, p *Proxy, name string) bool {
	t.Helper()
	f, err := p.Cacher.Get(context.Background(), name)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func TestPrefetchBringsTheRequirementsGoModFiles(t *testing.T) {
	up := moduletest.NewServer(moduletest.Graph(12))
	defer up.Close()
	p := newTestProxy(t, up.URL)
	var counts prefetchCounts
	p.Metrics.Prefetch = counts.hook
	var prefetchFetches, clientFetches atomic.Int32
	p.Metrics.UpstreamFetch = func(m UpstreamFetchMetric) {
		if m.Kind != RequestMod {
			return
		}
		if m.Prefetch {
			prefetchFetches.Add(1)
		} else {
			clientFetches.Add(1)
		}
	}
	p.Prefetch.Depth = 2
	if w := do(p, "GET", "/"+graphMod(0, "v1.1.0")); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	testwait.For(t, p.idle)
	// mod000@v1.1.0 requires mod001@v1.0.0 and mod003@v1.1.0; they
	// require mod002@v1.0.0, and mod004@v1.0.0 and mod006@v1.1.0; a
	// depth of 2 stops there.
	for _, name := range []string{graphMod(1, "v1.0.0"), graphMod(3, "v1.1.0"), graphMod(2, "v1.0.0"), graphMod(4, "v1.0.0"), graphMod(6, "v1.1.0")} {
		if !cached(t, p, name) {
			t.Errorf("%s was not prefetched", name)
		}
	}
	for _, name := range []string{graphMod(5, "v1.0.0"), graphMod(7, "v1.0.0"), moduletest.GraphPath(1) + "/@v/v1.0.0.info"} {
		if cached(t, p, name) {
			t.Errorf("%s was prefetched: deeper than Depth, or not a .mod", name)
		}
	}
	if !cached(t, p, moduletest.GraphPath(0)+"/@v/v1.1.0.info") {
		t.Error("the served version's .info was not prefetched")
	}
	if n := counts.get(PrefetchFetched); n != 6 {
		t.Errorf("%d prefetches reported, want 6 (five .mod files and the served version's .info)", n)
	}
	// Counted apart from the clients' in the upstream fetch metric.
	if n, c := prefetchFetches.Load(), clientFetches.Load(); n != 5 || c != 1 {
		t.Errorf("upstream fetches of .mod files: %d marked prefetches, %d not; want 5 and the client's 1", n, c)
	}
	// The go command's next request is a hit.
	before := up.Requests("/" + graphMod(3, "v1.1.0"))
	if w := do(p, "GET", "/"+graphMod(3, "v1.1.0")); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if n := up.Requests("/"+graphMod(3, "v1.1.0")) - before; n != 0 {
		t.Errorf("a prefetched go.mod went %d times to the upstream", n)
	}
	if n := counts.get(PrefetchUsed); n != 1 {
		t.Errorf("%d uses reported, want 1", n)
	}
}

func TestPrefetchOff(t *testing.T) {
	up := moduletest.NewServer(moduletest.Graph(12))
	defer up.Close()
	p := newTestProxy(t, up.URL)
	p.Prefetch.Off = true
	do(p, "GET", "/"+graphMod(0, "v1.1.0"))
	testwait.For(t, p.idle)
	if n := up.TotalRequests(); n != 1 {
		t.Errorf("%d upstream requests, want the client's only", n)
	}
}

func TestPrefetchNeverTakesAClientsSlot(t *testing.T) {
	up := moduletest.NewServer(moduletest.Graph(12))
	defer up.Close()
	release := make(chan struct{})
	var held atomic.Int32
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/"+graphMod(1, "v1.0.0") || r.URL.Path == "/"+graphMod(3, "v1.1.0") {
			held.Add(1)
			<-release
		}
		return false
	})
	p := newTestProxy(t, up.URL)
	p.Download.MaxConcurrent = 1
	do(p, "GET", "/"+graphMod(0, "v1.1.0"))
	// Both prefetches wait at the upstream...
	testwait.For(t, func() bool { return held.Load() == 2 })
	// ...and a client's own request goes through all the same.
	if w := do(p, "GET", "/"+moduletest.GraphPath(9)+"/@v/v1.0.0.info"); w.Code != 200 {
		t.Errorf("%d %s", w.Code, w.Body)
	}
	close(release)
}

func TestPrefetchVerifiesAsAnyFetch(t *testing.T) {
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	altered := "/" + graphMod(1, "v1.0.0")
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == altered {
			w.Write([]byte("module " + moduletest.GraphPath(1) + "\n// altered\n"))
			return true
		}
		return false
	})
	db := newTestSumDB(t, vs)
	p := newVerifyingProxy(t, up.URL, db)
	do(p, "GET", "/"+graphMod(0, "v1.1.0"))
	testwait.For(t, p.idle)
	if cached(t, p, strings.TrimPrefix(altered, "/")) {
		t.Error("an altered go.mod was prefetched into the cache")
	}
	if !cached(t, p, graphMod(3, "v1.1.0")) {
		t.Error("the other requirement was not prefetched")
	}
	if w := do(p, "GET", altered); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "SECURITY ERROR") {
		t.Errorf("the altered go.mod: %d %q", w.Code, w.Body)
	}
}

// The .info of the version served is prefetched by default, those of the
// requirements with Info, none with NoInfo; the requirements' .mod files
// always, the default depth of one level below.
func TestPrefetchOfInfoFiles(t *testing.T) {
	for _, tt := range []struct {
		opts                  PrefetchOptions
		ownInfo, requiredInfo bool
	}{
		{PrefetchOptions{}, true, false},
		{PrefetchOptions{Info: true}, true, true},
		{PrefetchOptions{NoInfo: true}, false, false},
	} {
		t.Run(fmt.Sprintf("%+v", tt.opts), func(t *testing.T) {
			up := moduletest.NewServer(moduletest.Graph(12))
			defer up.Close()
			p := newTestProxy(t, up.URL)
			p.Prefetch = tt.opts
			if w := do(p, "GET", "/"+graphMod(0, "v1.1.0")); w.Code != 200 {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			testwait.For(t, p.idle)
			want := map[string]bool{
				moduletest.GraphPath(0) + "/@v/v1.1.0.info": tt.ownInfo,
				moduletest.GraphPath(1) + "/@v/v1.0.0.info": tt.requiredInfo,
				moduletest.GraphPath(3) + "/@v/v1.1.0.info": tt.requiredInfo,
				graphMod(1, "v1.0.0"):                       true,
				graphMod(3, "v1.1.0"):                       true,
				graphMod(2, "v1.0.0"):                       false, // deeper than the default depth
			}
			for name, want := range want {
				if got := cached(t, p, name); got != want {
					t.Errorf("%s prefetched: %v, want %v", name, got, want)
				}
			}
		})
	}
}

func TestPrefetchAsksTheAdmissionPolicyBeforeFetching(t *testing.T) {
	up := moduletest.NewServer(moduletest.Graph(12))
	defer up.Close()
	p := newTestProxy(t, up.URL)
	refused := moduletest.GraphPath(3)
	var mu sync.Mutex
	asked := map[string]int{}
	p.Admission = func(_ context.Context, c AdmissionCandidate) AdmissionDecision {
		mu.Lock()
		asked[c.Path+"@"+c.Version]++
		mu.Unlock()
		if c.Path == refused {
			return AdmissionDecision{Verdict: Refuse, Rule: "deny", Reason: "denied by the test"}
		}
		return AdmissionDecision{Rule: "allow"} // reported, unlike the zero decision
	}
	var fetchRefusals, requestDecisions atomic.Int32
	p.Metrics.Admission = func(m AdmissionMetric) {
		if m.Use == AdmissionFetch && m.Verdict == Refuse {
			fetchRefusals.Add(1)
		}
		if m.Use == AdmissionRequest {
			requestDecisions.Add(1)
		}
	}
	if w := do(p, "GET", "/"+graphMod(0, "v1.1.0")); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	testwait.For(t, p.idle)
	if !cached(t, p, graphMod(1, "v1.0.0")) {
		t.Errorf("%s, admitted, was not prefetched", graphMod(1, "v1.0.0"))
	}
	if cached(t, p, graphMod(3, "v1.1.0")) {
		t.Errorf("%s, refused, was prefetched", graphMod(3, "v1.1.0"))
	}
	if n := up.Requests("/" + graphMod(3, "v1.1.0")); n != 0 {
		t.Errorf("the refused version's go.mod was asked of the upstream %d times", n)
	}
	mu.Lock()
	n := asked[refused+"@v1.1.0"]
	mu.Unlock()
	if n == 0 {
		t.Error("the policy was not asked about the requirement")
	}
	if fetchRefusals.Load() != 1 {
		t.Errorf("%d refusals of a fetch reported, want the prefetch's 1", fetchRefusals.Load())
	}
	// A prefetch is decided once, as a fetch of the proxy's own: the
	// client asked for one file.
	if n := requestDecisions.Load(); n != 1 {
		t.Errorf("%d decisions reported as a client's request, want 1", n)
	}
}

// A client that asks the proxy not to fetch (Disable-Module-Fetch) gets
// nothing prefetched on its behalf; nor is the .info of a module whose
// route tries direct first (a run of the go command of its own) queued.
func TestPrefetchQueuesNothingForADisabledFetchNorADirectInfo(t *testing.T) {
	up := moduletest.NewServer(moduletest.Graph(12))
	defer up.Close()
	p := newTestProxy(t, up.URL)
	p.Routes = []Route{{Pattern: moduletest.GraphPath(5), Upstreams: []Upstream{{URL: "direct"}}}}
	var mod []byte
	for _, v := range moduletest.Graph(12) {
		if v.Path == moduletest.GraphPath(0) && v.Version == "v1.1.0" {
			mod = v.Mod
		}
	}
	if err := p.Cacher.Put(t.Context(), graphMod(0, "v1.1.0"), bytes.NewReader(mod)); err != nil {
		t.Fatal(err)
	}
	if w := do(p, "GET", "/"+graphMod(0, "v1.1.0"), "Disable-Module-Fetch", "true"); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	testwait.For(t, p.idle)
	if n := up.TotalRequests(); n != 0 {
		t.Errorf("%d upstream requests for a client that disabled fetching", n)
	}
	// The direct module's go.mod, already cached: serving it queues no
	// .info (which would run the go command).
	direct := graphMod(5, "v1.0.0")
	if err := p.Cacher.Put(t.Context(), direct, strings.NewReader("module "+moduletest.GraphPath(5)+"\n")); err != nil {
		t.Fatal(err)
	}
	if w := do(p, "GET", "/"+direct); w.Code != 200 {
		t.Fatalf("the direct module's cached go.mod: %d %s", w.Code, w.Body)
	}
	testwait.For(t, p.idle)
	if _, ok := p.prefetcher.expanded.Peek(strings.TrimSuffix(direct, ".mod") + ".info"); ok {
		t.Error("the .info of a module fetched direct was queued")
	}
	// The proxied module's, asked again with fetching allowed, is.
	do(p, "GET", "/"+graphMod(0, "v1.1.0"))
	testwait.For(t, p.idle)
	if !cached(t, p, moduletest.GraphPath(0)+"/@v/v1.1.0.info") {
		t.Error("the proxied module's .info was not prefetched once fetching was allowed")
	}
}

func TestAnOfflineProxyNeverPrefetches(t *testing.T) {
	up := moduletest.NewServer(moduletest.Graph(12))
	defer up.Close()
	// An online proxy without prefetching fills the cache with one go.mod.
	online := newTestProxy(t, up.URL)
	online.Prefetch.Off = true
	if w := do(online, "GET", "/"+graphMod(0, "v1.1.0")); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	testwait.For(t, online.idle)
	before := up.TotalRequests()

	p := newTestProxy(t, up.URL)
	p.Cacher = online.Cacher
	p.Offline = true
	var asked atomic.Int32
	p.Admission = func(_ context.Context, c AdmissionCandidate) AdmissionDecision {
		if c.Path != moduletest.GraphPath(0) {
			asked.Add(1)
		}
		return AdmissionDecision{}
	}
	var counts prefetchCounts
	p.Metrics.Prefetch = counts.hook
	if w := do(p, "GET", "/"+graphMod(0, "v1.1.0")); w.Code != 200 {
		t.Fatalf("offline, the cached go.mod: %d %s", w.Code, w.Body)
	}
	testwait.For(t, p.idle)
	if n := up.TotalRequests() - before; n != 0 {
		t.Errorf("an offline proxy made %d upstream requests", n)
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("an offline proxy considered prefetching %d versions", n)
	}
	if n := counts.get(PrefetchFetched) + counts.get(PrefetchDropped); n != 0 {
		t.Errorf("%d prefetch events offline", n)
	}
}

func TestPrefetchWaitsForTheFetchAnotherProxySharingTheStoreHolds(t *testing.T) {
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	store := newLeasingStore()
	p := newTestProxy(t, up.URL)
	p.Cacher = store
	var counts prefetchCounts
	p.Metrics.Prefetch = counts.hook
	p.Prefetch.NoInfo = true // the .mod files alone: one counts
	// Another proxy sharing the store is fetching one requirement's go.mod.
	held := graphMod(3, "v1.1.0")
	release, err := store.HoldLease(context.Background(), "fetch/"+held)
	if err != nil {
		t.Fatal(err)
	}
	if w := do(p, "GET", "/"+graphMod(0, "v1.1.0")); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	// The other requirement is prefetched; the held one waits.
	testwait.For(t, func() bool { return cached(t, p, graphMod(1, "v1.0.0")) })
	if n := up.Requests("/" + held); n != 0 {
		t.Fatalf("the go.mod another proxy is fetching was asked of the upstream %d times", n)
	}
	// The other proxy stores it and lets the lease go: the prefetch
	// finds it stored and fetches nothing.
	var mod []byte
	for _, v := range vs {
		if v.Path == moduletest.GraphPath(3) && v.Version == "v1.1.0" {
			mod = v.Mod
		}
	}
	if err := store.Put(context.Background(), held, bytes.NewReader(mod)); err != nil {
		t.Fatal(err)
	}
	release()
	testwait.For(t, p.idle)
	if n := up.Requests("/" + held); n != 0 {
		t.Errorf("the go.mod another proxy fetched was asked of the upstream %d times", n)
	}
	if n := counts.get(PrefetchFetched); n != 1 {
		t.Errorf("%d prefetches reported, want 1 (the other requirement)", n)
	}
	if store.held("fetch/" + graphMod(1, "v1.0.0")) {
		t.Error("the prefetch's lease is still held")
	}
}

// TestAClientNeverWaitsForTheChecksumLookupOfAPrefetchQueuedBehindPrefetches:
// a prefetch's download holds the one prefetch slot while the upstream
// holds its answer; the checksum lookup that prefetch started is shared
// with a client's zip of the same version, which must not wait for the
// prefetch slot to come free.
func TestAClientNeverWaitsForTheChecksumLookupOfAPrefetchQueuedBehindPrefetches(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	p := newVerifyingProxy(t, up.URL, db)
	p.Prefetch = PrefetchOptions{Concurrency: 1}
	// mod000 v1.0.0 requires mod001 v1.0.0, whose go.mod the prefetch
	// asks for; the upstream holds that answer until the test ends.
	held := graphMod(1, "v1.0.0")
	holding, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, held) {
			once.Do(func() { close(holding) })
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	defer close(release)
	if w := do(p, "GET", "/"+graphMod(0, "v1.0.0")); w.Code != 200 {
		t.Fatalf("GET the requiring go.mod: %d %s", w.Code, w.Body)
	}
	select {
	case <-holding:
	case <-time.After(30 * time.Second):
		t.Fatal("the prefetch never asked for the required go.mod")
	}
	answered := make(chan *recorded, 1)
	go func() { answered <- do(p, "GET", "/"+moduletest.GraphPath(1)+"/@v/v1.0.0.zip") }()
	select {
	case w := <-answered:
		if w.Code != 200 || w.Aborted {
			t.Errorf("GET the zip: %d %s", w.Code, w.Body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the client's zip waited for the prefetch slot: its checksum lookup queued behind the prefetch")
	}
}

// A go.mod expanded ahead of the client, by a prefetch deeper than one
// level, still has its version's .info prefetched once a client asks for
// it: with the hot tier or without.
func TestPrefetchOfTheInfoOfAGoModExpandedAhead(t *testing.T) {
	for _, hot := range []int64{0, -1} {
		t.Run(fmt.Sprintf("HotCacheBytes=%d", hot), func(t *testing.T) {
			up := moduletest.NewServer(moduletest.Graph(12))
			defer up.Close()
			p := newTestProxy(t, up.URL)
			p.HotCacheBytes = hot
			p.Prefetch.Depth = 2
			if w := do(p, "GET", "/"+graphMod(0, "v1.1.0")); w.Code != 200 {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			testwait.For(t, p.idle)
			// mod003@v1.1.0 was prefetched and expanded (level 1 of 2).
			info := moduletest.GraphPath(3) + "/@v/v1.1.0.info"
			if cached(t, p, info) {
				t.Fatalf("%s prefetched before its go.mod was asked for", info)
			}
			if w := do(p, "GET", "/"+graphMod(3, "v1.1.0")); w.Code != 200 {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			testwait.For(t, p.idle)
			if !cached(t, p, info) {
				t.Errorf("%s was not prefetched once its go.mod was served", info)
			}
		})
	}
}
