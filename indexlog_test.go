package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// indexLogs are the CacheIndexLog implementations every feed test runs on;
// reopen gives a new value over the same storage, as a restart would.
var indexLogs = []struct {
	name string
	open func(t testing.TB) (log CacheIndexLog, reopen func() CacheIndexLog)
}{
	{"DirCacher", func(t testing.TB) (CacheIndexLog, func() CacheIndexLog) {
		dir := filepath.Join(t.TempDir(), "cache")
		return DirCacher(dir), func() CacheIndexLog { return DirCacher(dir) }
	}},
	{"MemCacher", func(t testing.TB) (CacheIndexLog, func() CacheIndexLog) {
		c := &MemCacher{}
		return c, func() CacheIndexLog { return c }
	}},
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestIndexLogIsCreatedOnceThenAppendedWithIncreasingTimes(t *testing.T) {
	ctx := context.Background()
	for _, impl := range indexLogs {
		t.Run(impl.name, func(t *testing.T) {
			log, reopen := impl.open(t)
			if _, err := log.ReadIndex(ctx, time.Time{}, 10); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("ReadIndex before CreateIndex: %v, want ErrNotExist", err)
			}
			if err := log.AppendIndex(ctx, []IndexEntry{{"example.com/a", "v1.0.0", t0}}); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("AppendIndex before CreateIndex: %v, want ErrNotExist", err)
			}
			err := log.CreateIndex(ctx, []IndexEntry{
				{"example.com/b", "v1.0.0", t0.Add(time.Hour)},
				{"example.com/a", "v1.0.0", t0},
				{"example.com/a", "v1.1.0", t0}, // a tie with the one before
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := log.CreateIndex(ctx, nil); !errors.Is(err, fs.ErrExist) {
				t.Errorf("second CreateIndex: %v, want ErrExist", err)
			}
			// An entry older than the last is listed after it all the same.
			if err := log.AppendIndex(ctx, []IndexEntry{{"example.com/c", "v0.1.0", t0.Add(-time.Hour)}}); err != nil {
				t.Fatal(err)
			}
			got, err := reopen().ReadIndex(ctx, time.Time{}, 10)
			if err != nil {
				t.Fatal(err)
			}
			want := []IndexEntry{
				{"example.com/a", "v1.0.0", t0},
				{"example.com/a", "v1.1.0", t0.Add(1)},
				{"example.com/b", "v1.0.0", t0.Add(time.Hour)},
				{"example.com/c", "v0.1.0", t0.Add(time.Hour + 1)},
			}
			if !sameEntries(got, want) {
				t.Fatalf("feed after a restart:\n got %v\nwant %v", got, want)
			}
			page, _ := reopen().ReadIndex(ctx, t0.Add(1), 2)
			if !sameEntries(page, want[1:3]) {
				t.Errorf("page since the second entry, limit 2: %v, want %v", page, want[1:3])
			}
			if page, _ := reopen().ReadIndex(ctx, t0.Add(2*time.Hour), 2); len(page) != 0 {
				t.Errorf("page since after the last entry: %v", page)
			}
		})
	}
}

func sameEntries(a, b []IndexEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Path != b[i].Path || a[i].Version != b[i].Version || !a[i].Timestamp.Equal(b[i].Timestamp) {
			return false
		}
	}
	return true
}

func TestIndexLogPagesMatchAnInMemoryReference(t *testing.T) {
	ctx := context.Background()
	d := DirCacher(filepath.Join(t.TempDir(), "cache"))
	ref := &memIndexLog{}
	var entries []IndexEntry
	for i := range 3000 {
		// Paths of very different lengths, so that offsets land anywhere.
		path := "example.com/" + strings.Repeat("m", rand.IntN(300)) + strconv.Itoa(i)
		entries = append(entries, IndexEntry{path, "v1.0.0", t0.Add(time.Duration(rand.IntN(100000)) * time.Millisecond)})
	}
	for _, l := range []CacheIndexLog{d, ref} {
		if err := l.CreateIndex(ctx, entries[:2000]); err != nil {
			t.Fatal(err)
		}
		for i := 2000; i < 3000; i += 100 {
			if err := l.AppendIndex(ctx, entries[i:i+100]); err != nil {
				t.Fatal(err)
			}
		}
	}
	all, _ := ref.ReadIndex(ctx, time.Time{}, 5000)
	for range 200 {
		since := all[rand.IntN(len(all))].Timestamp.Add(time.Duration(rand.IntN(3)-1) * time.Nanosecond)
		limit := 1 + rand.IntN(2000)
		got, err := d.ReadIndex(ctx, since, limit)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := ref.ReadIndex(ctx, since, limit)
		if !sameEntries(got, want) {
			t.Fatalf("since %v limit %d: got %d entries, want %d", since, limit, len(got), len(want))
		}
	}
	// Paging the way index.golang.org's readers do reaches every entry once.
	var seen int
	since := time.Time{}
	for {
		page, _ := d.ReadIndex(ctx, since, 2000)
		if len(page) == 0 {
			break
		}
		seen += len(page)
		since = page[len(page)-1].Timestamp.Add(time.Nanosecond)
	}
	if seen != 3000 {
		t.Errorf("paging saw %d entries, want 3000", seen)
	}
}

