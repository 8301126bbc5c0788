package goproxy

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// itemStrings renders a plan's items for comparison.
func itemStrings(p *FillPlan) []string {
	var s []string
	for _, it := range p.Items {
		s = append(s, it.String())
	}
	return s
}

func skipEntries(p *FillPlan) []string {
	var s []string
	for _, sk := range p.Skipped {
		s = append(s, sk.Entry)
	}
	return s
}

func TestFillPlanFromGoSumAsksForModOnlyOnGoModLines(t *testing.T) {
	gosum := `golang.org/x/mod v0.42.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
golang.org/x/mod v0.42.0/go.mod h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=

golang.org/x/sync v0.23.0/go.mod h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
github.com/BurntSushi/toml v1.3.2/go.mod h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
github.com/BurntSushi/toml v1.3.2 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
github.com/docker/docker v20.10.7+incompatible h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
`
	p, err := FillPlanFromGoSum([]byte(gosum))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"github.com/BurntSushi/toml@v1.3.2",
		"github.com/docker/docker@v20.10.7+incompatible",
		"golang.org/x/mod@v0.42.0",
		"golang.org/x/sync@v0.23.0 (.mod)",
	}
	if got := itemStrings(p); !slices.Equal(got, want) {
		t.Errorf("items = %q, want %q", got, want)
	}
}

