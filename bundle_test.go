package goproxy

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/mod/sumdb/note"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// bundleSource stands for a proxy's cache: the versions' files are in
// cache, and checksum database files are fetched from the real database
// on first use and kept, as the proxy does.
type bundleSource struct {
	cache   Cacher
	db      *testSumDB
	fetched atomic.Int32
}

func newBundleSource(t *testing.T, cache Cacher, vs []*moduletest.Version, db *testSumDB) *bundleSource {
	t.Helper()
	ctx := context.Background()
	for _, v := range vs {
		for ext, data := range map[string][]byte{".info": v.Info(), ".mod": v.Mod} {
			name, _ := moduleFileName(v.Path, v.Version, ext)
			if err := cache.Put(ctx, name, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
		}
		z, err := v.OpenZip()
		if err != nil {
			t.Fatal(err)
		}
		name, _ := moduleFileName(v.Path, v.Version, ".zip")
		err = cache.Put(ctx, name, z)
		z.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return &bundleSource{cache: cache, db: db}
}

func (s *bundleSource) Get(ctx context.Context, name string) (CachedFile, error) {
	f, err := s.cache.Get(ctx, name)
	rest, isDB := strings.CutPrefix(name, "sumdb/"+s.db.name+"/")
	if err == nil || !isDB || !errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	s.fetched.Add(1)
	resp, err := http.Get(s.db.URL + "/" + rest)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusGone:
		return nil, &fs.PathError{Op: "get", Path: name, Err: fs.ErrNotExist}
	default:
		return nil, fmt.Errorf("%s: %s", name, resp.Status)
	}
	if rest != "latest" {
		if err := s.cache.Put(ctx, name, bytes.NewReader(data)); err != nil {
			return nil, err
		}
		return s.cache.Get(ctx, name)
	}
	var m MemCacher
	m.Put(ctx, name, bytes.NewReader(data))
	return m.Get(ctx, name)
}

// bundleGoMod is the main module whose graph the bundles carry: roots
// raised by the graph, the special versions, and a module exempt from the
// checksum database.
var bundleGoMod = "module example.com/root\n\ngo 1.21\n\nrequire (\n" +
	"\texample.com/mod000 v1.1.0\n\texample.com/mod003 v1.0.0\n" +
	"\t" + moduletest.LegacyPath + " " + moduletest.LegacyIncompatible + "\n" +
	"\t" + moduletest.PseudoPath + " " + moduletest.PseudoVersion + "\n" +
	"\t" + moduletest.UpperCasePath + " v1.1.0\n)\n"

func bundlePlan(t *testing.T, vs []*moduletest.Version) *FillPlan {
	t.Helper()
	plan, err := FillPlanFromGoMod(context.Background(), []byte(bundleGoMod), func(ctx context.Context, path, version string) ([]byte, error) {
		for _, v := range vs {
			if v.Path == path && v.Version == version {
				return v.Mod, nil
			}
		}
		return nil, fs.ErrNotExist
	})
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

// TestBundleImportedIntoAnotherCacheVerifiesWithTheGoCommandOffline
// carries a go.mod's graph across an "air gap": exported from a cache
// backed by a real checksum database, imported into a directory after the
// database and every upstream are gone, and downloaded from there by the
// go command, which verifies every record through the imported tiles.
func TestBundleImportedIntoAnotherCacheVerifiesWithTheGoCommandOffline(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(12)
	db := newTestSumDB(t, vs)
	src := newBundleSource(t, &MemCacher{}, vs, db)
	opts := &BundleOptions{SumDB: db.vkey, NoSumDB: moduletest.PseudoPath, TempDir: t.TempDir()}
	var bundle bytes.Buffer
	m, err := ExportBundle(context.Background(), &bundle, src, bundlePlan(t, vs).Items, opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.SumDB == nil || len(m.Tiles) == 0 {
		t.Fatalf("the manifest has no tree or no tiles: %+v", m)
	}
	db.Close()

	dir := t.TempDir()
	report, err := ImportBundle(context.Background(), bytes.NewReader(bundle.Bytes()), DirCacher(dir), opts)
	if err != nil {
		t.Fatal(err)
	}
	if report.Exempt != 1 || report.Verified != len(m.Modules)-1 {
		t.Errorf("%d verified, %d exempt; want %d, 1", report.Verified, report.Exempt, len(m.Modules)-1)
	}
	if entries, _ := os.ReadDir(opts.TempDir); len(entries) != 0 {
		t.Errorf("the import left %d entries in its temporary directory", len(entries))
	}
	// The go command asks a proxy whether it serves the database.
	if err := DirCacher(dir).Put(context.Background(), "sumdb/"+db.name+"/supported", strings.NewReader("")); err != nil {
		t.Fatal(err)
	}

	e := gocmdtest.New(t)
	e.Set("GOPROXY", "file://"+filepath.ToSlash(dir))
	e.Set("GOSUMDB", db.vkey)
	e.Set("GONOSUMDB", moduletest.PseudoPath)
	e.WriteGoMod([]byte(bundleGoMod))
	e.MustRun(t, "mod", "download", "all")
	gosum, err := os.ReadFile(filepath.Join(e.Dir, "go.sum"))
	if err != nil || !bytes.Contains(gosum, []byte("example.com/mod000 v1.1.0 h1:")) {
		t.Errorf("go.sum after the download: %q, %v", gosum, err)
	}
	lookups, _ := filepath.Glob(filepath.Join(e.GOMODCACHE, "cache", "download", "sumdb", db.name, "lookup", "example.com", "*"))
	if len(lookups) == 0 {
		t.Error("the go command looked up no record: it verified nothing")
	}
}

// bundleEntry is one file of a bundle, for tests that tamper with one.
type bundleEntry struct {
	hdr  tar.Header
	data []byte
}

func readBundleEntries(t *testing.T, b []byte) []bundleEntry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var es []bundleEntry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return es
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, bundleEntry{*hdr, data})
	}
}

