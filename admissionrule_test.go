package goproxy

import (
	"strings"
	"testing"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

func TestAdmissionRuleMatches(t *testing.T) {
	tests := []struct {
		name, match string
		yes, no     []string // path@version
	}{
		{"a bare pattern matches every version of the module and those below it", "example.com/m",
			[]string{"example.com/m@v0.1.0", "example.com/m@v1.9.9", "example.com/m/v2@v2.0.0", "example.com/m/tools@v0.0.1"},
			[]string{"example.com/mm@v1.0.0", "example.com@v1.0.0", "other.com/m@v1.0.0"}},
		{"a glob matches an element", "github.com/foo/*",
			[]string{"github.com/foo/bar@v1.0.0", "github.com/foo/bar/v3@v3.1.0"},
			[]string{"github.com/foo@v1.0.0", "github.com/foobar/x@v1.0.0"}},
		{"star alone matches every module", "*",
			[]string{"example.com/m@v1.0.0", "golang.org/x/mod@v0.40.0"}, nil},
		{"below a version", "github.com/foo/*@<v1.2.3",
			[]string{"github.com/foo/bar@v1.2.2", "github.com/foo/bar@v1.2.3-rc.1", "github.com/foo/bar@v0.0.0-20200101000000-abcdefabcdef"},
			[]string{"github.com/foo/bar@v1.2.3", "github.com/foo/bar@v1.10.0"}},
		{"a pseudo-version after a release precedes the next one", "example.com/m@<v1.2.3",
			[]string{"example.com/m@v1.2.3-0.20240101000000-abcdefabcdef"},
			[]string{"example.com/m@v1.2.4-0.20240101000000-abcdefabcdef"}},
		{"a closed range", "example.com/m@>=v1.0.0,<v1.4.2",
			[]string{"example.com/m@v1.0.0", "example.com/m@v1.4.1", "example.com/m@v1.4.2-pre"},
			[]string{"example.com/m@v0.9.0", "example.com/m@v1.0.0-rc.1", "example.com/m@v1.4.2"}},
		{"spaces around constraints", "example.com/m@ >= v1.0.0 , <= v1.4.2",
			[]string{"example.com/m@v1.0.0", "example.com/m@v1.4.2"},
			[]string{"example.com/m@v1.4.3"}},
		{"one version", "example.com/m@v1.2.3",
			[]string{"example.com/m@v1.2.3"},
			[]string{"example.com/m@v1.2.4", "example.com/m@v1.2.3-rc.1"}},
		{"incompatible is the same version", "example.com/m@v2.0.0",
			[]string{"example.com/m@v2.0.0+incompatible"}, []string{"example.com/m@v2.0.1+incompatible"}},
		{"above, exclusive", "example.com/m@>v1.2.3",
			[]string{"example.com/m@v1.2.4-0.20240101000000-abcdefabcdef", "example.com/m@v2.0.0+incompatible"},
			[]string{"example.com/m@v1.2.3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mr, err := parseModuleRule(tt.match)
			if err != nil {
				t.Fatal(err)
			}
			for _, pv := range tt.yes {
				p, v, _ := strings.Cut(pv, "@")
				if !mr.matches(p, v) {
					t.Errorf("%q does not match %s", tt.match, pv)
				}
			}
			for _, pv := range tt.no {
				p, v, _ := strings.Cut(pv, "@")
				if mr.matches(p, v) {
					t.Errorf("%q matches %s", tt.match, pv)
				}
			}
		})
	}
}

func TestAdmissionRuleErrorsSayWhatIsWrong(t *testing.T) {
	tests := []struct{ name, match, want string }{
		{"empty", "", "no module path pattern"},
		{"only a range", "@v1.0.0", "no module path pattern"},
		{"a list of patterns", "example.com/a,example.com/b", "comma"},
		{"an empty element", "example.com//m", "empty path element"},
		{"a trailing slash", "example.com/m/", "empty path element"},
		{"a bad glob", "example.com/[m", "syntax error in pattern"},
		{"a space in the pattern", "example.com/m n", "space"},
		{"nothing after @", "example.com/m@", "nothing after @"},
		{"no version in a constraint", "example.com/m@>=", "has no version"},
		{"an empty constraint", "example.com/m@v1.0.0,", "has no version"},
		{"a shortened version", "example.com/m@<v1.2", "not canonical: write v1.2.0"},
		{"no v", "example.com/m@1.2.3", "not a semantic version"},
		{"a query", "example.com/m@latest", "not a semantic version"},
		{"build metadata", "example.com/m@v1.2.3+build", "not canonical"},
		{"an unknown operator", "example.com/m@=>v1.0.0", "unknown operator"},
		{"not equal is not supported", "example.com/m@!=v1.0.0", "not a semantic version"},
		{"an empty range", "example.com/m@>=v1.4.0,<v1.2.0", "matches no version"},
		{"a point excluded", "example.com/m@>v1.0.0,<=v1.0.0", "matches no version"},
		{"two versions", "example.com/m@v1.0.0,v1.1.0", "matches no version"},
		{"a second @", "example.com/m@v1.0.0@v2.0.0", "not a semantic version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := AdmissionRule{Match: tt.match}.compile()
			if err == nil {
				t.Fatalf("%q parsed", tt.match)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "entry \""+tt.match+"\"") {
				t.Errorf("error %q: want it to name the entry and say %q", err, tt.want)
			}
		})
	}
}

