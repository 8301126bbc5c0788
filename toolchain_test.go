package goproxy

import (
	"archive/zip"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// toolchainScript is the bin/go of a test toolchain: the go command
// executes it, with its own arguments, once it has switched to it.
func toolchainScript(goVersion string) []byte {
	return []byte("#!/bin/sh\necho \"test toolchain " + goVersion + " ran: $*\"\n")
}

// heapPeak runs fn, sampling the bytes of heap objects every few
// milliseconds meanwhile, and returns the highest sample above the level
// before fn, measured after a full collection: what fn made the whole
// process hold at once (client, proxy, upstream and checksum database,
// all in this process but the go command).
func heapPeak(fn func()) (peak int64, samples int) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() int64 {
		metrics.Read(sample)
		return int64(sample[0].Value.Uint64())
	}
	runtime.GC()
	debug.FreeOSMemory()
	base := read()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, read()-base)
			samples++
			select {
			case <-t.C:
			case <-stop:
				return
			}
		}
	})
	fn()
	close(stop)
	wg.Wait()
	return peak, samples
}

// TestGOTOOLCHAINSwitchesThroughTheProxy has the go command download a
// toolchain of 256 MiB through the proxy and run it, with GONOSUMDB
// matching golang.org/toolchain on both sides: the proxy verifies it
// against the checksum database all the same, as the go command does,
// and refuses a tampered one.
func TestGOTOOLCHAINSwitchesThroughTheProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command with a 256 MiB toolchain")
	}
	dir := t.TempDir()
	big, err := moduletest.ToolchainVersion(dir, "go1.99.1", runtime.GOOS, runtime.GOARCH, toolchainScript("go1.99.1"), 256<<20+1<<20)
	if err != nil {
		t.Fatal(err)
	}
	small, err := moduletest.ToolchainVersion(dir, "go1.99.2", runtime.GOOS, runtime.GOARCH, toolchainScript("go1.99.2"), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	tampered := makeZip(t, moduletest.ToolchainPath+"@"+small.Version+"/bin/go", "#!/bin/sh\necho pwned\n")
	up := moduletest.NewServer([]*moduletest.Version{big, small})
	defer up.Close()
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/"+moduletest.ToolchainPath+"/@v/"+small.Version+".zip" {
			w.Write(tampered)
			return true
		}
		return false
	})
	db := newTestSumDB(t, []*moduletest.Version{big, small})
	p := newVerifyingProxy(t, up.URL, db, "GONOSUMDB=golang.org/toolchain,example.com")
	p.Cacher = DirCacher(t.TempDir()) // on disk: bounded memory is the point
	srv := httptest.NewServer(p)
	defer srv.Close()

	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	// No URL: the go command reaches the database through the proxy.
	gocmd.Set("GOSUMDB", db.vkey)
	gocmd.Set("GONOSUMDB", "golang.org/toolchain")
	gocmd.WriteGoMod([]byte("module example.com/root\n\ngo 1.21\n"))

	t.Run("a toolchain is downloaded, verified and run in bounded memory", func(t *testing.T) {
		gocmd.Set("GOTOOLCHAIN", "go1.99.1")
		var out, stderr string
		var runErr error
		peak, samples := heapPeak(func() { out, stderr, runErr = gocmd.Run("version") })
		if runErr != nil || !strings.Contains(out, "test toolchain go1.99.1 ran: version") {
			t.Fatalf("GOTOOLCHAIN=go1.99.1 go version: %v\nstdout: %s\nstderr: %s", runErr, out, stderr)
		}
		fi, _ := os.Stat(big.ZipFile)
		t.Logf("peak heap %.1f MiB over %d samples for a %.1f MiB toolchain", float64(peak)/(1<<20), samples, float64(fi.Size())/(1<<20))
		if peak >= 64<<20 {
			t.Errorf("peak heap %.1f MiB; want under 64 MiB", float64(peak)/(1<<20))
		}
		if db.asked("/lookup/"+moduletest.ToolchainPath+"@"+big.Version) == 0 {
			t.Error("the proxy did not look the toolchain up in the checksum database")
		}
	})
	t.Run("a tampered toolchain is refused whatever GONOSUMDB says", func(t *testing.T) {
		gocmd.Set("GOTOOLCHAIN", "go1.99.2")
		out, stderr, err := gocmd.Run("version")
		if err == nil || strings.Contains(out, "pwned") || !strings.Contains(stderr, "SECURITY ERROR") {
			t.Errorf("GOTOOLCHAIN=go1.99.2 go version with a tampered zip: %v\nstdout: %s\nstderr: %s", err, out, stderr)
		}
		w := do(p, "GET", "/"+moduletest.ToolchainPath+"/@v/"+small.Version+".zip")
		if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "checksum mismatch") {
			t.Errorf("the tampered zip: %d %q", w.Code, w.Body)
		}
	})
}

