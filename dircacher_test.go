package goproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCacherNamesCannotEscape(t *testing.T) {
	parent := t.TempDir()
	os.WriteFile(filepath.Join(parent, "secret"), []byte("x"), 0o644)
	os.Symlink(parent, filepath.Join(parent, "link"))
	dir := filepath.Join(parent, "cache")
	os.MkdirAll(dir, 0o755)
	os.Symlink(parent, filepath.Join(dir, "escape"))
	for _, c := range []Cacher{DirCacher(dir), &MemCacher{}} {
		for _, name := range []string{"../secret", "/etc/passwd", "a/../../secret", "a/./b", "", ".", "a//b", "a\\..\\b", "a\x00b", ".tmp", "a/.hidden"} {
			if err := c.Put(context.Background(), name, strings.NewReader("x")); err == nil {
				t.Errorf("%T.Put(%q) accepted", c, name)
			}
			if f, err := c.Get(context.Background(), name); err == nil {
				f.Close()
				t.Errorf("%T.Get(%q) found something", c, name)
			}
		}
	}
	// A symbolic link planted inside the directory does not lead out of it.
	if err := DirCacher(dir).Put(context.Background(), "escape/secret", strings.NewReader("overwritten")); err == nil {
		t.Error("DirCacher.Put followed a symbolic link out of its directory")
	}
	if f, err := DirCacher(dir).Get(context.Background(), "escape/secret"); err == nil {
		f.Close()
		t.Error("DirCacher.Get followed a symbolic link out of its directory")
	}
	if b, _ := os.ReadFile(filepath.Join(parent, "secret")); string(b) != "x" {
		t.Error("a file outside the cache was overwritten")
	}
}

func TestDirCacherConcurrentWriters(t *testing.T) {
	c := DirCacher(t.TempDir())
	ctx := context.Background()
	bodies := [][]byte{bytes.Repeat([]byte("a"), 1<<20), bytes.Repeat([]byte("b"), 1<<20)}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := c.Put(ctx, "m.example/@v/v1.0.0.zip", bytes.NewReader(bodies[i%2])); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			f, err := c.Get(ctx, "m.example/@v/v1.0.0.zip")
			if err != nil {
				return
			}
			defer f.Close()
			got, _ := io.ReadAll(f)
			if !bytes.Equal(got, bodies[0]) && !bytes.Equal(got, bodies[1]) {
				t.Errorf("a reader saw a mix of two writes (%d bytes)", len(got))
			}
		})
	}
	wg.Wait()
}

