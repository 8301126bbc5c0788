package goproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// testSumDB is a real checksum database (golang.org/x/mod/sumdb's server
// over its signing test server) recording the true hashes of vs, with a
// log of the paths it was asked for.
type testSumDB struct {
	*httptest.Server
	name, vkey, skey string
	vs               []*moduletest.Version
	handler          atomic.Pointer[http.Handler]
	mu               sync.Mutex
	paths            []string
}

func newTestSumDB(t *testing.T, vs []*moduletest.Version) *testSumDB {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "sumdb.test")
	if err != nil {
		t.Fatal(err)
	}
	db := &testSumDB{name: "sumdb.test", vkey: vkey, skey: skey, vs: vs}
	db.reset()
	db.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		db.mu.Lock()
		db.paths = append(db.paths, r.URL.Path)
		db.mu.Unlock()
		(*db.handler.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(db.Close)
	return db
}

// reset replaces the database by a fresh one with the same key: its log
// grows in a new order, which to a client that saw the old one is a fork.
func (db *testSumDB) reset() {
	var h http.Handler = sumdb.NewServer(sumdb.NewTestServer(db.skey, db.gosum))
	db.handler.Store(&h)
}

// gosum returns the go.sum lines of a version, hashing what the upstream
// serves.
func (db *testSumDB) gosum(path, vers string) ([]byte, error) {
	for _, v := range db.vs {
		if v.Path != path || v.Version != vers {
			continue
		}
		zipHash, err := hashZipBytes(v)
		if err != nil {
			return nil, err
		}
		modHash, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(v.Mod)), nil
		})
		if err != nil {
			return nil, err
		}
		return fmt.Appendf(nil, "%s %s %s\n%s %s/go.mod %s\n", path, vers, zipHash, path, vers, modHash), nil
	}
	return nil, fmt.Errorf("%s@%s: %w", path, vers, fs.ErrNotExist)
}

func hashZipBytes(v *moduletest.Version) (string, error) {
	name := v.ZipFile
	if name == "" {
		f, err := os.CreateTemp("", "sumdb-*.zip")
		if err != nil {
			return "", err
		}
		defer os.Remove(f.Name())
		f.Write(v.Zip)
		f.Close()
		name = f.Name()
	}
	return dirhash.HashZip(name, dirhash.Hash1)
}

// asked reports the requests for paths containing s.
func (db *testSumDB) asked(s string) int {
	db.mu.Lock()
	defer db.mu.Unlock()
	n := 0
	for _, p := range db.paths {
		if strings.Contains(p, s) {
			n++
		}
	}
	return n
}

func (db *testSumDB) total() int {
	db.mu.Lock()
	defer db.mu.Unlock()
	return len(db.paths)
}

// newVerifyingProxy returns a proxy over up that verifies against db.
func newVerifyingProxy(t *testing.T, upURL string, db *testSumDB, env ...string) *Proxy {
	return newTestProxy(t, upURL, append([]string{"GOSUMDB=" + db.vkey + " " + db.URL}, env...)...)
}

func TestSumDBEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	p := newVerifyingProxy(t, up.URL, db)
	var sumdbRequests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/sumdb/"+db.name+"/") {
			sumdbRequests.Add(1)
		}
		p.ServeHTTP(w, r)
	}))
	defer srv.Close()

	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	// No URL: the go command can reach the database only through the
	// proxy, since sumdb.test resolves nowhere.
	gocmd.Set("GOSUMDB", db.vkey)
	gocmd.WriteGoMod(moduletest.RootGoMod(vs))
	gocmd.MustRun(t, "mod", "download")
	gocmd.MustRun(t, "get", moduletest.GraphPath(3)+"@latest")
	gosum, err := os.ReadFile(filepath.Join(gocmd.Dir, "go.sum"))
	if err != nil || !bytes.Contains(gosum, []byte(moduletest.GraphPath(3))) {
		t.Errorf("go.sum after go get: %q, %v", gosum, err)
	}
	if db.asked("/lookup/") == 0 {
		t.Error("the checksum database saw no lookup from the proxy")
	}
	if sumdbRequests.Load() < 2 {
		t.Errorf("the go command sent %d checksum database requests through the proxy; it verifies nothing", sumdbRequests.Load())
	}
}