func TestToolchainsAreAlwaysVerified(t *testing.T) {
	tc, err := moduletest.ToolchainVersion(t.TempDir(), "go1.99.3", "linux", "amd64", toolchainScript("go1.99.3"), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	tampered := makeZip(t, moduletest.ToolchainPath+"@"+tc.Version+"/bin/go", "#!/bin/sh\necho pwned\n")
	up := moduletest.NewServer([]*moduletest.Version{tc})
	defer up.Close()
	var tamper atomic.Bool
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if tamper.Load() && strings.HasSuffix(r.URL.Path, ".zip") {
			w.Write(tampered)
			return true
		}
		return false
	})
	db := newTestSumDB(t, []*moduletest.Version{tc})
	zip := "/" + moduletest.ToolchainPath + "/@v/" + tc.Version + ".zip"
	lookup := "/sumdb/" + db.name + "/lookup/" + moduletest.ToolchainPath + "@" + tc.Version
	for _, tt := range []struct {
		name  string
		env   []string
		setup func(p *Proxy)
	}{
		{"GONOSUMDB", []string{"GONOSUMDB=golang.org"}, nil},
		{"GOPRIVATE", []string{"GOPRIVATE=golang.org/toolchain", "GONOPROXY=none.invalid"}, nil},
		{"a private route", nil, func(p *Proxy) {
			p.Routes = []Route{{Pattern: "golang.org", Upstreams: []Upstream{{URL: up.URL}}, Private: true}}
		}},
		{"AllowUnverified", []string{"GONOSUMDB=golang.org"}, func(p *Proxy) { p.AllowUnverified = true }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newVerifyingProxy(t, up.URL, db, tt.env...)
			if tt.setup != nil {
				tt.setup(p)
			}
			tamper.Store(true)
			if w := do(p, "GET", zip); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "SECURITY ERROR") {
				t.Errorf("tampered: %d %q; want 502 SECURITY ERROR", w.Code, w.Body)
			}
			tamper.Store(false)
			if w := do(p, "GET", zip); w.Code != http.StatusOK {
				t.Errorf("genuine: %d %q", w.Code, w.Body)
			}
			// The go command looks toolchains up whatever GONOSUMDB says:
			// the proxy serves the lookup.
			if w := do(p, "GET", lookup); w.Code != http.StatusOK {
				t.Errorf("the toolchain's lookup: %d %q", w.Code, w.Body)
			}
		})
	}
	t.Run("GOSUMDB=off", func(t *testing.T) {
		p := newTestProxy(t, up.URL, "GOSUMDB=off")
		p.AllowUnverified = true
		if w := do(p, "GET", zip); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "always verified") {
			t.Errorf("a toolchain with no checksum database: %d %q", w.Code, w.Body)
		}
	})
	// An unreachable database lets no toolchain through, AllowUnverified
	// or not.
	db.Close()
	p := newVerifyingProxy(t, up.URL, db)
	p.AllowUnverified = true
	// The zip may have started streaming before the lookup failed: then
	// the connection is cut before the zip's end.
	if w := do(p, "GET", zip); w.Code != http.StatusBadGateway && !(w.Aborted && !opensAsZip(w.Body.Bytes())) {
		t.Errorf("with the database down: %d, %d bytes, aborted %v; want 502 or a cut connection", w.Code, w.Body.Len(), w.Aborted)
	}
}

