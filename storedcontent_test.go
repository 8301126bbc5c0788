package goproxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// offsetCheckingCacher records, for each Put, whether the content can be
// read at offsets (io.ReaderAt) and whether those reads match its bytes.
type offsetCheckingCacher struct {
	MemCacher
	mu      sync.Mutex
	checked map[string]string // name → "" when fine, else what was wrong
}

func (c *offsetCheckingCacher) Put(ctx context.Context, name string, content io.ReadSeeker) error {
	problem := ""
	if _, ok := content.(interface{ ModTime() time.Time }); !ok {
		problem = "no ModTime"
	}
	ra, ok := content.(io.ReaderAt)
	data, err := io.ReadAll(content)
	switch {
	case err != nil:
		problem = err.Error()
	case !ok:
		problem = "not an io.ReaderAt"
	default:
		half := make([]byte, len(data)-len(data)/2)
		if n, err := ra.ReadAt(half, int64(len(data)/2)); n != len(half) || (err != nil && err != io.EOF) || !bytes.Equal(half, data[len(data)/2:]) {
			problem = "ReadAt gave other bytes"
		}
	}
	c.mu.Lock()
	if c.checked == nil {
		c.checked = map[string]string{}
	}
	c.checked[name] = problem
	c.mu.Unlock()
	content.Seek(0, io.SeekStart)
	return c.MemCacher.Put(ctx, name, content)
}

// TestWhatAFetchStoresCanBeReadAtOffsets: an object store uploads a large
// file in parts read straight from it, several at once, only if it can read
// at offsets; otherwise it must hold a whole part in memory per upload
// (s3cacher: 16 MiB each). What the proxy stores after a fetch must
// therefore be an io.ReaderAt, besides carrying its fetch time.
func TestWhatAFetchStoresCanBeReadAtOffsets(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := newTestProxy(t, up.URL)
	cache := &offsetCheckingCacher{}
	p.Cacher = cache
	escPath, _ := module.EscapePath(vs[0].Path)
	for _, ext := range []string{".info", ".mod", ".zip"} {
		name := escPath + "/@v/" + vs[0].Version + ext
		if w := do(p, http.MethodGet, "/"+name); w.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", name, w.Code, w.Body)
		}
		testwait.For(t, func() bool {
			cache.mu.Lock()
			defer cache.mu.Unlock()
			_, ok := cache.checked[name]
			return ok
		})
		cache.mu.Lock()
		if problem := cache.checked[name]; problem != "" {
			t.Errorf("%s was stored from content with %s", name, problem)
		}
		cache.mu.Unlock()
	}
}

// A file system's clock may be coarser than its time stamps (Linux sets
// them from a clock that ticks every few milliseconds), so a file written
// without a time of its own (the checksum database's latest tree is) and
// rewritten within a tick, at the same size, keeps its time: the memo
// must still tell the new file from the old.
func TestTheStoredMemoTellsAFileRewrittenWithinATickOfTheClock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := DirCacher(dir)
	p := newTestProxy(t, "off")
	req, err := p.parseRequest("/example.com/a/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	var memo storedMemo
	read := func() string {
		t.Helper()
		cf, err := d.Get(ctx, req.name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := storedContent(req, cf, fromCache, &memo)
		if err != nil {
			t.Fatal(err)
		}
		return string(c.data)
	}
	stamp := time.Date(2026, 1, 2, 3, 4, 5, 6000000, time.UTC)
	for _, list := range []string{"v1.0.0\n", "v1.0.1\n"} {
		if err := d.Put(ctx, req.name, bytes.NewReader([]byte(list))); err != nil {
			t.Fatal(err)
		}
		// As the coarse clock would have it: the same time both times.
		if err := os.Chtimes(filepath.Join(dir, req.name), stamp, stamp); err != nil {
			t.Fatal(err)
		}
		if got := read(); got != list {
			t.Fatalf("read %q after storing %q", got, list)
		}
	}
}
