// Package modgraph walks a main module's requirement graph the way the go
// command loads it, reading each module version's go.mod through a
// function, so that a proxy can tell which files "go mod download all" in
// that module will ask for without running the go command.
//
// The rule it implements, from the go command's module loader
// (cmd/go/internal/modload, readModGraph and expandGraph):
//
//   - The graph starts at the main module's requirements (the roots). A
//     go.mod at go 1.17 or later is pruned: it lists everything its
//     packages need, so the go command reads the go.mod of each root but
//     not, through it, the go.mod files of what the root requires. A
//     go.mod below go 1.17 (or without a go directive) is unpruned: the
//     go.mod files of its whole requirement graph are read.
//   - In a pruned main module, a root whose selected version is higher
//     than the one the main module requires is raised to it and the graph
//     read again from the raised roots, until the roots agree with the
//     selection (as the go command does before listing "all").
//   - Minimal version selection then picks, for every module path that
//     appears anywhere in the graph, its highest version: that is the
//     build list, what "go mod download all" downloads.
//
// So a fill needs the .mod of every module version whose go.mod is read
// (Graph.ModFiles) and the .info, .mod and .zip of every version in the
// build list (Graph.Download). The main module's replace directives are
// applied (a module replaced by another module version is fetched as that
// one; one replaced by a directory is reported in Graph.Local and not
// fetched) and its exclude directives drop the requirements they name, as
// the go command drops them. Workspaces (go.work) and vendoring are not
// modelled.
package modgraph

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/sync/errgroup"
)

// ReadGoMod returns the go.mod of a module version as the module proxy
// protocol serves it (its .mod file). An error stops the walk.
type ReadGoMod func(ctx context.Context, modulePath, version string) ([]byte, error)

// Graph is what Walk found.
type Graph struct {
	// Main is the main module's path.
	Main string
	// ModFiles lists the module versions whose go.mod the go command reads
	// while loading the graph, replacements applied, sorted.
	ModFiles []module.Version
	// Download is the build list without the main module, replacements
	// applied, sorted: the versions "go mod download all" downloads.
	Download []module.Version
	// Local lists the module versions in the graph that the main module
	// replaces with a directory: nothing to fetch, and their requirements
	// are not known.
	Local []module.Version
}

// DefaultConcurrency is how many go.mod files Walk reads at once when
// given zero.
const DefaultConcurrency = 16

// Walk reads the graph of the main module whose go.mod is mainGoMod,
// calling read for every go.mod it needs, at most concurrency at a time
// (zero: DefaultConcurrency). Each go.mod is read once.
func Walk(ctx context.Context, mainGoMod []byte, read ReadGoMod, concurrency int) (*Graph, error) {
	f, err := modfile.Parse("go.mod", mainGoMod, nil)
	if err != nil {
		return nil, err
	}
	if f.Module == nil {
		return nil, fmt.Errorf("go.mod: no module directive")
	}
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	w := &walker{
		read:     read,
		limit:    concurrency,
		main:     f.Module.Mod.Path,
		exclude:  make(map[module.Version]bool),
		replace:  make(map[module.Version]module.Version),
		summary:  make(map[module.Version]*summary),
		modFiles: make(map[module.Version]bool),
		local:    make(map[module.Version]bool),
	}
	for _, x := range f.Exclude {
		w.exclude[x.Mod] = true
	}
	for _, r := range f.Replace {
		w.replace[r.Old] = r.New // r.Old.Version "" replaces every version
	}
	var roots []module.Version
	for _, r := range f.Require {
		if !w.exclude[r.Mod] {
			roots = append(roots, r.Mod)
		}
	}
	pruned := f.Go != nil && goAtLeast117(f.Go.Version)

	var selected map[string]string
	for {
		selected, err = w.load(ctx, roots, pruned)
		if err != nil {
			return nil, err
		}
		if !pruned {
			break
		}
		raised := false
		for i, r := range roots {
			if v := selected[r.Path]; v != r.Version {
				roots[i].Version = v
				raised = true
			}
		}
		if !raised {
			break
		}
	}

	g := &Graph{Main: w.main}
	for m := range w.modFiles {
		g.ModFiles = append(g.ModFiles, m)
	}
	download := map[module.Version]bool{}
	for path, version := range selected {
		if path == w.main {
			continue
		}
		m := module.Version{Path: path, Version: version}
		actual := w.resolve(m)
		if actual.Version == "" {
			w.local[m] = true
			continue
		}
		if !download[actual] {
			download[actual] = true
			g.Download = append(g.Download, actual)
		}
	}
	for m := range w.local {
		g.Local = append(g.Local, m)
	}
	for _, list := range [][]module.Version{g.ModFiles, g.Download, g.Local} {
		module.Sort(list)
	}
	return g, nil
}

