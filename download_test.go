package goproxy

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// largeModule is a valid module zip of a few MB, shared by the tests here.
var largeModule = sync.OnceValues(func() (*moduletest.Version, error) {
	dir, err := fixtureDir("goproxy-large-")
	if err != nil {
		return nil, err
	}
	return moduletest.LargeVersion(dir, "example.com/large", "v1.0.0", 6<<20)
})

func largeFixture(t *testing.T) (*moduletest.Version, []byte) {
	t.Helper()
	v, err := largeModule()
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(v.ZipFile)
	if err != nil {
		t.Fatal(err)
	}
	return v, body
}

const largeZipPath = "/example.com/large/@v/v1.0.0.zip"

// cutAnswers wraps h so that the bodies of the answers cut chooses are cut
// after n bytes, the connection dropped, as a crashing server's are: the
// client must resume or start over.
func cutAnswers(h http.Handler, n int64, cut func(r *http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cut(r) {
			w = &cutWriter{ResponseWriter: w, left: n}
		}
		h.ServeHTTP(w, r)
	})
}

// firstOnly is a cut for cutAnswers that cuts the first answer only.
func firstOnly() func(*http.Request) bool {
	var n atomic.Int32
	return func(*http.Request) bool { return n.Add(1) == 1 }
}

type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (w *cutWriter) Write(b []byte) (int, error) {
	if int64(len(b)) <= w.left {
		w.left -= int64(len(b))
		return w.ResponseWriter.Write(b)
	}
	w.ResponseWriter.Write(b[:w.left])
	w.ResponseWriter.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

func TestDownloadUnderFaults(t *testing.T) {
	v, want := largeFixture(t)
	tests := []struct {
		name   string
		faults *moduletest.Faults
		check  func(t *testing.T, f *moduletest.Faults)
	}{
		{name: "a fast upstream: one request for the file", check: func(t *testing.T, f *moduletest.Faults) {
			if log := f.Log(); len(log) != 1 || log[0].Range != "bytes=0-" {
				t.Errorf("requests %+v; want one, for the whole file", log)
			}
		}},
		{name: "a paced upstream: parallel ranges tied to one version", faults: &moduletest.Faults{BytesPerSecond: 1 << 20},
			check: func(t *testing.T, f *moduletest.Faults) {
				log := f.Log()
				if len(log) < 3 || log[0].Range != "bytes=0-" {
					t.Errorf("requests %+v; want the whole file asked first, and at least two more connections", log)
				}
				for _, r := range log[1:] {
					if r.Range == "" || r.IfRange == "" {
						t.Errorf("part request without Range/If-Range: %+v", r)
					}
				}
			}},
		{name: "30% of requests fail with 502", faults: &moduletest.Faults{FailFraction: 0.3, Seed: 1}},
		{name: "bodies cut midway", faults: &moduletest.Faults{CutFraction: 0.3, Seed: 2}},
		{name: "429 with Retry-After", faults: &moduletest.Faults{TooManyFraction: 0.3, Seed: 3}},
		{name: "upstream ignores Range", faults: &moduletest.Faults{IgnoreRange: true}, check: func(t *testing.T, f *moduletest.Faults) {
			if n := f.Requests(); n != 1 {
				t.Errorf("%d requests to an upstream without ranges, want one stream", n)
			}
		}},
		{name: "bandwidth capped", faults: &moduletest.Faults{BytesPerSecond: 64 << 20}},
		{name: "503 with Retry-After", faults: &moduletest.Faults{UnavailableFraction: 0.3, RetryAfter: time.Second, Seed: 5}},
		{name: "resets before the header", faults: &moduletest.Faults{ResetFraction: 0.3, Seed: 6}},
		{name: "headers never sent", faults: &moduletest.Faults{StallHeadersFraction: 0.3, Seed: 7}},
		{name: "bodies stalled midway", faults: &moduletest.Faults{StallBodyFraction: 0.3, Seed: 8}},
		{name: "bodies cut without validators", faults: &moduletest.Faults{CutUnvalidatedFraction: 0.3, Seed: 9}},
		{name: "200 to Range requests", faults: &moduletest.Faults{RangeIgnoredFraction: 0.3, Seed: 10}},
		{name: "flapping validators", faults: &moduletest.Faults{FlapFraction: 0.3, Seed: 11}},
		{name: "everything at once", faults: &moduletest.Faults{FailFraction: 0.05, CutFraction: 0.05, TooManyFraction: 0.05,
			UnavailableFraction: 0.03, ResetFraction: 0.03, StallHeadersFraction: 0.03, StallBodyFraction: 0.03,
			CutUnvalidatedFraction: 0.03, RangeIgnoredFraction: 0.03, FlapFraction: 0.03, BytesPerSecond: 64 << 20, Seed: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := moduletest.NewServer([]*moduletest.Version{v})
			defer up.Close()
			faults := tt.faults
			if faults == nil {
				faults = &moduletest.Faults{}
			}
			srv := httptest.NewServer(faults.Wrap(up.Handler()))
			defer closeNow(srv)
			p := newTestProxy(t, srv.URL)
			if faults.StallHeadersFraction > 0 || faults.StallBodyFraction > 0 {
				// Cut stalls soon: the test waits for each.
				p.Download.HeaderTimeout, p.Download.BodyIdleTimeout = 100*time.Millisecond, 100*time.Millisecond
			}
			w := do(p, "GET", largeZipPath)
			if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) {
				t.Fatalf("%d, %d bytes (want %d): %.300s", w.Code, w.Body.Len(), len(want), w.Body)
			}
			if tt.check != nil {
				tt.check(t, faults)
			}
			// The download is removed once it is stored in the cache,
			// which happens while the client is served.
			testwait.For(t, func() bool { return len(filesUnder(t, p.TempDir)) == 0 })
		})
	}
}