func TestImportsVerifyToolchainsWhateverNoSumDBSays(t *testing.T) {
	// An import is a way into the cache as a fetch is: a toolchain
	// exempted by GONOSUMDB (or with no database at all) must not come in
	// on CheckZip alone.
	tc, err := moduletest.ToolchainVersion(t.TempDir(), "go1.99.4", "linux", "amd64", toolchainScript("go1.99.4"), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	db := newTestSumDB(t, []*moduletest.Version{tc})
	dir := t.TempDir()
	if err := moduletest.WriteDir(dir, []*moduletest.Version{tc}); err != nil {
		t.Fatal(err)
	}
	tampered := makeZip(t, moduletest.ToolchainPath+"@"+tc.Version+"/bin/go", "#!/bin/sh\necho pwned\n")
	zipName := filepath.Join(dir, moduletest.ToolchainPath, "@v", tc.Version+".zip")
	os.Remove(zipName) // a link to the genuine zip, which the database hashes
	if err := os.WriteFile(zipName, tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		opts *ModuleDirImport
		want string
	}{
		{"a module directory with GONOSUMDB matching", &ModuleDirImport{Lookup: lookupIn(db), NoSumDB: "golang.org"}, "checksum"},
		{"a module directory without a database", &ModuleDirImport{NoSumDB: "golang.org"}, "always verified"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dst := &MemCacher{}
			report, err := ImportModuleDir(context.Background(), dir, dst, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(report.Refused) != 1 || !strings.Contains(report.Refused[0].Err.Error(), tt.want) || len(report.Imported) != 0 {
				t.Errorf("imported %v, refused %v; want the tampered toolchain refused (%q)", report.Imported, report.Refused, tt.want)
			}
		})
	}

	// A bundle made where the toolchain was exempt, or without a
	// database, carries no record of it.
	src := newBundleSource(t, &MemCacher{}, []*moduletest.Version{tc}, db)
	items := []FillItem{{Path: tc.Path, Version: tc.Version, Files: FillInfo | FillMod | FillZip}}
	var unproved bytes.Buffer
	if _, err := ExportBundle(context.Background(), &unproved, src, items, &BundleOptions{SumDB: "off"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		opts *BundleOptions
		want string
	}{
		{"a bundle with GONOSUMDB matching", &BundleOptions{SumDB: db.vkey, NoSumDB: "golang.org"}, "no checksum database record"},
		{"a bundle without a database", &BundleOptions{SumDB: "off"}, "always verified"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.TempDir = t.TempDir()
			dst := &MemCacher{}
			_, err := ImportBundle(context.Background(), bytes.NewReader(unproved.Bytes()), dst, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("import: %v; want refused (%q)", err, tt.want)
			}
			if names := storedNames(t, dst); len(names) != 0 {
				t.Errorf("stored %v", names)
			}
		})
	}
	t.Run("a bundle exported with GONOSUMDB matching carries the record", func(t *testing.T) {
		var bundle bytes.Buffer
		m, err := ExportBundle(context.Background(), &bundle, src, items, &BundleOptions{SumDB: db.vkey, NoSumDB: "golang.org"})
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Modules) != 1 || m.Modules[0].Record == nil {
			t.Fatalf("manifest %+v: want the toolchain's record", m.Modules)
		}
		report, err := ImportBundle(context.Background(), bytes.NewReader(bundle.Bytes()), &MemCacher{}, &BundleOptions{SumDB: db.vkey, NoSumDB: "golang.org", TempDir: t.TempDir()})
		if err != nil || report.Verified != 1 {
			t.Errorf("import: %+v, %v; want the toolchain verified", report, err)
		}
	})
}

// opensAsZip reports whether b is a zip a reader can open.
func opensAsZip(b []byte) bool {
	_, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	return err == nil
}