type walker struct {
	read    ReadGoMod
	limit   int
	main    string
	exclude map[module.Version]bool
	replace map[module.Version]module.Version

	mu       sync.Mutex
	summary  map[module.Version]*summary // by actual (replaced) version
	modFiles map[module.Version]bool     // read, by actual version
	local    map[module.Version]bool
}

// summary is what the graph needs from one go.mod.
type summary struct {
	require []module.Version
	pruned  bool
}

// resolve applies the main module's replacements to m; a result with an
// empty Version is a directory.
func (w *walker) resolve(m module.Version) module.Version {
	if r, ok := w.replace[m]; ok {
		return r
	}
	if r, ok := w.replace[module.Version{Path: m.Path}]; ok {
		return r
	}
	return m
}

// load reads the graph from roots, level by level, and returns the
// selected version of every module path in it.
func (w *walker) load(ctx context.Context, roots []module.Version, pruned bool) (map[string]string, error) {
	type node struct {
		m        module.Version
		unpruned bool // reached through an unpruned go.mod: follow everything
	}
	selected := map[string]string{}
	selectVersion := func(m module.Version) {
		if cur, ok := selected[m.Path]; !ok || semver.Compare(m.Version, cur) > 0 {
			selected[m.Path] = m.Version
		}
	}
	enqueued := map[node]bool{}
	var frontier []node
	for _, r := range roots {
		selectVersion(r)
		n := node{r, !pruned}
		if !enqueued[n] {
			enqueued[n] = true
			frontier = append(frontier, n)
		}
	}
	for len(frontier) > 0 {
		ms := make([]module.Version, len(frontier))
		for i, n := range frontier {
			ms[i] = n.m
		}
		if err := w.summarize(ctx, ms); err != nil {
			return nil, err
		}
		var next []node
		for _, n := range frontier {
			s := w.summary[w.resolve(n.m)]
			for _, r := range s.require {
				selectVersion(r)
				// As the go command does: through a pruned go.mod reached
				// on a pruned path, requirements are graph nodes whose own
				// go.mod is not read.
				if !n.unpruned && s.pruned {
					continue
				}
				c := node{r, n.unpruned || !s.pruned}
				if !enqueued[c] {
					enqueued[c] = true
					next = append(next, c)
				}
			}
		}
		frontier = next
	}
	return selected, nil
}

// summarize reads the go.mod of every version in ms not read yet, once
// for all the versions replaced by the same one.
func (w *walker) summarize(ctx context.Context, ms []module.Version) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(w.limit)
	seen := map[module.Version]bool{}
	for _, m := range ms {
		actual := w.resolve(m)
		w.mu.Lock()
		_, done := w.summary[actual]
		w.mu.Unlock()
		if done || seen[actual] {
			continue
		}
		seen[actual] = true
		g.Go(func() error {
			s, err := w.readSummary(ctx, m, actual)
			if err != nil {
				return err
			}
			w.mu.Lock()
			w.summary[actual] = s
			w.mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

func (w *walker) readSummary(ctx context.Context, m, actual module.Version) (*summary, error) {
	if actual.Version == "" {
		// A directory replacement: its go.mod is on the user's disk, not
		// on any proxy, so its requirements stay unknown.
		w.mu.Lock()
		w.local[m] = true
		w.mu.Unlock()
		return &summary{pruned: true}, nil
	}
	if err := module.Check(actual.Path, actual.Version); err != nil {
		return nil, err
	}
	data, err := w.read(ctx, actual.Path, actual.Version)
	if err != nil {
		return nil, fmt.Errorf("reading go.mod of %s@%s: %w", actual.Path, actual.Version, err)
	}
	w.mu.Lock()
	w.modFiles[actual] = true
	w.mu.Unlock()
	// Dependencies' go.mod files are parsed leniently, as the go command
	// parses them: directives it does not know are not errors.
	f, err := modfile.ParseLax(actual.Path+"@"+actual.Version+"/go.mod", data, nil)
	if err != nil {
		return nil, err
	}
	s := &summary{pruned: f.Go != nil && goAtLeast117(f.Go.Version)}
	for _, r := range f.Require {
		if w.exclude[r.Mod] {
			continue
		}
		if err := module.Check(r.Mod.Path, r.Mod.Version); err != nil {
			return nil, fmt.Errorf("go.mod of %s@%s: %w", actual.Path, actual.Version, err)
		}
		s.require = append(s.require, r.Mod)
	}
	return s, nil
}

// goAtLeast117 reports whether a go directive's version ("1.16", "1.21.0",
// "1.22rc1") is at least 1.17, where graph pruning begins.
func goAtLeast117(v string) bool {
	major, rest, _ := strings.Cut(v, ".")
	maj, err := strconv.Atoi(major)
	if err != nil {
		return false
	}
	if maj != 1 {
		return maj > 1
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		rest = rest[:end]
	}
	minor, err := strconv.Atoi(rest)
	return err == nil && minor >= 17
}
