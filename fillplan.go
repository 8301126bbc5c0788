package goproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy/internal/modgraph"
	"github.com/goproxy-team/goproxy/internal/purl"
)

// FillFiles says which files of a module version a fill fetches.
type FillFiles uint8

const (
	// FillInfo is the version's .info file.
	FillInfo FillFiles = 1 << iota
	// FillMod is its .mod file.
	FillMod
	// FillZip is its .zip file.
	FillZip
	// FillModule is what the go command downloads for a module version it
	// builds with: .info, .mod and .zip.
	FillModule = FillInfo | FillMod | FillZip
)

// String lists the files, as in ".info+.mod+.zip".
func (f FillFiles) String() string {
	var exts []string
	for _, e := range []struct {
		bit FillFiles
		ext string
	}{{FillInfo, ".info"}, {FillMod, ".mod"}, {FillZip, ".zip"}} {
		if f&e.bit != 0 {
			exts = append(exts, e.ext)
		}
	}
	if len(exts) == 0 {
		return "nothing"
	}
	return strings.Join(exts, "+")
}

// FillItem is one module version a fill brings into the cache.
type FillItem struct {
	// Path and Version are a module path and a canonical version, as
	// module.Check accepts them.
	Path, Version string
	// Files is which of its files.
	Files FillFiles
}

// String names the item as path@version, followed by its files unless
// they are all of them.
func (it FillItem) String() string {
	if it.Files == FillModule {
		return it.Path + "@" + it.Version
	}
	return it.Path + "@" + it.Version + " (" + it.Files.String() + ")"
}

// FillPlan is what a fill input asks for: the module versions, each once,
// and the entries of the input that name nothing a proxy could fetch.
type FillPlan struct {
	// Items is sorted by module path and version, one item per version,
	// its Files the union of what the input asked for.
	Items []FillItem
	// Skipped lists, in input order, the entries left out and why.
	Skipped []FillSkip
}

// FillSkip is an entry of a fill input that a fill leaves out, such as a
// main module without a version, the standard library in an SBOM or a
// module replaced by a directory.
type FillSkip struct {
	// Entry is the entry as the input names it: a package URL, a line.
	Entry string `json:"entry"`
	// Reason says why it is left out.
	Reason string `json:"reason"`
}

// planBuilder merges the items an input names into a FillPlan.
type planBuilder struct {
	files   map[module.Version]FillFiles
	skipped []FillSkip
}

func (b *planBuilder) add(path, version string, files FillFiles) {
	if b.files == nil {
		b.files = make(map[module.Version]FillFiles)
	}
	b.files[module.Version{Path: path, Version: version}] |= files
}

func (b *planBuilder) skip(entry, reason string) {
	b.skipped = append(b.skipped, FillSkip{Entry: entry, Reason: reason})
}

func (b *planBuilder) plan() *FillPlan {
	ms := make([]module.Version, 0, len(b.files))
	for m := range b.files {
		ms = append(ms, m)
	}
	module.Sort(ms)
	p := &FillPlan{Skipped: b.skipped}
	for _, m := range ms {
		p.Items = append(p.Items, FillItem{Path: m.Path, Version: m.Version, Files: b.files[m]})
	}
	return p
}

// checkFillVersion checks a module version named by a fill input: the
// proxy protocol serves canonical versions only.
func checkFillVersion(path, version string) error {
	if err := module.Check(path, version); err != nil {
		return err
	}
	if module.CanonicalVersion(version) != version {
		return fmt.Errorf("%s@%s: version is not canonical (want %s)", path, version, module.CanonicalVersion(version))
	}
	return nil
}

// FillPlanFromGoSum plans a fill from a go.sum file: every line counts, a
// "/go.mod" line asking for the version's .mod file and any other line for
// the whole module version (.info, .mod and .zip). A malformed line is an
// error naming its line number, as it is for the go command.
func FillPlanFromGoSum(data []byte) (*FillPlan, error) {
	var b planBuilder
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("go.sum:%d: malformed line: want module path, version and hash", i+1)
		}
		path, version, files := f[0], f[1], FillModule
		if v, ok := strings.CutSuffix(version, "/go.mod"); ok {
			version, files = v, FillMod
		}
		if err := checkFillVersion(path, version); err != nil {
			return nil, fmt.Errorf("go.sum:%d: %w", i+1, err)
		}
		b.add(path, version, files)
	}
	return b.plan(), nil
}