// otherLargeModule is another zip of the module version largeModule is of:
// the same file, as republished with other content.
var otherLargeModule = sync.OnceValues(func() (*moduletest.Version, error) {
	dir, err := fixtureDir("goproxy-large-")
	if err != nil {
		return nil, err
	}
	return moduletest.LargeVersion(dir, "example.com/large", "v1.0.0", 5<<20)
})

func TestDownloadStartsOverWhenFileChanges(t *testing.T) {
	_, a := largeFixture(t)
	v2, err := otherLargeModule()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(v2.ZipFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("replaced after the first answer: the new file whole", func(t *testing.T) {
		var served atomic.Int32
		// The first answer is cut before a byte of it reached a
		// client: the resumption meets the new file.
		upstream := httptest.NewServer(cutAnswers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, etag := a, `"a"`
			if served.Add(1) > 1 {
				body, etag = b, `"b"` // replaced right after the first answer
			}
			w.Header().Set("ETag", etag)
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
		}), 20, firstOnly()))
		defer upstream.Close()
		p := newTestProxy(t, upstream.URL)
		w := do(p, "GET", largeZipPath)
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), b) {
			t.Fatalf("%d, %d bytes: want the new file (%d bytes), validated, and nothing of the old", w.Code, w.Body.Len(), len(b))
		}
	})
	t.Run("changing on every request: a clear error", func(t *testing.T) {
		// An upstream that honours Range but not If-Range, whose file
		// changes all the time, and whose answers break off early:
		// every download meets another version.
		var served atomic.Int32
		upstream := httptest.NewServer(cutAnswers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := served.Add(1)
			body := a
			if n%2 == 0 {
				body = b
			}
			w.Header().Set("ETag", fmt.Sprintf(`"v%d"`, n))
			r.Header.Del("If-Range")
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
		}), 20, func(*http.Request) bool { return true }))
		defer upstream.Close()
		p := newTestProxy(t, upstream.URL)
		w := do(p, "GET", largeZipPath)
		if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "changed under each of") {
			t.Errorf("%d %q, want 502 saying the file keeps changing", w.Code, w.Body)
		}
		if cached := cachedNames(p.Cacher); len(cached) != 0 {
			t.Errorf("cached %v", cached)
		}
		if files := filesUnder(t, p.TempDir); len(files) != 0 {
			t.Errorf("files of the mixed download left behind: %v", files)
		}
		if n := served.Load(); n < maxRestarts+1 || n > 10*(maxRestarts+1) {
			t.Errorf("%d upstream requests for %d downloads", n, maxRestarts+1)
		}
	})
}

