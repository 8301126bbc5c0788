package goproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// smallDisk makes the download engine's writes fail with ENOSPC once the
// files it wrote, and that still exist, hold limit bytes: a full disk, on
// any file system.
type smallDisk struct {
	limit   int64
	mu      sync.Mutex
	written map[string]int64
}

func (d *smallDisk) writeAt(f *os.File, b []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.written == nil {
		d.written = map[string]int64{}
	}
	var used int64
	for name, n := range d.written {
		if _, err := os.Stat(name); err != nil {
			delete(d.written, name) // removed: its space is free again
			continue
		}
		used += n
	}
	fits := min(max(d.limit-used, 0), int64(len(b)))
	n, err := f.WriteAt(b[:fits], off)
	d.written[f.Name()] += int64(n)
	if err == nil && n < len(b) {
		err = &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return n, err
}

func TestFullTempDirFailsOnlyTheDownloadsThatNeedTheSpace(t *testing.T) {
	large, want := largeFixture(t) // 6 MB
	dir := t.TempDir()
	mid, err := moduletest.LargeVersion(dir, "example.com/mid", "v1.0.0", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	midZip, _ := os.ReadFile(mid.ZipFile)
	up := moduletest.NewServer(append([]*moduletest.Version{large, mid}, moduletest.Graph(10)...))
	defer up.Close()
	p := newTestProxy(t, up.URL)
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	disk := &smallDisk{limit: 3 << 20}
	p.downloader.writeAt = disk.writeAt

	// A client already streaming the zip sees its connection cut; one
	// that was not gets 507.
	w := do(p, "GET", largeZipPath)
	if !w.Aborted && (w.Code != http.StatusInsufficientStorage || !strings.Contains(w.Body.String(), "no space left") ||
		!strings.Contains(w.Body.String(), p.downloader.opts.PartialDir)) {
		t.Errorf("6 MB zip on a 3 MB disk: %d %.200q, want 507 naming the directory, or the stream cut", w.Code, w.Body)
	}
	if files := filesUnder(t, p.TempDir); len(files) != 0 {
		t.Errorf("the failed download left %v", files)
	}
	// What fits still downloads, and so does everything after.
	for range 2 {
		if w := do(p, "GET", "/example.com/mid/@v/v1.0.0.zip"); w.Code != 200 || !bytes.Equal(w.Body.Bytes(), midZip) {
			t.Errorf("1 MB zip: %d %.200s", w.Code, w.Body)
		}
		if w := do(p, "GET", "/"+moduletest.GraphPath(1)+"/@v/v1.0.0.zip"); w.Code != 200 {
			t.Errorf("small zip: %d %.200s", w.Code, w.Body)
		}
	}
	// Once there is room, the large one downloads too.
	disk.mu.Lock()
	disk.limit = 1 << 30
	disk.mu.Unlock()
	if w := do(p, "GET", largeZipPath); w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) {
		t.Errorf("6 MB zip with room: %d", w.Code)
	}
}

func TestPartialDownloadsKeptWithinTheirBudget(t *testing.T) {
	dir := t.TempDir()
	var vs []*moduletest.Version
	for _, path := range []string{"example.com/p0", "example.com/p1", "example.com/p2"} {
		v, err := moduletest.LargeVersion(dir, path, "v1.0.0", 3<<20)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	up := moduletest.NewServer(vs)
	defer up.Close()
	// The first answer breaks off after 512 KiB; its resumption fails
	// for good, so the download fails with 512 KiB worth keeping.
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("If-Range") != "" {
			http.Error(w, "gone", http.StatusGone)
			return true
		}
		return false
	})
	srv := httptest.NewServer(cutAnswers(up.Handler(), 512<<10, func(r *http.Request) bool { return r.Header.Get("If-Range") == "" }))
	defer closeNow(srv)
	p := newTestProxy(t, srv.URL)
	p.Download.PartialBytes = 1 << 20 // room for two
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	partials := p.downloader.opts.PartialDir
	// Left by a dead process: a private file and a state without its file.
	os.MkdirAll(partials, 0o700)
	os.WriteFile(filepath.Join(partials, "0123-dead"+privateSuffix), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(partials, "4567"+stateSuffix), []byte("{}"), 0o600)
	for _, v := range vs {
		// The client has the first bytes when the download fails: it
		// sees the connection cut.
		if w := do(p, "GET", "/"+v.Path+"/@v/v1.0.0.zip"); w.Code != http.StatusGone && !w.Aborted {
			t.Fatalf("%s: %d %.200q", v.Path, w.Code, w.Body)
		}
		time.Sleep(10 * time.Millisecond) // distinct modification times
	}
	kept := map[string]bool{}
	var total int64
	entries, _ := os.ReadDir(partials)
	for _, e := range entries {
		fi, _ := e.Info()
		kept[e.Name()] = true
		if strings.HasSuffix(e.Name(), partSuffix) {
			total += fi.Size()
		}
	}
	if total > 1<<20 || len(entries) != 4 {
		t.Errorf("PartialDir holds %v, %d bytes of parts; want the two newest parts and their states", kept, total)
	}
	for i, v := range vs {
		key := partialKey(srv.URL + "/" + v.Path + "/@v/v1.0.0.zip")
		if kept[key+partSuffix] != (i > 0) || kept[key+stateSuffix] != (i > 0) {
			t.Errorf("%s (download %d): part kept %v, state kept %v", v.Path, i, kept[key+partSuffix], kept[key+stateSuffix])
		}
	}
}

