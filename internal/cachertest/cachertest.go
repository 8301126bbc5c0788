// Package cachertest checks that a goproxy.Cacher keeps the contract the
// proxy relies on, so that every implementation (DirCacher, MemCacher, the
// object-store cacher, and any a user writes) is held to the same rules by
// the same tests.
package cachertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
)

// clockSlack allows for stores that keep times in whole seconds (S3's
// Last-Modified) and clocks that are not the test's own.
const clockSlack = 2 * time.Second

// Run checks the contract on Cachers that newCacher returns: each call must
// return an empty Cacher not shared with any other call. Optional
// capabilities (Stat, Delete, Walk, ETag, ReadAt, Create, and those of
// eviction and the index feed) are checked when the Cacher or its files
// have them.
func Run(t *testing.T, newCacher func(t *testing.T) goproxy.Cacher) {
	t.Run("get of a missing name is not-exist", func(t *testing.T) { t.Parallel(); testMiss(t, newCacher(t)) })
	t.Run("put then get returns the content", func(t *testing.T) { t.Parallel(); testPutGet(t, newCacher(t)) })
	t.Run("put replaces what was stored", func(t *testing.T) { t.Parallel(); testOverwrite(t, newCacher(t)) })
	t.Run("put reads the content from its start", func(t *testing.T) { t.Parallel(); testPutRewinds(t, newCacher(t)) })
	t.Run("a failed put leaves the old content", func(t *testing.T) { t.Parallel(); testFailedPut(t, newCacher(t)) })
	t.Run("files seek and read anywhere", func(t *testing.T) { t.Parallel(); testSeek(t, newCacher(t)) })
	t.Run("modtime is when the content was stored", func(t *testing.T) { t.Parallel(); testModTime(t, newCacher(t)) })
	t.Run("put keeps the modtime the content carries", func(t *testing.T) { t.Parallel(); testKeptModTime(t, newCacher(t)) })
	t.Run("etag is strong and follows the content", func(t *testing.T) { t.Parallel(); testETag(t, newCacher(t)) })
	t.Run("stat describes without opening", func(t *testing.T) { t.Parallel(); testStat(t, newCacher(t)) })
	t.Run("delete removes and forgives a miss", func(t *testing.T) { t.Parallel(); testDelete(t, newCacher(t)) })
	t.Run("walk lists names by string prefix", func(t *testing.T) { t.Parallel(); testWalk(t, newCacher(t)) })
	t.Run("concurrent puts of one name leave one whole content", func(t *testing.T) { t.Parallel(); testConcurrentPuts(t, newCacher(t)) })
	t.Run("names of every kind the proxy stores", func(t *testing.T) { t.Parallel(); testNames(t, newCacher(t)) })
	t.Run("names outside the rule are refused", func(t *testing.T) { t.Parallel(); testBadNames(t, newCacher(t)) })
	t.Run("create never overwrites", func(t *testing.T) { t.Parallel(); testCreate(t, newCacher(t)) })
	t.Run("uses are recorded and listed with sizes and times", func(t *testing.T) { t.Parallel(); testUses(t, newCacher(t)) })
	t.Run("delete unchanged removes only what was listed", func(t *testing.T) { t.Parallel(); testDeleteUnchanged(t, newCacher(t)) })
	t.Run("index feed is created once and appended in order", func(t *testing.T) { t.Parallel(); testIndexLog(t, newCacher(t)) })
	t.Run("index feed pages like a reference", func(t *testing.T) { t.Parallel(); testIndexPaging(t, newCacher(t)) })
	t.Run("index feed appended by many at once stays ordered", func(t *testing.T) { t.Parallel(); testIndexConcurrentAppends(t, newCacher(t)) })
}

const listName = "example.com/a/@v/list"

func testMiss(t *testing.T, c goproxy.Cacher) {
	f, err := c.Get(t.Context(), listName)
	if !errors.Is(err, fs.ErrNotExist) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("Get of a name never stored: %v, want an error wrapping fs.ErrNotExist", err)
	}
}

func testPutGet(t *testing.T, c goproxy.Cacher) {
	for name, content := range map[string][]byte{
		"example.com/a/@v/v1.0.0.info": []byte(`{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}`),
		"example.com/a/@v/v1.0.0.mod":  {},
		"example.com/a/@v/v1.0.0.zip":  pattern(300<<10 + 7),
	} {
		put(t, c, name, content)
		if got := get(t, c, name); !bytes.Equal(got, content) {
			t.Errorf("Get(%s) = %d bytes, not the %d stored", name, len(got), len(content))
		}
	}
}

