package goproxy

import (
	"archive/zip"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/semver"
)

// VulnerabilityList refuses, or only reports, the module versions affected
// by known vulnerabilities, read from a local copy of a vulnerability
// database in the OSV format (https://ossf.github.io/osv-schema/) that the
// Go vulnerability database (https://vuln.go.dev) serves. Nothing is
// fetched: keep the copy up to date by other means, for example by
// downloading https://vuln.go.dev/vulndb.zip daily.
//
// An entry affects the versions of the module named by an affected
// package of ecosystem "Go" within its SEMVER ranges (introduced, fixed
// and last_affected events, versions without the "v") or in its versions
// list. A version is compared as a semantic version, so a pseudo-version
// is affected when the release it precedes is. The decision is per module:
// a version is refused even if the vulnerable packages or symbols
// (ecosystem_specific.imports) are not used, and an entry affecting every
// version (an "introduced" event without a fix, as unreviewed entries of
// the Go database often have) refuses the whole module: use Ignore, or
// ReportOnly. Withdrawn entries and those about Go itself (packages
// "stdlib" and "toolchain") are skipped.
//
// The files are checked for changes (by size and modification time) at
// most every CheckInterval, in the background of a decision, and the
// changed ones read again. A file that cannot be read or parsed is logged
// and keeps the entries last read from it.
type VulnerabilityList struct {
	// Path locates the database copy: a directory of OSV JSON files (if
	// it has an ID subdirectory, as vuln.go.dev and its vulndb.zip do,
	// the files there), a .zip file of such a directory (vulndb.zip, or
	// osv.dev's Go/all.zip), or one .json file holding an entry or an
	// array of entries. Files named .json.gz are read too. It must be set.
	Path string

	// ReportOnly logs and counts the affected versions but admits them.
	ReportOnly bool

	// Ignore lists the vulnerabilities accepted, by ID or alias
	// ("GO-2024-1234", "CVE-2024-12345", "GHSA-xxxx-xxxx-xxxx").
	Ignore []string

	// CheckInterval is how often, at most, the files are checked for
	// changes. Zero means one minute.
	CheckInterval time.Duration

	// Logger receives the files that cannot be read. If nil,
	// [slog.Default] is used.
	Logger *slog.Logger

	load sync.Mutex // held by the one load under way; guards files
	bg   sync.WaitGroup
	// files holds what was read from each file, by name.
	files map[string]*osvFile

	mu        sync.RWMutex
	byModule  map[string][]*osvAffected
	loaded    time.Time // when the entries in force were built; zero before
	checked   time.Time // when the files were last checked
	fileCount int
	entries   int
	lastErr   error
	attempted bool
}

// VulnerabilityListStatus describes what a VulnerabilityList holds, for a
// status page.
type VulnerabilityListStatus struct {
	// Files is how many files were found; Vulnerabilities how many
	// entries, not withdrawn or ignored, affect modules.
	Files, Vulnerabilities int
	// Loaded is when the entries in force were read; zero if never.
	Loaded time.Time
	// Checked is when the files were last checked for changes.
	Checked time.Time
	// Err is the problem found by the last check; nil if none.
	Err error
}

// osvFile is what one file held when last read.
type osvFile struct {
	stamp   string // changes when the file does
	entries []*osvEntry
}

// osvEntry is the part of an OSV entry the list needs.
type osvEntry struct {
	ID        string   `json:"id"`
	Aliases   []string `json:"aliases"`
	Summary   string   `json:"summary"`
	Withdrawn string   `json:"withdrawn"`
	Affected  []struct {
		Package struct {
			Name      string `json:"name"`
			Ecosystem string `json:"ecosystem"`
		} `json:"package"`
		Ranges []struct {
			Type   string     `json:"type"`
			Events []osvEvent `json:"events"`
		} `json:"ranges"`
		Versions []string `json:"versions"`
	} `json:"affected"`
}

type osvEvent struct {
	Introduced   string `json:"introduced,omitempty"`
	Fixed        string `json:"fixed,omitempty"`
	LastAffected string `json:"last_affected,omitempty"`
}