// FillPlanFromList plans a fill of whole module versions from a list, one
// per line, each "path@version" or "path version"; "#" and "//" start
// comments. The output of "go list -m all" is such a list: its main
// module (a path alone) is skipped, and a replaced module
// ("path version => other version") is filled as its replacement, or
// skipped if the replacement is a directory.
func FillPlanFromList(data []byte) (*FillPlan, error) {
	var b planBuilder
	for i, line := range strings.Split(string(data), "\n") {
		if j := strings.Index(line, "#"); j >= 0 {
			line = line[:j]
		}
		if j := strings.Index(line, "//"); j >= 0 {
			line = line[:j]
		}
		f := strings.Fields(line)
		entry := strings.Join(f, " ")
		if k := slices.Index(f, "=>"); k >= 0 {
			if k > 2 || len(f) > k+3 || len(f) == k+1 {
				return nil, fmt.Errorf("list:%d: malformed replacement %q", i+1, entry)
			}
			if len(f) == k+2 {
				b.skip(entry, "replaced by a directory")
				continue
			}
			f = f[k+1:]
		}
		var path, version string
		switch len(f) {
		case 0:
			continue
		case 1:
			var ok bool
			if path, version, ok = strings.Cut(f[0], "@"); !ok {
				b.skip(entry, "no version (a main module?)")
				continue
			}
		case 2:
			path, version = f[0], f[1]
		default:
			return nil, fmt.Errorf("list:%d: malformed line %q: want path@version", i+1, entry)
		}
		if err := checkFillVersion(path, version); err != nil {
			return nil, fmt.Errorf("list:%d: %w", i+1, err)
		}
		b.add(path, version, FillModule)
	}
	return b.plan(), nil
}

// FillPlanFromGoMod plans a fill from a main module's go.mod: everything
// "go mod download all" in that module fetches. It walks the module graph
// as the go command loads it, reading go.mod files with readMod (a
// proxy's .mod files). The rule: the .mod of every module version whose
// go.mod the go command reads (with graph pruning, for a go.mod at go 1.17
// or later, that is the main module's requirements and what unpruned
// go.mod files require, transitively), and the .info, .mod and .zip of
// every version minimal version selection picks. Replacements by other
// module versions are followed; those by directories are skipped.
func FillPlanFromGoMod(ctx context.Context, goMod []byte, readMod func(ctx context.Context, modulePath, version string) ([]byte, error)) (*FillPlan, error) {
	g, err := modgraph.Walk(ctx, goMod, readMod, 0)
	if err != nil {
		return nil, err
	}
	var b planBuilder
	for _, m := range g.ModFiles {
		b.add(m.Path, m.Version, FillMod)
	}
	for _, m := range g.Download {
		b.add(m.Path, m.Version, FillModule)
	}
	for _, m := range g.Local {
		b.skip(m.Path+"@"+m.Version, "replaced by a directory")
	}
	return b.plan(), nil
}

