// Package moduletest builds module versions and serves them over the
// module proxy protocol, so proxy tests can run the real go command
// against a known, reproducible upstream instead of the internet.
//
// Everything here is deterministic: the same call yields byte-identical
// zips, so tests can compare what a proxy hands out with what the
// upstream published.
package moduletest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
)

// Version is one published module version, holding every artifact a
// proxy serves for it so tests can check responses byte for byte.
//
// A nil Mod, or a Version with neither Zip nor ZipFile, is served as
// "not found", which lets tests model upstreams missing one artifact.
// Values must not be modified once handed to a Server or WriteDir.
type Version struct {
	// Path is the module path, unescaped (as in go.mod).
	Path string
	// Version is canonical, as the protocol requires for served files.
	Version string
	// Time is the publication time reported by .info and Last-Modified.
	Time time.Time
	// Mod is the .mod body; for go.mod-less versions the go command
	// expects the synthesized "module <path>\n".
	Mod []byte
	// Zip holds the module zip of small versions.
	Zip []byte
	// ZipFile names a file holding the zip; it wins over Zip and keeps
	// huge zips out of memory.
	ZipFile string
}

// Info returns the .info body for v, so tests can compare it with what
// a proxy serves.
func (v *Version) Info() []byte {
	b, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{v.Version, v.Time.UTC()})
	if err != nil {
		panic(err) // cannot happen for a string and a time
	}
	return b
}

// OpenZip opens the zip of v wherever it lives, so callers need not care
// whether it is in memory or on disk. It returns fs.ErrNotExist if v has
// no zip.
func (v *Version) OpenZip() (io.ReadSeekCloser, error) {
	if v.ZipFile != "" {
		return os.Open(v.ZipFile)
	}
	if len(v.Zip) == 0 {
		return nil, fmt.Errorf("%s@%s: no zip: %w", v.Path, v.Version, fs.ErrNotExist)
	}
	return nopCloser{bytes.NewReader(v.Zip)}, nil
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }

func (v *Version) hasZip() bool { return v.ZipFile != "" || len(v.Zip) > 0 }

// graphBase is the publication time of the first generated version; a
// fixed date keeps .info bodies and Last-Modified headers reproducible.
var graphBase = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// The special modules Graph adds, exported so tests can name them without
// repeating the strings.
const (
	// UpperCasePath needs "!"-escaping on the wire (example.com/!upper!case/!mod).
	UpperCasePath = "example.com/UpperCase/Mod"
	// LegacyPath has only go.mod-less versions, one of them +incompatible.
	LegacyPath = "example.com/legacy"
	// LegacyIncompatible is a major version >1 of a module without a /v2 suffix.
	LegacyIncompatible = "v2.0.0+incompatible"
	// PseudoPath has a single pseudo-version and so an empty @v/list.
	PseudoPath = "example.com/pseudo"
	// PseudoVersion is the only version of PseudoPath.
	PseudoVersion = "v0.0.0-20240102030405-abcdefabcdef"
)

// GraphPath returns the module path of the i'th generated module, so
// tests can address graph members without knowing the naming scheme.
func GraphPath(i int) string { return fmt.Sprintf("example.com/mod%03d", i) }

// Graph returns a deterministic module graph of n modules (n >= 10)
// named by GraphPath, each with two or three releases, plus the special
// modules UpperCasePath, LegacyPath and PseudoPath. Every module requires
// one or two others, wrapping around so the graph has cycles, which the
// go command must (and does) tolerate; the generated .go files import
// nothing, so the cycles never reach the package level.
func Graph(n int) []*Version {
	if n < 10 {
		panic(fmt.Sprintf("moduletest.Graph(%d): need at least 10 modules", n))
	}
	var vs []*Version
	for i := range n {
		path := GraphPath(i)
		pkg := fmt.Sprintf("mod%03d", i)
		for j := range 2 + i%2 {
			version := fmt.Sprintf("v1.%d.0", j)
			reqs := []string{GraphPath((i+1)%n) + " v1.0.0"}
			if j > 0 {
				reqs = append(reqs, GraphPath((i+3)%n)+" v1.1.0")
			}
			t := graphBase.Add(time.Duration(i)*time.Hour + time.Duration(j)*24*time.Hour)
			vs = append(vs, mustVersion(path, version, t, goMod(path, reqs), pkg, true))
		}
	}
	for j := range 2 {
		t := graphBase.Add(time.Duration(j) * 24 * time.Hour)
		vs = append(vs, mustVersion(UpperCasePath, fmt.Sprintf("v1.%d.0", j), t, goMod(UpperCasePath, nil), "mod", true))
	}
	legacyMod := []byte("module " + LegacyPath + "\n")
	vs = append(vs,
		mustVersion(LegacyPath, "v1.0.0", graphBase, legacyMod, "legacy", false),
		mustVersion(LegacyPath, LegacyIncompatible, graphBase.Add(24*time.Hour), legacyMod, "legacy", false),
	)
	pt, err := module.PseudoVersionTime(PseudoVersion)
	if err != nil {
		panic(err)
	}
	vs = append(vs, mustVersion(PseudoPath, PseudoVersion, pt, goMod(PseudoPath, nil), "pseudo", true))
	return vs
}