func writeBundleEntries(t *testing.T, es []bundleEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range es {
		hdr := e.hdr
		hdr.Size = int64(len(e.data))
		if hdr.Typeflag != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil && hdr.Typeflag == tar.TypeReg {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// editManifest changes the manifest (the last entry) with fn.
func editManifest(t *testing.T, es []bundleEntry, fn func(m *BundleManifest)) {
	t.Helper()
	last := &es[len(es)-1]
	var m BundleManifest
	if err := json.Unmarshal(last.data, &m); err != nil {
		t.Fatal(err)
	}
	fn(&m)
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	last.data = data
}

// relist makes the manifest's sizes and hashes match the entries again,
// as an attacker able to rewrite the whole bundle would.
func relist(t *testing.T, es []bundleEntry) {
	t.Helper()
	sums := map[string]BundleFile{}
	for _, e := range es {
		h := sha256.Sum256(e.data)
		sums[e.hdr.Name] = BundleFile{Name: e.hdr.Name, Size: int64(len(e.data)), SHA256: hex.EncodeToString(h[:])}
	}
	editManifest(t, es, func(m *BundleManifest) {
		for i := range m.Modules {
			for j, f := range m.Modules[i].Files {
				m.Modules[i].Files[j] = sums[f.Name]
			}
		}
		for i, f := range m.Tiles {
			m.Tiles[i] = sums[f.Name]
		}
	})
}

func entryNamed(t *testing.T, es []bundleEntry, suffix string) *bundleEntry {
	t.Helper()
	for i := range es {
		if strings.HasSuffix(es[i].hdr.Name, suffix) {
			return &es[i]
		}
	}
	t.Fatalf("no entry named *%s", suffix)
	return nil
}

func TestBundleFailingAnyCheckIsRefusedWhole(t *testing.T) {
	vs := moduletest.Graph(10)
	db := newTestSumDB(t, vs)
	exempt := moduletest.GraphPath(7)
	opts := &BundleOptions{SumDB: db.vkey, NoSumDB: exempt}
	var good bytes.Buffer
	items := []FillItem{}
	for _, v := range vs {
		items = append(items, FillItem{Path: v.Path, Version: v.Version, Files: FillModule})
	}
	if _, err := ExportBundle(context.Background(), &good, newBundleSource(t, &MemCacher{}, vs, db), items, opts); err != nil {
		t.Fatal(err)
	}
	// The good bundle imports; each case breaks it in one way.
	if _, err := ImportBundle(context.Background(), bytes.NewReader(good.Bytes()), &MemCacher{}, opts); err != nil {
		t.Fatalf("the untampered bundle: %v", err)
	}

	_, otherKey, err := note.GenerateKey(rand.Reader, db.name)
	if err != nil {
		t.Fatal(err)
	}
	_, otherDB, err := note.GenerateKey(rand.Reader, "sumdb.other")
	if err != nil {
		t.Fatal(err)
	}
	target := moduletest.GraphPath(2)
	tampered := makeZip(t, target+"@v1.0.0/go.mod", "module "+target+"\n", target+"@v1.0.0/x.go", "package evil\n")
	add := func(hdr tar.Header, data string) func(t *testing.T, es []bundleEntry) []bundleEntry {
		return func(t *testing.T, es []bundleEntry) []bundleEntry {
			hdr.Mode = 0o644
			return append(es[:len(es)-1:len(es)-1], bundleEntry{hdr, []byte(data)}, es[len(es)-1])
		}
	}
	for _, tc := range []struct {
		name   string
		edit   func(t *testing.T, es []bundleEntry) []bundleEntry
		cut    func(b []byte) []byte
		key    string
		reason string
	}{
		{name: "a zip replaced, the manifest rewritten to match", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			entryNamed(t, es, target+"/@v/v1.0.0.zip").data = tampered
			relist(t, es)
			return es
		}, reason: target + "@v1.0.0: checksum mismatch"},
		{name: "a zip damaged in transit", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			e := entryNamed(t, es, target+"/@v/v1.1.0.zip")
			e.data = bytes.Clone(e.data)
			e.data[len(e.data)/2] ^= 1
			return es
		}, reason: "the manifest says"},
		{name: "a .mod replaced", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			entryNamed(t, es, target+"/@v/v1.0.0.mod").data = []byte("module " + target + "\n\nrequire evil.example/x v1.0.0\n")
			relist(t, es)
			return es
		}, reason: target + "@v1.0.0/go.mod: checksum mismatch"},
		{name: "a tile altered", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			var e *bundleEntry
			for i := range es {
				if strings.Contains(es[i].hdr.Name, "/tile/8/0/") {
					e = &es[i]
				}
			}
			e.data = bytes.Clone(e.data)
			e.data[5] ^= 0x40
			relist(t, es)
			return es
		}, reason: "inconsistent tile"},
		{name: "a record altered", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			editManifest(t, es, func(m *BundleManifest) {
				for i := range m.Modules {
					if m.Modules[i].Path == target && m.Modules[i].Version == "v1.0.0" {
						r := m.Modules[i].Record
						r.Text = strings.Replace(r.Text, "h1:", "h1:A", 1)
					}
				}
			})
			return es
		}, reason: "not the one the checksum database's tree holds"},
		{name: "the tree note altered", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			editManifest(t, es, func(m *BundleManifest) {
				m.SumDB.Tree = strings.Replace(m.SumDB.Tree, "\n", "\n1", 1)
			})
			return es
		}, reason: "tree note"},
		{name: "signed by another key of the same name", key: otherKey, reason: "tree note"},
		{name: "made for another checksum database", key: otherDB, reason: "not a tile of the configured checksum database"},
		{name: "a record missing for a module not exempt", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			editManifest(t, es, func(m *BundleManifest) { m.Modules[0].Record = nil })
			return es
		}, reason: "no checksum database record"},
		{name: "an exempt module's zip failing CheckZip", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			entryNamed(t, es, exempt+"/@v/v1.0.0.zip").data = makeZip(t, "elsewhere.example/x@v1.0.0/x.go", "package x\n")
			relist(t, es)
			return es
		}, reason: exempt + "@v1.0.0.zip"},
		{name: "a tile that proves nothing", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			name := "sumdb/" + db.name + "/tile/8/2/999"
			es = add(tar.Header{Typeflag: tar.TypeReg, Name: name}, strings.Repeat("\x00", 8192))(t, es)
			editManifest(t, es, func(m *BundleManifest) { m.Tiles = append(m.Tiles, BundleFile{Name: name}) })
			relist(t, es)
			return es
		}, reason: "not needed by any proof"},
		{name: "a file the manifest does not list", edit: add(tar.Header{Typeflag: tar.TypeReg, Name: "example.com/mod000/@v/v1.9.0.info"}, `{"Version":"v1.9.0"}`), reason: "not in the manifest"},
		{name: "a listed file missing", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			for i, e := range es {
				if strings.HasSuffix(e.hdr.Name, ".zip") {
					return append(es[:i], es[i+1:]...)
				}
			}
			return es
		}, reason: "not in the archive"},
		{name: "a parent directory in a name", edit: add(tar.Header{Typeflag: tar.TypeReg, Name: "../x"}, "x"), reason: `"../x" is not a name`},
		{name: "a parent directory inside a name", edit: add(tar.Header{Typeflag: tar.TypeReg, Name: "example.com/../../x/@v/v1.0.0.mod"}, "x"), reason: "not a name"},
		{name: "an absolute name", edit: add(tar.Header{Typeflag: tar.TypeReg, Name: "/etc/passwd"}, "x"), reason: "not a name"},
		{name: "a symbolic link", edit: add(tar.Header{Typeflag: tar.TypeSymlink, Name: "example.com/mod000/@v/v1.0.0.zip", Linkname: "/etc/passwd"}, ""), reason: "a link"},
		{name: "a hard link", edit: add(tar.Header{Typeflag: tar.TypeLink, Name: "example.com/mod000/@v/v1.9.0.mod", Linkname: "example.com/mod000/@v/v1.0.0.mod"}, ""), reason: "a link"},
		{name: "a directory", edit: add(tar.Header{Typeflag: tar.TypeDir, Name: "example.com/"}, ""), reason: "a directory"},
		{name: "a hidden name", edit: add(tar.Header{Typeflag: tar.TypeReg, Name: "example.com/.x/@v/v1.0.0.mod"}, "x"), reason: "not a name"},
		{name: "a name twice", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			return append(es[:len(es)-1:len(es)-1], es[0], es[len(es)-1])
		}, reason: "twice"},
		{name: "an entry after the manifest", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			return append(es, bundleEntry{tar.Header{Typeflag: tar.TypeReg, Name: "example.com/mod000/@v/v1.9.0.mod", Mode: 0o644}, []byte("module x\n")})
		}, reason: "follows the manifest"},
		{name: "no manifest", edit: func(t *testing.T, es []bundleEntry) []bundleEntry { return es[:len(es)-1] }, reason: "no manifest.json"},
		{name: "another format", edit: func(t *testing.T, es []bundleEntry) []bundleEntry {
			editManifest(t, es, func(m *BundleManifest) { m.Format = 2 })
			return es
		}, reason: "format 2"},
		{name: "a .info larger than a proxy takes", edit: add(tar.Header{Typeflag: tar.TypeReg, Name: "example.com/mod000/@v/v1.9.0.info"}, strings.Repeat(" ", maxModuleInfoSize+1)), reason: "more than"},
		{name: "cut in the middle", cut: func(b []byte) []byte { return b[:len(b)/2] }, reason: "unexpected EOF"},
		{name: "cut in the gzip trailer", cut: func(b []byte) []byte { return b[:len(b)-3] }, reason: "unexpected EOF"},
		{name: "not gzip", cut: func(b []byte) []byte { return []byte("PK\x03\x04") }, reason: "not a gzip stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := good.Bytes()
			if tc.edit != nil {
				b = writeBundleEntries(t, tc.edit(t, readBundleEntries(t, b)))
			}
			if tc.cut != nil {
				b = tc.cut(bytes.Clone(b))
			}
			importOpts := *opts
			importOpts.TempDir = t.TempDir()
			if tc.key != "" {
				importOpts.SumDB = tc.key
			}
			dst := &MemCacher{}
			_, err := ImportBundle(context.Background(), bytes.NewReader(b), dst, &importOpts)
			if !errors.Is(err, ErrBundleRefused) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("import error = %v\nwant ErrBundleRefused containing %q", err, tc.reason)
			}
			var stored []string
			dst.Walk(context.Background(), "", func(name string) error { stored = append(stored, name); return nil })
			if len(stored) > 0 {
				t.Errorf("a refused bundle stored %q", stored)
			}
			if entries, _ := os.ReadDir(importOpts.TempDir); len(entries) != 0 {
				t.Errorf("the refused import left %d entries in its temporary directory", len(entries))
			}
		})
	}
}

