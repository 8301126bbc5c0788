package goproxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
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
