package goproxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// faultyGraph is a module graph with zips on both sides of the Range
// threshold: Graph(10) and four modules whose zips are 0.6 to 3 MB.
var faultyGraph = sync.OnceValues(func() ([]*moduletest.Version, error) {
	dir, err := fixtureDir("goproxy-faulty-graph-")
	if err != nil {
		return nil, err
	}
	vs := moduletest.Graph(10)
	for i, size := range []int64{600 << 10, 1 << 20, 2 << 20, 3 << 20} {
		v, err := moduletest.LargeVersion(dir, fmt.Sprintf("example.com/large%d", i), "v1.0.0", size)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, nil
})

// faultModes are the ways of failing the reliability tests inject at 30%.
var faultModes = []struct {
	name string
	set  func(f *moduletest.Faults, rate float64)
	met  func(c moduletest.FaultCounts) int64
}{
	{"502", func(f *moduletest.Faults, r float64) { f.FailFraction = r }, func(c moduletest.FaultCounts) int64 { return c.Failed }},
	{"503 with Retry-After", func(f *moduletest.Faults, r float64) { f.UnavailableFraction = r }, func(c moduletest.FaultCounts) int64 { return c.Unavailable }},
	{"429 with Retry-After", func(f *moduletest.Faults, r float64) { f.TooManyFraction = r }, func(c moduletest.FaultCounts) int64 { return c.TooMany }},
	{"reset before the header", func(f *moduletest.Faults, r float64) { f.ResetFraction = r }, func(c moduletest.FaultCounts) int64 { return c.Reset }},
	{"header never sent", func(f *moduletest.Faults, r float64) { f.StallHeadersFraction = r }, func(c moduletest.FaultCounts) int64 { return c.StalledHeaders }},
	{"200 to a Range request", func(f *moduletest.Faults, r float64) { f.RangeIgnoredFraction = r }, func(c moduletest.FaultCounts) int64 { return c.RangeIgnored }},
	{"flapping validators", func(f *moduletest.Faults, r float64) { f.FlapFraction = r }, func(c moduletest.FaultCounts) int64 { return c.Flapped }},
	{"body cut, validators kept", func(f *moduletest.Faults, r float64) { f.CutFraction = r }, func(c moduletest.FaultCounts) int64 { return c.Cut }},
	{"body cut without validators", func(f *moduletest.Faults, r float64) { f.CutUnvalidatedFraction = r }, func(c moduletest.FaultCounts) int64 { return c.CutUnvalidated }},
	{"body stalled midway", func(f *moduletest.Faults, r float64) { f.StallBodyFraction = r }, func(c moduletest.FaultCounts) int64 { return c.StalledBody }},
}

// TestGoCommandThroughFaults runs go mod download through a cold proxy,
// several times, while the upstream and the checksum database fail 30% of
// their requests in one way (or in all at once): every run must succeed at
// the first attempt, with the upstream's bytes, every fault having been met.
func TestGoCommandThroughFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs, err := faultyGraph()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, v := range vs {
		zip, err := v.OpenZip()
		if err != nil {
			t.Fatal(err)
		}
		want[v.Path+"@"+v.Version], _ = io.ReadAll(zip)
		zip.Close()
	}
	const rate, runs = 0.3, 3
	type mode struct {
		name  string
		set   func(f *moduletest.Faults)
		met   func(c moduletest.FaultCounts) []string // the kinds not met yet
		until int                                     // most runs to meet them all
	}
	var modes []mode
	for _, m := range faultModes {
		modes = append(modes, mode{
			name: m.name,
			set:  func(f *moduletest.Faults) { m.set(f, rate) },
			met: func(c moduletest.FaultCounts) []string {
				if m.met(c) == 0 {
					return []string{m.name}
				}
				return nil
			},
			until: runs,
		})
	}
	modes = append(modes, mode{
		name: "all at once",
		set: func(f *moduletest.Faults) {
			for _, m := range faultModes {
				m.set(f, rate/float64(len(faultModes)))
			}
		},
		met: func(c moduletest.FaultCounts) []string {
			var missing []string
			for _, m := range faultModes {
				if m.met(c) == 0 {
					missing = append(missing, m.name)
				}
			}
			return missing
		},
		// At 3% a kind is met a few times a run; the runs go on until
		// each has been.
		until: 3 * runs,
	})
	for i, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up := moduletest.NewServer(vs)
			defer up.Close()
			upFaults := &moduletest.Faults{Seed: uint64(i)}
			m.set(upFaults)
			upSrv := httptest.NewServer(upFaults.Wrap(up.Handler()))
			defer closeNow(upSrv)
			db := newTestSumDB(t, vs)
			dbFaults := &moduletest.Faults{Seed: uint64(100 + i)}
			m.set(dbFaults)
			dbSrv := httptest.NewServer(dbFaults.Wrap(db.Config.Handler))
			defer closeNow(dbSrv)

			gocmd := gocmdtest.New(t)
			gocmd.Set("GOSUMDB", db.vkey) // through the proxy
			gocmd.WriteGoMod(moduletest.RootGoMod(vs))
			var counts moduletest.FaultCounts
			for run := 1; ; run++ {
				p := newTestProxy(t, upSrv.URL, "GOSUMDB="+db.vkey+" "+dbSrv.URL)
				// Stalls are cut soon: the test waits for each.
				p.Download.HeaderTimeout = 250 * time.Millisecond
				p.Download.BodyIdleTimeout = 250 * time.Millisecond
				srv := httptest.NewServer(p)
				gocmd.Set("GOPROXY", srv.URL)
				gocmd.FreshModCache(t)
				os.Remove(filepath.Join(gocmd.Dir, "go.sum"))
				out, stderr, err := gocmd.Run("mod", "download", "-json")
				srv.Close()
				if err != nil {
					t.Fatalf("run %d: %v\n%s\nupstream faults %+v, checksum database faults %+v", run, err, stderr, upFaults.Counts(), dbFaults.Counts())
				}
				checkDownloaded(t, out, want)
				counts = addCounts(upFaults.Counts(), dbFaults.Counts())
				t.Logf("after run %d: upstream %d requests, faults %+v; checksum database %d requests, faults %+v",
					run, upFaults.Requests(), upFaults.Counts(), dbFaults.Requests(), dbFaults.Counts())
				if missing := m.met(counts); run >= runs && (len(missing) == 0 || run >= m.until) {
					if len(missing) > 0 {
						t.Errorf("after %d runs, no fault of these kinds was injected: %v", run, missing)
					}
					break
				}
			}
		})
	}
}