func TestFillPlanFromGoSumRefusesMalformedLinesByNumber(t *testing.T) {
	for _, tc := range []struct{ name, gosum, want string }{
		{"two fields", "a.example/m v1.0.0 h1:x=\na.example/m v1.0.0\n", "go.sum:2"},
		{"four fields", "a.example/m v1.0.0 h1:x= extra\n", "go.sum:1"},
		{"bad path", "\n\nnot a path v1.0.0 h1:x=\n", "go.sum:3"},
		{"non-canonical version", "a.example/m v1.0 h1:x=\n", "not canonical"},
		{"no version", "a.example/m latest h1:x=\n", "go.sum:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FillPlanFromGoSum([]byte(tc.gosum))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestFillPlanFromListReadsGoListMAllOutput(t *testing.T) {
	list := `example.com/root
# a comment
golang.org/x/mod v0.42.0
golang.org/x/sync@v0.24.0 // a trailing comment
example.com/old v1.0.0 => example.com/fork v1.5.0
example.com/local v1.0.0 => ../local

golang.org/x/mod@v0.42.0
`
	p, err := FillPlanFromList([]byte(list))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"example.com/fork@v1.5.0", "golang.org/x/mod@v0.42.0", "golang.org/x/sync@v0.24.0"}
	if got := itemStrings(p); !slices.Equal(got, want) {
		t.Errorf("items = %q, want %q", got, want)
	}
	if got, want := skipEntries(p), []string{"example.com/root", "example.com/local v1.0.0 => ../local"}; !slices.Equal(got, want) {
		t.Errorf("skipped = %q, want %q", got, want)
	}
}

func TestFillPlanFromListRefusesWhatIsNoModuleVersion(t *testing.T) {
	for _, tc := range []struct{ name, list, want string }{
		{"a query", "golang.org/x/mod@latest\n", "list:1"},
		{"three fields", "a.example/m v1.0.0 v1.1.0\n", "list:1"},
		{"dangling replacement", "\na.example/m v1.0.0 =>\n", "list:2"},
		{"a bad path", "-a.example/m@v1.0.0\n", "list:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FillPlanFromList([]byte(tc.list))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestFillPlanFromGoModNamesModFilesAndDownloads(t *testing.T) {
	vs := moduletest.Graph(10)
	read := func(ctx context.Context, path, version string) ([]byte, error) {
		for _, v := range vs {
			if v.Path == path && v.Version == version {
				return v.Mod, nil
			}
		}
		return nil, fmt.Errorf("%s@%s: %w", path, version, fs.ErrNotExist)
	}
	gomod := "module example.com/root\n\ngo 1.21\n\nrequire example.com/mod000 v1.1.0\n\nreplace example.com/mod003 => ./mod003\n"
	p, err := FillPlanFromGoMod(context.Background(), []byte(gomod), read)
	if err != nil {
		t.Fatal(err)
	}
	// mod000 v1.1.0 requires mod001 v1.0.0 and mod003 v1.1.0, which is
	// replaced by a directory; only mod000's go.mod is read.
	want := []string{"example.com/mod000@v1.1.0", "example.com/mod001@v1.0.0"}
	if got := itemStrings(p); !slices.Equal(got, want) {
		t.Errorf("items = %q, want %q", got, want)
	}
	if got, want := skipEntries(p), []string{"example.com/mod003@v1.1.0"}; !slices.Equal(got, want) {
		t.Errorf("skipped = %q, want %q", got, want)
	}
}

func TestFillPlanFromSBOMReadsGoPackageURLsOnly(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		items      []string
		skipped    []string
	}{
		{"CycloneDX with nested components", "testdata/sbom/cyclonedx.json",
			[]string{"example.com/UpperCase/Mod@v1.1.0", "example.com/mod001@v1.2.0", "github.com/docker/docker@v20.10.7+incompatible"},
			[]string{"pkg:golang/example.com/app@(devel)?type=module", "pkg:golang/stdlib@1.22.0"}},
		{"SPDX 2.3", "testdata/sbom/spdx.json",
			[]string{"example.com/mod000@v1.0.0", "example.com/pseudo@v0.0.0-20240102030405-abcdefabcdef"},
			[]string{"pkg:golang/example.com/app", "pkg:golang/stdlib@go1.22.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			p, err := FillPlanFromSBOM(data)
			if err != nil {
				t.Fatal(err)
			}
			if got := itemStrings(p); !slices.Equal(got, tc.items) {
				t.Errorf("items = %q, want %q", got, tc.items)
			}
			if got := skipEntries(p); !slices.Equal(got, tc.skipped) {
				t.Errorf("skipped = %q, want %q", got, tc.skipped)
			}
		})
	}
}

func TestFillPlanFromSBOMRefusesOtherDocuments(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"not JSON", "<bom/>", "SBOM"},
		{"JSON of something else", `{"name": "x"}`, "not CycloneDX"},
		{"SPDX 3", `{"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld", "@graph": []}`, "SPDX 3"},
		{"SPDX 1", `{"spdxVersion": "SPDX-1.2"}`, "not supported"},
		{"bad components", `{"bomFormat": "CycloneDX", "components": {}}`, "CycloneDX"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FillPlanFromSBOM([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// FuzzFillPlanFromGoSum checks that no go.sum makes the parser panic, that
// every item it returns is a module version the proxy protocol can name,
// and that the plan's items, written back as go.sum lines, parse to the
// same plan.
func FuzzFillPlanFromGoSum(f *testing.F) {
	f.Add([]byte("golang.org/x/mod v0.42.0 h1:x=\ngolang.org/x/mod v0.42.0/go.mod h1:y=\n"))
	f.Add([]byte("github.com/!burnt!sushi/toml v1.3.2/go.mod h1:x=\r\n\n\t \n"))
	f.Add([]byte("example.com/m v2.0.0+incompatible h1:x=\nexample.com/m/v2 v2.0.0-20240102030405-abcdefabcdef/go.mod h1:y="))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := FillPlanFromGoSum(data)
		if err != nil {
			return
		}
		var again strings.Builder
		for _, it := range p.Items {
			if err := checkFillVersion(it.Path, it.Version); err != nil {
				t.Fatalf("item %s: %v", it, err)
			}
			switch it.Files {
			case FillModule:
				fmt.Fprintf(&again, "%s %s h1:x=\n", it.Path, it.Version)
			case FillMod:
				fmt.Fprintf(&again, "%s %s/go.mod h1:x=\n", it.Path, it.Version)
			default:
				t.Fatalf("item %s: files %v", it, it.Files)
			}
		}
		p2, err := FillPlanFromGoSum([]byte(again.String()))
		if err != nil {
			t.Fatalf("the plan written back does not parse: %v\n%s", err, again.String())
		}
		if !slices.Equal(itemStrings(p), itemStrings(p2)) {
			t.Fatalf("round trip: %q != %q", itemStrings(p), itemStrings(p2))
		}
	})
}

func TestFillPlanFromFileChoosesByNameThenContent(t *testing.T) {
	readMod := func(ctx context.Context, path, version string) ([]byte, error) {
		return []byte("module " + path + "\n\ngo 1.21\n"), nil
	}
	sbom, err := os.ReadFile("testdata/sbom/spdx.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file string
		data       []byte
		want       string
	}{
		{"a go.mod", "app/go.mod", []byte("module example.com/app\n\ngo 1.21\n\nrequire example.com/m v1.0.0\n"), "example.com/m@v1.0.0"},
		{"a go.sum", "go.sum", []byte("example.com/m v1.0.0/go.mod h1:x=\n"), "example.com/m@v1.0.0 (.mod)"},
		{"an SBOM", "bom.json", sbom, "example.com/mod000@v1.0.0"},
		{"an SBOM with a byte order mark", "-", append([]byte("\ufeff\n"), sbom...), "example.com/mod000@v1.0.0"},
		{"a list", "modules.txt", []byte("example.com/m@v1.0.0\n"), "example.com/m@v1.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := FillPlanFromFile(context.Background(), tc.file, tc.data, readMod)
			if err != nil {
				t.Fatal(err)
			}
			if got := itemStrings(p); len(got) == 0 || got[0] != tc.want {
				t.Errorf("items %q, want %q first", got, tc.want)
			}
		})
	}
}
