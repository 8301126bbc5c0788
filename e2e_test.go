package goproxy

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// TestGoCommandEndToEnd drives the installed go command through the proxy
// over a generated module graph, then stops the upstream and checks that the
// same commands succeed from the proxy's cache alone.
func TestGoCommandEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(20)
	up := moduletest.NewServer(vs)
	defer up.Close()
	cacheDir := t.TempDir()
	p := newTestProxy(t, up.URL)
	p.Cacher = DirCacher(cacheDir)
	srv := httptest.NewServer(p)
	defer srv.Close()

	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	gocmd.WriteGoMod(moduletest.RootGoMod(vs))
	byKey := map[string]*moduletest.Version{}
	for _, v := range vs {
		byKey[v.Path+"@"+v.Version] = v
	}
	steps := func(t *testing.T) {
		// Every downloaded zip is byte for byte the upstream's.
		dec := json.NewDecoder(strings.NewReader(gocmd.MustRun(t, "mod", "download", "-json")))
		downloaded := 0
		for dec.More() {
			var m struct{ Path, Version, Zip, Error string }
			if err := dec.Decode(&m); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(m.Zip)
			if want := byKey[m.Path+"@"+m.Version]; err != nil || want == nil || !bytes.Equal(got, want.Zip) {
				t.Errorf("%s@%s: zip differs from the upstream's (%v)", m.Path, m.Version, err)
			}
			downloaded++
		}
		if downloaded < 20 {
			t.Errorf("go mod download fetched %d modules, want at least 20", downloaded)
		}
		if out := gocmd.MustRun(t, "list", "-m", "-versions", moduletest.GraphPath(1)); strings.TrimSpace(out) != moduletest.GraphPath(1)+" v1.0.0 v1.1.0 v1.2.0" {
			t.Errorf("go list -m -versions: %q", out)
		}
		gocmd.MustRun(t, "get", moduletest.UpperCasePath+"@latest")
		gocmd.MustRun(t, "mod", "download", moduletest.LegacyPath+"@"+moduletest.LegacyIncompatible)
		gocmd.MustRun(t, "mod", "download", moduletest.PseudoPath+"@"+moduletest.PseudoVersion)
		gocmd.MustRun(t, "get", moduletest.GraphPath(2)+"@master") // a query, answered by .info
	}
	t.Run("through the proxy", steps)
	if up.TotalRequests() == 0 {
		t.Fatal("the upstream saw no request")
	}

	up.Close()
	gocmd.FreshModCache(t)
	t.Run("from the cache with the upstream stopped", steps)

	// A new proxy process over the same directory serves fixed versions
	// without ever having seen the upstream.
	restarted := newTestProxy(t, up.URL)
	restarted.Cacher = DirCacher(cacheDir)
	srv2 := httptest.NewServer(restarted)
	defer srv2.Close()
	gocmd.FreshModCache(t)
	gocmd.Set("GOPROXY", srv2.URL)
	gocmd.MustRun(t, "mod", "download")
	gocmd.MustRun(t, "list", "-m", "-versions", moduletest.GraphPath(1))
}
