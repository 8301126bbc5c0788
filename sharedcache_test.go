package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// leasingStore is a MemCacher shared by several Proxies in one test, with
// the leases of a store shared by proxies (what s3cacher does with the
// bucket; its tests run these rules against MinIO). Leases never lapse
// here: holders are released by the test or by the proxy.
type leasingStore struct {
	*MemCacher
	mu     sync.Mutex
	leases map[string]int // name → holder's serial
	serial int
	taken  atomic.Int64
	fail   atomic.Bool // the store's leases fail
}

func newLeasingStore() *leasingStore {
	return &leasingStore{MemCacher: &MemCacher{}, leases: map[string]int{}}
}

func (s *leasingStore) HoldLease(ctx context.Context, name string) (func(), error) {
	if s.fail.Load() {
		return nil, errors.New("the store is down")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, held := s.leases[name]; held {
		return nil, fmt.Errorf("%s: %w", name, ErrLeaseHeld)
	}
	s.serial++
	id := s.serial
	s.leases[name] = id
	s.taken.Add(1)
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.leases[name] == id {
			delete(s.leases, name)
		}
	}, nil
}

func (s *leasingStore) held(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.leases[name]
	return ok
}

func TestProxiesSharingAStoreFetchEachFileOnce(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	store := newLeasingStore()
	var proxies []http.Handler
	for range 3 {
		p := newTestProxy(t, up.URL)
		p.Cacher = store
		proxies = append(proxies, p)
	}
	var paths []string
	for _, v := range vs {
		for _, ext := range []string{".info", ".mod", ".zip"} {
			paths = append(paths, "/"+escapedName(v, ext))
		}
	}
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			for k := range paths {
				path := paths[(i+k)%len(paths)]
				w := httptest.NewRecorder()
				proxies[i%len(proxies)].ServeHTTP(w, httptest.NewRequest("GET", path, nil))
				if w.Code != http.StatusOK {
					t.Errorf("GET %s: %d %s", path, w.Code, w.Body)
				}
			}
		})
	}
	wg.Wait()
	for _, path := range paths {
		if n := up.Requests(path); n != 1 {
			t.Errorf("%s was fetched %d times from the upstream by three proxies, want once", path, n)
		}
	}
	if store.taken.Load() == 0 {
		t.Error("no fetch took a lease")
	}
	for _, path := range paths {
		if store.held("fetch" + path) {
			t.Errorf("the lease on fetching %s is still held", path)
		}
	}
}

// leasedZipGET starts a GET of a zip through a proxy on a leasing store
// while another proxy holds the lease on fetching it. It returns the
// store, the upstream, the version, the zip's name, the release of the
// other proxy's lease and where the answer arrives.
func leasedZipGET(t *testing.T) (*leasingStore, *moduletest.Server, *moduletest.Version, string, func(), <-chan *httptest.ResponseRecorder) {
	t.Helper()
	v := moduletest.Graph(10)[0]
	up := moduletest.NewServer([]*moduletest.Version{v})
	t.Cleanup(up.Close)
	store := newLeasingStore()
	p := newTestProxy(t, up.URL)
	p.Cacher = store
	name := escapedName(v, ".zip")
	release, err := store.HoldLease(t.Context(), "fetch/"+name)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		w := httptest.NewRecorder()
		p.ServeHTTP(w, httptest.NewRequest("GET", "/"+name, nil))
		done <- w
	}()
	return store, up, v, name, release, done
}

func TestAProxyWaitsForAnotherProxysFetchThenServesWhatItStored(t *testing.T) {
	store, up, v, name, release, done := leasedZipGET(t)
	// The other proxy stores the zip and gives the lease up.
	store.Put(t.Context(), name, bytes.NewReader(v.Zip))
	release()
	w := <-done
	if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), v.Zip) {
		t.Fatalf("GET while another proxy fetched: %d, %d bytes", w.Code, w.Body.Len())
	}
	if n := up.Requests("/" + name); n != 0 {
		t.Errorf("the waiting proxy fetched the zip %d times itself", n)
	}
}

