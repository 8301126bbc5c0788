package moduletest_test

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"

	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// checkZip runs the go command's own zip validation on v's zip.
func checkZip(t *testing.T, v *moduletest.Version) {
	t.Helper()
	name := v.ZipFile
	if name == "" {
		name = filepath.Join(t.TempDir(), "m.zip")
		if err := os.WriteFile(name, v.Zip, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := modzip.CheckZip(module.Version{Path: v.Path, Version: v.Version}, name); err != nil {
		t.Errorf("CheckZip(%s@%s): %v", v.Path, v.Version, err)
	}
}

func TestGraph(t *testing.T) {
	t.Parallel()
	vs := moduletest.Graph(12)
	if !reflect.DeepEqual(vs, moduletest.Graph(12)) {
		t.Fatal("Graph is not deterministic")
	}
	paths := make(map[string]int)
	for _, v := range vs {
		paths[v.Path]++
		if err := module.Check(v.Path, v.Version); err != nil {
			t.Errorf("invalid version: %v", err)
		}
		if v.Time.IsZero() || v.ZipFile != "" || len(v.Zip) == 0 {
			t.Errorf("%s@%s: want time and in-memory zip", v.Path, v.Version)
		}
		checkZip(t, v)

		f, err := modfile.Parse("go.mod", v.Mod, nil)
		if err != nil {
			t.Fatalf("%s@%s: %v", v.Path, v.Version, err)
		}
		if f.Module.Mod.Path != v.Path {
			t.Errorf("%s@%s: go.mod declares %s", v.Path, v.Version, f.Module.Mod.Path)
		}
		if strings.HasPrefix(v.Path, "example.com/mod") {
			if n := len(f.Require); n < 1 || n > 2 {
				t.Errorf("%s@%s requires %d modules", v.Path, v.Version, n)
			}
			for _, r := range f.Require {
				if r.Mod.Path == v.Path || !inGraph(vs, r.Mod) {
					t.Errorf("%s@%s requires %v, not another graph member", v.Path, v.Version, r.Mod)
				}
			}
		}

		zipGoMod := zipFile(t, v, "go.mod")
		if v.Path == moduletest.LegacyPath {
			if zipGoMod != nil {
				t.Errorf("%s@%s: legacy zip contains go.mod", v.Path, v.Version)
			}
			if string(v.Mod) != "module example.com/legacy\n" {
				t.Errorf("legacy .mod = %q", v.Mod)
			}
		} else if !bytes.Equal(zipGoMod, v.Mod) {
			t.Errorf("%s@%s: zip go.mod differs from .mod", v.Path, v.Version)
		}
	}
	if len(paths) != 12+3 {
		t.Errorf("got %d module paths, want 15", len(paths))
	}
	for i := range 12 {
		if n := paths[moduletest.GraphPath(i)]; n < 2 || n > 3 {
			t.Errorf("%s has %d versions", moduletest.GraphPath(i), n)
		}
	}
	for _, p := range []string{moduletest.UpperCasePath, moduletest.LegacyPath, moduletest.PseudoPath} {
		if paths[p] == 0 {
			t.Errorf("missing special module %s", p)
		}
	}
}

func inGraph(vs []*moduletest.Version, m module.Version) bool {
	for _, v := range vs {
		if v.Path == m.Path && v.Version == m.Version {
			return true
		}
	}
	return false
}

// zipFile returns the content of name inside v's zip, or nil.
func zipFile(t *testing.T, v *moduletest.Version, name string) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(v.Zip), int64(len(v.Zip)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := zr.Open(v.Path + "@" + v.Version + "/" + name)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRootGoMod(t *testing.T) {
	t.Parallel()
	vs := moduletest.Graph(10)
	f, err := modfile.Parse("go.mod", moduletest.RootGoMod(vs), nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.Module.Mod.Path != "example.com/root" || f.Go.Version != "1.21" {
		t.Errorf("module %q go %q", f.Module.Mod.Path, f.Go.Version)
	}
	got := make(map[string]string)
	for _, r := range f.Require {
		got[r.Mod.Path] = r.Mod.Version
	}
	want := make(map[string]string)
	for _, v := range vs {
		if w, ok := want[v.Path]; !ok || semver.Compare(v.Version, w) > 0 {
			want[v.Path] = v.Version
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("requires %v\nwant %v", got, want)
	}
}

func TestWriteDir(t *testing.T) {
	t.Parallel()
	vs := moduletest.Graph(10)
	dir := t.TempDir()
	if err := moduletest.WriteDir(dir, vs); err != nil {
		t.Fatal(err)
	}
	read := func(rel string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read("example.com/!upper!case/!mod/@v/list"); got != "v1.0.0\nv1.1.0\n" {
		t.Errorf("UpperCase list = %q", got)
	}
	if got := read("example.com/pseudo/@v/list"); got != "" {
		t.Errorf("pseudo list = %q, want empty", got)
	}
	if got := read("example.com/pseudo/@latest"); !strings.Contains(got, moduletest.PseudoVersion) {
		t.Errorf("pseudo @latest = %q", got)
	}
	if got := read("example.com/legacy/@v/v2.0.0+incompatible.mod"); got != "module example.com/legacy\n" {
		t.Errorf("legacy .mod = %q", got)
	}
	for _, v := range vs {
		esc, _ := module.EscapePath(v.Path)
		base := esc + "/@v/" + v.Version
		if read(base+".info") != string(v.Info()) || read(base+".mod") != string(v.Mod) || read(base+".zip") != string(v.Zip) {
			t.Errorf("%s@%s: files differ from Version", v.Path, v.Version)
		}
	}
}