func TestSumDBRefusesAlteredFiles(t *testing.T) {
	vs := moduletest.Graph(10)
	target := moduletest.GraphPath(4)
	altered := map[string][]byte{
		"/" + target + "/@v/v1.0.0.zip": makeZip(t,
			target+"@v1.0.0/go.mod", "module "+target+"\n",
			target+"@v1.0.0/evil.go", "package mod004 // not what was published\n"),
		"/" + target + "/@v/v1.0.0.mod": []byte("module " + target + "\n// altered\n"),
	}
	up := moduletest.NewServer(vs)
	defer up.Close()
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if body, ok := altered[r.URL.Path]; ok {
			w.Write(body)
			return true
		}
		return false
	})
	db := newTestSumDB(t, vs)
	p := newVerifyingProxy(t, up.URL, db)
	for path := range altered {
		w := do(p, "GET", path)
		body := w.Body.String()
		if w.Code != http.StatusBadGateway || !strings.Contains(body, "SECURITY ERROR") || !strings.Contains(body, target+"@v1.0.0") ||
			strings.Count(body, "h1:") != 2 {
			t.Errorf("GET %s: %d %q; want 502 naming SECURITY ERROR, the module, and both hashes", path, w.Code, body)
		}
		if f, err := p.Cacher.Get(context.Background(), strings.TrimPrefix(path, "/")); err == nil {
			f.Close()
			t.Errorf("%s was cached", path)
		}
	}
	// Unaltered modules still pass.
	if w := do(p, "GET", "/"+moduletest.GraphPath(5)+"/@v/v1.0.0.zip"); w.Code != 200 {
		t.Errorf("unaltered zip: %d %s", w.Code, w.Body)
	}

	if testing.Short() {
		return
	}
	srv := httptest.NewServer(p)
	defer srv.Close()
	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	gocmd.Set("GOSUMDB", db.vkey)
	gocmd.WriteGoMod(moduletest.RootGoMod(vs))
	_, stderr, err := gocmd.Run("mod", "download", target+"@v1.0.0")
	if err == nil || !strings.Contains(stderr, "SECURITY ERROR") || !strings.Contains(stderr, "checksum mismatch") {
		t.Errorf("go mod download of an altered module: err %v, stderr %q", err, stderr)
	}
}

func TestSumDBExemptions(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs[:0]) // knows nothing: any lookup would fail
	for _, tt := range []struct {
		name string
		env  []string
	}{
		{"GONOSUMDB", []string{"GONOSUMDB=example.com/mod00*"}},
		{"GOPRIVATE", []string{"GOPRIVATE=example.com", "GONOPROXY=none.invalid"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newVerifyingProxy(t, up.URL, db, tt.env...)
			for _, ext := range []string{".mod", ".zip"} {
				if w := do(p, "GET", "/"+moduletest.GraphPath(2)+"/@v/v1.0.0"+ext); w.Code != 200 {
					t.Errorf("exempt %s: %d %s", ext, w.Code, w.Body)
				}
			}
			if n := db.asked("mod002"); n != 0 {
				t.Errorf("the checksum database was asked %d times about an exempt module", n)
			}
		})
	}
	t.Run("GOSUMDB=off", func(t *testing.T) {
		p := newTestProxy(t, up.URL, "GOSUMDB=off")
		if w := do(p, "GET", "/"+moduletest.GraphPath(3)+"/@v/v1.0.0.zip"); w.Code != 200 {
			t.Errorf("GOSUMDB=off: %d %s", w.Code, w.Body)
		}
	})
	if db.total() != 0 {
		t.Errorf("checksum database received %d requests", db.total())
	}
	// Not exempt: refused, since the database does not know the module.
	p := newVerifyingProxy(t, up.URL, db)
	if w := do(p, "GET", "/"+moduletest.GraphPath(2)+"/@v/v1.0.0.mod"); w.Code != http.StatusBadGateway {
		t.Errorf("unknown to the database: %d %s", w.Code, w.Body)
	}
}

