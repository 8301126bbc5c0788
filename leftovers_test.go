package goproxy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/testwait"
)

func TestLeftoversOfDeadProcessesAreRemoved(t *testing.T) {
	dir := t.TempDir()
	d := DirCacher(dir)
	ctx := context.Background()
	if err := d.Put(ctx, "example.com/m/@v/v1.0.0.zip", strings.NewReader("zip")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	write := func(name string, mtime time.Time) string {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	deadPut := write("example.com/m/@v/.v1.0.1.zip.tmp-0123456789abcdef", old)
	deadEvict := write("example.com/m/@v/.v1.0.0.mod.evict-fedcba9876543210", old)
	deadJournal := write(".goproxy/.index.tmp-00112233445566aa", old)
	livePut := write("example.com/m/@v/.v1.0.2.zip.tmp-aaaaaaaaaaaaaaaa", time.Now())
	notOurs := write("example.com/m/@v/.notes", old)

	files, _, err := d.removeLeftovers(ctx, time.Now().Add(-leftoverAge))
	if err != nil {
		t.Fatal(err)
	}
	if files != 3 {
		t.Errorf("removed %d files, want 3", files)
	}
	for _, p := range []string{deadPut, deadEvict, deadJournal} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s was left: %v", p, err)
		}
	}
	// A write under way, a file that is no temporary of ours, and the
	// entries themselves stay.
	for _, p := range []string{livePut, notOurs, filepath.Join(dir, "example.com/m/@v/v1.0.0.zip")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}

func TestProxyRemovesLeftoversAtItsFirstUse(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "example.com/m/@v/.v1.0.1.zip.tmp-0123456789abcdef")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(p, old, old)
	proxy := &Proxy{Cacher: DirCacher(dir), Env: []string{"GOPROXY=off", "GOSUMDB=off"}}
	if err := proxy.Init(); err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	proxy.start()
	testwait.For(t, func() bool {
		_, err := os.Stat(p)
		return os.IsNotExist(err)
	}, "the removal of the dead Put's file")
}