func TestAdmissionRuleRangeIsTheIntersectionOfItsConstraints(t *testing.T) {
	mr, err := parseModuleRule("example.com/m@>v1.0.0,>=v1.1.0,<v2.0.0,<=v1.5.0")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mr.String(), "example.com/m@>=v1.1.0,<=v1.5.0"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// FuzzParseAdmissionRule checks that the parser never panics, that what
// it accepts is written back in a form it reads the same way, and that a
// rule matches exactly what module.MatchPrefixPatterns and semver.Compare
// say it should.
func FuzzParseAdmissionRule(f *testing.F) {
	for _, s := range []string{
		"github.com/foo/*@<v1.2.3", "example.com/m@>=v1.0.0,<v1.4.2", "example.com/m@v1.2.3", "*",
		"example.com/m@>v2.0.0+incompatible", "example.com/m@<=v1.2.3-rc.1", "example.com/[a-z]*/x@>=v0.0.0-20200101000000-abcdefabcdef",
	} {
		f.Add(s, "github.com/foo/bar", "v1.2.3")
	}
	f.Fuzz(func(t *testing.T, s, modPath, version string) {
		mr, err := parseModuleRule(s)
		if err != nil {
			return
		}
		if strings.Contains(mr.pattern, ",") || strings.Contains(mr.pattern, "@") {
			t.Fatalf("%q: pattern %q holds a separator", s, mr.pattern)
		}
		for elem := range strings.SplitSeq(mr.pattern, "/") {
			if elem == "" {
				t.Fatalf("%q: pattern %q has an empty element", s, mr.pattern)
			}
		}
		again, err := parseModuleRule(mr.String())
		if err != nil {
			t.Fatalf("%q written as %q does not parse: %v", s, mr.String(), err)
		}
		if again.String() != mr.String() {
			t.Fatalf("%q written as %q, then as %q", s, mr.String(), again.String())
		}
		if !semver.IsValid(version) {
			return
		}
		r := mr.r
		in := (r.lo == "" || semver.Compare(version, r.lo) > 0 || r.loInclusive && semver.Compare(version, r.lo) == 0) &&
			(r.hi == "" || semver.Compare(version, r.hi) < 0 || r.hiInclusive && semver.Compare(version, r.hi) == 0)
		if r.contains(version) != in {
			t.Fatalf("%q: contains(%s) = %v", s, version, !in)
		}
		for _, p := range []string{modPath, strings.ReplaceAll(mr.pattern, "*", "x"), mr.literal + modPath} {
			want := in && module.MatchPrefixPatterns(mr.pattern, p)
			if mr.matches(p, version) != want || again.matches(p, version) != want {
				t.Fatalf("%q: matches(%q, %s) = %v, want %v", s, p, version, !want, want)
			}
		}
	})
}
