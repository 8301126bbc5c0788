package goproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/testwait"
)

func TestLiveViewShowsDownloadsInFlightAndRecentFailures(t *testing.T) {
	var inFlight, received atomic.Int64
	tr := &downloadTracker{metrics: &Metrics{Download: func(m DownloadMetric) {
		inFlight.Store(int64(m.InFlight))
		received.Add(m.Bytes)
	}}}
	a := tr.start("example.com/a", "v1.0.0", RequestZip, "https://proxy.example.com", func() int { return 3 })
	b := tr.start("example.com/b", "v1.0.0", RequestMod, "direct", nil)
	a.setTotal(1000)
	io.Copy(a, strings.NewReader(strings.Repeat("x", 400)))
	if inFlight.Load() != 2 || received.Load() != 400 {
		t.Errorf("metrics: %d in flight, %d bytes; want 2, 400", inFlight.Load(), received.Load())
	}
	v := tr.view()
	if len(v.Downloads) != 2 || len(v.Failures) != 0 {
		t.Fatalf("view: %+v", v)
	}
	d := v.Downloads[0]
	if d.Module != "example.com/a" || d.Kind != RequestZip || d.Done != 400 || d.Total != 1000 || d.Waiting != 3 || d.Rate <= 0 {
		t.Errorf("first download: %+v", d)
	}
	if v.Downloads[1].Total != -1 {
		t.Errorf("unknown total: %d, want -1", v.Downloads[1].Total)
	}
	tr.finish(b, fmt.Errorf("b: %w", fs.ErrNotExist)) // not a failure
	tr.finish(a, errors.New("upstream cut the body"))
	v = tr.view()
	if len(v.Downloads) != 0 || len(v.Failures) != 1 || v.Failures[0].Error != "upstream cut the body" || v.Failures[0].Time.IsZero() {
		t.Errorf("after both ended: %+v", v)
	}
	if inFlight.Load() != 0 {
		t.Errorf("metrics: %d in flight after both ended", inFlight.Load())
	}
}

func TestLiveViewKeepsTheLatestFailuresNewestFirst(t *testing.T) {
	tr := &downloadTracker{}
	for i := range maxRecentFailures + 10 {
		d := tr.start(fmt.Sprintf("example.com/m%d", i), "v1.0.0", RequestZip, "direct", nil)
		tr.finish(d, errors.New("failed"))
	}
	v := tr.view()
	if len(v.Failures) != maxRecentFailures {
		t.Fatalf("%d failures kept, want %d", len(v.Failures), maxRecentFailures)
	}
	if v.Failures[0].Module != fmt.Sprintf("example.com/m%d", maxRecentFailures+9) || v.Failures[maxRecentFailures-1].Module != "example.com/m10" {
		t.Errorf("failures from %s to %s", v.Failures[0].Module, v.Failures[maxRecentFailures-1].Module)
	}
}

func TestLiveViewRateIsMeasuredBetweenLooks(t *testing.T) {
	tr := &downloadTracker{}
	d := tr.start("example.com/a", "v1.0.0", RequestZip, "direct", nil)
	d.sampleAt = time.Now().Add(-4 * time.Second) // as if started 4 s ago
	d.add(4000)
	if r := tr.view().Downloads[0].Rate; r < 900 || r > 1100 {
		t.Errorf("rate over the first 4 s: %v, want about 1000", r)
	}
	tr.mu.Lock()
	d.sampleAt = d.sampleAt.Add(-2 * time.Second)
	tr.mu.Unlock()
	d.add(200)
	if r := tr.view().Downloads[0].Rate; r < 90 || r > 110 {
		t.Errorf("rate over the next 2 s: %v, want about 100", r)
	}
}

func BenchmarkLiveViewProgress(b *testing.B) {
	tr := &downloadTracker{metrics: &Metrics{}}
	d := tr.start("example.com/a", "v1.0.0", RequestZip, "direct", nil)
	b.ReportAllocs()
	for b.Loop() {
		d.add(32 << 10)
	}
}

