package goproxy

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/testwait"
)

// decide asks d about path@version.
func decide(d interface {
	Decide(context.Context, AdmissionCandidate) AdmissionDecision
}, pathAtVersion string) AdmissionDecision {
	p, v, _ := strings.Cut(pathAtVersion, "@")
	return d.Decide(context.Background(), AdmissionCandidate{Path: p, Version: v})
}

func TestVulnerabilityListRefusesAffectedVersionsOnly(t *testing.T) {
	vl := &VulnerabilityList{Logger: testLogger(t), Path: "testdata/vulndb"}
	if err := vl.Load(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, version string
		want          []string // in the reason; none: admitted
		not           []string // not in the reason
	}{
		{"before the first fix, with aliases, fix and summary", "example.com/vulnerable@v1.2.0",
			[]string{"GO-2099-0001 (CVE-2099-10001, GHSA-aaaa-bbbb-cccc, fixed in v1.4.2): Request smuggling"}, []string{"GO-2099-0006"}},
		{"a pseudo-version before the fix", "example.com/vulnerable@v1.2.1-0.20990101000000-abcdefabcdef",
			[]string{"GO-2099-0001"}, nil},
		{"two vulnerabilities, no summary", "example.com/vulnerable@v1.4.1",
			[]string{"GO-2099-0001 (CVE-2099-10001, GHSA-aaaa-bbbb-cccc, fixed in v1.4.2); GO-2099-0006 (CVE-2099-10006, fixed in v1.6.0)"}, []string{"smuggling"}},
		{"fixed in one, not the other", "example.com/vulnerable@v1.4.2",
			[]string{"GO-2099-0006"}, []string{"GO-2099-0001"}},
		{"introduced again", "example.com/vulnerable@v1.5.0",
			[]string{"GO-2099-0001 (CVE-2099-10001, GHSA-aaaa-bbbb-cccc, fixed in v1.5.1)", "GO-2099-0006"}, nil},
		{"fixed in both", "example.com/vulnerable@v1.6.0", nil, nil},
		{"a module named in a second entry", "example.com/vulnerable/v2@v2.0.0-rc.1", []string{"GO-2099-0002", "fixed in v2.3.0"}, nil},
		{"before introduced", "example.com/vulnerable/v2@v2.0.0-beta.1", nil, nil},
		{"after fixed", "example.com/vulnerable/v2@v2.3.0", nil, nil},
		{"incompatible, before its fix", "example.org/twice@v2.6.0+incompatible", []string{"GO-2099-0002", "fixed in v2.7.0-rc.0+incompatible"}, nil},
		{"incompatible, fixed", "example.org/twice@v2.7.0+incompatible", nil, nil},
		{"a second affected block, last affected included", "example.org/twice@v3.1.0+incompatible", []string{"GO-2099-0002", "no fixed version"}, nil},
		{"after last affected", "example.org/twice@v3.1.1+incompatible", nil, nil},
		{"every version, when no event fixes it", "example.com/unfixed@v3.0.1", []string{"GO-2099-0003 (GHSA-dddd-eeee-ffff, no fixed version)"}, nil},
		{"a withdrawn entry affects nothing", "example.com/withdrawn@v1.0.0", nil, nil},
		{"a package path is not its module", "example.com/vulnerable/header@v1.0.0", nil, nil},
		{"the standard library's entries are not about modules", "golang.org/toolchain@v0.0.1-go1.98.0.linux-amd64", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(vl, tt.version)
			if len(tt.want) == 0 {
				if d != (AdmissionDecision{}) {
					t.Fatalf("decision %+v, want admitted", d)
				}
				return
			}
			if !d.Refused() || d.Listed() || d.Rule != "vulnerable" {
				t.Fatalf("decision %+v, want a refusal", d)
			}
			for _, w := range tt.want {
				if !strings.Contains(d.Reason, w) {
					t.Errorf("reason %q lacks %q", d.Reason, w)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(d.Reason, w) {
					t.Errorf("reason %q has %q", d.Reason, w)
				}
			}
		})
	}
	st := vl.Status()
	if st.Files != 6 || st.Vulnerabilities != 4 || st.Err != nil || st.Loaded.IsZero() {
		t.Errorf("status %+v, want 6 files, 4 vulnerabilities in force (the withdrawn and stdlib ones aside)", st)
	}
}