// TestDirCacherKilledMidWrite kills a process in the middle of a Put and
// checks that what it left behind is never served.
func TestDirCacherKilledMidWrite(t *testing.T) {
	if os.Getenv("TEST_HANG_IN_PUT_DIR") != "" {
		hangInPut(os.Getenv("TEST_HANG_IN_PUT_DIR"))
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDirCacherKilledMidWrite$")
	cmd.Env = append(os.Environ(), "TEST_HANG_IN_PUT_DIR="+dir)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "writing\n" {
		cmd.Process.Kill()
		t.Fatalf("child said %q, %v", line, err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	c := DirCacher(dir)
	const name = "example.com/a/@v/v1.0.0.zip"
	if f, err := c.Get(context.Background(), name); !errors.Is(err, fs.ErrNotExist) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("after a killed write, Get = %v, want ErrNotExist", err)
	}
	var names []string
	c.Walk(context.Background(), "", func(name string) error { names = append(names, name); return nil })
	if len(names) != 0 {
		t.Errorf("Walk lists the killed write's leftovers: %v", names)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "example.com/a/@v/.*"))
	if len(leftovers) == 0 {
		t.Error("the child did not get as far as writing a temporary file; the test proves nothing")
	}

	// The proxy, over the same directory, fetches the file afresh.
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	p.Cacher = c
	if w := do(p, "GET", "/"+name); w.Code != 200 || up.Requests("/"+name) != 1 {
		t.Errorf("proxy after a killed write: %d, upstream asked %d times", w.Code, up.Requests("/"+name))
	}
}

// hangInPut starts a Put whose content stops midway forever, announcing on
// stdout once bytes are on disk.
func hangInPut(dir string) {
	r := &hangingReader{ready: func() { fmt.Println("writing") }}
	DirCacher(dir).Put(context.Background(), "example.com/a/@v/v1.0.0.zip", r)
}

type hangingReader struct {
	sent  int
	ready func()
}

func (r *hangingReader) Read(p []byte) (int, error) {
	if r.sent >= 1<<20 {
		r.ready()
		select {}
	}
	n := min(len(p), 1<<20-r.sent)
	r.sent += n
	return n, nil
}

func (r *hangingReader) Seek(offset int64, whence int) (int64, error) { return 0, nil }

func TestMemCacherEvictsLeastRecentlyUsed(t *testing.T) {
	c := &MemCacher{MaxBytes: 30}
	ctx := context.Background()
	put := func(name string) {
		if err := c.Put(ctx, name, strings.NewReader(strings.Repeat("x", 10))); err != nil {
			t.Fatal(err)
		}
	}
	has := func(name string) bool {
		f, err := c.Get(ctx, name)
		if err != nil {
			return false
		}
		f.Close()
		return true
	}
	put("a")
	put("b")
	put("c")
	has("a") // a is now more recent than b
	put("d")
	if !has("a") || has("b") || !has("c") || !has("d") {
		t.Errorf("after eviction: a=%v b=%v c=%v d=%v, want b evicted", has("a"), has("b"), has("c"), has("d"))
	}
	if err := c.Put(ctx, "big", strings.NewReader(strings.Repeat("x", 31))); err == nil {
		t.Error("Put of an entry over MaxBytes succeeded")
	}
	put("a") // replacing an entry does not count it twice
	if n := c.cache().Size(); n != 30 {
		t.Errorf("size %d, want 30", n)
	}
}

// fileBackedContent returns content of n pseudo-random bytes as the proxy
// stores a downloaded zip: the whole of a file on disk.
func fileBackedContent(t testing.TB, n int, modTime time.Time) (fileContent, []byte) {
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(i*7 + i>>9)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "download"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	f.Write(want)
	return fileContent{timedReader{io.NewSectionReader(f, 0, int64(n)), modTime}, f, int64(n)}, want
}

func TestDirCacherStoresAFileBackedContentWhole(t *testing.T) {
	mod := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	content, want := fileBackedContent(t, 3*copyFileChunk/2+5, mod)
	// The descriptor's own offset is not where copies start.
	content.file.Seek(1000, io.SeekStart)
	check := func(c DirCacher, name string) {
		t.Helper()
		cf, err := c.Get(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		defer cf.Close()
		got, _ := io.ReadAll(cf)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes stored, not the %d of the file", name, len(got), len(want))
		}
		if !cf.ModTime().Equal(mod) {
			t.Errorf("%s: ModTime %v, want %v", name, cf.ModTime(), mod)
		}
	}
	c := DirCacher(t.TempDir())
	if err := c.Put(context.Background(), "a/@v/v1.0.0.zip", content); err != nil {
		t.Fatal(err)
	}
	check(c, "a/@v/v1.0.0.zip")
	// Another file under the name now: the content is read as content.
	name := content.file.Name()
	os.Rename(name, name+".moved")
	os.WriteFile(name, []byte("another file"), 0o644)
	if err := c.Put(context.Background(), "b/@v/v1.0.0.zip", content); err != nil {
		t.Fatal(err)
	}
	check(c, "b/@v/v1.0.0.zip")
}

// BenchmarkDirCacherPutFile stores a 64 MB downloaded zip, file to file,
// against the same bytes read through the content as a reader.
func BenchmarkDirCacherPutFile(b *testing.B) {
	content, _ := fileBackedContent(b, 64<<20, time.Time{})
	for _, bc := range []struct {
		name    string
		content io.ReadSeeker
	}{
		{"file", content},
		{"reader", content.timedReader},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := DirCacher(b.TempDir())
			b.SetBytes(content.size)
			for b.Loop() {
				if err := c.Put(context.Background(), "a/@v/v1.0.0.zip", bc.content); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