// TestProxyLiveViewShowsAFetchAsItGoes: a zip the upstream sends half of,
// then holds back, is in the Proxy's live view with its size, the bytes
// received and the clients waiting, its upstream without credentials; a
// failed fetch is among the failures once it ends.
func TestProxyLiveViewShowsAFetchAsItGoes(t *testing.T) {
	files := testModuleFiles(t)
	zip := files["/example.com/a/@v/v1.0.0.zip"]
	half, release := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/example.com/a/@v/v1.0.0.zip":
			w.Header().Set("Content-Length", strconv.Itoa(len(zip)))
			w.Write(zip[:len(zip)/2])
			w.(http.Flusher).Flush()
			close(half)
			<-release
			w.Write(zip[len(zip)/2:])
		case "/example.com/a/@v/v1.0.0.mod":
			http.Error(w, "broken", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	defer up.Close()
	p := newTestProxy(t, strings.Replace(up.URL, "http://", "http://user:s3cret@", 1))
	p.Download.Attempts = 1
	if v := p.LiveView(); len(v.Downloads) != 0 || len(v.Failures) != 0 {
		t.Fatalf("live view before anything: %+v", v)
	}
	done := make(chan *recorded)
	go func() { done <- do(p, "GET", "/example.com/a/@v/v1.0.0.zip") }()
	<-half
	var d DownloadStatus
	testwait.For(t, func() bool {
		v := p.LiveView()
		if len(v.Downloads) != 1 {
			return false
		}
		d = v.Downloads[0]
		return d.Total == int64(len(zip)) && d.Done >= int64(len(zip)/2)
	}, "the download with its size and half its bytes in the live view")
	if d.Module != "example.com/a" || d.Version != "v1.0.0" || d.Kind != RequestZip || d.Waiting != 1 ||
		strings.Contains(d.Upstream, "s3cret") || !strings.HasPrefix(d.Upstream, "http://") || d.Started.IsZero() {
		t.Errorf("download in flight: %+v", d)
	}
	close(release)
	if w := <-done; w.Code != 200 || !bytes.Equal(w.Body.Bytes(), zip) {
		t.Fatalf("GET zip: %d, %d bytes", w.Code, w.Body.Len())
	}
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod"); w.Code != http.StatusBadGateway {
		t.Fatalf("GET mod: %d %s", w.Code, w.Body)
	}
	v := p.LiveView()
	if len(v.Downloads) != 0 || len(v.Failures) != 1 || v.Failures[0].Kind != RequestMod || !strings.Contains(v.Failures[0].Error, "broken") ||
		strings.Contains(v.Failures[0].Upstream, "s3cret") {
		t.Errorf("live view after: %+v", v)
	}
}

// TestLiveViewNeverShowsMoreDoneThanTotal: an answer cut midway is asked
// again from its start; the bytes of the cut attempt must not be counted
// into the next one, which would show a download past its size.
func TestLiveViewNeverShowsMoreDoneThanTotal(t *testing.T) {
	mod := []byte("module example.com/a\n\n// " + strings.Repeat("x", 4000) + "\n")
	var attempts atomic.Int32
	held, release := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/example.com/a/@v/v1.0.0.mod" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(mod)))
		if attempts.Add(1) == 1 {
			w.Write(mod[:len(mod)-10])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // cut: the client retries
		}
		w.Write(mod[:len(mod)-1])
		w.(http.Flusher).Flush()
		close(held)
		<-release
		w.Write(mod[len(mod)-1:])
	}))
	defer up.Close()
	p := newTestProxy(t, up.URL)
	done := make(chan *recorded)
	go func() { done <- do(p, "GET", "/example.com/a/@v/v1.0.0.mod") }()
	<-held
	var d DownloadStatus
	testwait.For(t, func() bool {
		v := p.LiveView()
		if len(v.Downloads) != 1 {
			return false
		}
		d = v.Downloads[0]
		return d.Done >= int64(len(mod)-1)
	}, "the second attempt's bytes in the live view")
	close(release)
	if d.Total != int64(len(mod)) || d.Done > d.Total {
		t.Errorf("download in flight: Done %d, Total %d; want Total %d and Done at most Total", d.Done, d.Total, len(mod))
	}
	if w := <-done; w.Code != 200 || !bytes.Equal(w.Body.Bytes(), mod) {
		t.Fatalf("GET mod: %d, %d bytes", w.Code, w.Body.Len())
	}
}