func testOverwrite(t *testing.T, c goproxy.Cacher) {
	put(t, c, listName, []byte("v1.0.0\nv1.1.0\nv1.2.0\n"))
	put(t, c, listName, []byte("v1.0.0\n"))
	if got := get(t, c, listName); string(got) != "v1.0.0\n" {
		t.Errorf("after a second Put, Get = %q, want the second content", got)
	}
}

func testPutRewinds(t *testing.T, c goproxy.Cacher) {
	r := strings.NewReader("v1.0.0\n")
	r.Seek(0, io.SeekEnd) // a reader that was read before, as the proxy's may be
	if err := c.Put(t.Context(), listName, r); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, listName); string(got) != "v1.0.0\n" {
		t.Errorf("Put of a reader at its end stored %q, want the whole content", got)
	}
}

func testFailedPut(t *testing.T, c goproxy.Cacher) {
	name := "example.com/a/@v/v1.0.0.zip"
	old := pattern(64 << 10)
	put(t, c, name, old)
	content := &failingReader{r: bytes.NewReader(pattern(1 << 20)), failAt: 512 << 10}
	if err := c.Put(t.Context(), name, content); err == nil {
		t.Fatal("Put of content whose reading fails reported success")
	}
	if got := get(t, c, name); !bytes.Equal(got, old) {
		t.Errorf("after a failed Put, Get = %d bytes, want the old %d", len(got), len(old))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Put(ctx, name, bytes.NewReader(pattern(1<<20))); err == nil {
		t.Error("Put with a cancelled context reported success")
	}
	if got := get(t, c, name); !bytes.Equal(got, old) {
		t.Errorf("after a cancelled Put, Get = %d bytes, want the old %d", len(got), len(old))
	}
}

func testSeek(t *testing.T, c goproxy.Cacher) {
	name := "example.com/a/@v/v1.0.0.zip"
	content := pattern(1<<20 + 3)
	put(t, c, name, content)
	f, err := c.Get(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil || size != int64(len(content)) {
		t.Fatalf("Seek(0, SeekEnd) = %d, %v; want %d", size, err, len(content))
	}
	readAt := func(off int64, n int) {
		t.Helper()
		if pos, err := f.Seek(off, io.SeekStart); err != nil || pos != off {
			t.Fatalf("Seek(%d, SeekStart) = %d, %v", off, pos, err)
		}
		got := make([]byte, n)
		if _, err := io.ReadFull(f, got); err != nil {
			t.Fatalf("reading %d bytes at %d: %v", n, off, err)
		}
		if !bytes.Equal(got, content[off:off+int64(n)]) {
			t.Fatalf("%d bytes at %d differ from what was stored", n, off)
		}
	}
	readAt(700<<10, 1024) // the middle
	readAt(0, 512)        // back to the start
	readAt(512, 4096)     // on from there
	readAt(size-10, 10)   // the end
	if n, err := f.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read at the end = %d, %v; want 0, io.EOF", n, err)
	}
	if pos, err := f.Seek(-5, io.SeekCurrent); err != nil || pos != size-5 {
		t.Errorf("Seek(-5, SeekCurrent) = %d, %v; want %d", pos, err, size-5)
	}
	if rest, err := io.ReadAll(f); err != nil || !bytes.Equal(rest, content[size-5:]) {
		t.Errorf("ReadAll of the last 5 bytes = %q, %v", rest, err)
	}
	if _, err := f.Seek(-1, io.SeekStart); err == nil {
		t.Error("Seek to a negative position succeeded")
	}
	if _, err := f.Seek(size+100, io.SeekStart); err != nil {
		t.Errorf("Seek past the end: %v", err)
	} else if n, err := f.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("Read past the end = %d, %v; want 0, io.EOF", n, err)
	}
	readAt(0, len(content)) // the whole, after all that

	if ra, ok := f.(io.ReaderAt); ok {
		got := make([]byte, 2000)
		if n, err := ra.ReadAt(got, 300<<10); n != len(got) || err != nil || !bytes.Equal(got, content[300<<10:300<<10+2000]) {
			t.Errorf("ReadAt(2000 bytes, 300 KiB) = %d, %v, or other bytes", n, err)
		}
		if n, err := ra.ReadAt(got, size-100); n != 100 || err != io.EOF || !bytes.Equal(got[:100], content[size-100:]) {
			t.Errorf("ReadAt across the end = %d, %v; want 100, io.EOF", n, err)
		}
	}
}