func TestIndexJournalSkipsTornAndDamagedLines(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "cache")
	d := DirCacher(dir)
	if err := d.CreateIndex(ctx, []IndexEntry{{"example.com/a", "v1.0.0", t0}, {"example.com/b", "v1.0.0", t0.Add(time.Second)}}); err != nil {
		t.Fatal(err)
	}
	journal := filepath.Join(dir, ".goproxy", "index")
	f, _ := os.OpenFile(journal, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("garbage in the middle\n" + strings.Repeat("x", 3*maxIndexLine) + "\n")
	f.Close()
	d.AppendIndex(ctx, []IndexEntry{{"example.com/c", "v1.0.0", t0.Add(2 * time.Second)}})
	// A crash in the middle of an append leaves a torn last line.
	f, _ = os.OpenFile(journal, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"Path":"example.com/torn","Vers`)
	f.Close()
	got, err := d.ReadIndex(ctx, time.Time{}, 10)
	if err != nil || len(got) != 3 || got[2].Path != "example.com/c" {
		t.Fatalf("with damage and a torn end: %v, %v", got, err)
	}
	if got, _ := d.ReadIndex(ctx, t0.Add(time.Second+1), 10); len(got) != 1 || got[0].Path != "example.com/c" {
		t.Errorf("binary search across damage: %v", got)
	}
	if err := d.AppendIndex(ctx, []IndexEntry{{"example.com/d", "v1.0.0", t0}}); err != nil {
		t.Fatal(err)
	}
	got, _ = d.ReadIndex(ctx, time.Time{}, 10)
	if len(got) != 4 || got[3].Path != "example.com/d" || !got[3].Timestamp.Equal(t0.Add(2*time.Second+1)) {
		t.Errorf("after appending past a torn line: %v", got)
	}
}

// TestIndexJournalSharedByTwoProcesses appends from this process, through
// two DirCacher values, and from a second process at once: every entry
// arrives whole, and timestamps strictly increase in file order.
func TestIndexJournalSharedByTwoProcesses(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "cache")
	if err := DirCacher(dir).CreateIndex(ctx, nil); err != nil {
		t.Fatal(err)
	}
	const each = 150
	cmd := helperProcess(t, "TestHelperAppendIndex", "HELPER_CACHE_DIR="+dir, "HELPER_COUNT="+strconv.Itoa(each))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			d := DirCacher(dir)
			for i := range each {
				if err := d.AppendIndex(ctx, []IndexEntry{{fmt.Sprintf("example.com/in%d", w), fmt.Sprintf("v1.0.%d", i), time.Now()}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, out.String())
	}
	got, err := DirCacher(dir).ReadIndex(ctx, time.Time{}, 10*each)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3*each {
		t.Fatalf("%d entries, want %d", len(got), 3*each)
	}
	next := map[string]int{}
	for i, e := range got {
		if i > 0 && !e.Timestamp.After(got[i-1].Timestamp) {
			t.Fatalf("entry %d (%v) is not after entry %d (%v)", i, e.Timestamp, i-1, got[i-1].Timestamp)
		}
		// Each writer's own entries keep their order.
		if want := fmt.Sprintf("v1.0.%d", next[e.Path]); e.Version != want {
			t.Fatalf("%s: %s, want %s", e.Path, e.Version, want)
		}
		next[e.Path]++
	}
}

// helperProcess runs this test binary again for the test named, as a
// second process sharing a directory with this one.
func helperProcess(t *testing.T, test string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), append(env, "HELPER_PROCESS=1")...)
	return cmd
}