// FillPlanFromSBOM plans a fill of whole module versions from an SBOM in
// CycloneDX JSON or SPDX 2 JSON, recognised by its content: every
// component's "pkg:golang/..." package URL that names a module version.
// Components of other ecosystems are ignored. The SBOM's subject (CycloneDX
// metadata.component, the SPDX packages the document describes) is the
// main module, not something its build needs: it is skipped, as are Go
// components that name no fetchable module version (the standard library,
// a main module built from a checkout without a version, a version that
// is not a module version); every skipped entry is listed in the plan.
// Packages (cyclonedx-gomod's type=package, listed besides their modules)
// are ignored. SPDX 3 (JSON-LD) is refused: no generator
// the tests can run writes it yet.
func FillPlanFromSBOM(data []byte) (*FillPlan, error) {
	// Tools on Windows often start UTF-8 files with a byte order mark,
	// which JSON does not allow.
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	var probe struct {
		BOMFormat   string          `json:"bomFormat"`
		SPDXVersion string          `json:"spdxVersion"`
		Context     json.RawMessage `json:"@context"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("SBOM: %w", err)
	}
	var b planBuilder
	var purls []string
	subject := func(purl string) {
		if purl != "" {
			b.skip(purl, "the SBOM's subject (the main module), not a dependency")
		}
	}
	switch {
	case probe.BOMFormat == "CycloneDX":
		var bom struct {
			Metadata struct {
				Component *cdxComponent `json:"component"`
			} `json:"metadata"`
			Components []*cdxComponent `json:"components"`
		}
		if err := json.Unmarshal(data, &bom); err != nil {
			return nil, fmt.Errorf("CycloneDX SBOM: %w", err)
		}
		if c := bom.Metadata.Component; c != nil {
			subject(c.PURL)
			for _, sub := range c.Components {
				purls = sub.appendPURLs(purls)
			}
		}
		for _, c := range bom.Components {
			purls = c.appendPURLs(purls)
		}
	case strings.HasPrefix(probe.SPDXVersion, "SPDX-2."):
		var doc struct {
			SPDXID            string   `json:"SPDXID"`
			DocumentDescribes []string `json:"documentDescribes"`
			Packages          []struct {
				SPDXID       string `json:"SPDXID"`
				ExternalRefs []struct {
					ReferenceType    string `json:"referenceType"`
					ReferenceLocator string `json:"referenceLocator"`
				} `json:"externalRefs"`
			} `json:"packages"`
			Relationships []struct {
				Element string `json:"spdxElementId"`
				Type    string `json:"relationshipType"`
				Related string `json:"relatedSpdxElement"`
			} `json:"relationships"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("SPDX SBOM: %w", err)
		}
		described := map[string]bool{}
		for _, id := range doc.DocumentDescribes {
			described[id] = true
		}
		for _, r := range doc.Relationships {
			if r.Type == "DESCRIBES" && r.Element == doc.SPDXID {
				described[r.Related] = true
			}
		}
		for _, p := range doc.Packages {
			for _, r := range p.ExternalRefs {
				switch {
				case r.ReferenceType != "purl":
				case described[p.SPDXID]:
					subject(r.ReferenceLocator)
				default:
					purls = append(purls, r.ReferenceLocator)
				}
			}
		}
	case probe.SPDXVersion != "":
		return nil, fmt.Errorf("SBOM: SPDX version %q is not supported: want SPDX-2.x JSON", probe.SPDXVersion)
	case bytes.Contains(probe.Context, []byte("spdx.org/rdf/3")):
		return nil, errors.New("SBOM: SPDX 3 (JSON-LD) is not supported: want SPDX 2.x JSON or CycloneDX JSON")
	default:
		return nil, errors.New("SBOM: not CycloneDX JSON (no bomFormat) nor SPDX 2 JSON (no spdxVersion)")
	}

	skipped := map[string]bool{}
	for _, s := range purls {
		p, err := purl.Parse(s)
		if err != nil {
			if !skipped[s] {
				skipped[s] = true
				b.skip(s, err.Error())
			}
			continue
		}
		path, version, err := p.GoModule()
		if errors.Is(err, purl.ErrNotGo) || p.Qualifiers["type"] == "package" {
			// Another ecosystem's, or one of a module's packages
			// (cyclonedx-gomod lists the module too): nothing to report.
			continue
		}
		if err != nil {
			if !skipped[s] {
				skipped[s] = true
				b.skip(s, err.Error())
			}
			continue
		}
		b.add(path, version, FillModule)
	}
	return b.plan(), nil
}

// cdxComponent is what a fill reads of a CycloneDX component, which may
// nest others (cyclonedx-gomod puts a module's packages inside it).
type cdxComponent struct {
	PURL       string          `json:"purl"`
	Components []*cdxComponent `json:"components"`
}

func (c *cdxComponent) appendPURLs(purls []string) []string {
	if c == nil {
		return purls
	}
	if c.PURL != "" {
		purls = append(purls, c.PURL)
	}
	for _, sub := range c.Components {
		purls = sub.appendPURLs(purls)
	}
	return purls
}

// FillPlanFromFile plans a fill from a file of any kind the other
// FillPlanFrom functions read, choosing by its name, then its content: a
// name ending in "go.mod" or ".mod" is a go.mod (readMod reads the graph's
// .mod files), one ending in "go.sum" or ".sum" a go.sum, content starting
// with "{" an SBOM, anything else a list.
func FillPlanFromFile(ctx context.Context, name string, data []byte, readMod func(ctx context.Context, modulePath, version string) ([]byte, error)) (*FillPlan, error) {
	switch {
	case strings.HasSuffix(name, ".mod"):
		return FillPlanFromGoMod(ctx, data, readMod)
	case strings.HasSuffix(name, ".sum"):
		return FillPlanFromGoSum(data)
	case bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n\ufeff"), []byte("{")):
		return FillPlanFromSBOM(data)
	}
	return FillPlanFromList(data)
}