func TestDownloadRetries(t *testing.T) {
	tests := []struct {
		name      string
		answers   []int // status of successive answers; then 200
		retryAfer string
		wantCode  int
		wantCount int
	}{
		{name: "5xx is retried", answers: []int{500, 503}, wantCode: 200, wantCount: 3},
		{name: "429 is retried", answers: []int{429}, wantCode: 200, wantCount: 2},
		{name: "Retry-After is honoured up to MaxDelay", answers: []int{429}, retryAfer: "3600", wantCode: 200, wantCount: 2},
		{name: "404 is not retried", answers: []int{404}, wantCode: 404, wantCount: 1},
		{name: "400 is not retried, and passed on", answers: []int{400}, wantCode: 400, wantCount: 1},
		{name: "403 is not retried, and passed on", answers: []int{403}, wantCode: 403, wantCount: 1},
		{name: "408 is retried", answers: []int{408}, wantCode: 200, wantCount: 2},
		{name: "attempts run out", answers: []int{500, 500, 500, 500, 500, 500}, wantCode: 502, wantCount: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, testModuleFiles(t))
			var n atomic.Int32
			up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
				i := int(n.Add(1)) - 1
				if i < len(tt.answers) {
					if tt.retryAfer != "" {
						w.Header().Set("Retry-After", tt.retryAfer)
					}
					http.Error(w, "injected", tt.answers[i])
					return true
				}
				return false
			})
			p := newTestProxy(t, up.URL)
			p.Download.Attempts = 5
			// The client's requests alone are counted: the .info
			// prefetched after the go.mod would race with the count.
			p.Prefetch.Off = true
			w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod")
			if w.Code != tt.wantCode || int(n.Load()) != tt.wantCount {
				t.Errorf("%d after %d requests, want %d after %d: %s", w.Code, n.Load(), tt.wantCode, tt.wantCount, w.Body)
			}
		})
	}
}

func TestDownloadConcurrencyIsBounded(t *testing.T) {
	vs := moduletest.Graph(24)
	up := moduletest.NewServer(vs)
	defer up.Close()
	release := make(chan struct{})
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool { <-release; return false })
	p := newTestProxy(t, up.URL)
	p.Download.MaxConcurrent = 3
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			if w := do(p, "GET", "/"+moduletest.GraphPath(i)+"/@v/v1.0.0.mod"); w.Code != 200 {
				t.Errorf("%d: %d %s", i, w.Code, w.Body)
			}
		})
	}
	// Three downloads reach the upstream and wait there; the rest queue.
	testwait.For(t, func() bool { return up.TotalRequests() == 3 })
	close(release)
	wg.Wait()
	if m := up.MaxInFlight(); m > 3 {
		t.Errorf("upstream saw %d requests at once, want at most 3", m)
	}
}

func TestDownloadProgress(t *testing.T) {
	v, want := largeFixture(t)
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	p := newTestProxy(t, up.URL)
	var mu sync.Mutex
	var last [2]int64
	p.Download.Progress = func(module, version string, done, total int64) {
		if module != "example.com/large" || version != "v1.0.0" {
			t.Errorf("progress for %s@%s", module, version)
		}
		mu.Lock()
		last = [2]int64{done, total}
		mu.Unlock()
	}
	do(p, "GET", largeZipPath)
	if last != [2]int64{int64(len(want)), int64(len(want))} {
		t.Errorf("final progress %v, want done = total = %d", last, len(want))
	}
}