func goMod(path string, reqs []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "module %s\n\ngo 1.21\n", path)
	if len(reqs) > 0 {
		b.WriteString("\nrequire (\n")
		for _, r := range reqs {
			fmt.Fprintf(&b, "\t%s\n", r)
		}
		b.WriteString(")\n")
	}
	return []byte(b.String())
}

// mustVersion builds a small version whose zip holds a single Go file and,
// if withGoMod, the go.mod; legacy (pre-modules) versions have none.
func mustVersion(path, version string, t time.Time, mod []byte, pkg string, withGoMod bool) *Version {
	src := fmt.Sprintf("// Package %s is generated test content.\npackage %s\n\n// Version records which module version this file was zipped into.\nconst Version = %q\n", pkg, pkg, path+"@"+version)
	files := []modzip.File{memFile{pkg + ".go", []byte(src)}}
	if withGoMod {
		files = append(files, memFile{"go.mod", mod})
	}
	var buf bytes.Buffer
	if err := modzip.Create(&buf, module.Version{Path: path, Version: version}, files); err != nil {
		panic(err)
	}
	return &Version{Path: path, Version: version, Time: t, Mod: mod, Zip: buf.Bytes()}
}

// memFile feeds in-memory content to modzip.Create, which validates file
// names and sizes the way the go command will when it unpacks the zip.
type memFile struct {
	name string
	data []byte
}

func (f memFile) Path() string                 { return f.name }
func (f memFile) Lstat() (fs.FileInfo, error)  { return memInfo(f), nil }
func (f memFile) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(f.data)), nil }

type memInfo memFile

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return int64(len(i.data)) }
func (i memInfo) Mode() fs.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return graphBase }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// RootGoMod returns the go.mod of a main module requiring the newest
// version of every module in vs, so a plain "go mod download" in it
// fetches one zip per module (at go 1.21 only direct requirements'
// zips are downloaded, which is why every module is required directly).
func RootGoMod(vs []*Version) []byte {
	byPath := group(vs)
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b strings.Builder
	b.WriteString("module example.com/root\n\ngo 1.21\n\nrequire (\n")
	for _, p := range paths {
		if v := newest(byPath[p]); v != nil {
			fmt.Fprintf(&b, "\t%s %s\n", p, v.Version)
		}
	}
	b.WriteString(")\n")
	return []byte(b.String())
}

func group(vs []*Version) map[string][]*Version {
	m := make(map[string][]*Version)
	for _, v := range vs {
		m[v.Path] = append(m[v.Path], v)
	}
	return m
}

// versionClass ranks versions the way the go command's "latest" query
// does: any release beats any pre-release, which beats any pseudo-version.
func versionClass(v string) int {
	switch {
	case module.IsPseudoVersion(v):
		return 0
	case semver.Prerelease(v) != "":
		return 1
	default:
		return 2
	}
}

func compareVersions(a, b string) int {
	if c := versionClass(a) - versionClass(b); c != 0 {
		return c
	}
	return semver.Compare(a, b)
}

// newest picks what @latest should answer, or nil for an empty list.
func newest(vs []*Version) *Version {
	var best *Version
	for _, v := range vs {
		if best == nil || compareVersions(v.Version, best.Version) > 0 {
			best = v
		}
	}
	return best
}

// listVersions returns the @v/list entries: real proxies omit
// pseudo-versions, and the go command sorts the list itself.
func listVersions(vs []*Version) []string {
	var list []string
	for _, v := range vs {
		if semver.IsValid(v.Version) && !module.IsPseudoVersion(v.Version) {
			list = append(list, v.Version)
		}
	}
	slices.SortFunc(list, semver.Compare)
	return list
}