func testModTime(t *testing.T, c goproxy.Cacher) {
	before := time.Now()
	put(t, c, listName, []byte("v1.0.0\n"))
	after := time.Now()
	f, err := c.Get(t.Context(), listName)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if m := f.ModTime(); m.Before(before.Add(-clockSlack)) || m.After(after.Add(clockSlack)) {
		t.Errorf("ModTime %v is not between the Put's start %v and end %v", m, before, after)
	}
}

// timedContent is content with the time it was fetched, as the proxy
// gives Put.
type timedContent struct {
	io.ReadSeeker
	modTime time.Time
}

func (c timedContent) ModTime() time.Time { return c.modTime }

// testKeptModTime: the answer that fetched a file is validated by its
// fetch time, so the answers from the cache must report that time too,
// exactly, whatever time the store records itself.
func testKeptModTime(t *testing.T, c goproxy.Cacher) {
	// An hour ago, to the microsecond, which every file system keeps.
	fetched := time.Now().Add(-time.Hour).Truncate(time.Microsecond).Add(123 * time.Microsecond)
	if err := c.Put(t.Context(), listName, timedContent{bytes.NewReader([]byte("v1.0.0\n")), fetched}); err != nil {
		t.Fatal(err)
	}
	f, err := c.Get(t.Context(), listName)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if m := f.ModTime(); !m.Equal(fetched) {
		t.Errorf("ModTime %v, want %v, the content's", m, fetched)
	}
	if s, ok := c.(goproxy.CacheStater); ok {
		if fi, err := s.Stat(t.Context(), listName); err != nil || !fi.ModTime().Equal(fetched) {
			t.Errorf("Stat: %v, %v; want the content's ModTime %v", fi, err, fetched)
		}
	}
}

func testETag(t *testing.T, c goproxy.Cacher) {
	etag := func() (string, bool) {
		t.Helper()
		f, err := c.Get(t.Context(), listName)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		e, ok := f.(interface{ ETag() string })
		if !ok {
			return "", false
		}
		return e.ETag(), true
	}
	put(t, c, listName, []byte("v1.0.0\n"))
	first, ok := etag()
	if !ok {
		t.Skip("files have no ETag method")
	}
	if len(first) < 3 || first[0] != '"' || first[len(first)-1] != '"' || strings.HasPrefix(first, "W/") {
		t.Errorf("ETag %s is not a quoted strong entity tag", first)
	}
	if again, _ := etag(); again != first {
		t.Errorf("ETag changed from %s to %s with the content unchanged", first, again)
	}
	put(t, c, listName, []byte("v1.0.0\nv1.1.0\n"))
	if second, _ := etag(); second == first {
		t.Errorf("ETag %s stayed the same when the content changed", first)
	}
}

func testStat(t *testing.T, c goproxy.Cacher) {
	s, ok := c.(goproxy.CacheStater)
	if !ok {
		t.Skip("not a CacheStater")
	}
	if _, err := s.Stat(t.Context(), listName); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat before Put: %v, want fs.ErrNotExist", err)
	}
	put(t, c, listName, []byte("v1.0.0\n"))
	fi, err := s.Stat(t.Context(), listName)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 7 || fi.Name() != "list" || fi.IsDir() || fi.ModTime().IsZero() {
		t.Errorf("Stat = name %q, size %d, dir %v, modtime %v; want list, 7, false, a time", fi.Name(), fi.Size(), fi.IsDir(), fi.ModTime())
	}
	if _, err := s.Stat(t.Context(), "example.com/a/@v"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a name that is only a prefix of entries: %v, want fs.ErrNotExist", err)
	}
	if f, err := c.Get(t.Context(), "example.com/a/@v"); !errors.Is(err, fs.ErrNotExist) {
		if f != nil {
			f.Close()
		}
		t.Errorf("Get of a name that is only a prefix of entries: %v, want fs.ErrNotExist", err)
	}
}