func TestVulnerabilityListReportOnlyAdmits(t *testing.T) {
	vl := &VulnerabilityList{Logger: testLogger(t), Path: "testdata/vulndb", ReportOnly: true}
	d := decide(vl, "example.com/vulnerable@v1.2.0")
	if d.Refused() || !d.Listed() || !d.ReportOnly || d.Verdict != Refuse || !strings.Contains(d.Reason, "GO-2099-0001") {
		t.Fatalf("decision %+v, want a reported refusal", d)
	}
}

func TestVulnerabilityListIgnoresAcceptedVulnerabilitiesByIDOrAlias(t *testing.T) {
	for _, id := range []string{"GO-2099-0001", "CVE-2099-10001", "GHSA-aaaa-bbbb-cccc"} {
		vl := &VulnerabilityList{Logger: testLogger(t), Path: "testdata/vulndb", Ignore: []string{id}}
		if d := decide(vl, "example.com/vulnerable@v1.2.0"); d != (AdmissionDecision{}) {
			t.Errorf("ignoring %s: decision %+v, want admitted", id, d)
		}
		if d := decide(vl, "example.com/vulnerable@v1.4.1"); !d.Refused() || strings.Contains(d.Reason, "GO-2099-0001") {
			t.Errorf("ignoring %s: decision %+v, want a refusal for GO-2099-0006 only", id, d)
		}
	}
}

// zipOf writes the files under dir into a zip, under prefix.
func zipOf(t *testing.T, dir, prefix string) string {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		w, err := zw.Create(prefix + filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	zw.Close()
	file := filepath.Join(t.TempDir(), "db.zip")
	os.WriteFile(file, buf.Bytes(), 0o644)
	return file
}

func TestVulnerabilityListReadsTheDatabaseLayouts(t *testing.T) {
	arrayFile := filepath.Join(t.TempDir(), "all.json")
	var array []string
	for _, name := range []string{"GO-2099-0001.json", "GO-2099-0006.json"} {
		data, _ := os.ReadFile(filepath.Join("testdata/vulndb/ID", name))
		array = append(array, string(data))
	}
	os.WriteFile(arrayFile, []byte("[\n"+strings.Join(array, ",\n")+"\n]\n"), 0o644)

	gzDir := t.TempDir()
	data, _ := os.ReadFile("testdata/vulndb/ID/GO-2099-0001.json")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	os.WriteFile(filepath.Join(gzDir, "GO-2099-0001.json.gz"), gz.Bytes(), 0o644)

	tests := []struct{ name, path string }{
		{"vuln.go.dev's tree, with ID and index directories", "testdata/vulndb"},
		{"a flat directory with a GitHub advisory beside the Go entry", "testdata/osv-flat"},
		{"vulndb.zip", zipOf(t, "testdata/vulndb", "")},
		{"a zip of a flat directory under a folder", zipOf(t, "testdata/osv-flat", "Go/")},
		{"one file holding an array of entries", arrayFile},
		{"one entry", "testdata/vulndb/ID/GO-2099-0001.json"},
		{"gzipped entries", gzDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vl := &VulnerabilityList{Logger: testLogger(t), Path: tt.path}
			if err := vl.Load(); err != nil {
				t.Fatal(err)
			}
			d := decide(vl, "example.com/vulnerable@v1.2.0")
			want := "known vulnerable: GO-2099-0001 (CVE-2099-10001, GHSA-aaaa-bbbb-cccc, fixed in v1.4.2): Request smuggling"
			if !d.Refused() || !strings.HasPrefix(d.Reason, want) {
				t.Errorf("decision %+v, want a refusal for GO-2099-0001 alone", d)
			}
			if d := decide(vl, "example.com/vulnerable@v1.6.0"); d != (AdmissionDecision{}) {
				t.Errorf("v1.6.0: decision %+v, want admitted", d)
			}
		})
	}
}

