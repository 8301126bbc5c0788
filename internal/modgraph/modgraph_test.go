package modgraph_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/modgraph"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// graph is moduletest's generated graph (pruned go 1.21 modules with
// cycles, a go.mod-less legacy module) plus modules at go 1.16, whose
// go.mod files are unpruned, and a module only replacements point to.
func graph(t testing.TB) []*moduletest.Version {
	vs := moduletest.Graph(12)
	vs = append(vs,
		newVersion(t, "example.com/old", "v1.0.0", "module example.com/old\n\ngo 1.16\n\nrequire example.com/mod005 v1.0.0\n"),
		newVersion(t, "example.com/old", "v1.1.0", "module example.com/old\n\ngo 1.16\n\nrequire (\n\texample.com/mod005 v1.1.0\n\texample.com/older v1.0.0\n)\n"),
		newVersion(t, "example.com/older", "v1.0.0", "module example.com/older\n\nrequire example.com/mod009 v1.0.0\n"),
		newVersion(t, "example.com/fork", "v1.5.0", "module example.com/fork\n\ngo 1.21\n\nrequire example.com/mod010 v1.0.0\n"),
	)
	return vs
}

// newVersion builds a version with the given go.mod and one Go file.
func newVersion(t testing.TB, path, version, mod string) *moduletest.Version {
	t.Helper()
	files := []modzip.File{
		file{"go.mod", mod},
		file{"x.go", "package x\n"},
	}
	var buf bytes.Buffer
	if err := modzip.Create(&buf, module.Version{Path: path, Version: version}, files); err != nil {
		t.Fatal(err)
	}
	return &moduletest.Version{Path: path, Version: version, Time: time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC), Mod: []byte(mod), Zip: buf.Bytes()}
}

type file struct{ name, data string }

func (f file) Path() string                 { return f.name }
func (f file) Lstat() (fs.FileInfo, error)  { return info(f), nil }
func (f file) Open() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(f.data)), nil }

type info file

func (i info) Name() string       { return i.name }
func (i info) Size() int64        { return int64(len(i.data)) }
func (i info) Mode() fs.FileMode  { return 0o644 }
func (i info) ModTime() time.Time { return time.Time{} }
func (i info) IsDir() bool        { return false }
func (i info) Sys() any           { return nil }

// source reads .mod files straight from the versions, counting reads.
type source struct {
	vs    []*moduletest.Version
	mu    sync.Mutex
	reads map[module.Version]int
}

func (s *source) read(ctx context.Context, path, version string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reads == nil {
		s.reads = map[module.Version]int{}
	}
	s.reads[module.Version{Path: path, Version: version}]++
	for _, v := range s.vs {
		if v.Path == path && v.Version == version {
			return v.Mod, nil
		}
	}
	return nil, fmt.Errorf("%s@%s: %w", path, version, fs.ErrNotExist)
}

var cases = []struct {
	name  string
	gomod string
}{
	{"pruned main module", "module example.com/root\n\ngo 1.21\n\nrequire (\n\texample.com/mod000 v1.0.0\n\texample.com/mod004 v1.1.0\n)\n"},
	{"pruned roots raised by the graph", "module example.com/root\n\ngo 1.21\n\nrequire (\n\texample.com/mod000 v1.1.0\n\texample.com/mod003 v1.0.0\n)\n"},
	{"unpruned main module", "module example.com/root\n\ngo 1.16\n\nrequire example.com/mod000 v1.1.0\n"},
	{"no go directive", "module example.com/root\n\nrequire example.com/mod002 v1.0.0\n"},
	{"pruned main module requiring an unpruned module", "module example.com/root\n\ngo 1.22.0\n\nrequire (\n\texample.com/old v1.1.0\n\texample.com/mod001 v1.0.0\n)\n"},
	{"special versions", "module example.com/root\n\ngo 1.21\n\nrequire (\n\t" + moduletest.LegacyPath + " " + moduletest.LegacyIncompatible +
		"\n\t" + moduletest.PseudoPath + " " + moduletest.PseudoVersion + "\n\t" + moduletest.UpperCasePath + " v1.1.0\n)\n"},
	{"replacements and exclusions", "module example.com/root\n\ngo 1.21\n\nrequire (\n\texample.com/mod000 v1.1.0\n\texample.com/mod006 v1.0.0\n\texample.com/old v1.0.0\n)\n\n" +
		"replace example.com/mod001 v1.0.0 => example.com/fork v1.5.0\n\nreplace example.com/mod006 => example.com/fork v1.5.0\n\nexclude example.com/mod003 v1.1.0\n"},
}