// TestDownloadResumesAfterKill kills a proxy process in the middle of a
// large download, starts another over the same directories, and checks
// that the upstream sends only the bytes the first did not keep.
func TestDownloadResumesAfterKill(t *testing.T) {
	if dir := os.Getenv("TEST_RESUME_TEMPDIR"); dir != "" {
		p := &Proxy{Cacher: &MemCacher{}, TempDir: dir, Env: []string{"GOPROXY=" + os.Getenv("TEST_RESUME_UPSTREAM")}}
		if err := p.Init(); err != nil {
			t.Fatal(err)
		}
		p.downloader.saveEvery = 50 * time.Millisecond // for the kill to find some
		fmt.Println("started")
		do(p, "GET", largeZipPath)
		return
	}
	v, want := largeFixture(t)
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	// 1 MB/s per connection: slow enough for more connections to join,
	// about a second for 6 MB on eight of them.
	faults := &moduletest.Faults{BytesPerSecond: 1 << 20}
	srv := httptest.NewServer(faults.Wrap(up.Handler()))
	defer srv.Close()

	tempDir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDownloadResumesAfterKill$")
	cmd.Env = append(os.Environ(), "TEST_RESUME_TEMPDIR="+tempDir, "TEST_RESUME_UPSTREAM="+srv.URL)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(stdout).ReadString('\n')
	// Kill once a third has arrived and the progress has been saved.
	var saved partialState
	testwait.For(t, func() bool {
		matches, _ := filepath.Glob(filepath.Join(tempDir, "goproxy-partial", "*.json"))
		if len(matches) != 1 || faults.BodyBytes() < int64(len(want))/3 {
			return false
		}
		b, _ := os.ReadFile(matches[0])
		return json.Unmarshal(b, &saved) == nil && saved.Size > 0
	})
	cmd.Process.Kill()
	cmd.Wait()
	matches, _ := filepath.Glob(filepath.Join(tempDir, "goproxy-partial", "*.json"))
	b, _ := os.ReadFile(matches[0])
	saved = partialState{}
	json.Unmarshal(b, &saved)
	var kept int64
	for _, p := range saved.Parts {
		kept += p.Done
	}
	if kept == 0 || kept >= int64(len(want)) {
		t.Fatalf("killed process kept %d of %d bytes; the test proves nothing", kept, len(want))
	}

	// Counted by request, not by total: the killed process's connections
	// may still take a write or two after the kill.
	requestsBefore := len(faults.Log())
	p := newTestProxy(t, srv.URL)
	p.TempDir = tempDir
	w := do(p, "GET", largeZipPath)
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) {
		t.Fatalf("resumed download: %d, %d bytes", w.Code, w.Body.Len())
	}
	// No request of the second process asks for a byte the first kept.
	// (More connections may join and cut the ranges asked for, so the
	// upstream may send a little more than what was missing: what was
	// already on its way when a range was cut short.)
	var sent int64
	for _, r := range faults.Log()[requestsBefore:] {
		sent += r.Bytes
		var from, to int64
		if _, err := fmt.Sscanf(r.Range, "bytes=%d-%d", &from, &to); err != nil {
			t.Errorf("the second process asked %+v, not for a range", r)
			continue
		}
		for _, p := range saved.Parts {
			if from < p.Start+p.Done && to >= p.Start && p.Done > 0 {
				t.Errorf("the second process asked for %s, of which the first had kept [%d, %d)", r.Range, p.Start, p.Start+p.Done)
			}
		}
	}
	t.Logf("first process kept %d of %d bytes; the second fetched the other %d, the upstream sending %d", kept, len(want), int64(len(want))-kept, sent)
}

// TestRetryWithoutRangesStartsOver cuts the first answer of an upstream that
// ignores ranges: the retry must rewrite the file from its start.
func TestRetryWithoutRangesStartsOver(t *testing.T) {
	_, want := largeFixture(t)
	var n atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(want)))
		if n.Add(1) == 1 {
			w.Write(want[:300<<10])
			panic(http.ErrAbortHandler)
		}
		w.Write(want)
	}))
	defer upstream.Close()
	p := newTestProxy(t, upstream.URL)
	w := do(p, "GET", largeZipPath)
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) || n.Load() != 2 {
		t.Errorf("%d, %d bytes after %d requests", w.Code, w.Body.Len(), n.Load())
	}
}