// countingTransport counts the requests that leave the proxy.
type countingTransport struct{ n atomic.Int32 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

func TestSumDBServing(t *testing.T) {
	vs := moduletest.Graph(10)
	db := newTestSumDB(t, vs)
	ct := &countingTransport{}
	p := newTestProxy(t, "off", "GOSUMDB="+db.vkey+" "+db.URL)
	p.Transport = ct
	// The latest tree is fetched again at every request: past its time
	// when the database goes away below.
	p.SumDBTTL = -1

	if w := do(p, "GET", "/sumdb/other.example/latest"); w.Code != 404 || ct.n.Load() != 0 {
		t.Errorf("unconfigured database: %d, %d outbound requests; want 404 and none", w.Code, ct.n.Load())
	}
	if w := do(p, "GET", "/sumdb/"+db.name+"/supported"); w.Code != 200 || ct.n.Load() != 0 {
		t.Errorf("supported: %d, %d outbound requests", w.Code, ct.n.Load())
	}
	lookup := "/sumdb/" + db.name + "/lookup/" + moduletest.GraphPath(1) + "@v1.0.0"
	for range 2 {
		if w := do(p, "GET", lookup); w.Code != 200 || !strings.Contains(w.Body.String(), moduletest.GraphPath(1)+" v1.0.0 h1:") {
			t.Fatalf("lookup: %d %q", w.Code, w.Body)
		}
	}
	if n := db.asked("/lookup/"); n != 1 {
		t.Errorf("lookup reached the database %d times, want 1 (cached)", n)
	}
	latest := do(p, "GET", "/sumdb/"+db.name+"/latest")
	if latest.Code != 200 || !strings.HasPrefix(latest.Body.String(), "go.sum database tree") {
		t.Errorf("latest: %d %q", latest.Code, latest.Body)
	}
	if w := do(p, "GET", "/sumdb/"+db.name+"/tile/8/0/000.p/1"); w.Code != 200 || w.Body.Len() != 32 {
		t.Errorf("partial tile: %d, %d bytes", w.Code, w.Body.Len())
	}

	// With the database gone, cached answers are still served.
	db.Close()
	if w := do(p, "GET", lookup); w.Code != 200 {
		t.Errorf("cached lookup with the database down: %d", w.Code)
	}
	if w := do(p, "GET", "/sumdb/"+db.name+"/latest"); w.Code != 200 || w.Header().Get("Warning") == "" {
		t.Errorf("stale latest with the database down: %d %v", w.Code, w.Header())
	}
}

func TestSumDBUnreachable(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	db.Close()
	p := newVerifyingProxy(t, up.URL, db)
	mod := "/" + moduletest.GraphPath(1) + "/@v/v1.0.0.mod"
	if w := do(p, "GET", mod); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "checksum database") {
		t.Errorf("fail closed: %d %q", w.Code, w.Body)
	}
	p2 := newVerifyingProxy(t, up.URL, db)
	p2.AllowUnverified = true
	if w := do(p2, "GET", mod); w.Code != 200 {
		t.Errorf("AllowUnverified: %d %q", w.Code, w.Body)
	}
	if f, err := p2.Cacher.Get(context.Background(), strings.TrimPrefix(mod, "/")); err == nil {
		f.Close()
		t.Error("unverified content was cached")
	}
}

func TestSumDBForkStopsVerification(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	p := newVerifyingProxy(t, up.URL, db)
	if w := do(p, "GET", "/"+moduletest.GraphPath(1)+"/@v/v1.0.0.mod"); w.Code != 200 {
		t.Fatalf("before the fork: %d %s", w.Code, w.Body)
	}
	db.reset() // same key, a log with other records: a fork
	w := do(p, "GET", "/"+moduletest.GraphPath(2)+"/@v/v1.0.0.mod")
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "SECURITY ERROR") {
		t.Fatalf("on the fork: %d %q", w.Code, w.Body)
	}
	asked := db.total()
	w = do(p, "GET", "/"+moduletest.GraphPath(3)+"/@v/v1.0.0.mod")
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "inconsistent") {
		t.Errorf("after the fork: %d %q", w.Code, w.Body)
	}
	if db.total() != asked {
		t.Error("the proxy kept asking the forked database")
	}
}

// TestSumDBThroughUpstreamProxy chains two proxies: the front one, given
// only the database's key, reaches the database through its upstream
// proxy's /sumdb/, as the go command would.
func TestSumDBThroughUpstreamProxy(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	back := httptest.NewServer(newVerifyingProxy(t, up.URL, db))
	defer back.Close()
	// No URL: https://sumdb.test resolves nowhere, so verification works
	// only through the upstream proxy.
	front := newTestProxy(t, back.URL, "GOSUMDB="+db.vkey)
	for _, f := range []string{".mod", ".zip"} {
		if w := do(front, "GET", "/"+moduletest.GraphPath(2)+"/@v/v1.0.0"+f); w.Code != 200 {
			t.Errorf("%s through a proxied checksum database: %d %s", f, w.Code, w.Body)
		}
	}
	if db.asked("/lookup/"+moduletest.GraphPath(2)) == 0 {
		t.Error("the database saw no lookup")
	}

	// An upstream that does not serve the database (404 for supported)
	// leaves the database's own address, which fails here: fail closed.
	plain := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, plain.URL, "GOSUMDB="+db.vkey)
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod"); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "sumdb.test") {
		t.Errorf("without a proxied database: %d %s", w.Code, w.Body)
	}
	if plain.Requests("/sumdb/sumdb.test/supported") != 1 {
		t.Error("the upstream was not asked whether it serves the database")
	}
}