func TestAProxyTakesOverAFetchAnotherProxyGaveUp(t *testing.T) {
	_, up, v, name, release, done := leasedZipGET(t)
	release() // its fetch failed: nothing stored
	w := <-done
	if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), v.Zip) {
		t.Fatalf("GET after the other proxy gave up: %d, %d bytes", w.Code, w.Body.Len())
	}
	if n := up.Requests("/" + name); n != 1 {
		t.Errorf("the zip was fetched %d times, want once, by the proxy that took over", n)
	}
}

func TestAStoreWhoseLeasesFailIsBypassed(t *testing.T) {
	v := moduletest.Graph(10)[0]
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	store := newLeasingStore()
	store.fail.Store(true)
	p := newTestProxy(t, up.URL)
	p.Cacher = store
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest("GET", "/"+escapedName(v, ".zip"), nil))
	if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), v.Zip) {
		t.Fatalf("GET with failing leases: %d, %d bytes", w.Code, w.Body.Len())
	}
}

func TestProxiesSharingAHostedStorePublishOneVersionOnce(t *testing.T) {
	hosted := DirCacher(filepath.Join(t.TempDir(), "hosted"))
	var proxies []*Proxy
	for range 2 {
		p := newTestProxy(t, "off")
		p.Hosted = hosted
		proxies = append(proxies, p)
	}
	for round := range 8 {
		version := fmt.Sprintf("v1.0.%d", round)
		zips := [][]byte{corpZip(t, version, "from proxy 0"), corpZip(t, version, "from proxy 1")}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, p := range proxies {
			wg.Go(func() { errs[i] = p.Publish(t.Context(), "corp.example.com/lib", version, bytes.NewReader(zips[i])) })
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Fatalf("%s: both proxies published different bytes", version)
			case !errors.Is(err, ErrVersionConflict):
				t.Fatalf("%s: proxy %d: %v, want success or ErrVersionConflict", version, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: neither proxy published: %v", version, errs)
		}
		cf, err := hosted.Get(t.Context(), "corp.example.com/lib/@v/"+version+".zip")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(cf)
		cf.Close()
		if !bytes.Equal(got, zips[winner]) {
			t.Errorf("%s: the stored zip is not the winner's", version)
		}
		// Publishing the winner's bytes again through the other proxy
		// succeeds and changes nothing.
		if err := proxies[1-winner].Publish(t.Context(), "corp.example.com/lib", version, bytes.NewReader(zips[winner])); err != nil {
			t.Errorf("%s: publishing the same bytes again: %v", version, err)
		}
	}
}

// escapedName is the cache name of v's file with extension ext.
func escapedName(v *moduletest.Version, ext string) string {
	escPath, _ := module.EscapePath(v.Path)
	escVersion, _ := module.EscapeVersion(v.Version)
	return escPath + "/@v/" + escVersion + ext
}

func TestEvictionOfAStoreSharedByProxiesRunsInOneAtATime(t *testing.T) {
	ctx := context.Background()
	store := newLeasingStore()
	putAll(t, store, testVersionFiles("example.com/old", "v1.0.0", 100))
	now := time.Now()
	cfg := Eviction{MaxAge: time.Hour}
	a := testEvictor(t, cfg, store, now.Add(2*time.Hour))
	b := testEvictor(t, cfg, store, now.Add(2*time.Hour))
	if res, err := a.run(ctx); err != nil || res.Removed != 3 {
		t.Fatalf("the first proxy's run: %+v, %v; want the old version's 3 files removed", res, err)
	}
	// A run gives the lease up when it ends: a proxy cut off from the
	// store could not tell that another took it over meanwhile.
	if store.held("eviction") {
		t.Fatal("the eviction lease is still held after the run")
	}
	// Another proxy's run while one runs (here, holds the lease) does
	// nothing.
	release, err := store.HoldLease(ctx, "eviction")
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, store, testVersionFiles("example.com/old", "v1.1.0", 100))
	if res, err := b.run(ctx); err != nil || res.Removed != 0 || len(cachedSet(t, store)) != 3 {
		t.Fatalf("another proxy's run while the lease is held: %+v, %v; want nothing done", res, err)
	}
	release()
	if res, err := b.run(ctx); err != nil || res.Removed != 3 {
		t.Fatalf("the other proxy's run once the lease was given up: %+v, %v", res, err)
	}
	a.stop()
	b.stop()
	if store.held("eviction") {
		t.Error("the eviction lease is still held after both stopped")
	}
	store.fail.Store(true)
	if _, err := a.run(ctx); err == nil {
		t.Error("a run whose lease the store failed to grant reported no error")
	}
}