// osvAffected is one entry's affected versions of one module, ready to
// match: ranges of events in version order, and listed versions.
type osvAffected struct {
	entry    *osvEntry
	ranges   [][]osvEvent // with "v" prefixes; Introduced "0" kept as is
	versions []string
}

func (v *VulnerabilityList) checkInterval() time.Duration {
	if v.CheckInterval <= 0 {
		return time.Minute
	}
	return v.CheckInterval
}

func (v *VulnerabilityList) logger() *slog.Logger {
	if v.Logger != nil {
		return v.Logger
	}
	return slog.Default()
}

// Status reports what v holds.
func (v *VulnerabilityList) Status() VulnerabilityListStatus {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return VulnerabilityListStatus{Files: v.fileCount, Vulnerabilities: v.entries, Loaded: v.loaded, Checked: v.checked, Err: v.lastErr}
}

// Decide refuses (or, with ReportOnly, reports) c if a vulnerability
// affects it, with a reason naming the vulnerabilities, their aliases and
// the versions that fix them. It has the signature of the Proxy's
// admission hook, for a list alone; AdmissionPolicy combines it with other
// rules. Until the files have been read once, it refuses every version.
func (v *VulnerabilityList) Decide(ctx context.Context, c AdmissionCandidate) AdmissionDecision {
	v.refresh()
	v.mu.RLock()
	affected, loaded := v.byModule[c.Path], !v.loaded.IsZero()
	v.mu.RUnlock()
	if !loaded {
		return AdmissionDecision{Verdict: Refuse, Rule: "vulnerable", Reason: "the proxy's list of known vulnerabilities has not been read", ReportOnly: v.ReportOnly}
	}
	type finding struct {
		a   *osvAffected
		fix string
	}
	var found []finding
	for _, a := range affected {
		if fix, ok := a.affects(c.Version); ok {
			found = append(found, finding{a, fix})
		}
	}
	if len(found) == 0 {
		return AdmissionDecision{}
	}
	const shown = 3
	var names []string
	for _, f := range found[:min(len(found), shown)] {
		names = append(names, f.a.describe(f.fix, len(found) == 1))
	}
	reason := "known vulnerable: " + strings.Join(names, "; ")
	if len(found) > shown {
		reason += fmt.Sprintf("; and %d more", len(found)-shown)
	}
	return AdmissionDecision{Verdict: Refuse, Rule: "vulnerable", Reason: reason, ReportOnly: v.ReportOnly}
}

// affects reports whether version is affected, and the version that
// fixes it ("" if none does): the highest of the fixes of the ranges that
// include it.
func (a *osvAffected) affects(version string) (fix string, affected bool) {
	affected = slices.ContainsFunc(a.versions, func(v string) bool { return semver.Compare(v, version) == 0 })
	unfixed := affected
	for _, events := range a.ranges {
		rangeFix, ok := rangeAffects(events, version)
		if !ok {
			continue
		}
		affected = true
		unfixed = unfixed || rangeFix == ""
		if semver.Compare(rangeFix, fix) > 0 {
			fix = rangeFix
		}
	}
	if unfixed {
		fix = ""
	}
	return fix, affected
}

// rangeAffects evaluates one range as OSV does, its events in version
// order, and returns the first fix after version.
func rangeAffects(events []osvEvent, version string) (fix string, affected bool) {
	for _, e := range events {
		switch {
		case e.Introduced != "":
			if e.Introduced == "0" || semver.Compare(version, e.Introduced) >= 0 {
				affected = true
			}
		case e.Fixed != "":
			if semver.Compare(version, e.Fixed) >= 0 {
				affected = false
			}
		case e.LastAffected != "":
			if semver.Compare(version, e.LastAffected) > 0 {
				affected = false
			}
		}
	}
	if !affected {
		return "", false
	}
	for _, e := range events {
		if e.Fixed != "" && semver.Compare(e.Fixed, version) > 0 {
			return e.Fixed, true
		}
	}
	return "", true
}

