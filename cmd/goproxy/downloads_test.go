package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// fakeClock is a time that tests move by hand.
type fakeClock struct{ t time.Time }

func newFakeClock() *fakeClock               { return &fakeClock{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }
func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func trackerAt(c *fakeClock) *progressTracker {
	pt := newProgressTracker()
	pt.now = c.now
	return pt
}

// only returns the one download in flight.
func (pt *progressTracker) only(t *testing.T) transfer {
	t.Helper()
	ds := pt.downloads()
	if len(ds) != 1 {
		t.Fatalf("%d downloads in flight, want 1: %+v", len(ds), ds)
	}
	return ds[0]
}

func TestProgressTrackerMeasuresRateAndETA(t *testing.T) {
	clock := newFakeClock()
	pt := trackerAt(clock)
	hook := pt.hook("public")
	hook("example.com/m", "v1.0.0", 0, -1)
	if d := pt.only(t); d.Percent() != -1 || d.ETA() != -1 || d.Rate != 0 {
		t.Errorf("before anything is known: %d %%, ETA %v, rate %v", d.Percent(), d.ETA(), d.Rate)
	}
	for i := 1; i <= 4; i++ {
		clock.advance(250 * time.Millisecond)
		hook("example.com/m", "v1.0.0", int64(i)*256<<10, 10<<20)
	}
	d := pt.only(t)
	if d.Rate != 1<<20 {
		t.Errorf("rate %v B/s, want 1 MiB/s", d.Rate)
	}
	if d.Percent() != 10 || d.ETA() != 9*time.Second {
		t.Errorf("%d %%, ETA %v; want 10 %%, 9s", d.Percent(), d.ETA())
	}
	if d.Label() != "example.com/m@v1.0.0" || d.Repo != "public" {
		t.Errorf("%q in %q", d.Label(), d.Repo)
	}
}

func TestProgressTrackerForgetsEndedDownloads(t *testing.T) {
	clock := newFakeClock()
	pt := trackerAt(clock)
	hook := pt.hook("public")
	t.Run("finished", func(t *testing.T) {
		hook("example.com/done", "v1.0.0", 10, 100)
		hook("example.com/done", "v1.0.0", 100, 100)
		if ds := pt.downloads(); len(ds) != 0 {
			t.Errorf("a finished download is in flight: %+v", ds)
		}
	})
	t.Run("failed: no report for a while", func(t *testing.T) {
		hook("example.com/failed", "v1.0.0", 10, 100)
		clock.advance(staleAfter / 2)
		pt.only(t)
		clock.advance(staleAfter)
		if ds := pt.downloads(); len(ds) != 0 {
			t.Errorf("a download not reported for %v is in flight: %+v", staleAfter*3/2, ds)
		}
	})
	t.Run("two repositories", func(t *testing.T) {
		hook("example.com/m", "v1.0.0", 10, 100)
		pt.hook("corp")("example.com/m", "v1.0.0", 20, 100)
		if ds := pt.downloads(); len(ds) != 2 {
			t.Errorf("%d downloads, want one per repository", len(ds))
		}
	})
}

// listSource is a downloadSource with a fixed list.
type listSource []transfer

func (l listSource) downloads() []transfer { return l }

func TestProgressLinesAreThrottledAndOnlyForLargeDownloads(t *testing.T) {
	clock := newFakeClock()
	start := clock.t
	src := listSource{
		{Repo: "r", Module: "example.com/large", Version: "v1.0.0", Started: start, Done: 1 << 20, Total: 64 << 20, Rate: 1 << 20},
		{Repo: "r", Module: "example.com/small", Version: "v1.0.0", Started: start.Add(25 * time.Second), Done: 1 << 10, Total: 1 << 20},
		{Repo: "r", Module: "example.com/slow", Version: "v1.0.0", Started: start, Done: 1 << 10, Total: -1},
	}
	var buf bytes.Buffer
	l := &lineDisplay{source: src, every: 10 * time.Second, minSize: 16 << 20, minDuration: 30 * time.Second}
	l.setLogger(slog.New(slog.NewJSONHandler(&buf, nil)))
	l.last = map[transferKey]time.Time{}
	for range 40 { // 40 s, a look every second
		clock.advance(time.Second)
		l.report(context.Background(), clock.t)
	}
	counts := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		counts[m["module"].(string)]++
	}
	// large: at 1, 11, 21, 31 s; slow: once it has lasted 30 s, at 30
	// and 40 s; small: never (it lasts 15 s).
	want := map[string]int{"example.com/large@v1.0.0": 4, "example.com/slow@v1.0.0": 2}
	if len(counts) != len(want) || counts["example.com/large@v1.0.0"] != 4 || counts["example.com/slow@v1.0.0"] != 2 {
		t.Errorf("lines by download: %v, want %v\n%s", counts, want, buf.String())
	}
	if !strings.Contains(buf.String(), `"percent":1,`) || !strings.Contains(buf.String(), `"eta":63000000000`) {
		t.Errorf("the large download's line:\n%s", buf.String())
	}
}
