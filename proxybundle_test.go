package goproxy

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// post sends a POST with body to h.
func post(h http.Handler, target string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// newOfflineProxy returns a Proxy over cache that is offline, with its
// own transport
// (so that its egress policy sees every connection it would make)
// allowed to reach loopback, and a record of that policy's decisions.
func newOfflineProxy(t *testing.T, cache Cacher, goproxy string, env ...string) (*Proxy, *egressLog) {
	t.Helper()
	p := newTestProxy(t, goproxy, env...)
	p.Cacher = cache
	p.Offline = true
	p.Transport = nil
	p.Egress.Allow = []string{"127.0.0.0/8"}
	return p, watchEgress(t, p)
}

// TestBundleCarriesAGraphToAnOfflineProxyAndTheGoCommandVerifiesThroughIt
// exports a go.mod's graph from a proxy backed by a real checksum
// database (through the export endpoint), stops every upstream and the
// database, and imports the bundle into a fresh offline proxy (through
// the import endpoint): go mod download all through it succeeds, the go
// command verifying every record against the imported tiles through the
// proxy's /sumdb/, and the proxy connects nowhere.
func TestBundleCarriesAGraphToAnOfflineProxyAndTheGoCommandVerifiesThroughIt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	env := []string{"GOSUMDB=" + db.vkey + " " + db.URL, "GONOSUMDB=" + moduletest.PseudoPath}
	src := newTestProxy(t, up.URL, env...)
	src.Cacher = DirCacher(t.TempDir())

	w := post(src, "/-/export?input=go.mod", []byte(bundleGoMod))
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/gzip" {
		t.Fatalf("export: %d %s", w.Code, w.Body)
	}
	bundle := w.Body.Bytes()
	up.Close()
	db.Close()

	// The air-gapped side knows the database's key, and no URL that works.
	dst, egress := newOfflineProxy(t, DirCacher(t.TempDir()), up.URL, env...)
	w = post(dst, "/-/import", bundle)
	if w.Code != http.StatusOK {
		t.Fatalf("import: %d %s", w.Code, w.Body)
	}
	t.Logf("import: %s", w.Body)
	srv := httptest.NewServer(dst)
	defer srv.Close()

	e := gocmdtest.New(t)
	e.Set("GOPROXY", srv.URL)
	e.Set("GOSUMDB", db.vkey)
	e.Set("GONOSUMDB", moduletest.PseudoPath)
	e.WriteGoMod([]byte(bundleGoMod))
	e.MustRun(t, "mod", "download", "all")
	if lookups, _ := filepath.Glob(filepath.Join(e.GOMODCACHE, "cache", "download", "sumdb", db.name, "lookup", "example.com", "*")); len(lookups) == 0 {
		t.Error("the go command looked up no record: it verified nothing")
	}
	if n := egress.decisions(); n != 0 {
		t.Errorf("the offline proxy was about to connect %d times: %q", n, egress.allowed)
	}

	t.Run("a bundle signed with another key is refused whole", func(t *testing.T) {
		_, otherKey, err := note.GenerateKey(rand.Reader, db.name)
		if err != nil {
			t.Fatal(err)
		}
		other, _ := newOfflineProxy(t, DirCacher(t.TempDir()), "off", "GOSUMDB="+otherKey, "GONOSUMDB="+moduletest.PseudoPath)
		w := post(other, "/-/import", bundle)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "refused") {
			t.Errorf("import: %d %s", w.Code, w.Body)
		}
		if names := cachedNames(other.Cacher); len(names) != 0 {
			t.Errorf("a refused bundle left %d files in the cache: %q", len(names), names)
		}
	})
}

// TestExportDirIsAGOPROXYTreeTheGoCommandVerifiesFrom exports a graph
// from a proxy as a directory, which the go command reads with
// GOPROXY=file://, verifying with the database's key alone.
func TestExportDirIsAGOPROXYTreeTheGoCommandVerifiesFrom(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	p := newTestProxy(t, up.URL, "GOSUMDB="+db.vkey+" "+db.URL, "GONOSUMDB="+moduletest.PseudoPath)
	ctx := context.Background()
	plan, err := p.PlanFill(ctx, "go.mod", []byte(bundleGoMod))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m, err := p.ExportDir(ctx, dir, plan.Items)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Modules) != len(plan.Items) {
		t.Errorf("%d modules exported of %d", len(m.Modules), len(plan.Items))
	}
	up.Close()
	db.Close()
	e := gocmdtest.New(t)
	e.Set("GOPROXY", "file://"+filepath.ToSlash(dir))
	e.Set("GOSUMDB", db.vkey)
	e.Set("GONOSUMDB", moduletest.PseudoPath)
	e.WriteGoMod([]byte(bundleGoMod))
	e.MustRun(t, "mod", "download", "all")
}

// tamperZip rewrites a module zip with one file's content changed: still
// a valid module zip, whose hash no longer matches the database's.
func tamperZip(t *testing.T, data []byte) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		content, _ := io.ReadAll(rc)
		rc.Close()
		if strings.HasSuffix(f.Name, ".go") {
			content = append(content, "\n// tampered\n"...)
		}
		w, err := zw.Create(f.Name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(content)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestImportOfAModuleCacheRefusesATamperedZipByName imports a module
// cache the go command filled, in which one zip was altered: that version
// is refused and named, the others are imported and served.
func TestImportOfAModuleCacheRefusesATamperedZipByName(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	e := gocmdtest.New(t)
	e.Set("GOPROXY", up.URL)
	e.WriteGoMod(moduletest.RootGoMod(vs))
	e.MustRun(t, "mod", "download", "all")

	victim := filepath.Join(e.GOMODCACHE, "cache", "download", "example.com", "mod003", "@v", "v1.2.0.zip")
	data, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(victim, 0o644)
	if err := os.WriteFile(victim, tamperZip(t, data), 0o644); err != nil {
		t.Fatal(err)
	}

	p := newTestProxy(t, "off", "GOSUMDB="+db.vkey+" "+db.URL, "GONOSUMDB="+moduletest.PseudoPath)
	rep, err := p.ImportModuleDir(context.Background(), e.GOMODCACHE)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Refused) != 1 || rep.Refused[0].Item.Path != "example.com/mod003" || rep.Refused[0].Item.Version != "v1.2.0" ||
		!strings.Contains(rep.Refused[0].Err.Error(), "checksum mismatch") {
		t.Fatalf("refused %v; want example.com/mod003@v1.2.0 for a checksum mismatch", rep.Refused)
	}
	t.Logf("refused: %v: %v", rep.Refused[0].Item, rep.Refused[0].Err)
	if len(rep.Imported) < 12 {
		t.Errorf("imported %d versions: %v", len(rep.Imported), rep.Imported)
	}
	if w := do(p, "GET", "/example.com/mod003/@v/v1.2.0.zip", "Disable-Module-Fetch", "true"); w.Code != http.StatusNotFound {
		t.Errorf("the refused zip: %d", w.Code)
	}
	if w := do(p, "GET", "/example.com/mod000/@v/v1.1.0.zip", "Disable-Module-Fetch", "true"); w.Code != http.StatusOK {
		t.Errorf("an imported zip: %d %s", w.Code, w.Body)
	}
}
