package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// sumdbClientOps lets a real checksum database client reach a test
// database over HTTP, keeping its state in memory.
type sumdbClientOps struct {
	db     *testSumDB
	mu     sync.Mutex
	latest []byte
	cache  map[string][]byte
}

func (o *sumdbClientOps) ReadRemote(path string) ([]byte, error) {
	resp, err := http.Get(o.db.URL + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func (o *sumdbClientOps) ReadConfig(file string) ([]byte, error) {
	if file == "key" {
		return []byte(o.db.vkey), nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latest, nil
}

func (o *sumdbClientOps) WriteConfig(file string, old, new []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !bytes.Equal(o.latest, old) {
		return sumdb.ErrWriteConflict
	}
	o.latest = new
	return nil
}

func (o *sumdbClientOps) ReadCache(file string) ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if b, ok := o.cache[file]; ok {
		return b, nil
	}
	return nil, os.ErrNotExist
}

func (o *sumdbClientOps) WriteCache(file string, data []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cache == nil {
		o.cache = map[string][]byte{}
	}
	o.cache[file] = data
}

func (o *sumdbClientOps) Log(msg string)           {}
func (o *sumdbClientOps) SecurityError(msg string) { panic(msg) }

func lookupIn(db *testSumDB) func(ctx context.Context, path, version string) ([]string, error) {
	c := sumdb.NewClient(&sumdbClientOps{db: db})
	return func(ctx context.Context, path, version string) ([]string, error) { return c.Lookup(path, version) }
}

func storedNames(t *testing.T, c CacheWalker) []string {
	t.Helper()
	var names []string
	if err := c.Walk(context.Background(), "", func(name string) error { names = append(names, name); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// TestImportModuleCacheRefusesAndNamesATamperedZip imports a module cache
// the go command filled, after one zip and one .mod in it were replaced:
// those versions are refused and named, and every other version is
// imported, checked against a real checksum database.
func TestImportModuleCacheRefusesAndNamesATamperedZip(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	e := gocmdtest.New(t)
	e.Set("GOPROXY", up.URL)
	e.WriteGoMod([]byte(bundleGoMod))
	e.MustRun(t, "mod", "download", "all")

	download := filepath.Join(e.GOMODCACHE, "cache", "download")
	zipTarget, modTarget := moduletest.GraphPath(3), moduletest.GraphPath(1)
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(download, filepath.FromSlash(name)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(zipTarget+"/@v/v1.1.0.zip", makeZip(t, zipTarget+"@v1.1.0/go.mod", "module "+zipTarget+"\n", zipTarget+"@v1.1.0/x.go", "package evil\n"))
	write(modTarget+"/@v/v1.0.0.mod", []byte("module "+modTarget+"\n\nrequire evil.example/x v1.0.0\n"))
	// A link out of the cache, and the go command's leftovers.
	if err := os.Symlink("/etc/passwd", filepath.Join(download, "example.com", "mod000", "@v", "v1.9.0.mod")); err != nil {
		t.Fatal(err)
	}
	write("example.com/mod000/@v/v1.8.0.zip.partial", []byte("half a zip"))
	write("example.com/mod000/@v/v1.8.0.zip1234.tmp", []byte("half a zip"))
	write("example.com/mod000/@v/README", []byte("not a module file"))

	dst := DirCacher(t.TempDir())
	report, err := ImportModuleDir(context.Background(), e.GOMODCACHE, dst, &ModuleDirImport{Lookup: lookupIn(db), TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	for _, f := range report.Refused {
		refused = append(refused, f.Item.Path+"@"+f.Item.Version)
		if !strings.Contains(f.Err.Error(), "checksum mismatch") || !strings.Contains(f.Err.Error(), f.Item.Path) {
			t.Errorf("%s refused for %v; want a checksum mismatch naming it", f.Item, f.Err)
		}
	}
	if want := []string{modTarget + "@v1.0.0", zipTarget + "@v1.1.0"}; !slices.Equal(refused, want) {
		t.Errorf("refused %q, want %q", refused, want)
	}
	var skipped []string
	for _, s := range report.Skipped {
		skipped = append(skipped, s.Entry)
	}
	if want := []string{"example.com/mod000/@v/README", "example.com/mod000/@v/v1.9.0.mod"}; !slices.Equal(skipped, want) {
		t.Errorf("skipped %q, want %q", skipped, want)
	}

	// Stored: exactly the files of the versions imported.
	var want []string
	for _, it := range report.Imported {
		for _, f := range moduleFileExts {
			if it.Files&f.files != 0 {
				name, _ := moduleFileName(it.Path, it.Version, f.ext)
				want = append(want, name)
			}
		}
	}
	slices.Sort(want)
	if got := storedNames(t, dst); !slices.Equal(got, want) || len(got) == 0 {
		t.Errorf("stored %q, want %q", got, want)
	}
	for _, name := range storedNames(t, dst) {
		if strings.Contains(name, zipTarget+"/@v/v1.1.0") || strings.Contains(name, modTarget+"/@v/v1.0.0") {
			t.Errorf("%s of a refused version was stored", name)
		}
	}

	// A second import finds everything imported already in dst.
	again, err := ImportModuleDir(context.Background(), filepath.Join(e.GOMODCACHE, "cache", "download"), dst, &ModuleDirImport{Lookup: lookupIn(db)})
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Imported) != 0 || len(again.Cached) != len(report.Imported) || len(again.Refused) != 2 {
		t.Errorf("second import: %d imported, %d cached, %d refused; want 0, %d, 2", len(again.Imported), len(again.Cached), len(again.Refused), len(report.Imported))
	}
}

func TestImportGOPROXYTreeChecksExemptModulesWithCheckZipOnly(t *testing.T) {
	vs := moduletest.Graph(10)
	dir := t.TempDir()
	if err := moduletest.WriteDir(dir, vs); err != nil {
		t.Fatal(err)
	}
	db := newTestSumDB(t, vs)
	exempt := moduletest.GraphPath(4)
	// An exempt module's zip with files outside the module: CheckZip
	// refuses it, though no database is asked.
	bad := makeZip(t, "other.example/x@v1.0.0/x.go", "package x\n")
	if err := os.WriteFile(filepath.Join(dir, exempt, "@v", "v1.0.0.zip"), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := &MemCacher{}
	report, err := ImportModuleDir(context.Background(), dir, dst, &ModuleDirImport{Lookup: lookupIn(db), NoSumDB: exempt})
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Refused) != 1 || report.Refused[0].Item.Path != exempt || report.Refused[0].Item.Version != "v1.0.0" {
		t.Fatalf("refused %v, want only %s@v1.0.0", report.Refused, exempt)
	}
	if len(report.Imported) != len(vs)-1 || len(report.Skipped) != 0 {
		t.Errorf("%d imported, skipped %v; want %d imported, nothing skipped", len(report.Imported), report.Skipped, len(vs)-1)
	}
	if db.asked(exempt) != 0 {
		t.Errorf("the checksum database was asked about exempt module %s", exempt)
	}
}

func TestImportNeverReplacesWhatTheCacheHolds(t *testing.T) {
	vs := moduletest.Graph(10)
	dir := t.TempDir()
	if err := moduletest.WriteDir(dir, vs); err != nil {
		t.Fatal(err)
	}
	db := newTestSumDB(t, vs)
	exempt := moduletest.GraphPath(4)
	ctx := context.Background()
	dst := &MemCacher{}
	opts := &ModuleDirImport{Lookup: lookupIn(db), NoSumDB: exempt}
	if _, err := ImportModuleDir(ctx, dir, dst, opts); err != nil {
		t.Fatal(err)
	}
	zipName, _ := moduleFileName(exempt, "v1.0.0", ".zip")
	infoName, _ := moduleFileName(exempt, "v1.0.0", ".info")
	before := readCached(t, dst, zipName)
	// Other bytes that CheckZip accepts, for a module no checksum database
	// covers; the .info gone from the cache so that the import does not
	// skip the version as wholly held.
	other := makeZip(t, exempt+"@v1.0.0/x.go", "package x // not what clients were served\n")
	if err := os.WriteFile(filepath.Join(dir, exempt, "@v", "v1.0.0.zip"), other, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := dst.Delete(ctx, infoName); err != nil {
		t.Fatal(err)
	}
	if _, err := ImportModuleDir(ctx, dir, dst, opts); err != nil {
		t.Fatal(err)
	}
	if after := readCached(t, dst, zipName); !bytes.Equal(after, before) {
		t.Errorf("the import replaced the cached %s", zipName)
	}
	if _, err := dst.Stat(ctx, infoName); err != nil {
		t.Errorf("the missing %s was not imported: %v", infoName, err)
	}
}

// statFailingCacher is a MemCacher whose Stat fails, as a store that
// cannot be reached for a moment does.
type statFailingCacher struct{ *MemCacher }

func (c statFailingCacher) Stat(ctx context.Context, name string) (fs.FileInfo, error) {
	return nil, errors.New("the store did not answer")
}

// getPutCacher is a Cacher with no optional capability.
type getPutCacher struct{ c *MemCacher }

func (c getPutCacher) Get(ctx context.Context, name string) (CachedFile, error) {
	return c.c.Get(ctx, name)
}

func (c getPutCacher) Put(ctx context.Context, name string, content io.ReadSeeker) error {
	return c.c.Put(ctx, name, content)
}

// An import cannot tell whether the cache holds a file when the store
// fails to say, or when the Cacher has no Stat: it must neither take the
// file for missing (and replace what clients were served) nor go on.
func TestImportNeverReplacesWhatTheCacheHoldsWhenItCannotStat(t *testing.T) {
	vs := moduletest.Graph(10)
	exempt := moduletest.GraphPath(4)
	zipName, _ := moduleFileName(exempt, "v1.0.0", ".zip")
	infoName, _ := moduleFileName(exempt, "v1.0.0", ".info")
	for _, tc := range []struct {
		name      string
		wrap      func(*MemCacher) Cacher
		wantError bool
	}{
		{"a store failing to say", func(m *MemCacher) Cacher { return statFailingCacher{m} }, true},
		{"a Cacher without Stat", func(m *MemCacher) Cacher { return getPutCacher{m} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := moduletest.WriteDir(dir, vs); err != nil {
				t.Fatal(err)
			}
			db := newTestSumDB(t, vs)
			ctx := context.Background()
			mem := &MemCacher{}
			opts := &ModuleDirImport{Lookup: lookupIn(db), NoSumDB: exempt}
			if _, err := ImportModuleDir(ctx, dir, mem, opts); err != nil {
				t.Fatal(err)
			}
			before := readCached(t, mem, zipName)
			other := makeZip(t, exempt+"@v1.0.0/x.go", "package x // not what clients were served\n")
			if err := os.WriteFile(filepath.Join(dir, exempt, "@v", "v1.0.0.zip"), other, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := mem.Delete(ctx, infoName); err != nil {
				t.Fatal(err)
			}
			_, err := ImportModuleDir(ctx, dir, tc.wrap(mem), opts)
			if (err != nil) != tc.wantError {
				t.Errorf("the import: %v; want an error: %v", err, tc.wantError)
			}
			if after := readCached(t, mem, zipName); !bytes.Equal(after, before) {
				t.Errorf("the import replaced the cached %s", zipName)
			}
		})
	}
}

func TestWalkModuleDirStaysInsideTheDirectory(t *testing.T) {
	outside := t.TempDir()
	if err := moduletest.WriteDir(outside, moduletest.Graph(10)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mustWrite := func(name, content string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite("example.com/a/@v/v1.0.0.mod", "module example.com/a\n")
	mustWrite("example.com/a/@v/v1.0.0.info", `{"Version":"v1.0.0"}`)
	mustWrite("example.com/a/@v/v1.0.0.mod.lock", "")
	mustWrite("example.com/a/@v/v1.0.0.ziphash", "h1:x")
	mustWrite("example.com/a/@v/list", "v1.0.0\n")
	mustWrite("example.com/a/@latest", `{"Version":"v1.0.0"}`)
	mustWrite("example.com/!upper/@v/v1.0.0.mod", "module example.com/Upper\n")
	mustWrite("example.com/Bad/@v/v1.0.0.mod", "module example.com/Bad\n") // upper case must be escaped
	mustWrite("example.com/a/@v/v1.0.mod", "module example.com/a\n")
	mustWrite("example.com/a@v1.0.0/a.go", "package a\n") // an extracted module
	mustWrite("sumdb/sum.golang.org/lookup/example.com/a@v1.0.0", "1\n")
	mustWrite("stray.txt", "")
	// Links out of the directory: to a file, and to a whole tree.
	if err := os.Symlink(filepath.Join(outside, "example.com", "mod000", "@v", "v1.0.0.zip"), filepath.Join(dir, "example.com", "a", "@v", "v1.0.0.zip")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "example.com"), filepath.Join(dir, "linked")); err != nil {
		t.Fatal(err)
	}
	// A link inside the directory is followed.
	if err := os.Symlink("v1.0.0.mod", filepath.Join(dir, "example.com", "a", "@v", "v1.1.0.mod")); err != nil {
		t.Fatal(err)
	}

	var found []string
	skipped, err := WalkModuleDir(context.Background(), dir, func(v ModuleDirVersion) error {
		found = append(found, fmt.Sprintf("%s@%s %s", v.Path, v.Version, FillItem{Files: v.files()}.Files))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(found)
	if want := []string{"example.com/Upper@v1.0.0 .mod", "example.com/a@v1.0.0 .info+.mod", "example.com/a@v1.1.0 .mod"}; !slices.Equal(found, want) {
		t.Errorf("found %q, want %q", found, want)
	}
	var entries []string
	for _, s := range skipped {
		entries = append(entries, s.Entry)
	}
	slices.Sort(entries)
	want := []string{"example.com/Bad/@v", "example.com/a/@v/v1.0.0.zip", "example.com/a/@v/v1.0.mod", "linked", "stray.txt"}
	if !slices.Equal(entries, want) {
		t.Errorf("skipped %q, want %q", entries, want)
	}
}

// TestImportsAskTheAdmissionHook refuses one module version by an
// admission hook: a module directory import and a bundle import both
// leave it out, name it with the hook's reason, and store the rest.
func TestImportsAskTheAdmissionHook(t *testing.T) {
	vs := moduletest.Graph(10)
	db := newTestSumDB(t, vs)
	denied := moduletest.GraphPath(3)
	admit := func(ctx context.Context, path, version string) error {
		if path == denied {
			return &AdmissionError{Path: path, Version: version, Decision: AdmissionDecision{Verdict: Refuse, Rule: "deny", Reason: "not here"}}
		}
		return nil
	}
	refusedOnly := func(t *testing.T, refused []FillFailure, dst Cacher) {
		t.Helper()
		if len(refused) == 0 {
			t.Fatal("nothing refused")
		}
		for _, r := range refused {
			if r.Item.Path != denied || !strings.Contains(r.Err.Error(), "not here") {
				t.Errorf("refused %s: %v", r.Item, r.Err)
			}
		}
		for _, name := range cachedNames(dst) {
			if strings.HasPrefix(name, denied+"/") || strings.Contains(name, "/lookup/"+denied+"@") {
				t.Errorf("%s was stored", name)
			}
		}
	}
	t.Run("module directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := moduletest.WriteDir(dir, vs); err != nil {
			t.Fatal(err)
		}
		dst := &MemCacher{}
		report, err := ImportModuleDir(context.Background(), dir, dst, &ModuleDirImport{Lookup: lookupIn(db), Admit: admit})
		if err != nil {
			t.Fatal(err)
		}
		refusedOnly(t, report.Refused, dst)
		if len(report.Imported)+len(report.Refused) != len(vs) {
			t.Errorf("%d imported, %d refused of %d", len(report.Imported), len(report.Refused), len(vs))
		}
	})
	t.Run("bundle", func(t *testing.T) {
		var items []FillItem
		for _, v := range vs {
			items = append(items, FillItem{Path: v.Path, Version: v.Version, Files: FillModule})
		}
		opts := &BundleOptions{SumDB: db.vkey}
		var bundle bytes.Buffer
		if _, err := ExportBundle(context.Background(), &bundle, newBundleSource(t, &MemCacher{}, vs, db), items, opts); err != nil {
			t.Fatal(err)
		}
		opts.Admit = admit
		dst := &MemCacher{}
		report, err := ImportBundle(context.Background(), &bundle, dst, opts)
		if err != nil {
			t.Fatal(err)
		}
		refusedOnly(t, report.Refused, dst)
	})
}

// readCached reads a whole file out of c.
func readCached(t *testing.T, c Cacher, name string) []byte {
	t.Helper()
	rc, err := c.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