func TestHelperAppendIndex(t *testing.T) {
	if os.Getenv("HELPER_PROCESS") != "1" {
		t.Skip("run by TestIndexJournalSharedByTwoProcesses")
	}
	d := DirCacher(os.Getenv("HELPER_CACHE_DIR"))
	n, _ := strconv.Atoi(os.Getenv("HELPER_COUNT"))
	for i := range n {
		if err := d.AppendIndex(context.Background(), []IndexEntry{{"example.com/other", fmt.Sprintf("v1.0.%d", i), time.Now()}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIndexLogIsCreatedFromTheCacheOnceThenReadWithoutWalking(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cache, hosted := DirCacher(filepath.Join(dir, "cache")), DirCacher(filepath.Join(dir, "hosted"))
	info := func(c DirCacher, name string, at time.Time) {
		t.Helper()
		if err := c.Put(ctx, name, strings.NewReader("{}")); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(filepath.Join(string(c), name), at, at)
	}
	info(cache, "example.com/a/@v/v1.0.0.info", t0)
	info(cache, "example.com/a/@v/v1.0.0.mod", t0)
	info(cache, "example.com/a/@v/master.info", t0) // a query answer: not a version
	info(cache, "example.com/!upper/@v/v2.0.0.info", t0.Add(2*time.Second))
	info(hosted, "corp.example.com/lib/@v/v0.1.0.info", t0.Add(time.Second))

	x := newIndexLog(cache, hosted, slog.Default())
	// Stored while the feed does not exist yet: kept for when it does.
	x.add(ctx, "example.com/new", "v1.0.0", t0.Add(time.Hour))
	got, err := x.page(ctx, time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []IndexEntry{
		{"example.com/a", "v1.0.0", t0},
		{"corp.example.com/lib", "v0.1.0", t0.Add(time.Second)},
		{"example.com/Upper", "v2.0.0", t0.Add(2 * time.Second)},
		{"example.com/new", "v1.0.0", t0.Add(time.Hour)},
	}
	if !sameEntries(got, want) {
		t.Fatalf("feed created from the stores:\n got %v\nwant %v", got, want)
	}
	x.add(ctx, "example.com/later", "v1.0.0", t0.Add(2*time.Hour))

	// After a restart the feed is read, not rebuilt: what the walk would
	// find no longer matters.
	os.RemoveAll(filepath.Join(dir, "cache", "example.com"))
	got, err = newIndexLog(cache, hosted, slog.Default()).page(ctx, t0.Add(time.Hour), 10)
	if err != nil || len(got) != 2 || got[1].Path != "example.com/later" {
		t.Errorf("after a restart: %v, %v", got, err)
	}
}

func TestIndexLogOfACacherWithoutOneIsKeptInMemory(t *testing.T) {
	ctx := context.Background()
	c := walkOnlyCacher{&MemCacher{}}
	c.Put(ctx, "example.com/a/@v/v1.0.0.info", strings.NewReader("{}"))
	x := newIndexLog(c, nil, slog.Default())
	if x.persistent() {
		t.Error("a feed in memory says it is persistent")
	}
	got, err := x.page(ctx, time.Time{}, 10)
	if err != nil || len(got) != 1 || got[0].Path != "example.com/a" {
		t.Errorf("feed: %v, %v", got, err)
	}
}

// walkOnlyCacher hides every capability but Walk.
type walkOnlyCacher struct{ c *MemCacher }

func (w walkOnlyCacher) Get(ctx context.Context, name string) (CachedFile, error) {
	return w.c.Get(ctx, name)
}
func (w walkOnlyCacher) Put(ctx context.Context, name string, r io.ReadSeeker) error {
	return w.c.Put(ctx, name, r)
}
func (w walkOnlyCacher) Walk(ctx context.Context, prefix string, fn func(string) error) error {
	return w.c.Walk(ctx, prefix, fn)
}

// racingCreator is a DirCacher whose walk, as the feed is created from
// it, sees a version stored by this process and the feed created by
// another one.
type racingCreator struct {
	DirCacher
	during func()
}

func (c racingCreator) WalkInfo(ctx context.Context, prefix string, fn func(CacheEntryInfo) error) error {
	c.during()
	return c.DirCacher.WalkInfo(ctx, prefix, fn)
}

// TestIndexLogKeepsWhatWasStoredWhileAnotherProcessCreatedTheFeed: two
// processes create the feed of one cache at once; the one that loses
// must still append the versions it stored during its walk, which the
// other's walk may have missed.
func TestIndexLogKeepsWhatWasStoredWhileAnotherProcessCreatedTheFeed(t *testing.T) {
	ctx := context.Background()
	dir := DirCacher(filepath.Join(t.TempDir(), "cache"))
	var x *indexLog
	c := racingCreator{DirCacher: dir, during: func() {
		// Stored by this process during its walk, after the walk passed.
		x.add(ctx, "example.com/stored", "v1.0.0", t0.Add(time.Hour))
		// The other process's walk found nothing, and it won.
		if err := dir.CreateIndex(ctx, []IndexEntry{{"example.com/other", "v1.0.0", t0}}); err != nil {
			t.Fatal(err)
		}
	}}
	x = newIndexLog(c, nil, slog.Default())
	got, err := x.page(ctx, time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []IndexEntry{{"example.com/other", "v1.0.0", t0}, {"example.com/stored", "v1.0.0", t0.Add(time.Hour)}}
	if !sameEntries(got, want) {
		t.Errorf("feed:\n got %v\nwant %v", got, want)
	}
}