// leaveWhen sends a GET for path to p and cancels it, as a client going
// away, once ready reports true; it returns when the handler has.
func leaveWhen(t *testing.T, p *Proxy, path string, ready func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil).WithContext(ctx))
	}()
	testwait.For(t, ready)
	cancel()
	<-done
}

func TestFetchNobodyWaitsForEndsWhenItStalls(t *testing.T) {
	_, want := largeFixture(t)
	var sent atomic.Int64
	ended := make(chan struct{})
	up := newUpstream(t, nil)
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		defer close(ended)
		w.Header().Set("Content-Length", strconv.Itoa(len(want)))
		w.Header().Set("ETag", `"slow"`)
		w.WriteHeader(http.StatusOK)
		for i := 0; ; i++ { // a byte every 10 ms: never idle, never done
			if _, err := w.Write(want[i : i+1]); err != nil {
				return true
			}
			w.(http.Flusher).Flush()
			sent.Add(1)
			select {
			case <-r.Context().Done():
				return true
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	p := newTestProxy(t, up.URL)
	p.Download.BodyIdleTimeout = 100 * time.Millisecond
	leaveWhen(t, p, largeZipPath, func() bool { return sent.Load() > 0 })
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("the upstream still sends, %d bytes so far, to a fetch nobody waits for", sent.Load())
	}
	testwait.For(t, p.flights.idle)
	if files := filesUnder(t, p.TempDir); len(files) > 2 {
		t.Errorf("left behind: %v", files)
	}
}

func TestFetchNobodyWaitsForFinishesWhileItProgresses(t *testing.T) {
	v, want := largeFixture(t)
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	faults := &moduletest.Faults{BytesPerSecond: 4 << 20} // 6 MB in about 0.4 s on 4 connections
	srv := httptest.NewServer(faults.Wrap(up.Handler()))
	defer srv.Close()
	p := newTestProxy(t, srv.URL)
	// A window long enough that a loaded machine's pauses do not pass for
	// a stall: the download brings 2 MB in one.
	p.Download.BodyIdleTimeout = 500 * time.Millisecond
	leaveWhen(t, p, largeZipPath, func() bool { return faults.BodyBytes() > 0 })
	testwait.For(t, p.flights.idle)
	cf, err := p.Cacher.Get(context.Background(), strings.TrimPrefix(largeZipPath, "/"))
	if err != nil {
		t.Fatalf("the download nobody waited for was not cached: %v", err)
	}
	defer cf.Close()
	if got, _ := io.ReadAll(cf); !bytes.Equal(got, want) {
		t.Errorf("cached %d bytes, want the %d of the zip", len(got), len(want))
	}
}

// TestSaveRacingARestartLeavesNoStaleState runs the periodic save of a
// download's progress across a restart (reset): the state it took before
// must not land on disk after the file was emptied, where a process killed
// then would resume from bytes the file no longer holds.
func TestSaveRacingARestartLeavesNoStaleState(t *testing.T) {
	p := newTestProxy(t, "http://127.0.0.1:1")
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	d := p.downloader
	dl, err := d.openPartial("http://127.0.0.1:1/example.com/a/@v/v1.0.0.zip", target{toFile: true, limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer dl.discard()
	if dl.meta == "" {
		t.Fatal("the download is not resumable")
	}
	dl.f.WriteAt([]byte("hello"), 0)
	dl.state = partialState{Size: 10, ETag: `"a"`}
	dl.spans = []*span{{start: 0, end: 10}}
	dl.spans[0].done.Store(5)

	writing, resumeWrite := make(chan struct{}), make(chan struct{})
	d.writeAt = func(f *os.File, b []byte, off int64) (int, error) {
		if strings.Contains(filepath.Base(f.Name()), stateSuffix) {
			close(writing)
			<-resumeWrite
		}
		return f.WriteAt(b, off)
	}
	saved := make(chan error)
	go func() { saved <- dl.save() }()
	<-writing
	dl.reset() // the download starts over while the state is being written
	close(resumeWrite)
	err = <-saved
	if b, rerr := os.ReadFile(dl.meta); rerr == nil {
		t.Errorf("after the restart the saved state is %s (save: %v); want none", b, err)
	}
}

// sameSizeZips returns two valid zips of example.com/large@v1.0.0, of the
// same size but other content throughout, as a file republished.
func sameSizeZips(t *testing.T, size int) (a, b []byte) {
	t.Helper()
	a, b = largeZip(t, size, 1), largeZip(t, size, 2)
	if len(a) != len(b) || bytes.Equal(a, b) {
		t.Fatal("the zips are not of one size and other content")
	}
	return a, b
}

// largeZip returns a valid zip of example.com/large@v1.0.0 holding size
// bytes of data that depend on seed, stored.
func largeZip(t *testing.T, size int, seed byte) []byte {
	t.Helper()
	build := func(seed byte) []byte {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7) ^ seed
		}
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for _, f := range []struct {
			name string
			body []byte
		}{{"go.mod", []byte("module example.com/large\n")}, {"data.txt", data}} {
			w, err := zw.CreateHeader(&zip.FileHeader{Name: "example.com/large@v1.0.0/" + f.name, Method: zip.Store})
			if err != nil {
				t.Fatal(err)
			}
			w.Write(f.body)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	return build(seed)
}

// TestWeakValidatorsDoNotTieParts replaces the file right after the first
// answer with one of the same size and the same Last-Modified, as a file
// rewritten within its second: an If-Range date matches both, so only a
// weak ETag, or the Date showing that the Last-Modified is within the
// second, tells them apart. Parts of the old must not complete the new.
func TestWeakValidatorsDoNotTieParts(t *testing.T) {
	a, b := sameSizeZips(t, 2<<20)
	modTime := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name         string
		etagA, etagB string
		date         time.Time // of every answer
	}{
		{name: "weak ETags", etagA: `W/"a"`, etagB: `W/"b"`, date: modTime.Add(time.Hour)},
		{name: "Last-Modified within the second of the Date", date: modTime},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var served atomic.Int32
			upstream := httptest.NewServer(cutAnswers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, etag := a, tt.etagA
				if served.Add(1) > 1 {
					body, etag = b, tt.etagB
				}
				if etag != "" {
					w.Header().Set("ETag", etag)
				}
				w.Header().Set("Date", tt.date.Format(http.TimeFormat))
				http.ServeContent(w, r, "", modTime, bytes.NewReader(body))
			}), 20, firstOnly()))
			defer upstream.Close()
			p := newTestProxy(t, upstream.URL)
			w := do(p, "GET", largeZipPath)
			if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), b) {
				t.Fatalf("%d, %d bytes %.200q: want the new file whole", w.Code, w.Body.Len(), w.Body)
			}
		})
	}
}

