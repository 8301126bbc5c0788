package goproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// unreadableCacher opens every entry it was given, but reading any of them
// fails, like a disk with bad sectors or an object store whose HEAD works
// and whose GET does not.
type unreadableCacher struct{ puts atomic.Int64 }

type unreadableFile struct{ *bytes.Reader }

func (unreadableFile) Read([]byte) (int, error) { return 0, errors.New("disk error") }
func (unreadableFile) ModTime() time.Time       { return time.Now() }
func (unreadableFile) Close() error             { return nil }

func (c *unreadableCacher) Get(context.Context, string) (CachedFile, error) {
	return unreadableFile{bytes.NewReader([]byte("stored"))}, nil
}

func (c *unreadableCacher) Put(context.Context, string, io.ReadSeeker) error {
	c.puts.Add(1)
	return nil
}

func (c *unreadableCacher) stored() int64 { return c.puts.Load() }

// unreadableLeasingCacher is an unreadableCacher shared with other
// proxies, which grants every lease asked for.
type unreadableLeasingCacher struct{ unreadableCacher }

func (*unreadableLeasingCacher) HoldLease(context.Context, string) (func(), error) {
	return func() {}, nil
}

// TestAStoredFileThatCannotBeReadIsFetched: a cache failing to read what
// it says it holds costs caching, not serving. The fetch meant to replace
// it used to find it stored and send the client back to the cache, which
// failed again: 502 "stored by an earlier fetch meanwhile", every time.
func TestAStoredFileThatCannotBeReadIsFetched(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	escPath, _ := module.EscapePath(vs[0].Path)
	for _, tc := range []struct {
		name  string
		cache interface {
			Cacher
			stored() int64
		}
	}{
		{"a cache of one proxy", &unreadableCacher{}},
		{"a cache shared with other proxies (fetch leases)", &unreadableLeasingCacher{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProxy(t, up.URL)
			p.Cacher = tc.cache
			for _, ext := range []string{".info", ".mod"} {
				w := do(p, http.MethodGet, "/"+escPath+"/@v/"+vs[0].Version+ext)
				if w.Code != http.StatusOK {
					t.Errorf("%s with the cached copy unreadable: %d %s", ext, w.Code, w.Body)
				}
			}
			if w := do(p, http.MethodGet, "/"+escPath+"/@v/"+vs[0].Version+".mod"); w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), vs[0].Mod) {
				t.Errorf(".mod: %d, or not the upstream's", w.Code)
			}
			// And what was fetched is stored again, over the bad copy.
			testwait.For(t, func() bool { return tc.cache.stored() >= 2 })
		})
	}
}
