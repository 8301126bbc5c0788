package moduletest_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// exerciseGoCommand runs the go command operations a proxy must support
// against whatever GOPROXY e has, and checks that what landed in the
// module cache is exactly what was published.
func exerciseGoCommand(t *testing.T, e *gocmdtest.Env, vs []*moduletest.Version, queries bool) {
	t.Helper()
	e.WriteGoMod(moduletest.RootGoMod(vs))
	// The special versions first, while the module cache is empty, so
	// they are really fetched rather than found in the cache.
	e.MustRun(t, "mod", "download", moduletest.LegacyPath+"@"+moduletest.LegacyIncompatible)
	e.MustRun(t, "mod", "download", moduletest.PseudoPath+"@"+moduletest.PseudoVersion)
	e.MustRun(t, "get", moduletest.UpperCasePath+"@latest")
	if out := e.MustRun(t, "list", "-m", moduletest.UpperCasePath); strings.TrimSpace(out) != moduletest.UpperCasePath+" v1.1.0" {
		t.Errorf("after go get @latest: %q", out)
	}

	e.MustRun(t, "mod", "download")
	if out := e.MustRun(t, "list", "-m", "-versions", "example.com/mod000"); strings.TrimSpace(out) != "example.com/mod000 v1.0.0 v1.1.0" {
		t.Errorf("go list -m -versions = %q", out)
	}
	if out := e.MustRun(t, "list", "-m", "-versions", "example.com/mod001"); strings.TrimSpace(out) != "example.com/mod001 v1.0.0 v1.1.0 v1.2.0" {
		t.Errorf("go list -m -versions = %q", out)
	}
	// An empty @v/list makes the go command fall back to @latest.
	e.MustRun(t, "get", moduletest.PseudoPath+"@latest")
	if out := e.MustRun(t, "list", "-m", moduletest.PseudoPath); strings.TrimSpace(out) != moduletest.PseudoPath+" "+moduletest.PseudoVersion {
		t.Errorf("after go get pseudo@latest: %q", out)
	}
	if queries {
		// A branch-like query is resolved by the proxy's .info answer;
		// a file tree cannot do that.
		e.MustRun(t, "mod", "download", "example.com/mod002@master")
	}

	// Everything newest must have been downloaded, unchanged.
	newest := make(map[string]*moduletest.Version)
	for _, v := range vs {
		if n := newest[v.Path]; n == nil || semver.Compare(v.Version, n.Version) > 0 {
			newest[v.Path] = v
		}
	}
	for _, v := range newest {
		esc, _ := module.EscapePath(v.Path)
		escV, _ := module.EscapeVersion(v.Version)
		base := filepath.Join(e.GOMODCACHE, "cache", "download", filepath.FromSlash(esc), "@v", escV)
		got, err := os.ReadFile(base + ".zip")
		if err != nil {
			t.Errorf("%s@%s not downloaded: %v", v.Path, v.Version, err)
			continue
		}
		want := v.Zip
		if v.ZipFile != "" {
			if want, err = os.ReadFile(v.ZipFile); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s@%s: cached zip differs from published one", v.Path, v.Version)
		}
		if mod, _ := os.ReadFile(base + ".mod"); !bytes.Equal(mod, v.Mod) {
			t.Errorf("%s@%s: cached .mod = %q, want %q", v.Path, v.Version, mod, v.Mod)
		}
	}
	// The extracted legacy module has no go.mod: it really is +incompatible.
	legacyDir := filepath.Join(e.GOMODCACHE, "example.com", "legacy@"+moduletest.LegacyIncompatible)
	if _, err := os.Stat(filepath.Join(legacyDir, "legacy.go")); err != nil {
		t.Errorf("legacy module not extracted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(legacyDir, "go.mod")); err == nil {
		t.Errorf("legacy module has a go.mod")
	}
}

func TestGoCommand(t *testing.T) {
	t.Parallel()
	vs := moduletest.Graph(12)
	large, err := moduletest.LargeVersion(t.TempDir(), "example.com/large", "v1.0.0", 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	vs = append(vs, large)

	t.Run("server", func(t *testing.T) {
		s := moduletest.NewServer(vs)
		defer s.Close()
		if testing.Verbose() {
			// Shows the go command's conversation with a proxy.
			s.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
				t.Logf("%s %s", r.Method, r.URL.Path)
				return false
			})
		}
		e := gocmdtest.New(t)
		e.Set("GOPROXY", s.URL)
		exerciseGoCommand(t, e, vs, true)
		for _, p := range []string{
			"/example.com/large/@v/v1.0.0.zip",
			"/example.com/legacy/@v/v2.0.0+incompatible.zip",
			"/example.com/pseudo/@v/v0.0.0-20240102030405-abcdefabcdef.zip",
			"/example.com/!upper!case/!mod/@v/v1.1.0.zip",
			"/example.com/pseudo/@latest",
			"/example.com/mod002/@v/master.info",
		} {
			if n := s.Requests(p); n != 1 {
				t.Errorf("GET %s: %d requests, want 1", p, n)
			}
		}

		// With everything cached, the go command needs no proxy at all.
		s.Reset()
		e.Set("GOPROXY", "off")
		e.MustRun(t, "mod", "download")

		// A fresh cache really starts over.
		e.FreshModCache(t)
		e.Set("GOPROXY", s.URL)
		e.MustRun(t, "mod", "download", "example.com/mod003@v1.1.0")
		if s.Requests("/example.com/mod003/@v/v1.1.0.zip") != 1 {
			t.Errorf("fresh cache did not refetch: %d", s.Requests("/example.com/mod003/@v/v1.1.0.zip"))
		}
	})

	t.Run("file", func(t *testing.T) {
		dir := t.TempDir()
		if err := moduletest.WriteDir(dir, vs); err != nil {
			t.Fatal(err)
		}
		e := gocmdtest.New(t)
		e.FreshModCache(t)
		e.Set("GOPROXY", "file://"+filepath.ToSlash(dir))
		exerciseGoCommand(t, e, vs, false)
	})
}