// TestFileShrunkUnderTheDownloadStartsOver replaces the file, after the
// first answer, with one shorter than where the parts start, on an
// upstream that ignores If-Range (as object stores do): the parts get 416,
// which says the file changed, not that the client's request is refused.
func TestFileShrunkUnderTheDownloadStartsOver(t *testing.T) {
	a, b := largeZip(t, 3<<20, 1), largeZip(t, 100<<10, 2)
	var served atomic.Int32
	upstream := httptest.NewServer(cutAnswers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, etag := a, `"a"`
		if served.Add(1) > 1 {
			body, etag = b, `"b"`
		}
		w.Header().Set("ETag", etag)
		r.Header.Del("If-Range")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}), 1<<20, firstOnly()))
	defer upstream.Close()
	// The engine alone: a client streaming the first file would have
	// its connection cut when the file changed size under it.
	p := newTestProxy(t, upstream.URL)
	for i := range 2 {
		got, err := downloadFile(t, p, upstream.URL+largeZipPath)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("download %d: %v, %d bytes: want the new file whole", i, err, len(got))
		}
	}
}

// downloadFile downloads rawURL to a file with p's download engine, as a
// zip, and returns its content.
func downloadFile(t *testing.T, p *Proxy, rawURL string) ([]byte, error) {
	t.Helper()
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	f, err := p.downloader.get(context.Background(), rawURL, target{toFile: true, limit: maxZipSize})
	if err != nil {
		return nil, err
	}
	defer f.close()
	return io.ReadAll(f.reader())
}