// TestBundleStreamsZipsInBoundedMemory exports and imports a 40 MB zip:
// the bytes allocated meanwhile stay well below its size, so no zip is
// ever held in memory whole.
func TestBundleStreamsZipsInBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 40 MB zip")
	}
	const size = 40 << 20
	large, err := moduletest.LargeVersion(t.TempDir(), "example.com/large", "v1.0.0", size)
	if err != nil {
		t.Fatal(err)
	}
	vs := append(moduletest.Graph(10), large)
	db := newTestSumDB(t, vs)
	src := newBundleSource(t, DirCacher(t.TempDir()), vs, db)
	opts := &BundleOptions{SumDB: db.vkey, TempDir: t.TempDir()}
	items := []FillItem{{Path: large.Path, Version: large.Version, Files: FillModule}, {Path: "example.com/mod001", Version: "v1.1.0", Files: FillModule}}
	// Fetch the records first, so that only the export itself is measured.
	if _, err := ExportBundle(context.Background(), io.Discard, src, items, opts); err != nil {
		t.Fatal(err)
	}

	bundleFile := filepath.Join(t.TempDir(), "bundle.tar.gz")
	f, err := os.Create(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	allocated := measureAllocs(t, func() error {
		_, err := ExportBundle(context.Background(), f, src, items, opts)
		return err
	})
	f.Close()
	t.Logf("export of a %d MB zip allocated %.1f MB", size>>20, float64(allocated)/(1<<20))
	if allocated > size/4 {
		t.Errorf("export allocated %d bytes for a %d-byte zip", allocated, size)
	}

	dst := DirCacher(t.TempDir())
	allocated = measureAllocs(t, func() error {
		f, err := os.Open(bundleFile)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = ImportBundle(context.Background(), f, dst, opts)
		return err
	})
	t.Logf("import of a %d MB zip allocated %.1f MB", size>>20, float64(allocated)/(1<<20))
	if allocated > size/4 {
		t.Errorf("import allocated %d bytes for a %d-byte zip", allocated, size)
	}
	got, err := os.ReadFile(filepath.Join(string(dst), "example.com", "large", "@v", "v1.0.0.zip"))
	want, _ := os.ReadFile(large.ZipFile)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("the imported zip differs from the exported one (%v)", err)
	}
}

// measureAllocs returns the bytes allocated while fn ran.
func measureAllocs(t *testing.T, fn func() error) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := fn(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