// describe names the entry for a refusal: its ID, aliases and fix, and its
// summary when it is the only one.
func (a *osvAffected) describe(fix string, withSummary bool) string {
	var b strings.Builder
	b.WriteString(a.entry.ID)
	b.WriteString(" (")
	for _, alias := range a.entry.Aliases {
		b.WriteString(alias)
		b.WriteString(", ")
	}
	if fix != "" {
		b.WriteString("fixed in " + fix + ")")
	} else {
		b.WriteString("no fixed version)")
	}
	if s := strings.Join(strings.Fields(a.entry.Summary), " "); withSummary && s != "" {
		if len(s) > 120 {
			s = strings.ToValidUTF8(s[:117], "") + "..."
		}
		b.WriteString(": " + s)
	}
	return b.String()
}

// refresh loads the files the first time it is called, and checks them
// again in the background when CheckInterval has passed.
func (v *VulnerabilityList) refresh() {
	v.mu.RLock()
	attempted, due := v.attempted, time.Since(v.checked) >= v.checkInterval()
	v.mu.RUnlock()
	if !attempted {
		v.load.Lock()
		defer v.load.Unlock()
		v.mu.RLock()
		attempted = v.attempted // by another decision, while this one waited
		v.mu.RUnlock()
		if !attempted {
			v.loadLocked()
		}
		return
	}
	if !due || !v.load.TryLock() {
		return
	}
	v.bg.Add(1)
	go func() {
		defer v.bg.Done()
		defer v.load.Unlock()
		v.loadLocked()
	}()
}

// Load checks the files now and reads those that changed since the last
// load, waiting for a load under way to end first. It returns the problems
// found, each naming its file; the entries of a file that cannot be read
// are those last read from it.
func (v *VulnerabilityList) Load() error {
	v.load.Lock()
	defer v.load.Unlock()
	return v.loadLocked()
}

func (v *VulnerabilityList) loadLocked() error {
	start := time.Now()
	changed, err := v.readFiles()
	if err != nil {
		v.logger().Error("reading the vulnerability list", "path", v.Path, "error", err)
	}
	var byModule map[string][]*osvAffected
	var entries int
	if changed {
		byModule, entries = v.index()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.attempted, v.checked, v.lastErr, v.fileCount = true, start, err, len(v.files)
	if changed {
		v.byModule, v.entries, v.loaded = byModule, entries, start
	}
	return err
}

// osvSource is one file of the database, ready to be read.
type osvSource struct {
	name, stamp string
	open        func() (io.ReadCloser, error)
}

// readFiles reads again the files whose stamp changed, reporting whether
// anything did. The caller holds v.load.
func (v *VulnerabilityList) readFiles() (changed bool, err error) {
	sources, closeAll, err := v.listSources()
	if err != nil {
		// Nothing could be listed: everything read before stays.
		return false, err
	}
	defer closeAll()
	var errs []error
	files := make(map[string]*osvFile, len(sources))
	for _, src := range sources {
		old := v.files[src.name]
		if old != nil && old.stamp == src.stamp {
			files[src.name] = old
			continue
		}
		changed = true
		entries, err := readOSVFile(src)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src.name, err))
			if old != nil {
				// The last good entries stay, under the new stamp: the
				// file is read again when it changes again.
				entries = old.entries
			}
		}
		files[src.name] = &osvFile{stamp: src.stamp, entries: entries}
	}
	changed = changed || len(files) != len(v.files) || v.files == nil
	v.files = files
	return changed, errors.Join(errs...)
}

