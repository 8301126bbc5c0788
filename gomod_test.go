package goproxy

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/modfile"
)

// TestNoReplaceDirectives reads every go.mod of the repository: none may
// replace a module, since "go install module/cmd@version" refuses a
// module with replace directives. The workspace (go.work) is where the
// nested modules meet the root module as it is.
func TestNoReplaceDirectives(t *testing.T) {
	found := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && (d.Name()[0] == '.' || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.Name() != "go.mod" {
			return nil
		}
		found++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := modfile.Parse(path, data, nil)
		if err != nil {
			return err
		}
		for _, r := range f.Replace {
			t.Errorf("%s:%d: replace %s: no go.mod may replace a module (go.work does, for the workspace)", path, r.Syntax.Start.Line, r.Old.Path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found < 3 {
		t.Errorf("found %d go.mod files: the root, dnsquic and cmd/goproxy at least", found)
	}
}
