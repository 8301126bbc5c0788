// Package purl decodes package URLs (https://github.com/package-url/purl-spec),
// the identifiers SBOMs give their components, and finds the Go module
// version a "pkg:golang/..." URL names.
//
// It decodes; it never builds purls, and it knows the golang type only.
package purl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/mod/module"
)

// PURL is a decoded package URL. Every field is percent-decoded.
type PURL struct {
	// Type is lower-cased, as the specification requires ("golang").
	Type string
	// Namespace is the part between the type and the name, its segments
	// joined by "/"; empty if there is none.
	Namespace string
	Name      string
	// Version is empty when the URL has none.
	Version string
	// Qualifiers maps lower-cased keys to values; keys with empty values
	// are dropped, as the specification says.
	Qualifiers map[string]string
	// Subpath is the path inside the package, its segments joined by "/",
	// with empty, "." and ".." segments dropped.
	Subpath string
}

// maxLen bounds what Parse accepts: package URLs are short, and an SBOM
// is untrusted input.
const maxLen = 4096

// Parse decodes s following the specification's parsing steps: subpath
// after the last "#", qualifiers after the last "?", the "pkg:" scheme,
// the type up to the first "/", the version after the last "@" and the
// name after the last "/" of what remains.
func Parse(s string) (PURL, error) {
	var p PURL
	if len(s) > maxLen {
		return p, fmt.Errorf("package URL longer than %d bytes", maxLen)
	}
	orig := s
	fail := func(format string, args ...any) (PURL, error) {
		return PURL{}, fmt.Errorf("package URL %q: %s", orig, fmt.Sprintf(format, args...))
	}
	if i := strings.LastIndexByte(s, '#'); i >= 0 {
		var segs []string
		for seg := range strings.SplitSeq(strings.Trim(s[i+1:], "/"), "/") {
			seg, err := unescape(seg)
			if err != nil {
				return fail("subpath: %v", err)
			}
			if seg == "" || seg == "." || seg == ".." {
				continue
			}
			segs = append(segs, seg)
		}
		p.Subpath = strings.Join(segs, "/")
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '?'); i >= 0 {
		for kv := range strings.SplitSeq(s[i+1:], "&") {
			k, v, _ := strings.Cut(kv, "=")
			if k == "" {
				continue
			}
			v, err := unescape(v)
			if err != nil {
				return fail("qualifier %q: %v", k, err)
			}
			if v == "" {
				continue
			}
			if p.Qualifiers == nil {
				p.Qualifiers = make(map[string]string)
			}
			p.Qualifiers[strings.ToLower(k)] = v
		}
		s = s[:i]
	}
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || !strings.EqualFold(scheme, "pkg") {
		return fail(`the scheme is not "pkg:"`)
	}
	rest = strings.TrimLeft(rest, "/")
	typ, rest, ok := strings.Cut(rest, "/")
	if !ok || typ == "" {
		return fail("no type")
	}
	p.Type = strings.ToLower(typ)
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		v, err := unescape(rest[i+1:])
		if err != nil {
			return fail("version: %v", err)
		}
		p.Version = v
		rest = rest[:i]
	}
	rest = strings.Trim(rest, "/")
	var name string
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		name, rest = rest[i+1:], rest[:i]
	} else {
		name, rest = rest, ""
	}
	name, err := unescape(name)
	if err != nil {
		return fail("name: %v", err)
	}
	if name == "" {
		return fail("no name")
	}
	p.Name = name
	var segs []string
	for seg := range strings.SplitSeq(rest, "/") {
		if seg == "" {
			continue
		}
		seg, err := unescape(seg)
		if err != nil {
			return fail("namespace: %v", err)
		}
		segs = append(segs, seg)
	}
	p.Namespace = strings.Join(segs, "/")
	return p, nil
}

// unescape percent-decodes one component. A "+" stays a "+": purls are
// not form-encoded, and Go versions such as "v2.0.0+incompatible" carry
// one that generators often leave unescaped.
func unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	return url.PathUnescape(s)
}

// Errors GoModule returns for package URLs that name no module version
// a proxy could fetch; callers skip such components rather than fail.
var (
	// ErrNotGo: the URL is of another type than golang.
	ErrNotGo = errors.New("not a Go package URL")
	// ErrNoVersion: no version, or one that is not a module version,
	// such as "(devel)" for a main module built from a checkout.
	ErrNoVersion = errors.New("no module version")
	// ErrNotModule: the URL names a package (type=package), or a path that
	// is no module path, such as the standard library ("stdlib").
	ErrNotModule = errors.New("not a module")
)

// GoModule returns the module path and version a golang package URL
// names: the namespace and name joined by "/". A "type" qualifier other
// than "module" (cyclonedx-gomod writes type=package for packages) makes
// it ErrNotModule, as does a path that module.CheckPath refuses; a version
// that is not a canonical semantic version is ErrNoVersion. Case is kept:
// Go module paths are case-sensitive, so a generator that lower-cased
// "github.com/BurntSushi/toml" names a module that does not exist.
func (p PURL) GoModule() (path, version string, err error) {
	if p.Type != "golang" {
		return "", "", ErrNotGo
	}
	path = p.Name
	if p.Namespace != "" {
		path = p.Namespace + "/" + p.Name
	}
	if t, ok := p.Qualifiers["type"]; ok && t != "module" {
		return path, "", fmt.Errorf("%s: %w (type=%s)", path, ErrNotModule, t)
	}
	if err := module.CheckPath(path); err != nil {
		return path, "", fmt.Errorf("%w: %w", ErrNotModule, err)
	}
	if p.Version == "" {
		return path, "", fmt.Errorf("%s: %w", path, ErrNoVersion)
	}
	if module.CanonicalVersion(p.Version) != p.Version {
		return path, p.Version, fmt.Errorf("%s@%s: %w: not a canonical semantic version", path, p.Version, ErrNoVersion)
	}
	if err := module.Check(path, p.Version); err != nil {
		return path, p.Version, fmt.Errorf("%w: %w", ErrNoVersion, err)
	}
	return path, p.Version, nil
}
