package s3cacher

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

func TestEvictionIsRunByOneReplicaAtATimeWithTheUsesOfAll(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for eviction runs")
	}
	rs := replicas(t, 2, func(c *Cacher) { c.LeaseTTL = 2 * time.Second })
	ctx := t.Context()
	zip := func(i int) string { return fmt.Sprintf("example.com/m%d/@v/v1.0.0.zip", i) }
	for i := range 3 {
		if err := rs[0].Put(ctx, zip(i), bytes.NewReader(make([]byte, 100<<10))); err != nil {
			t.Fatal(err)
		}
	}
	// The second replica served m0 a while after it was stored: a use
	// the replica that evicts must see, whichever it is.
	stored := time.Now()
	for time.Now().Before(stored.Truncate(time.Second).Add(2 * time.Second)) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := rs[1].RecordUses(ctx, []goproxy.CacheUse{{Name: zip(0), Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	runs := make([]atomic.Int64, 2)
	// A run reports the cache's size before it gives the lease up: the
	// other replica cannot have it then.
	var overlapped atomic.Int64
	whileRunning := func(i int) {
		release, err := rs[1-i].HoldLease(ctx, "eviction")
		if err == nil {
			overlapped.Add(1)
			release()
		}
	}
	var proxies []*goproxy.Proxy
	for i, c := range rs {
		p := &goproxy.Proxy{
			Cacher:    c,
			Env:       []string{"GOPROXY=off"},
			TempDir:   t.TempDir(),
			Transport: http.DefaultTransport,
			// Over 150 KB, a run removes the least recently used down to
			// nine tenths of it: two of the three zips.
			Eviction: goproxy.Eviction{MaxBytes: 150 << 10, Interval: 300 * time.Millisecond},
			Metrics: goproxy.Metrics{CacheSize: func(goproxy.CacheSizeMetric) {
				whileRunning(i)
				runs[i].Add(1)
			}},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		t.Cleanup(func() { p.Close() })
		proxies = append(proxies, p)
		// Runs start with the first request.
		p.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/example.com/m9/@v/list", nil))
	}
	testwait.Within(t, time.Minute, func() bool { return runs[0].Load()+runs[1].Load() >= 5 }, "five eviction runs")
	if n := overlapped.Load(); n != 0 {
		t.Errorf("%d times a replica could take the eviction lease while the other's run held it", n)
	}
	// Each run takes the lease and gives it up: either replica may run
	// next, never both at once.
	evictor := 0
	if runs[1].Load() > runs[0].Load() {
		evictor = 1
	}
	for i, want := range []bool{true, false, false} {
		_, err := rs[0].Stat(ctx, zip(i))
		if (err == nil) != want {
			t.Errorf("%s: in the bucket after eviction: %v, want %v (%v)", zip(i), err == nil, want, err)
		}
	}
	// The evicting replica stops: the other takes over.
	proxies[evictor].Close()
	before := runs[1-evictor].Load()
	testwait.Within(t, time.Minute, func() bool { return runs[1-evictor].Load() >= before+2 }, "the other replica evicting")
}
