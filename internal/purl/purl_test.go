package purl

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/mod/module"
)

func TestParseFollowsTheSpecificationsSteps(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     PURL
	}{
		{"namespace, name and version", "pkg:golang/github.com/gorilla/context@234fd47e07d1004f0aed9c",
			PURL{Type: "golang", Namespace: "github.com/gorilla", Name: "context", Version: "234fd47e07d1004f0aed9c"}},
		{"subpath is the package", "pkg:golang/google.golang.org/genproto#googleapis/api/annotations",
			PURL{Type: "golang", Namespace: "google.golang.org", Name: "genproto", Subpath: "googleapis/api/annotations"}},
		{"qualifiers are decoded and keys lower-cased", "pkg:golang/golang.org/x/mod@v0.42.0?Type=module&goos=linux&empty=",
			PURL{Type: "golang", Namespace: "golang.org/x", Name: "mod", Version: "v0.42.0", Qualifiers: map[string]string{"type": "module", "goos": "linux"}}},
		{"percent escapes in every part", "pkg:golang/example.com/a%40b/c%2Fd@v1.0.0%2Bincompatible?x=%26y#s%2Ft/./../u",
			PURL{Type: "golang", Namespace: "example.com/a@b", Name: "c/d", Version: "v1.0.0+incompatible", Qualifiers: map[string]string{"x": "&y"}, Subpath: "s/t/u"}},
		{"a plus sign stays a plus sign", "pkg:golang/github.com/docker/docker@v20.10.7+incompatible",
			PURL{Type: "golang", Namespace: "github.com/docker", Name: "docker", Version: "v20.10.7+incompatible"}},
		{"scheme and type are case-insensitive, slashes after the scheme ignored", "PKG://GoLang/example.com/m@v1.0.0",
			PURL{Type: "golang", Namespace: "example.com", Name: "m", Version: "v1.0.0"}},
		{"case of the name is kept", "pkg:golang/github.com/BurntSushi/toml@v1.3.2",
			PURL{Type: "golang", Namespace: "github.com/BurntSushi", Name: "toml", Version: "v1.3.2"}},
		{"no namespace", "pkg:golang/stdlib@go1.22.0",
			PURL{Type: "golang", Name: "stdlib", Version: "go1.22.0"}},
		{"another type", "pkg:npm/%40angular/animation@12.3.1",
			PURL{Type: "npm", Namespace: "@angular", Name: "animation", Version: "12.3.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(got, tc.want) {
				t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func equal(a, b PURL) bool {
	if a.Type != b.Type || a.Namespace != b.Namespace || a.Name != b.Name || a.Version != b.Version || a.Subpath != b.Subpath || len(a.Qualifiers) != len(b.Qualifiers) {
		return false
	}
	for k, v := range a.Qualifiers {
		if b.Qualifiers[k] != v {
			return false
		}
	}
	return true
}

func TestParseRefusesWhatIsNoPackageURL(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"another scheme", "https://example.com/m@v1.0.0"},
		{"no type", "pkg:example.com"},
		{"empty type", "pkg:/m"},
		{"no name", "pkg:golang/@v1.0.0"},
		{"bad escape in the name", "pkg:golang/example.com/m%zz@v1.0.0"},
		{"bad escape in the version", "pkg:golang/example.com/m@v1.0.0%"},
		{"bad escape in a qualifier", "pkg:golang/example.com/m@v1.0.0?a=%g0"},
		{"too long", "pkg:golang/example.com/" + strings.Repeat("a", maxLen)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := Parse(tc.in); err == nil {
				t.Errorf("Parse(%q) = %+v, want an error", tc.in, p)
			}
		})
	}
}