// listSources finds the files of the database at v.Path.
func (v *VulnerabilityList) listSources() (sources []osvSource, closeAll func(), err error) {
	noop := func() {}
	if v.Path == "" {
		return nil, noop, errors.New("no Path set")
	}
	fi, err := os.Stat(v.Path)
	if err != nil {
		return nil, noop, err
	}
	switch {
	case fi.IsDir():
		sources, err := listOSVDir(v.Path)
		if err == nil && len(sources) == 0 {
			err = errors.New("no OSV files (*.json) found there")
		}
		return sources, noop, err
	case strings.HasSuffix(v.Path, ".zip"):
		sources, closeAll, err := listOSVZip(v.Path)
		if err == nil && len(sources) == 0 {
			closeAll()
			return nil, noop, errors.New("no OSV files (*.json) found in the archive")
		}
		return sources, closeAll, err
	}
	return []osvSource{{name: filepath.Base(v.Path), stamp: fileStamp(fi), open: func() (io.ReadCloser, error) { return os.Open(v.Path) }}}, noop, nil
}

func fileStamp(fi fs.FileInfo) string {
	return fmt.Sprintf("%d %d", fi.Size(), fi.ModTime().UnixNano())
}

// isOSVFileName reports whether name, in a database directory, holds an
// entry: x.json, or x.json.gz when there is no x.json.
func isOSVFileName(name string, exists func(string) bool) bool {
	if strings.HasSuffix(name, ".json") {
		return true
	}
	return strings.HasSuffix(name, ".json.gz") && !exists(strings.TrimSuffix(name, ".gz"))
}