// TestPanicInADownloadFailsOnlyThatDownload panics in the download's
// writes, in the first answer and in a part (which runs on a goroutine of
// its own): the client gets a 500, the process lives on, and the
// download's file goes.
func TestPanicInADownloadFailsOnlyThatDownload(t *testing.T) {
	v, want := largeFixture(t)
	for _, tt := range []struct {
		name string
		at   func(off int64) bool
		kept int // files kept for resuming: the part and its state
	}{
		{"in the first answer", func(off int64) bool { return off == 0 }, 0},
		{"in a part", func(off int64) bool { return off >= 1<<20 }, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := moduletest.NewServer([]*moduletest.Version{v})
			defer up.Close()
			p := newTestProxy(t, up.URL)
			if err := p.Init(); err != nil {
				t.Fatal(err)
			}
			var panicked atomic.Bool
			p.downloader.writeAt = func(f *os.File, b []byte, off int64) (int, error) {
				if tt.at(off) && !panicked.Swap(true) {
					panic("injected")
				}
				return f.WriteAt(b, off)
			}
			// A client that streams the zip already sees its connection
			// cut instead.
			if w := do(p, "GET", largeZipPath); !w.Aborted && (w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), "injected")) {
				t.Errorf("%d %.200q, want 500 naming the panic, or the stream cut", w.Code, w.Body)
			}
			testwait.For(t, p.flights.idle)
			if files := filesUnder(t, p.TempDir); len(files) > tt.kept {
				t.Errorf("left behind: %v", files)
			}
			if w := do(p, "GET", largeZipPath); w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) {
				t.Errorf("the next download: %d, %d bytes", w.Code, w.Body.Len())
			}
		})
	}
}

// TestPlantedPartialFilesAreNotResumed plants, in a PartialDir that
// another user could have written to, a partial download claiming the
// whole of another zip: the proxy must not serve it, but download the
// upstream's.
func TestPlantedPartialFilesAreNotResumed(t *testing.T) {
	v, want := largeFixture(t)
	planted, err := otherLargeModule()
	if err != nil {
		t.Fatal(err)
	}
	plantedZip, err := os.ReadFile(planted.ZipFile)
	if err != nil {
		t.Fatal(err)
	}
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	p := newTestProxy(t, up.URL)
	p.Download.PartialDir = filepath.Join(t.TempDir(), "partial")
	if err := os.Mkdir(p.Download.PartialDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.Download.PartialDir, 0o777); err != nil { // as /tmp is
		t.Fatal(err)
	}
	key := partialKey(up.URL + largeZipPath)
	os.WriteFile(filepath.Join(p.Download.PartialDir, key+partSuffix), plantedZip, 0o600)
	state, _ := json.Marshal(partialState{Size: int64(len(plantedZip)), ETag: `"planted"`,
		Parts: []partState{{Start: 0, End: int64(len(plantedZip)), Done: int64(len(plantedZip))}}})
	os.WriteFile(filepath.Join(p.Download.PartialDir, key+stateSuffix), state, 0o600)

	if w := do(p, "GET", largeZipPath); w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) {
		t.Fatalf("%d, %d bytes: want the upstream's zip (%d bytes)", w.Code, w.Body.Len(), len(want))
	}
	if got, _ := os.ReadFile(filepath.Join(p.Download.PartialDir, key+partSuffix)); !bytes.Equal(got, plantedZip) {
		t.Error("the proxy wrote to the planted file")
	}
	testwait.For(t, p.flights.idle)
	// The proxy's own directory of private files is left empty.
	for _, f := range filesUnder(t, p.TempDir) {
		t.Errorf("left behind: %s", f)
	}
}