// fullCacher is a Cacher whose disk is full after limit bytes: Put fails
// with ENOSPC partway, as a real one would.
type fullCacher struct {
	Cacher
	limit int64
	mu    sync.Mutex
	used  int64
}

func (c *fullCacher) Put(ctx context.Context, name string, content io.ReadSeeker) error {
	return c.Cacher.Put(ctx, name, &quotaReader{r: content, c: c})
}

type quotaReader struct {
	r io.ReadSeeker
	c *fullCacher
}

func (q *quotaReader) Seek(off int64, whence int) (int64, error) { return q.r.Seek(off, whence) }

func (q *quotaReader) Read(b []byte) (int, error) {
	q.c.mu.Lock()
	defer q.c.mu.Unlock()
	if q.c.used >= q.c.limit {
		return 0, &fs.PathError{Op: "write", Path: "cache", Err: syscall.ENOSPC}
	}
	n, err := q.r.Read(b[:min(int64(len(b)), q.c.limit-q.c.used)])
	q.c.used += int64(n)
	return n, err
}

// TestFullCacheCostsCachingNotServing runs go mod download through a
// proxy whose cache fills up early: everything is still served, right.
func TestFullCacheCostsCachingNotServing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs, err := faultyGraph()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, v := range vs {
		zip, _ := v.OpenZip()
		want[v.Path+"@"+v.Version], _ = io.ReadAll(zip)
		zip.Close()
	}
	up := moduletest.NewServer(vs)
	defer up.Close()
	cacheDir := t.TempDir()
	p := newTestProxy(t, up.URL)
	p.Cacher = &fullCacher{Cacher: DirCacher(cacheDir), limit: 64 << 10}
	p.HotCacheBytes = -1
	srv := httptest.NewServer(p)
	defer srv.Close()
	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	gocmd.WriteGoMod(moduletest.RootGoMod(vs))
	checkDownloaded(t, gocmd.MustRun(t, "mod", "download", "-json"), want)
	testwait.For(t, p.flights.idle)
	// Nothing half written stays behind in the cache.
	filepath.WalkDir(cacheDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".") {
			t.Errorf("left in the cache: %s", path)
		}
		return nil
	})
	if _, err := p.Cacher.Get(context.Background(), "example.com/large3/@v/v1.0.0.zip"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a 3 MB zip was cached in 64 KiB: %v", err)
	}
}
