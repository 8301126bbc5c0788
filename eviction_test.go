package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/testwait"
)

// evictionCachers are the Cachers every eviction test runs on.
var evictionCachers = []struct {
	name string
	open func(t testing.TB) Cacher
}{
	{"DirCacher", func(t testing.TB) Cacher { return DirCacher(filepath.Join(t.TempDir(), "cache")) }},
	{"MemCacher", func(t testing.TB) Cacher { return &MemCacher{} }},
}

// testVersionFiles are a version's files, each with a content that tells
// which file it is, so that a corrupt or mixed-up file is noticed.
func testVersionFiles(mod, version string, zipSize int) map[string]string {
	base := mod + "/@v/" + version
	return map[string]string{
		base + ".info": `{"Version":"` + version + `"}`,
		base + ".mod":  "module " + mod + "\n",
		base + ".zip":  base + strings.Repeat("z", max(zipSize-len(base), 0)),
	}
}

func putAll(t testing.TB, c Cacher, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := c.Put(context.Background(), name, strings.NewReader(content)); err != nil {
			t.Fatal(err)
		}
	}
}

func cachedSet(t testing.TB, c Cacher) map[string]bool {
	t.Helper()
	set := map[string]bool{}
	err := c.(CacheWalker).Walk(context.Background(), "", func(name string) error {
		set[name] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// testEvictor is an evictor over c whose clock is now.
func testEvictor(t testing.TB, cfg Eviction, c Cacher, now time.Time) *evictor {
	t.Helper()
	e, err := newEvictor(cfg, c, nil, slog.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.now = func() time.Time { return now }
	return e
}

func use(t testing.TB, c Cacher, at time.Time, names ...string) {
	t.Helper()
	var uses []CacheUse
	for _, n := range names {
		uses = append(uses, CacheUse{n, at})
	}
	if err := c.(CacheUsageRecorder).RecordUses(context.Background(), uses); err != nil {
		t.Fatal(err)
	}
}

func TestEvictionRemovesWhatIsUnusedPastMaxAge(t *testing.T) {
	ctx := context.Background()
	for _, impl := range evictionCachers {
		t.Run(impl.name, func(t *testing.T) {
			c := impl.open(t)
			used, unused := testVersionFiles("example.com/used", "v1.0.0", 100), testVersionFiles("example.com/unused", "v1.0.0", 100)
			putAll(t, c, used)
			putAll(t, c, unused)
			putAll(t, c, map[string]string{
				"example.com/unused/@v/list":           "v1.0.0\n",
				"example.com/unused/@v/master.info":    `{"Version":"v1.0.0"}`,
				"sumdb/sum.golang.org/verified/latest": "tree",
				"sumdb/sum.golang.org/tile/8/0/000":    "tile",
			})
			if err := c.(CacheIndexLog).CreateIndex(ctx, []IndexEntry{{"example.com/used", "v1.0.0", t0}}); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			use(t, c, now.Add(8*24*time.Hour), "example.com/used/@v/v1.0.0.zip")
			res, err := testEvictor(t, Eviction{MaxAge: 5 * 24 * time.Hour}, c, now.Add(10*24*time.Hour)).run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := cachedSet(t, c)
			want := map[string]bool{"sumdb/sum.golang.org/verified/latest": true}
			for name := range used {
				want[name] = true
			}
			if !maps_equal(got, want) {
				t.Errorf("left after the run: %v\nwant %v", keys(got), keys(want))
			}
			if res.Removed != 6 || res.Entries != 4 {
				t.Errorf("run = %+v, want 6 removed and 4 entries left", res)
			}
			if feed, err := c.(CacheIndexLog).ReadIndex(ctx, time.Time{}, 10); err != nil || len(feed) != 1 {
				t.Errorf("the index feed after eviction: %v, %v", feed, err)
			}
		})
	}
}

func maps_equal(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestEvictionKeepsTheCacheUnderMaxBytesLeastRecentlyUsedFirst(t *testing.T) {
	ctx := context.Background()
	for _, impl := range evictionCachers {
		t.Run(impl.name, func(t *testing.T) {
			c := impl.open(t)
			now := time.Now()
			var total int64
			for i := range 10 {
				files := testVersionFiles(fmt.Sprintf("example.com/m%d", i), "v1.0.0", 1000)
				putAll(t, c, files)
				for _, content := range files {
					total += int64(len(content))
				}
				// Version i was last used i hours from now, through any one
				// of its files.
				name := fmt.Sprintf("example.com/m%d/@v/v1.0.0.mod", i)
				if i%2 == 0 {
					name = fmt.Sprintf("example.com/m%d/@v/v1.0.0.info", i)
				}
				use(t, c, now.Add(time.Duration(i+1)*time.Hour), name)
			}
			// The oldest, used last through its .info only (as go list
			// does), lives on with its .mod and .zip.
			use(t, c, now.Add(20*time.Hour), "example.com/m0/@v/v1.0.0.info")
			maxBytes := total / 2
			res, err := testEvictor(t, Eviction{MaxBytes: maxBytes}, c, now.Add(21*time.Hour)).run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var left int64
			err = c.(CacheInfoWalker).WalkInfo(ctx, "", func(e CacheEntryInfo) error { left += e.Size; return nil })
			if err != nil {
				t.Fatal(err)
			}
			if left > maxBytes/10*9 || left != res.Bytes {
				t.Errorf("%d bytes left (run says %d), want at most %d", left, res.Bytes, maxBytes/10*9)
			}
			got := cachedSet(t, c)
			// Each version is 1150 bytes or so: the four most recently used
			// fit under nine tenths of half of ten.
			for _, i := range []int{0, 7, 8, 9} {
				for name := range testVersionFiles(fmt.Sprintf("example.com/m%d", i), "v1.0.0", 0) {
					if !got[name] {
						t.Errorf("%s was removed; it is among the most recently used", name)
					}
				}
			}
			if len(got) != 12 {
				t.Errorf("left: %v, want the files of 4 versions", keys(got))
			}
		})
	}
}

func TestEvictionLastUseSurvivesARestart(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "cache")
	c := DirCacher(dir)
	a, b := testVersionFiles("example.com/a", "v1.0.0", 100), testVersionFiles("example.com/b", "v1.0.0", 100)
	putAll(t, c, a)
	putAll(t, c, b)
	long := time.Now().Add(-30 * 24 * time.Hour)
	for _, files := range []map[string]string{a, b} {
		for name := range files {
			os.Chtimes(filepath.Join(dir, name), long, long)
		}
	}
	// A hit, recorded as the proxy records it, by one process...
	r := newUsageRecorder(c, slog.Default())
	r.start()
	r.record("example.com/a/@v/v1.0.0.info")
	r.close()
	// ...is known to a new one over the same directory.
	if _, err := testEvictor(t, Eviction{MaxAge: 24 * time.Hour}, DirCacher(dir), time.Now()).run(ctx); err != nil {
		t.Fatal(err)
	}
	got := cachedSet(t, c)
	for name := range a {
		if !got[name] {
			t.Errorf("%s was removed though used just now", name)
		}
	}
	for name := range b {
		if got[name] {
			t.Errorf("%s was kept though unused for a month", name)
		}
	}
	// Recording kept when each file was stored, which mutable entries
	// expire by.
	fi, _ := os.Stat(filepath.Join(dir, "example.com/a/@v/v1.0.0.info"))
	if !fi.ModTime().Equal(long) {
		t.Errorf("modification time moved to %v, want %v", fi.ModTime(), long)
	}
}

func TestEvictionServesAFileOpenForAClientWhole(t *testing.T) {
	ctx := context.Background()
	for _, impl := range evictionCachers {
		t.Run(impl.name, func(t *testing.T) {
			c := impl.open(t)
			files := testVersionFiles("example.com/big", "v1.0.0", 4<<20)
			putAll(t, c, files)
			zip := "example.com/big/@v/v1.0.0.zip"
			f, err := c.Get(ctx, zip)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			head := make([]byte, 1<<20)
			if _, err := io.ReadFull(f, head); err != nil {
				t.Fatal(err)
			}
			res, err := testEvictor(t, Eviction{MaxAge: time.Hour}, c, time.Now().Add(48*time.Hour)).run(ctx)
			if err != nil || res.Removed != 3 {
				t.Fatalf("run = %+v, %v; want the version removed", res, err)
			}
			rest, err := io.ReadAll(f)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(head) + string(rest); got != files[zip] {
				t.Errorf("read %d bytes after eviction, want the whole %d", len(got), len(files[zip]))
			}
		})
	}
}

func TestEvictionLeavesAlonePublishedVersionsAndWhatIsBeingServed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cache, hosted := DirCacher(filepath.Join(dir, "cache")), DirCacher(filepath.Join(dir, "hosted"))
	published := testVersionFiles("corp.example.com/lib", "v1.0.0", 100)
	putAll(t, hosted, published)
	served, other := testVersionFiles("example.com/served", "v1.0.0", 100), testVersionFiles("example.com/other", "v1.0.0", 100)
	putAll(t, cache, served)
	putAll(t, cache, other)
	var serving servingSet
	serving.add("example.com/served/@v/v1.0.0.zip")
	e, err := newEvictor(Eviction{MaxAge: time.Hour, MaxBytes: 1}, cache, serving.has, slog.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	if _, err := e.run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cachedSet(t, hosted); len(got) != 3 {
		t.Errorf("published files left: %v", keys(got))
	}
	if got := cachedSet(t, cache); len(got) != 3 || !got["example.com/served/@v/v1.0.0.info"] {
		t.Errorf("cached files left: %v, want the version being served", keys(got))
	}
	serving.done("example.com/served/@v/v1.0.0.zip")
	if _, err := e.run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cachedSet(t, cache); len(got) != 0 {
		t.Errorf("cached files left once served: %v", keys(got))
	}
}

// failingDeleter removes through c until it has removed n files, then
// fails, as a run interrupted midway would stop.
type failingDeleter struct {
	*MemCacher
	n       int
	removed []string
}

func (f *failingDeleter) DeleteUnchanged(ctx context.Context, e CacheEntryInfo) (bool, error) {
	if len(f.removed) == f.n {
		return false, errors.New("interrupted")
	}
	f.removed = append(f.removed, e.Name)
	return f.MemCacher.DeleteUnchanged(ctx, e)
}

func TestEvictionRemovesAVersionZipFirstAndInfoLast(t *testing.T) {
	ctx := context.Background()
	c := &failingDeleter{MemCacher: &MemCacher{}, n: 1}
	putAll(t, c, testVersionFiles("example.com/a", "v1.0.0", 100))
	e := testEvictor(t, Eviction{MaxAge: time.Hour}, c, time.Now().Add(48*time.Hour))
	e.run(ctx)
	got := cachedSet(t, c)
	if got["example.com/a/@v/v1.0.0.zip"] || !got["example.com/a/@v/v1.0.0.mod"] || !got["example.com/a/@v/v1.0.0.info"] {
		t.Errorf("after a run interrupted at the first removal: %v, want .info and .mod", keys(got))
	}
	c.n = 10
	e.run(ctx)
	if want := []string{"example.com/a/@v/v1.0.0.zip", "example.com/a/@v/v1.0.0.mod", "example.com/a/@v/v1.0.0.info"}; !slices.Equal(c.removed, want) {
		t.Errorf("removed in the order %v, want %v", c.removed, want)
	}
}

func TestEvictionKeepsAFileStoredAgainSinceItWasListed(t *testing.T) {
	ctx := context.Background()
	for _, impl := range evictionCachers {
		t.Run(impl.name, func(t *testing.T) {
			c := impl.open(t)
			name := "example.com/a/@v/list"
			putAll(t, c, map[string]string{name: "v1.0.0\n"})
			var listed CacheEntryInfo
			c.(CacheInfoWalker).WalkInfo(ctx, "", func(e CacheEntryInfo) error { listed = e; return nil })
			putAll(t, c, map[string]string{name: "v1.0.0\nv1.1.0\n"})
			removed, err := c.(CacheUnchangedDeleter).DeleteUnchanged(ctx, listed)
			if err != nil || removed {
				t.Fatalf("DeleteUnchanged of a replaced entry = %v, %v; want false, nil", removed, err)
			}
			f, err := c.Get(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(f)
			f.Close()
			if string(got) != "v1.0.0\nv1.1.0\n" {
				t.Errorf("after DeleteUnchanged: %q, want the new content", got)
			}
			if removed, _ := c.(CacheUnchangedDeleter).DeleteUnchanged(ctx, listed); removed {
				t.Error("removed twice")
			}
		})
	}
}

func TestEvictionRunsWhenWritesCrossMaxBytes(t *testing.T) {
	c := &MemCacher{}
	e, err := newEvictor(Eviction{MaxBytes: 2000, Interval: time.Hour}, c, nil, slog.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.minGap = 0
	e.start()
	defer e.stop()
	testwait.For(t, func() bool { return e.total.Load() == 0 }) // the run at start
	for i := range 3 {
		files := testVersionFiles(fmt.Sprintf("example.com/m%d", i), "v1.0.0", 1000)
		putAll(t, c, files)
		for _, content := range files {
			e.noteStored(int64(len(content)))
		}
	}
	testwait.For(t, func() bool { t := e.total.Load(); return t > 0 && t <= 1800 })
}

// TestEvictionWritesDoNotPostponeTheIntervalsRun: with an Interval
// shorter than the gap between runs that writes start, writes crossing
// MaxBytes just after a run must not push the next run back to the gap.
func TestEvictionWritesDoNotPostponeTheIntervalsRun(t *testing.T) {
	c := &MemCacher{}
	var runs atomic.Int64
	metrics := &Metrics{CacheSize: func(CacheSizeMetric) { runs.Add(1) }}
	e, err := newEvictor(Eviction{MaxBytes: 2000, Interval: 50 * time.Millisecond}, c, nil, slog.Default(), metrics)
	if err != nil {
		t.Fatal(err)
	}
	e.minGap = time.Hour
	e.start()
	defer e.stop()
	testwait.For(t, func() bool { return runs.Load() >= 1 }) // the run at start
	files := testVersionFiles("example.com/m", "v1.0.0", 3000)
	putAll(t, c, files)
	for _, content := range files {
		e.noteStored(int64(len(content))) // crosses MaxBytes: a trigger within the gap
	}
	testwait.For(t, func() bool { return runs.Load() >= 3 && e.total.Load() <= 1800 })
}

func TestEvictionNeedsACacherThatListsRecordsAndRemoves(t *testing.T) {
	if _, err := newEvictor(Eviction{MaxAge: time.Hour}, walkOnlyCacher{&MemCacher{}}, nil, slog.Default(), nil); err == nil {
		t.Error("newEvictor accepted a Cacher without the capabilities")
	}
}

func TestEvictionKeysGroupAVersionsFiles(t *testing.T) {
	for _, tc := range []struct {
		name, key string
		rank      int
		protected bool
	}{
		{"example.com/a/@v/v1.0.0.zip", "example.com/a/@v/v1.0.0", 0, false},
		{"example.com/a/@v/v1.0.0.mod", "example.com/a/@v/v1.0.0", 1, false},
		{"example.com/a/@v/v1.0.0.info", "example.com/a/@v/v1.0.0", 2, false},
		{"example.com/!a/@v/v1.0.0-!r!c.1.info", "example.com/!a/@v/v1.0.0-!r!c.1", 2, false},
		{"example.com/a/@v/master.info", "example.com/a/@v/master.info", -1, false},
		{"example.com/a/@v/list", "example.com/a/@v/list", -1, false},
		{"example.com/a/@latest", "example.com/a/@latest", -1, false},
		{"sumdb/sum.golang.org/verified/latest", "sumdb/sum.golang.org/verified/latest", -1, true},
		{"sumdb/sum.golang.org/lookup/example.com/a@v1.0.0", "sumdb/sum.golang.org/lookup/example.com/a@v1.0.0", -1, false},
	} {
		key, rank, protected := evictionKey(tc.name)
		if key != tc.key || rank != tc.rank || protected != tc.protected {
			t.Errorf("evictionKey(%q) = %q, %d, %v; want %q, %d, %v", tc.name, key, rank, protected, tc.key, tc.rank, tc.protected)
		}
	}
}

// TestEvictionSharedDirectoryIsNeverCorrupted has two evictors in this
// process and one in a second process run over one directory while
// versions are stored into it again and again: every file left is whole
// and the one its name says, nothing else is left behind, and a last run
// brings the size under the cap.
func TestEvictionSharedDirectoryIsNeverCorrupted(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "cache")
	c := DirCacher(dir)
	const versions = 60
	all := map[string]string{}
	for i := range versions {
		for name, content := range testVersionFiles(fmt.Sprintf("example.com/m%d", i), "v1.0.0", 5000) {
			all[name] = content
		}
	}
	putAll(t, c, all)
	cfg := Eviction{MaxBytes: 100_000, MaxAge: 2 * time.Hour}
	helper := helperProcess(t, "TestHelperEvict", "HELPER_CACHE_DIR="+dir)
	var out bytes.Buffer
	helper.Stdout, helper.Stderr = &out, &out
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			e := testEvictor(t, cfg, DirCacher(dir), time.Now())
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := e.run(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// Store and use again while they run: some of it is removed, some
	// removals find a new file in place.
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range all {
			if !yield(name) {
				return
			}
		}
	})
	for round := range 5 {
		for i, name := range names {
			if i%5 == round {
				if err := c.Put(ctx, name, strings.NewReader(all[name])); err != nil {
					t.Fatal(err)
				}
				use(t, c, time.Now(), name)
			}
		}
	}
	if err := helper.Wait(); err != nil {
		t.Fatalf("second process: %v\n%s", err, out.String())
	}
	close(stop)
	wg.Wait()
	if _, err := testEvictor(t, cfg, c, time.Now()).run(ctx); err != nil {
		t.Fatal(err)
	}
	var total int64
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		name, _ := filepath.Rel(dir, p)
		name = filepath.ToSlash(name)
		if strings.HasPrefix(name, ".goproxy/") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if want, ok := all[name]; !ok || string(data) != want {
			t.Errorf("%s: %d bytes that are not its content (known name: %v)", name, len(data), ok)
		}
		total += int64(len(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total > cfg.MaxBytes {
		t.Errorf("%d bytes left, more than MaxBytes %d", total, cfg.MaxBytes)
	}
}

func TestHelperEvict(t *testing.T) {
	if os.Getenv("HELPER_PROCESS") != "1" {
		t.Skip("run by TestEvictionSharedDirectoryIsNeverCorrupted")
	}
	e := testEvictor(t, Eviction{MaxBytes: 100_000, MaxAge: 2 * time.Hour}, DirCacher(os.Getenv("HELPER_CACHE_DIR")), time.Now())
	for range 20 {
		if _, err := e.run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUsageRecorderHandsOverEachNameOnceWithItsLatestUse(t *testing.T) {
	c := &recordingStore{}
	r := newUsageRecorder(c, slog.Default())
	r.record("b")
	r.record("a")
	first := time.Now()
	r.record("b")
	if err := r.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(c.batches) != 1 || len(c.batches[0]) != 2 || c.batches[0][0].Name != "a" || c.batches[0][1].Name != "b" || c.batches[0][1].Time.Before(first) {
		t.Fatalf("batches: %v", c.batches)
	}
	r.flush(context.Background())
	if len(c.batches) != 1 {
		t.Errorf("an empty flush reached the store: %v", c.batches)
	}
	name := "example.com/a/@v/v1.0.0.info"
	r.record(name)
	if n := testing.AllocsPerRun(1000, func() { r.record(name) }); n != 0 {
		t.Errorf("recording a use of a name already seen allocates %v times", n)
	}
	r.flush(context.Background())
	if n := testing.AllocsPerRun(1000, func() { r.record(name) }); n != 0 {
		t.Errorf("recording a use after a flush allocates %v times", n)
	}
}

// A hot file's uses are recorded once a second: the first of a second
// reaches the store, with that second's time, the rest of that second do
// not touch the map, and the next second's first is recorded again.
func TestUsageRecorderRecordsAHotFileOnceASecond(t *testing.T) {
	c := &recordingStore{}
	r := newUsageRecorder(c, slog.Default())
	second := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r.clock.Store(second.UnixNano())
	var last atomic.Int64
	name := "example.com/a/@v/v1.0.0.mod"
	r.recordOnce(name, &last)
	if err := r.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.recordOnce(name, &last) // the same second: recorded already
	r.flush(context.Background())
	r.clock.Store(second.Add(time.Second).UnixNano())
	r.recordOnce(name, &last)
	r.flush(context.Background())
	if len(c.batches) != 2 || len(c.batches[0]) != 1 || !c.batches[0][0].Time.Equal(second) ||
		len(c.batches[1]) != 1 || !c.batches[1][0].Time.Equal(second.Add(time.Second)) {
		t.Fatalf("batches: %v", c.batches)
	}
}

// A hot file's use dropped because too many names were pending is not
// taken for recorded: once the flush has made room, the next use in the
// same second is recorded, as it was before uses were recorded once a
// second. Otherwise a file used only in that second would look unused.
func TestUsageRecorderRetriesAHotFileWhoseUseWasDropped(t *testing.T) {
	c := &recordingStore{}
	r := newUsageRecorder(c, slog.Default())
	second := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r.clock.Store(second.UnixNano())
	for i := range maxPendingUses {
		r.record("example.com/m/@v/v1.0." + strconv.Itoa(i) + ".info")
	}
	var last atomic.Int64
	name := "example.com/hot/@v/v1.0.0.mod"
	r.recordOnce(name, &last) // dropped: the map is full
	if err := r.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.recordOnce(name, &last) // the same second, room again
	if err := r.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, b := range c.batches {
		for _, u := range b {
			if u.Name == name {
				return
			}
		}
	}
	t.Fatal("the hot file's use never reached the store")
}

func TestUsageRecorderDropsPastItsBoundWithoutWaiting(t *testing.T) {
	c := &recordingStore{block: make(chan struct{})}
	r := newUsageRecorder(c, slog.Default())
	r.start()
	for i := range maxPendingUses + 10 {
		r.record("example.com/m/@v/v1.0." + strconv.Itoa(i) + ".info")
	}
	// The flush started by the overflow waits in the store; recording
	// goes on meanwhile.
	r.record("example.com/late/@v/list")
	close(c.block)
	r.close()
	var n int
	for _, b := range c.batches {
		n += len(b)
	}
	if n < maxPendingUses || n > maxPendingUses+11 {
		t.Errorf("%d uses reached the store", n)
	}
}

type recordingStore struct {
	mu      sync.Mutex
	block   chan struct{}
	batches [][]CacheUse
}

func (s *recordingStore) RecordUses(ctx context.Context, uses []CacheUse) error {
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, uses)
	return nil
}

// TestDirCacherEvictsAFileWhoseNameIsAsLongAsAllowed: a name element may
// be maxElemLen bytes, and DirCacher stores it; moving it aside under a
// longer name must not make it impossible to evict.
func TestDirCacherEvictsAFileWhoseNameIsAsLongAsAllowed(t *testing.T) {
	ctx := context.Background()
	c := DirCacher(filepath.Join(t.TempDir(), "cache"))
	version := "v1.0.0-" + strings.Repeat("a", maxElemLen-len("v1.0.0-")-len(".info"))
	name := "example.com/a/@v/" + version + ".info"
	if err := checkElemLen(name); err != nil {
		t.Fatal(err)
	}
	putAll(t, c, map[string]string{name: `{"Version":"` + version + `"}`})
	var listed CacheEntryInfo
	if err := c.WalkInfo(ctx, "", func(e CacheEntryInfo) error { listed = e; return nil }); err != nil {
		t.Fatal(err)
	}
	removed, err := c.DeleteUnchanged(ctx, listed)
	if err != nil || !removed {
		t.Fatalf("DeleteUnchanged(%d-byte element) = %v, %v; want true, nil", len(version)+len(".info"), removed, err)
	}
	if _, err := c.Stat(ctx, name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after DeleteUnchanged: Stat = %v, want not found", err)
	}
}

// refusingDeleter reports one name as changed since it was listed, as
// when another process stores it again, and removes the rest.
type refusingDeleter struct {
	*MemCacher
	refused string
}

func (r *refusingDeleter) DeleteUnchanged(ctx context.Context, e CacheEntryInfo) (bool, error) {
	if e.Name == r.refused {
		return false, nil
	}
	return r.MemCacher.DeleteUnchanged(ctx, e)
}

// TestEvictionCountsWhatAnAgeRemovalLeftOfAVersion: a version removed by
// age only in part (its .zip gone, its .mod stored again meanwhile) weighs
// what is left of it when the run then works out what to remove by size.
func TestEvictionCountsWhatAnAgeRemovalLeftOfAVersion(t *testing.T) {
	ctx := context.Background()
	c := &refusingDeleter{MemCacher: &MemCacher{}, refused: "example.com/old/@v/v1.0.0.mod"}
	putAll(t, c, testVersionFiles("example.com/old", "v1.0.0", 1000))
	now := time.Now()
	use(t, c, now.Add(-48*time.Hour), "example.com/old/@v/v1.0.0.zip")
	putAll(t, c, map[string]string{"example.com/recent/@v/list": strings.Repeat("v1.0.0\n", 20)})
	use(t, c, now.Add(2*time.Hour), "example.com/recent/@v/list")
	// The old version's last use is its files' storing, now: past MaxAge
	// two hours later; the list was used since.
	res, err := testEvictor(t, Eviction{MaxAge: time.Hour, MaxBytes: 100}, c, now.Add(3*time.Hour)).run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes > 100 {
		t.Errorf("run = %+v: %d bytes left, over MaxBytes; left %v", res, res.Bytes, keys(cachedSet(t, c)))
	}
}
