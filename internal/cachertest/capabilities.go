package cachertest

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
)

// The capabilities of eviction and the index feed. A Cacher that keeps
// last uses at a coarse precision (an object store, where each recorded
// use is a write) must be given a precision of a second at most for these
// tests.

func testUses(t *testing.T, c goproxy.Cacher) {
	rec, ok1 := c.(goproxy.CacheUsageRecorder)
	walker, ok2 := c.(goproxy.CacheInfoWalker)
	if !ok1 || !ok2 {
		t.Skip("not a CacheUsageRecorder and CacheInfoWalker")
	}
	const (
		used   = "example.com/a/@v/v1.0.0.zip"
		unused = "example.com/a/@v/v1.0.0.info"
		other  = "example.com/b/@v/list"
	)
	start := time.Now()
	put(t, c, used, pattern(10))
	put(t, c, unused, pattern(20))
	put(t, c, other, pattern(30))
	stored := time.Now()
	// Stores that keep times in whole seconds: let two go by, so that a
	// use now is later than the storing whatever the rounding.
	for time.Now().Before(stored.Truncate(time.Second).Add(2 * time.Second)) {
		time.Sleep(20 * time.Millisecond)
	}
	use := time.Now()
	err := rec.RecordUses(t.Context(), []goproxy.CacheUse{
		{Name: used, Time: use},
		{Name: "example.com/never/@v/list", Time: use}, // not stored: skipped
	})
	if err != nil {
		t.Fatalf("RecordUses: %v", err)
	}
	infos := walkInfo(t, walker, "")
	if got := slices.Sorted(maps.Keys(infos)); !slices.Equal(got, []string{unused, used, other}) {
		t.Fatalf("WalkInfo listed %q, want the three entries stored", got)
	}
	for name, size := range map[string]int64{used: 10, unused: 20, other: 30} {
		e := infos[name]
		if e.Size != size {
			t.Errorf("%s: Size %d, want %d", name, e.Size, size)
		}
		if e.ModTime.Before(start.Add(-clockSlack)) || e.ModTime.After(stored.Add(clockSlack)) {
			t.Errorf("%s: ModTime %v, not when it was stored (%v to %v)", name, e.ModTime, start, stored)
		}
		if e.LastUse.Before(e.ModTime) {
			t.Errorf("%s: LastUse %v is before its ModTime %v", name, e.LastUse, e.ModTime)
		}
	}
	if e := infos[used]; e.LastUse.Before(use.Add(-clockSlack)) || !e.LastUse.After(infos[unused].LastUse) {
		t.Errorf("the entry used at %v has LastUse %v; the unused one %v", use, e.LastUse, infos[unused].LastUse)
	}
	// A use recorded late never moves the last use back.
	if err := rec.RecordUses(t.Context(), []goproxy.CacheUse{{Name: used, Time: use.Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if e := walkInfo(t, walker, "")[used]; e.LastUse.Before(use.Add(-clockSlack)) {
		t.Errorf("an older use moved LastUse back to %v", e.LastUse)
	}
	if got := slices.Sorted(maps.Keys(walkInfo(t, walker, "example.com/a/"))); !slices.Equal(got, []string{unused, used}) {
		t.Errorf("WalkInfo(example.com/a/) = %q", got)
	}
	stop := errors.New("stop")
	if err := walker.WalkInfo(t.Context(), "", func(goproxy.CacheEntryInfo) error { return stop }); err != stop {
		t.Errorf("WalkInfo whose fn fails: %v, want the fn's error", err)
	}
}

func testDeleteUnchanged(t *testing.T, c goproxy.Cacher) {
	d, ok1 := c.(goproxy.CacheUnchangedDeleter)
	walker, ok2 := c.(goproxy.CacheInfoWalker)
	if !ok1 || !ok2 {
		t.Skip("not a CacheUnchangedDeleter and CacheInfoWalker")
	}
	const a, b = "example.com/a/@v/v1.0.0.zip", "example.com/a/@v/list"
	put(t, c, a, pattern(1000))
	put(t, c, b, []byte("v1.0.0\n"))
	infos := walkInfo(t, walker, "")
	removed, err := d.DeleteUnchanged(t.Context(), infos[a])
	if err != nil || !removed {
		t.Fatalf("DeleteUnchanged of an entry as listed: %v, %v; want true", removed, err)
	}
	if f, err := c.Get(t.Context(), a); !errors.Is(err, fs.ErrNotExist) {
		if f != nil {
			f.Close()
		}
		t.Errorf("Get after DeleteUnchanged: %v, want fs.ErrNotExist", err)
	}
	if removed, err := d.DeleteUnchanged(t.Context(), infos[a]); err != nil || removed {
		t.Errorf("DeleteUnchanged of an entry gone: %v, %v; want false, nil", removed, err)
	}
	// Stored again since it was listed, with content of the same size:
	// it must stay.
	put(t, c, b, []byte("v1.1.0\n"))
	if removed, err := d.DeleteUnchanged(t.Context(), infos[b]); err != nil || removed {
		t.Errorf("DeleteUnchanged of an entry stored again since the listing: %v, %v; want false, nil", removed, err)
	}
	if got := get(t, c, b); string(got) != "v1.1.0\n" {
		t.Errorf("after a refused DeleteUnchanged, Get = %q, want the new content", got)
	}
}

func testIndexLog(t *testing.T, c goproxy.Cacher) {
	log, ok := c.(goproxy.CacheIndexLog)
	if !ok {
		t.Skip("not a CacheIndexLog")
	}
	ctx := t.Context()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := log.ReadIndex(ctx, time.Time{}, 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadIndex before CreateIndex: %v, want fs.ErrNotExist", err)
	}
	if err := log.AppendIndex(ctx, []goproxy.IndexEntry{{Path: "example.com/a", Version: "v1.0.0", Timestamp: t0}}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("AppendIndex before CreateIndex: %v, want fs.ErrNotExist", err)
	}
	err := log.CreateIndex(ctx, []goproxy.IndexEntry{
		{Path: "example.com/b", Version: "v1.0.0", Timestamp: t0.Add(time.Hour)},
		{Path: "example.com/a", Version: "v1.0.0", Timestamp: t0},
		{Path: "example.com/a", Version: "v1.1.0", Timestamp: t0}, // a tie with the one before
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := log.CreateIndex(ctx, []goproxy.IndexEntry{{Path: "example.com/z", Version: "v1.0.0", Timestamp: t0}}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second CreateIndex: %v, want fs.ErrExist", err)
	}
	// An entry older than the last is listed after it all the same.
	if err := log.AppendIndex(ctx, []goproxy.IndexEntry{{Path: "example.com/c", Version: "v0.1.0", Timestamp: t0.Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if err := log.AppendIndex(ctx, nil); err != nil {
		t.Errorf("AppendIndex of nothing: %v", err)
	}
	got, err := log.ReadIndex(ctx, time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []goproxy.IndexEntry{
		{Path: "example.com/a", Version: "v1.0.0", Timestamp: t0},
		{Path: "example.com/a", Version: "v1.1.0", Timestamp: t0.Add(1)},
		{Path: "example.com/b", Version: "v1.0.0", Timestamp: t0.Add(time.Hour)},
		{Path: "example.com/c", Version: "v0.1.0", Timestamp: t0.Add(time.Hour + 1)},
	}
	if !sameEntries(got, want) {
		t.Fatalf("feed:\n got %v\nwant %v", got, want)
	}
	if page, _ := log.ReadIndex(ctx, t0.Add(1), 2); !sameEntries(page, want[1:3]) {
		t.Errorf("page since the second entry, limit 2: %v, want %v", page, want[1:3])
	}
	if page, _ := log.ReadIndex(ctx, t0.Add(2*time.Hour), 2); len(page) != 0 {
		t.Errorf("page since after the last entry: %v", page)
	}
}

func testIndexPaging(t *testing.T, c goproxy.Cacher) {
	log, ok := c.(goproxy.CacheIndexLog)
	if !ok {
		t.Skip("not a CacheIndexLog")
	}
	ctx := t.Context()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	var entries []goproxy.IndexEntry
	for i := range 2500 {
		// Paths of very different lengths; many ties and times out of order.
		path := "example.com/" + strings.Repeat("m", rng.IntN(200)) + fmt.Sprint(i)
		entries = append(entries, goproxy.IndexEntry{Path: path, Version: "v1.0.0", Timestamp: t0.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)})
	}
	ref := &referenceLog{}
	if err := log.CreateIndex(ctx, entries[:1200]); err != nil {
		t.Fatal(err)
	}
	ref.create(entries[:1200])
	for i := 1200; i < len(entries); {
		n := min(1+rng.IntN(60), len(entries)-i)
		if err := log.AppendIndex(ctx, entries[i:i+n]); err != nil {
			t.Fatal(err)
		}
		ref.append(entries[i : i+n])
		i += n
	}
	for range 60 {
		since := ref.entries[rng.IntN(len(ref.entries))].Timestamp.Add(time.Duration(rng.IntN(3)-1) * time.Nanosecond)
		limit := 1 + rng.IntN(2000)
		got, err := log.ReadIndex(ctx, since, limit)
		if err != nil {
			t.Fatal(err)
		}
		if want := ref.read(since, limit); !sameEntries(got, want) {
			t.Fatalf("since %v limit %d: got %d entries, want %d", since, limit, len(got), len(want))
		}
	}
	// Paging the way index.golang.org's readers do reaches every entry once.
	var seen []goproxy.IndexEntry
	since := time.Time{}
	for {
		page, err := log.ReadIndex(ctx, since, 2000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		seen = append(seen, page...)
		since = page[len(page)-1].Timestamp.Add(time.Nanosecond)
	}
	if !sameEntries(seen, ref.entries) {
		t.Errorf("paging saw %d entries, want the %d of the reference", len(seen), len(ref.entries))
	}
}

func testIndexConcurrentAppends(t *testing.T, c goproxy.Cacher) {
	log, ok := c.(goproxy.CacheIndexLog)
	if !ok {
		t.Skip("not a CacheIndexLog")
	}
	ctx := t.Context()
	if err := log.CreateIndex(ctx, nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	const writers, appends = 4, 12
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				// Every writer with the same timestamps: only the feed's
				// ordering keeps them apart.
				e := goproxy.IndexEntry{Path: fmt.Sprintf("example.com/w%d", w), Version: fmt.Sprintf("v1.0.%d", i), Timestamp: now}
				if err := log.AppendIndex(ctx, []goproxy.IndexEntry{e}); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, err := log.ReadIndex(ctx, time.Time{}, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*appends {
		t.Fatalf("%d entries after %d appends", len(got), writers*appends)
	}
	seen := map[string]bool{}
	for i, e := range got {
		if i > 0 && !e.Timestamp.After(got[i-1].Timestamp) {
			t.Errorf("entry %d (%v) is not later than the one before (%v)", i, e.Timestamp, got[i-1].Timestamp)
		}
		seen[e.Path+"@"+e.Version] = true
	}
	if len(seen) != writers*appends {
		t.Errorf("%d distinct entries, want %d", len(seen), writers*appends)
	}
	// Each writer's entries in the order it appended them.
	next := map[string]int{}
	for _, e := range got {
		if want := fmt.Sprintf("v1.0.%d", next[e.Path]); e.Version != want {
			t.Errorf("%s: %s listed where %s was due", e.Path, e.Version, want)
		}
		next[e.Path]++
	}
}

// referenceLog is the feed's rules in the simplest form, to compare with.
type referenceLog struct{ entries []goproxy.IndexEntry }

func (r *referenceLog) create(entries []goproxy.IndexEntry) {
	r.entries = slices.Clone(entries)
	slices.SortStableFunc(r.entries, func(a, b goproxy.IndexEntry) int { return a.Timestamp.Compare(b.Timestamp) })
	spread(r.entries, time.Time{})
}

func (r *referenceLog) append(entries []goproxy.IndexEntry) {
	var last time.Time
	if n := len(r.entries); n > 0 {
		last = r.entries[n-1].Timestamp
	}
	start := len(r.entries)
	r.entries = append(r.entries, entries...)
	spread(r.entries[start:], last)
}

func (r *referenceLog) read(since time.Time, limit int) []goproxy.IndexEntry {
	i, _ := slices.BinarySearchFunc(r.entries, since, func(e goproxy.IndexEntry, t time.Time) int { return e.Timestamp.Compare(t) })
	return r.entries[i:min(i+limit, len(r.entries))]
}

// spread makes timestamps strictly increase, each at least a nanosecond
// past the one before (and past last).
func spread(entries []goproxy.IndexEntry, last time.Time) {
	for i := range entries {
		if !entries[i].Timestamp.After(last) {
			entries[i].Timestamp = last.Add(time.Nanosecond)
		}
		last = entries[i].Timestamp
	}
}

func sameEntries(a, b []goproxy.IndexEntry) bool {
	return slices.EqualFunc(a, b, func(x, y goproxy.IndexEntry) bool {
		return x.Path == y.Path && x.Version == y.Version && x.Timestamp.Equal(y.Timestamp)
	})
}

func walkInfo(t *testing.T, w goproxy.CacheInfoWalker, prefix string) map[string]goproxy.CacheEntryInfo {
	t.Helper()
	infos := map[string]goproxy.CacheEntryInfo{}
	err := w.WalkInfo(t.Context(), prefix, func(e goproxy.CacheEntryInfo) error {
		if _, dup := infos[e.Name]; dup {
			t.Errorf("WalkInfo listed %s twice", e.Name)
		}
		infos[e.Name] = e
		return nil
	})
	if err != nil {
		t.Fatalf("WalkInfo(%q): %v", prefix, err)
	}
	return infos
}