// TestWalkAsksForWhatGoModDownloadAllFetches runs the real go command
// as the oracle: the .mod and .zip files "go mod download all" fetches
// from an upstream are exactly those the walk names.
func TestWalkAsksForWhatGoModDownloadAllFetches(t *testing.T) {
	vs := graph(t)
	up := moduletest.NewServer(vs)
	defer up.Close()
	var mu sync.Mutex
	var asked []string
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		asked = append(asked, r.URL.Path)
		mu.Unlock()
		return false
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := &source{vs: vs}
			g, err := modgraph.Walk(context.Background(), []byte(tc.gomod), src.read, 4)
			if err != nil {
				t.Fatal(err)
			}
			for m, n := range src.reads {
				if n != 1 {
					t.Errorf("go.mod of %v read %d times", m, n)
				}
			}

			e := gocmdtest.New(t)
			e.Set("GOPROXY", up.URL)
			e.WriteGoMod([]byte(tc.gomod))
			mu.Lock()
			asked = nil
			mu.Unlock()
			e.MustRun(t, "mod", "download", "all")
			mu.Lock()
			defer mu.Unlock()

			var gotMod, gotZip, gotInfo, wantMod, wantZip, wantInfo []string
			for _, p := range asked {
				switch {
				case strings.HasSuffix(p, ".info"):
					gotInfo = append(gotInfo, p)
				case strings.HasSuffix(p, ".mod"):
					gotMod = append(gotMod, p)
				case strings.HasSuffix(p, ".zip"):
					gotZip = append(gotZip, p)
				}
			}
			mods := map[module.Version]bool{}
			for _, m := range g.ModFiles {
				mods[m] = true
			}
			for _, m := range g.Download {
				mods[m] = true
				wantZip = append(wantZip, proxyPath(t, m, ".zip"))
				wantInfo = append(wantInfo, proxyPath(t, m, ".info"))
			}
			for m := range mods {
				wantMod = append(wantMod, proxyPath(t, m, ".mod"))
			}
			for _, l := range [][]string{gotMod, gotZip, gotInfo, wantMod, wantZip, wantInfo} {
				slices.Sort(l)
			}
			if !slices.Equal(gotMod, wantMod) {
				t.Errorf(".mod files:\ngo command fetched %q\nwalk names         %q", gotMod, wantMod)
			}
			if !slices.Equal(gotInfo, wantInfo) {
				t.Errorf(".info files:\ngo command fetched %q\nwalk names         %q", gotInfo, wantInfo)
			}
			if !slices.Equal(gotZip, wantZip) {
				t.Errorf(".zip files:\ngo command fetched %q\nwalk names         %q", gotZip, wantZip)
			}
		})
	}
}

func proxyPath(t *testing.T, m module.Version, ext string) string {
	p, err := module.EscapePath(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := module.EscapeVersion(m.Version)
	if err != nil {
		t.Fatal(err)
	}
	return "/" + p + "/@v/" + v + ext
}

func TestWalkReportsDirectoryReplacementsAndFetchesNothingForThem(t *testing.T) {
	src := &source{vs: graph(t)}
	gomod := "module example.com/root\n\ngo 1.21\n\nrequire (\n\texample.com/mod000 v1.1.0\n\texample.com/mod002 v1.0.0\n)\n\nreplace example.com/mod000 => ./mod000\n"
	g, err := modgraph.Walk(context.Background(), []byte(gomod), src.read, 0)
	if err != nil {
		t.Fatal(err)
	}
	local := module.Version{Path: "example.com/mod000", Version: "v1.1.0"}
	if !slices.Equal(g.Local, []module.Version{local}) {
		t.Errorf("Local = %v, want [%v]", g.Local, local)
	}
	for _, list := range [][]module.Version{g.ModFiles, g.Download} {
		if slices.ContainsFunc(list, func(m module.Version) bool { return m.Path == local.Path }) {
			t.Errorf("%v is to be fetched: %v", local.Path, list)
		}
	}
	want := []module.Version{{Path: "example.com/mod002", Version: "v1.0.0"}, {Path: "example.com/mod003", Version: "v1.0.0"}}
	if !slices.Equal(g.Download, want) {
		t.Errorf("Download = %v, want %v", g.Download, want)
	}
}

func TestWalkFailsNamingTheGoModItCouldNotRead(t *testing.T) {
	src := &source{vs: graph(t)}
	gomod := "module example.com/root\n\ngo 1.21\n\nrequire example.com/missing v1.0.0\n"
	_, err := modgraph.Walk(context.Background(), []byte(gomod), src.read, 0)
	if err == nil || !strings.Contains(err.Error(), "example.com/missing@v1.0.0") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Walk error = %v, want one naming example.com/missing@v1.0.0 and wrapping fs.ErrNotExist", err)
	}
	if _, err := modgraph.Walk(context.Background(), []byte("go 1.21\n"), src.read, 0); err == nil {
		t.Error("Walk of a go.mod without a module directive succeeded")
	}
}