func testDelete(t *testing.T, c goproxy.Cacher) {
	d, ok := c.(goproxy.CacheDeleter)
	if !ok {
		t.Skip("not a CacheDeleter")
	}
	if err := d.Delete(t.Context(), listName); err != nil {
		t.Errorf("Delete of a name never stored: %v", err)
	}
	put(t, c, listName, []byte("v1.0.0\n"))
	put(t, c, "example.com/a/@v/v1.0.0.info", []byte("{}"))
	if err := d.Delete(t.Context(), listName); err != nil {
		t.Fatal(err)
	}
	if f, err := c.Get(t.Context(), listName); !errors.Is(err, fs.ErrNotExist) {
		if f != nil {
			f.Close()
		}
		t.Errorf("Get after Delete: %v, want fs.ErrNotExist", err)
	}
	if got := get(t, c, "example.com/a/@v/v1.0.0.info"); string(got) != "{}" {
		t.Errorf("Delete of one name took another's content: %q", got)
	}
}

func testWalk(t *testing.T, c goproxy.Cacher) {
	w, ok := c.(goproxy.CacheWalker)
	if !ok {
		t.Skip("not a CacheWalker")
	}
	names := []string{
		"example.com/a/@v/list",
		"example.com/a/@v/v1.0.0.info",
		"example.com/ab/@v/list",
		"example.com/b/@v/list",
		"golang.org/x/text/@v/list",
	}
	for _, name := range names {
		put(t, c, name, []byte(name))
	}
	walk := func(prefix string) []string {
		t.Helper()
		var got []string
		if err := w.Walk(t.Context(), prefix, func(name string) error { got = append(got, name); return nil }); err != nil {
			t.Fatalf("Walk(%q): %v", prefix, err)
		}
		slices.Sort(got)
		return got
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", names},
		{"example.com/a/", names[:2]},
		{"example.com/a", names[:3]}, // a prefix of strings, not of paths
		{"example.com/a/@v/v1", names[1:2]},
		{"golang.org/", names[4:]},
		{"nothing.example/", nil},
	} {
		if got := walk(tc.prefix); !slices.Equal(got, tc.want) {
			t.Errorf("Walk(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	stop := errors.New("stop")
	calls := 0
	err := w.Walk(t.Context(), "", func(string) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("Walk whose fn fails at once: %v after %d calls, want the fn's error after 1", err, calls)
	}
}

func testConcurrentPuts(t *testing.T, c goproxy.Cacher) {
	name := "example.com/a/@v/v1.0.0.zip"
	contents := make([][]byte, 6)
	for i := range contents {
		contents[i] = bytes.Repeat([]byte{byte('a' + i)}, 256<<10+i)
	}
	isOne := func(got []byte) bool {
		return slices.ContainsFunc(contents, func(c []byte) bool { return bytes.Equal(got, c) })
	}
	var wg sync.WaitGroup
	for _, content := range contents {
		wg.Go(func() {
			if err := c.Put(t.Context(), name, bytes.NewReader(content)); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			f, err := c.Get(t.Context(), name)
			if err != nil {
				return // nothing stored yet
			}
			defer f.Close()
			got, err := io.ReadAll(f)
			if err == nil && !isOne(got) {
				t.Errorf("a Get during the Puts read %d bytes that are no one Put's content", len(got))
			}
		})
	}
	wg.Wait()
	if got := get(t, c, name); !isOne(got) {
		t.Errorf("after concurrent Puts, Get = %d bytes that are no one Put's content", len(got))
	}
}

func testNames(t *testing.T, c goproxy.Cacher) {
	names := []string{
		"github.com/!burnt!sushi/toml/@v/list",
		"github.com/!burnt!sushi/toml/@v/v1.3.2.zip",
		"example.com/a/@latest",
		"example.com/a/v2/@v/v2.0.0+incompatible.info",
		"example.com/a/@v/v0.0.0-20240102030405-abcdefabcdef.mod",
		"example.com/a/@v/v1.0.0-rc.1~x.info",
		"sumdb/sum.golang.org/lookup/example.com/a@v1.0.0",
		"sumdb/sum.golang.org/tile/8/0/x001/234.p/5",
		"sumdb/sum.golang.org/supported",
	}
	for _, name := range names {
		put(t, c, name, []byte("content of "+name))
	}
	for _, name := range names {
		if got := get(t, c, name); string(got) != "content of "+name {
			t.Errorf("Get(%s) = %q", name, got)
		}
	}
	if w, ok := c.(goproxy.CacheWalker); ok {
		var got []string
		w.Walk(t.Context(), "", func(name string) error { got = append(got, name); return nil })
		slices.Sort(got)
		want := slices.Sorted(slices.Values(names))
		if !slices.Equal(got, want) {
			t.Errorf("Walk = %q, want %q", got, want)
		}
	}
}

func testBadNames(t *testing.T, c goproxy.Cacher) {
	for _, name := range []string{"", ".", "..", "../secret", "/etc/passwd", "a/../../secret", "a/./b", "a//b", "a/", `a\..\b`, "a\x00b", ".tmp", "a/.hidden", "a/.lease/b"} {
		if err := c.Put(t.Context(), name, strings.NewReader("x")); err == nil {
			t.Errorf("Put(%q) succeeded", name)
		}
		if f, err := c.Get(t.Context(), name); err == nil {
			f.Close()
			t.Errorf("Get(%q) found something", name)
		}
	}
}

func testCreate(t *testing.T, c goproxy.Cacher) {
	cr, ok := c.(goproxy.CacheCreator)
	if !ok {
		t.Skip("no Create method")
	}
	name := "example.com/a/@v/v1.0.0.zip"
	if err := cr.Create(t.Context(), name, bytes.NewReader([]byte("first"))); err != nil {
		t.Fatal(err)
	}
	if err := cr.Create(t.Context(), name, bytes.NewReader([]byte("second"))); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second Create: %v, want fs.ErrExist", err)
	}
	if got := get(t, c, name); string(got) != "first" {
		t.Errorf("after a refused Create, Get = %q, want the first content", got)
	}

	// Racing creators: exactly one wins, and its content is what is stored.
	name = "example.com/a/@v/v1.1.0.zip"
	won := OneWins(t, 8, func(i int) error {
		return cr.Create(t.Context(), name, bytes.NewReader(fmt.Appendf(nil, "creator %d", i)))
	})
	if got, want := string(get(t, c, name)), fmt.Sprintf("creator %d", won); got != want {
		t.Errorf("stored %q, but the winner was %q", got, want)
	}
}

func put(t *testing.T, c goproxy.Cacher, name string, content []byte) {
	t.Helper()
	if err := c.Put(t.Context(), name, bytes.NewReader(content)); err != nil {
		t.Fatalf("Put(%s): %v", name, err)
	}
}

func get(t *testing.T, c goproxy.Cacher, name string) []byte {
	t.Helper()
	f, err := c.Get(t.Context(), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return b
}

// pattern returns n bytes that differ at every offset a test might
// confuse with another (not a repeated short block).
func pattern(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// failingReader fails once failAt bytes have been read, as a download that
// broke would; it seeks so that it can be given to Put.
type failingReader struct {
	r      *bytes.Reader
	failAt int64
}

func (f *failingReader) Read(p []byte) (int, error) {
	pos, _ := f.r.Seek(0, io.SeekCurrent)
	if pos >= f.failAt {
		return 0, errors.New("cachertest: the content broke")
	}
	return f.r.Read(p[:min(int64(len(p)), f.failAt-pos)])
}

func (f *failingReader) Seek(offset int64, whence int) (int64, error) {
	return f.r.Seek(offset, whence)
}

// OneWins runs create(0) to create(n-1) at once, as n racing creators of
// one thing, and returns the one that succeeded: exactly one must, and
// every other must fail with fs.ErrExist.
func OneWins(t *testing.T, n int, create func(i int) error) int {
	t.Helper()
	won := Race(t, n, create, fs.ErrExist)
	if len(won) != 1 {
		t.Fatalf("%d of %d racing creators succeeded (%v), want exactly 1", len(won), n, won)
	}
	return won[0]
}

// Race runs f(0) to f(n-1) at once and returns those that succeeded. A
// racer failing with an error that is none of lost fails the test.
func Race(t *testing.T, n int, f func(i int) error, lost ...error) []int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []int
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			err := f(i)
			if err == nil {
				mu.Lock()
				won = append(won, i)
				mu.Unlock()
				return
			}
			if !slices.ContainsFunc(lost, func(l error) bool { return errors.Is(err, l) }) {
				t.Errorf("racer %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	return won
}