func TestGoModuleNamesOnlyFetchableModuleVersions(t *testing.T) {
	for _, tc := range []struct {
		name, in      string
		path, version string
		err           error
	}{
		{"module", "pkg:golang/golang.org/x/mod@v0.42.0?type=module", "golang.org/x/mod", "v0.42.0", nil},
		{"without a type qualifier", "pkg:golang/golang.org/x/mod@v0.42.0", "golang.org/x/mod", "v0.42.0", nil},
		{"incompatible", "pkg:golang/github.com/docker/docker@v20.10.7%2Bincompatible", "github.com/docker/docker", "v20.10.7+incompatible", nil},
		{"pseudo-version", "pkg:golang/example.com/m@v0.0.0-20240102030405-abcdefabcdef", "example.com/m", "v0.0.0-20240102030405-abcdefabcdef", nil},
		{"upper case", "pkg:golang/example.com/UpperCase/Mod@v1.0.0", "example.com/UpperCase/Mod", "v1.0.0", nil},
		{"subpath is ignored", "pkg:golang/example.com/m@v1.0.0#sub/pkg", "example.com/m", "v1.0.0", nil},
		{"a package", "pkg:golang/example.com/m/sub@v1.0.0?type=package", "", "", ErrNotModule},
		{"the standard library", "pkg:golang/stdlib@go1.22.0", "", "", ErrNotModule},
		{"no version", "pkg:golang/example.com/m", "", "", ErrNoVersion},
		{"a main module built from a checkout", "pkg:golang/example.com/m@(devel)", "", "", ErrNoVersion},
		{"a version that is not canonical", "pkg:golang/example.com/m@v1.0", "", "", ErrNoVersion},
		{"a commit hash", "pkg:golang/github.com/gorilla/context@234fd47e07d1004f0aed9c", "", "", ErrNoVersion},
		{"a major version the path does not allow", "pkg:golang/example.com/m@v2.0.0", "", "", ErrNoVersion},
		{"another type", "pkg:npm/left-pad@1.3.0", "", "", ErrNotGo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			path, version, err := p.GoModule()
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("GoModule(%q) error = %v, want %v", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || path != tc.path || version != tc.version {
				t.Errorf("GoModule(%q) = %q, %q, %v; want %q, %q", tc.in, path, version, err, tc.path, tc.version)
			}
		})
	}
}

// FuzzParse checks that no input makes Parse panic, and that whatever
// GoModule accepts is a module version the proxy protocol can name.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"pkg:golang/github.com/gorilla/context@v1.1.1?type=module#ctx",
		"pkg:golang/example.com/%21m@v1.0.0%2Bincompatible",
		"pkg:golang/stdlib@go1.22.0",
		"pkg:npm/%40angular/animation@12.3.1",
		"pkg://golang//a//b@@v1?&=&a==#//",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		path, version, err := p.GoModule()
		if err != nil {
			return
		}
		if err := module.Check(path, version); err != nil {
			t.Fatalf("GoModule(%q) = %q, %q, which module.Check refuses: %v", s, path, version, err)
		}
		if module.CanonicalVersion(version) != version {
			t.Fatalf("GoModule(%q) = non-canonical version %q", s, version)
		}
	})
}

// FuzzGoModuleRoundTrip checks that every module version, written as a
// package URL the way generators write one (each segment escaped), comes
// back unchanged.
func FuzzGoModuleRoundTrip(f *testing.F) {
	f.Add("github.com/BurntSushi/toml", "v1.3.2")
	f.Add("example.com/a~b/c.d_e-f", "v2.0.0+incompatible")
	f.Add("gopkg.in/yaml.v3", "v3.0.1")
	f.Fuzz(func(t *testing.T, path, version string) {
		if module.Check(path, version) != nil || module.CanonicalVersion(version) != version {
			return
		}
		var segs []string
		for seg := range strings.SplitSeq(path, "/") {
			segs = append(segs, url.PathEscape(seg))
		}
		s := "pkg:golang/" + strings.Join(segs, "/") + "@" + url.PathEscape(version) + "?type=module"
		p, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		gotPath, gotVersion, err := p.GoModule()
		if err != nil || gotPath != path || gotVersion != version {
			t.Fatalf("GoModule(%q) = %q, %q, %v; want %q, %q", s, gotPath, gotVersion, err, path, version)
		}
	})
}