func TestStoreFailuresAreReportedToMetrics(t *testing.T) {
	v := moduletest.Graph(10)[0]
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	var got []StoreErrorMetric
	var mu sync.Mutex
	p := newTestProxy(t, up.URL)
	p.Cacher = brokenStore{}
	p.Metrics.StoreError = func(m StoreErrorMetric) {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	}
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest("GET", "/"+escapedName(v, ".mod"), nil))
	if w.Code != http.StatusOK {
		t.Errorf("GET with a failing cache: %d, want the upstream's answer", w.Code)
	}
	testwait.For(t, p.flights.idle)
	mu.Lock()
	defer mu.Unlock()
	var get, put bool
	for _, m := range got {
		get = get || m == StoreErrorMetric{Role: StoreCache, Op: StoreGet}
		put = put || m == StoreErrorMetric{Role: StoreCache, Op: StorePut}
	}
	if !get || !put {
		t.Errorf("store errors reported: %+v, want the cache's get and put", got)
	}
}

// brokenStore fails every Get and Put, as a store that went away does.
type brokenStore struct{}

func (brokenStore) Get(context.Context, string) (CachedFile, error) {
	return nil, errors.New("the store is down")
}

func (brokenStore) Put(context.Context, string, io.ReadSeeker) error {
	return errors.New("the store is down")
}

// racedIndexLog is a feed that another process created between this
// one's look (which found none) and its own creation.
type racedIndexLog struct {
	CacheIndexLog
	looked bool
}

func (r *racedIndexLog) ReadIndex(ctx context.Context, since time.Time, limit int) ([]IndexEntry, error) {
	if !r.looked {
		r.looked = true
		return nil, fs.ErrNotExist
	}
	return r.CacheIndexLog.ReadIndex(ctx, since, limit)
}

func (r *racedIndexLog) CreateIndex(ctx context.Context, entries []IndexEntry) error {
	return fmt.Errorf("created by another process: %w", fs.ErrExist)
}

func TestAProcessThatLosesTheRaceToCreateTheIndexFeedAppendsItsAdditions(t *testing.T) {
	ctx := context.Background()
	store := DirCacher(filepath.Join(t.TempDir(), "cache"))
	// The winner created the feed from a walk that found one version.
	putAll(t, store, testVersionFiles("example.com/old", "v1.0.0", 10))
	winner := newIndexLog(store, nil, slog.Default())
	if err := winner.prepare(ctx); err != nil {
		t.Fatal(err)
	}
	// Meanwhile the loser stored another version, which the winner's walk
	// missed, and its own walk found.
	putAll(t, store, testVersionFiles("example.com/new", "v1.0.0", 10))
	loser := newIndexLog(store, nil, slog.Default())
	loser.log = &racedIndexLog{CacheIndexLog: store}
	loser.add(ctx, "example.com/new", "v1.0.0", time.Now())
	loser.add(ctx, "example.com/old", "v1.0.0", time.Now()) // listed already
	if err := loser.prepare(ctx); err != nil {
		t.Fatal(err)
	}
	feed, err := store.ReadIndex(ctx, time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range feed {
		got = append(got, e.Path+"@"+e.Version)
	}
	if !slices.Equal(got, []string{"example.com/old@v1.0.0", "example.com/new@v1.0.0"}) {
		t.Errorf("the feed lists %q, want each version once", got)
	}
}