func listOSVDir(dir string) ([]osvSource, error) {
	if fi, err := os.Stat(filepath.Join(dir, "ID")); err == nil && fi.IsDir() {
		dir = filepath.Join(dir, "ID")
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make(map[string]bool, len(des))
	for _, de := range des {
		names[de.Name()] = true
	}
	var sources []osvSource
	for _, de := range des {
		if !isOSVFileName(de.Name(), func(n string) bool { return names[n] }) {
			continue
		}
		name := filepath.Join(dir, de.Name())
		// Stat, not the entry's Lstat: a copy may be made of symbolic
		// links.
		fi, err := os.Stat(name)
		if err != nil || !fi.Mode().IsRegular() {
			continue // removed meanwhile, or not a file
		}
		sources = append(sources, osvSource{name: name, stamp: fileStamp(fi), open: func() (io.ReadCloser, error) { return os.Open(name) }})
	}
	return sources, nil
}

// listOSVZip lists the entries of a zip of a database directory: those of
// its ID directories if it has any (vulndb.zip also holds index files),
// else all its .json files (osv.dev's all.zip is flat).
func listOSVZip(file string) ([]osvSource, func(), error) {
	zr, err := zip.OpenReader(file)
	if err != nil {
		return nil, func() {}, err
	}
	names := make(map[string]bool, len(zr.File))
	hasID := false
	for _, f := range zr.File {
		names[f.Name] = true
		hasID = hasID || path.Base(path.Dir(f.Name)) == "ID"
	}
	var sources []osvSource
	for _, f := range zr.File {
		if f.FileInfo().IsDir() || !isOSVFileName(f.Name, func(n string) bool { return names[n] }) {
			continue
		}
		if hasID && path.Base(path.Dir(f.Name)) != "ID" {
			continue
		}
		// Entries are told apart by content: the archive's own time
		// changes whenever it is downloaded again.
		sources = append(sources, osvSource{name: file + "!" + f.Name, stamp: fmt.Sprintf("%d %08x", f.UncompressedSize64, f.CRC32), open: f.Open})
	}
	return sources, func() { zr.Close() }, nil
}

// maxOSVFile bounds one file: the largest Go database entries are a few
// tens of kilobytes, a whole database a few tens of megabytes.
const maxOSVFile = 256 << 20

// readOSVFile parses one file: an entry, or an array of entries.
func readOSVFile(src osvSource) ([]*osvEntry, error) {
	rc, err := src.open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var r io.Reader = rc
	if strings.HasSuffix(src.name, ".gz") {
		zr, err := gzip.NewReader(rc)
		if err != nil {
			return nil, err
		}
		r = zr
	}
	data, err := io.ReadAll(io.LimitReader(r, maxOSVFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxOSVFile {
		return nil, fmt.Errorf("larger than %d bytes", maxOSVFile)
	}
	var entries []*osvEntry
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '[' {
		err = json.Unmarshal(data, &entries)
	} else {
		var e osvEntry
		err = json.Unmarshal(data, &e)
		entries = []*osvEntry{&e}
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if err := e.check(); err != nil {
			return nil, err
		}
	}
	return entries, nil
}

// check rejects an entry the list could misread; it also adds the "v" to
// its versions.
func (e *osvEntry) check() error {
	if e == nil || e.ID == "" {
		return errors.New("an entry has no id")
	}
	canon := func(v string) (string, error) {
		if v == "" || v == "0" {
			return v, nil
		}
		if !semver.IsValid("v" + v) {
			return "", fmt.Errorf("%s: %q is not a semantic version", e.ID, v)
		}
		return "v" + v, nil
	}
	for i := range e.Affected {
		a := &e.Affected[i]
		for j := range a.Ranges {
			for k := range a.Ranges[j].Events {
				ev := &a.Ranges[j].Events[k]
				var err error
				if ev.Introduced, err = canon(ev.Introduced); err != nil {
					return err
				}
				if ev.Fixed, err = canon(ev.Fixed); err != nil {
					return err
				}
				if ev.LastAffected, err = canon(ev.LastAffected); err != nil {
					return err
				}
			}
		}
		for j, v := range a.Versions {
			var err error
			if a.Versions[j], err = canon(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// index builds the look-up by module of the entries in force. The caller
// holds v.load.
func (v *VulnerabilityList) index() (map[string][]*osvAffected, int) {
	ignored := make(map[string]bool, len(v.Ignore))
	for _, id := range v.Ignore {
		ignored[id] = true
	}
	var all []*osvEntry
	for _, f := range v.files {
		all = append(all, f.entries...)
	}
	slices.SortFunc(all, func(a, b *osvEntry) int { return cmp.Compare(a.ID, b.ID) })
	all = slices.CompactFunc(all, func(a, b *osvEntry) bool { return a.ID == b.ID })
	// An entry another names as an alias (a GHSA entry beside the Go
	// entry that aliases it, in osv.dev's copy) says nothing more.
	aliasedBy := make(map[string]string)
	for _, e := range all {
		if e.Withdrawn != "" {
			continue
		}
		for _, alias := range e.Aliases {
			aliasedBy[alias] = e.ID
		}
	}
	byModule := make(map[string][]*osvAffected)
	count := 0
	for _, e := range all {
		if e.Withdrawn != "" || ignored[e.ID] || slices.ContainsFunc(e.Aliases, func(a string) bool { return ignored[a] }) {
			continue
		}
		if other, ok := aliasedBy[e.ID]; ok && !slices.Contains(e.Aliases, other) {
			continue
		}
		// One per module, however many affected blocks name it.
		byName := make(map[string]*osvAffected)
		for _, a := range e.Affected {
			name := a.Package.Name
			if a.Package.Ecosystem != "Go" || name == "stdlib" || name == "toolchain" || name == "" {
				continue
			}
			oa := byName[name]
			if oa == nil {
				oa = &osvAffected{entry: e}
			}
			oa.versions = append(oa.versions, a.Versions...)
			for _, r := range a.Ranges {
				if r.Type != "SEMVER" || len(r.Events) == 0 {
					continue
				}
				events := slices.Clone(r.Events)
				slices.SortStableFunc(events, func(x, y osvEvent) int {
					return compareEventVersions(x.version(), y.version())
				})
				oa.ranges = append(oa.ranges, events)
			}
			if len(oa.ranges) > 0 || len(oa.versions) > 0 {
				byName[name] = oa
			}
		}
		for name, oa := range byName {
			byModule[name] = append(byModule[name], oa)
		}
		if len(byName) > 0 {
			count++
		}
	}
	return byModule, count
}

func (e osvEvent) version() string {
	return cmp.Or(e.Introduced, e.Fixed, e.LastAffected)
}

// compareEventVersions orders event versions, "0" first.
func compareEventVersions(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "0":
		return -1
	case b == "0":
		return 1
	}
	return semver.Compare(a, b)
}
