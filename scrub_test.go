package goproxy

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// graphVersion finds a version of a generated graph.
func graphVersion(t *testing.T, vs []*moduletest.Version, path, version string) *moduletest.Version {
	t.Helper()
	for _, v := range vs {
		if v.Path == path && v.Version == version {
			return v
		}
	}
	t.Fatalf("no %s@%s in the graph", path, version)
	return nil
}

// TestScrubRemovesWhatWentBadOnDiskAndTheNextRequestFetchesAGoodCopy
// alters cached files on disk: a zip that is still a valid zip but not
// the one the checksum database recorded, a zip cut short, a .mod edited
// (and served from memory until then). A scrub reports each, logs it at
// error level, counts it in the metrics and removes it; the next requests
// fetch good copies, and a second scrub finds nothing.
func TestScrubRemovesWhatWentBadOnDiskAndTheNextRequestFetchesAGoodCopy(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	var log syncBuffer
	p := newTestProxy(t, up.URL, "GOSUMDB="+db.vkey+" "+db.URL)
	dir := t.TempDir()
	p.Cacher = DirCacher(dir)
	p.Logger = newBufferLogger(&log)
	var mu sync.Mutex
	var metrics []ScrubMetric
	p.Metrics.Scrub = func(m ScrubMetric) {
		mu.Lock()
		metrics = append(metrics, m)
		mu.Unlock()
	}
	files := []string{
		"example.com/mod000/@v/v1.1.0.zip", // to be tampered with
		"example.com/mod001/@v/v1.0.0.zip", // to be cut short
		"example.com/mod002/@v/v1.0.0.mod", // to be edited
		"example.com/mod004/@v/v1.0.0.zip", // left alone
		"example.com/mod004/@v/v1.0.0.mod",
	}
	for _, f := range files {
		if w := do(p, "GET", "/"+f); w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", f, w.Code, w.Body)
		}
	}
	testwait.For(t, p.flights.idle)

	tampered := graphVersion(t, vs, "example.com/mod000", "v1.1.0")
	if err := os.WriteFile(filepath.Join(dir, files[0]), tamperZip(t, tampered.Zip), 0o644); err != nil {
		t.Fatal(err)
	}
	cut := graphVersion(t, vs, "example.com/mod001", "v1.0.0")
	if err := os.WriteFile(filepath.Join(dir, files[1]), cut.Zip[:len(cut.Zip)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	edited := graphVersion(t, vs, "example.com/mod002", "v1.0.0")
	if err := os.WriteFile(filepath.Join(dir, files[2]), append(bytes.Clone(edited.Mod), "require evil.example v1.0.0\n"...), 0o644); err != nil {
		t.Fatal(err)
	}

	rep, err := p.ScrubNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ScrubOutcome{files[0]: ScrubMismatch, files[1]: ScrubInvalid, files[2]: ScrubMismatch}
	if len(rep.Problems) != len(want) {
		t.Errorf("problems %+v, want %v", rep.Problems, want)
	}
	for _, pr := range rep.Problems {
		if want[pr.Name] != pr.Outcome || !pr.Removed || pr.Published {
			t.Errorf("%s: %s, removed %v, published %v; want %s, removed", pr.Name, pr.Outcome, pr.Removed, pr.Published, want[pr.Name])
		}
		t.Logf("%s: %v", pr.Name, pr.Err)
	}
	if rep.Checked < len(files) || rep.Resumed {
		t.Errorf("checked %d files, resumed %v", rep.Checked, rep.Resumed)
	}
	mu.Lock()
	removed := 0
	for _, m := range metrics {
		if m.Removed {
			removed++
		}
	}
	mu.Unlock()
	if removed != len(want) || len(metrics) != rep.Checked {
		t.Errorf("metrics: %+v", metrics)
	}
	if n := strings.Count(log.String(), "level=ERROR msg=\"scrub: "); n != len(want) {
		t.Errorf("%d errors logged by the scrub, want %d:\n%s", n, len(want), log.String())
	}

	for _, f := range files[:3] {
		before := up.Requests("/" + f)
		w := do(p, "GET", "/"+f)
		if w.Code != http.StatusOK {
			t.Fatalf("%s after the scrub: %d %s", f, w.Code, w.Body)
		}
		if up.Requests("/"+f) != before+1 {
			t.Errorf("%s was not fetched again", f)
		}
		var good []byte
		switch f {
		case files[0]:
			good = tampered.Zip
		case files[1]:
			good = cut.Zip
		case files[2]:
			good = edited.Mod
		}
		if !bytes.Equal(w.Body.Bytes(), good) {
			t.Errorf("%s: not the upstream's copy", f)
		}
	}
	testwait.For(t, p.flights.idle)
	if rep, err := p.ScrubNow(context.Background()); err != nil || len(rep.Problems) != 0 {
		t.Errorf("a second scrub: %+v, %v", rep, err)
	}
}

// TestScrubResumesWhereItWasInterrupted cancels a scrub after its first
// file: the next one goes on from there, checking each file once.
func TestScrubResumesWhereItWasInterrupted(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := newTestProxy(t, up.URL)
	p.Cacher = DirCacher(t.TempDir())
	p.Scrub.BytesPerSecond = -1
	var checked []string
	var cancel context.CancelFunc
	p.Metrics.Scrub = func(m ScrubMetric) {
		if cancel != nil {
			cancel()
		}
	}
	for _, v := range vs[:6] {
		if w := do(p, "GET", "/"+v.Path+"/@v/"+v.Version+".zip"); w.Code != http.StatusOK {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		checked = append(checked, v.Path+"@"+v.Version)
	}
	testwait.For(t, p.flights.idle)

	ctx, c := context.WithCancel(context.Background())
	cancel = c
	rep, err := p.ScrubNow(ctx)
	if !errors.Is(err, context.Canceled) || rep.Checked != 1 {
		t.Fatalf("the interrupted scrub: %+v, %v", rep, err)
	}
	cancel = nil
	rep, err = p.ScrubNow(context.Background())
	if err != nil || !rep.Resumed || rep.Checked != len(checked)-1 {
		t.Errorf("the resumed scrub: %+v, %v; want the %d files left", rep, err, len(checked)-1)
	}
	rep, err = p.ScrubNow(context.Background())
	if err != nil || rep.Resumed || rep.Checked != len(checked) {
		t.Errorf("the next scrub: %+v, %v; want all %d files, afresh", rep, err, len(checked))
	}
}

// TestScrubChecksPublishedZipsAndNeverRemovesThem damages a published
// zip: a scrub reports it, and leaves it where it is.
func TestScrubChecksPublishedZipsAndNeverRemovesThem(t *testing.T) {
	p := newTestProxy(t, "off")
	hosted := t.TempDir()
	p.Hosted = DirCacher(hosted)
	zip := makeZip(t, "example.com/corp@v1.0.0/go.mod", "module example.com/corp\n", "example.com/corp@v1.0.0/corp.go", "package corp\n")
	if err := p.Publish(context.Background(), "example.com/corp", "v1.0.0", bytes.NewReader(zip)); err != nil {
		t.Fatal(err)
	}
	name := "example.com/corp/@v/v1.0.0.zip"
	if err := os.WriteFile(filepath.Join(hosted, name), zip[:len(zip)-10], 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := p.ScrubNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Name != name || !rep.Problems[0].Published || rep.Problems[0].Removed ||
		rep.Problems[0].Outcome != ScrubInvalid {
		t.Fatalf("problems: %+v", rep.Problems)
	}
	if !slices.Contains(cachedNames(p.Hosted), name) {
		t.Error("the scrub removed a published zip")
	}
}

// TestScrubQuarantinesWhatItRemoves keeps a copy of a bad file in the
// quarantine store.
func TestScrubQuarantinesWhatItRemoves(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := newTestProxy(t, up.URL)
	quarantine := &MemCacher{}
	p.Scrub.Quarantine = quarantine
	name := "example.com/mod000/@v/v1.0.0.zip"
	if w := do(p, "GET", "/"+name); w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	testwait.For(t, p.flights.idle)
	bad := []byte("not a zip")
	if err := p.Cacher.Put(context.Background(), name, bytes.NewReader(bad)); err != nil {
		t.Fatal(err)
	}
	rep, err := p.ScrubNow(context.Background())
	if err != nil || len(rep.Problems) != 1 || !rep.Problems[0].Quarantined || !rep.Problems[0].Removed {
		t.Fatalf("%+v, %v", rep, err)
	}
	cf, err := quarantine.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	var got bytes.Buffer
	got.ReadFrom(cf)
	if !bytes.Equal(got.Bytes(), bad) {
		t.Errorf("quarantined %q", got.Bytes())
	}
}

// TestScrubIsNoUseForEviction scrubs a DirCacher whose files were last
// used days ago: their last uses (access times) are what they were, even
// though reading a file moves its access time on most file systems.
func TestScrubIsNoUseForEviction(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := newTestProxy(t, up.URL)
	dir := t.TempDir()
	p.Cacher = DirCacher(dir)
	name := "example.com/mod000/@v/v1.0.0.zip"
	if w := do(p, "GET", "/"+name); w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	testwait.For(t, p.flights.idle)
	lastUse := time.Now().Add(-10 * 24 * time.Hour).Truncate(time.Second)
	if err := os.Chtimes(filepath.Join(dir, name), lastUse, lastUse.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if rep, err := p.ScrubNow(context.Background()); err != nil || rep.Checked == 0 {
		t.Fatalf("%+v, %v", rep, err)
	}
	fi, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if got := accessTime(fi); !got.Equal(lastUse) {
		t.Errorf("last use %v after the scrub, was %v", got, lastUse)
	}
}