// closeNow closes a test server without waiting for handlers that stall
// until their client goes away.
func closeNow(s *httptest.Server) {
	s.CloseClientConnections()
	s.Close()
}

// checkDownloaded checks the output of go mod download -json: every module
// downloaded, with the zip the upstream has.
func checkDownloaded(t *testing.T, out string, want map[string][]byte) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	n := 0
	for dec.More() {
		var m struct{ Path, Version, Zip, Error string }
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(m.Zip)
		if w, ok := want[m.Path+"@"+m.Version]; m.Error != "" || err != nil || !ok || !bytes.Equal(got, w) {
			t.Errorf("%s@%s: %q %v: the zip differs from the upstream's", m.Path, m.Version, m.Error, err)
		}
		n++
	}
	if n < 14 {
		t.Errorf("go mod download fetched %d modules, want 14 at least", n)
	}
}

func addCounts(a, b moduletest.FaultCounts) moduletest.FaultCounts {
	return moduletest.FaultCounts{
		TooMany: a.TooMany + b.TooMany, Failed: a.Failed + b.Failed, Unavailable: a.Unavailable + b.Unavailable,
		Reset: a.Reset + b.Reset, StalledHeaders: a.StalledHeaders + b.StalledHeaders, RangeIgnored: a.RangeIgnored + b.RangeIgnored,
		Flapped: a.Flapped + b.Flapped, Cut: a.Cut + b.Cut, CutUnvalidated: a.CutUnvalidated + b.CutUnvalidated,
		StalledBody: a.StalledBody + b.StalledBody,
	}
}