// rewrite writes a file with a modification time of its own, so that the
// change shows even within the file system's time resolution.
func rewrite(t *testing.T, file, content string, generation int) {
	t.Helper()
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	mtime := time.Now().Add(time.Duration(generation) * time.Hour)
	if err := os.Chtimes(file, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestVulnerabilityListReadsChangedFilesAndKeepsTheLastGoodOnes(t *testing.T) {
	dir := t.TempDir()
	os.CopyFS(dir, os.DirFS("testdata/vulndb"))
	file := filepath.Join(dir, "ID", "GO-2099-0001.json")
	original, _ := os.ReadFile(file)
	vl := &VulnerabilityList{Logger: testLogger(t), Path: dir, CheckInterval: time.Hour}
	if err := vl.Load(); err != nil {
		t.Fatal(err)
	}
	if d := decide(vl, "example.com/vulnerable@v1.2.5"); !d.Refused() {
		t.Fatalf("decision %+v, want refused before the fix", d)
	}

	rewrite(t, file, strings.Replace(string(original), `"fixed": "1.4.2"`, `"fixed": "1.2.0"`, 1), 1)
	if err := vl.Load(); err != nil {
		t.Fatal(err)
	}
	if d := decide(vl, "example.com/vulnerable@v1.2.5"); d != (AdmissionDecision{}) {
		t.Fatalf("after the entry changed its fix to v1.2.0: decision %+v, want admitted", d)
	}

	rewrite(t, file, string(original[:len(original)/2]), 2)
	err := vl.Load()
	if err == nil || !strings.Contains(err.Error(), "GO-2099-0001.json") {
		t.Fatalf("Load of a truncated file: %v, want an error naming it", err)
	}
	if d := decide(vl, "example.com/vulnerable@v1.1.0"); !d.Refused() {
		t.Errorf("after a bad rewrite: decision %+v, want the last good entry to stay", d)
	}
	if d := decide(vl, "example.com/vulnerable@v1.2.5"); d != (AdmissionDecision{}) {
		t.Errorf("after a bad rewrite: decision %+v, want the last good entry to stay", d)
	}
	if st := vl.Status(); st.Err == nil {
		t.Errorf("status %+v, want the error", st)
	}

	os.Remove(file)
	if err := vl.Load(); err != nil {
		t.Fatal(err)
	}
	if d := decide(vl, "example.com/vulnerable@v1.1.0"); d != (AdmissionDecision{}) {
		t.Errorf("after the file was removed: decision %+v, want admitted", d)
	}
}

func TestVulnerabilityListNoticesChangesWhenDeciding(t *testing.T) {
	dir := t.TempDir()
	os.CopyFS(dir, os.DirFS("testdata/vulndb"))
	vl := &VulnerabilityList{Logger: testLogger(t), Path: dir, CheckInterval: time.Millisecond}
	defer vl.bg.Wait()
	if d := decide(vl, "example.com/vulnerable@v1.6.0"); d != (AdmissionDecision{}) {
		t.Fatalf("decision %+v, want admitted", d)
	}
	entry, _ := os.ReadFile(filepath.Join(dir, "ID", "GO-2099-0006.json"))
	rewrite(t, filepath.Join(dir, "ID", "GO-2099-0006.json"), strings.Replace(string(entry), `"fixed": "1.6.0"`, `"fixed": "1.7.0"`, 1), 1)
	testwait.For(t, func() bool { return decide(vl, "example.com/vulnerable@v1.6.0").Refused() }, "the change to be noticed")
}

func TestVulnerabilityListRefusesUntilItCanBeRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vulndb")
	vl := &VulnerabilityList{Logger: testLogger(t), Path: dir, CheckInterval: time.Hour}
	d := decide(vl, "example.com/anything@v1.0.0")
	if !d.Refused() || !strings.Contains(d.Reason, "has not been read") {
		t.Fatalf("decision %+v, want a refusal", d)
	}
	if err := vl.Load(); err == nil {
		t.Fatal("Load of a missing directory succeeded")
	}
	os.MkdirAll(dir, 0o755)
	if err := vl.Load(); err == nil || !strings.Contains(err.Error(), "no OSV files") {
		t.Fatalf("Load of an empty directory: %v, want an error", err)
	}
	os.CopyFS(dir, os.DirFS("testdata/vulndb"))
	if err := vl.Load(); err != nil {
		t.Fatal(err)
	}
	if d := decide(vl, "example.com/anything@v1.0.0"); d != (AdmissionDecision{}) {
		t.Fatalf("decision %+v, want admitted once read", d)
	}
}

func TestVulnerabilityListRejectsEntriesItCouldMisread(t *testing.T) {
	for name, content := range map[string]string{
		"no id":          `{"affected": []}`,
		"a bad version":  `{"id": "GO-2099-0100", "affected": [{"package": {"name": "example.com/m", "ecosystem": "Go"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "v1.2.3"}]}]}]}`,
		"not json":       `<html>`,
		"an array of {}": `[{}]`,
	} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "entry.json")
			os.WriteFile(file, []byte(content), 0o644)
			if err := (&VulnerabilityList{Logger: testLogger(t), Path: file}).Load(); err == nil {
				t.Fatal("loaded")
			}
		})
	}
}
