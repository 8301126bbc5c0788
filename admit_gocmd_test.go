package goproxy

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// osvEntry0100 affects example.com/mod009 from v1.1.0 until its fix in
// v1.2.0, in the Go vulnerability database's OSV format.
const osvEntry0100 = `{
  "schema_version": "1.3.1",
  "id": "GO-2099-0100",
  "modified": "2099-01-01T00:00:00Z",
  "aliases": ["CVE-2099-0100"],
  "summary": "Data loss in mod009",
  "affected": [{
    "package": {"name": "example.com/mod009", "ecosystem": "Go"},
    "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.1.0"}, {"fixed": "1.2.0"}]}]
  }]
}`

// TestTheGoCommandMeetsTheAdmissionPolicy runs the go command against a
// proxy with a cooldown over its own record of first sightings (every
// version seen a month ago, but one), a deny entry and a vulnerability
// list.
func TestTheGoCommandMeetsTheAdmissionPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	vulndb := t.TempDir()
	if err := os.WriteFile(filepath.Join(vulndb, "GO-2099-0100.json"), []byte(osvEntry0100), 0o666); err != nil {
		t.Fatal(err)
	}
	p := newTestProxy(t, up.URL)
	// example.com/mod001@v1.2.0 is new: the proxy sees it first below.
	seedFirstSeen(t, p.Cacher, vs, time.Now().Add(-30*24*time.Hour), "example.com/mod001@v1.2.0")
	policy := &AdmissionPolicy{
		Deny:            []AdmissionRule{{Match: "example.com/mod003@v1.2.0", Reason: "mod003 v1.2.0 deletes your data"}},
		Vulnerabilities: &VulnerabilityList{Path: vulndb, Logger: testLogger(t)},
		Cooldown:        Cooldown{Age: 72 * time.Hour, FirstSeen: p},
	}
	if err := policy.Init(); err != nil {
		t.Fatal(err)
	}
	p.Admission = policy.Decide
	srv := httptest.NewServer(p)
	defer srv.Close()

	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	gocmd.WriteGoMod([]byte("module example.com/root\n\ngo 1.21\n"))
	goMod := func() string {
		data, err := os.ReadFile(filepath.Join(gocmd.Dir, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}

	t.Run("a version in its cooldown is not listed, and latest is the one before", func(t *testing.T) {
		if out := gocmd.MustRun(t, "list", "-m", "-versions", "example.com/mod001"); strings.TrimSpace(out) != "example.com/mod001 v1.0.0 v1.1.0" {
			t.Errorf("go list -m -versions: %q", out)
		}
		gocmd.MustRun(t, "get", "example.com/mod001@latest")
		if !strings.Contains(goMod(), "example.com/mod001 v1.1.0") {
			t.Errorf("go get @latest gave go.mod:\n%s", goMod())
		}
		_, stderr, err := gocmd.Run("get", "example.com/mod001@v1.2.0")
		if err == nil || !strings.Contains(stderr, "first seen less than a minute ago") {
			t.Errorf("go get of the version in its cooldown: %v\n%s", err, stderr)
		}
		// The go command asks for example.com/mod005/sub@v1.1.0 too,
		// first seen now, but no module: not found, so that it goes on
		// to example.com/mod005.
		_, stderr, err = gocmd.Run("get", "example.com/mod005/sub@v1.1.0")
		if err == nil || !strings.Contains(stderr, "does not contain package example.com/mod005/sub") {
			t.Errorf("go get of a package path: %v\n%s", err, stderr)
		}
	})
	t.Run("a denied version fails with the configured reason", func(t *testing.T) {
		_, stderr, err := gocmd.Run("get", "example.com/mod003@v1.2.0")
		if err == nil || !strings.Contains(stderr, "403 Forbidden") || !strings.Contains(stderr, "mod003 v1.2.0 deletes your data") {
			t.Errorf("go get of a denied version: %v\n%s", err, stderr)
		}
		if out := gocmd.MustRun(t, "list", "-m", "-versions", "example.com/mod003"); strings.TrimSpace(out) != "example.com/mod003 v1.0.0 v1.1.0" {
			t.Errorf("go list -m -versions: %q", out)
		}
	})
	t.Run("a vulnerability blocks its affected range only", func(t *testing.T) {
		if out := gocmd.MustRun(t, "list", "-m", "-versions", "example.com/mod009"); strings.TrimSpace(out) != "example.com/mod009 v1.0.0 v1.2.0" {
			t.Errorf("go list -m -versions: %q", out)
		}
		_, stderr, err := gocmd.Run("get", "example.com/mod009@v1.1.0")
		if err == nil || !strings.Contains(stderr, "GO-2099-0100 (CVE-2099-0100, fixed in v1.2.0)") {
			t.Errorf("go get of an affected version: %v\n%s", err, stderr)
		}
		gocmd.MustRun(t, "get", "example.com/mod009@v1.0.0")
		gocmd.MustRun(t, "get", "example.com/mod009@v1.2.0")
		if !strings.Contains(goMod(), "example.com/mod009 v1.2.0") {
			t.Errorf("go.mod after the fixed version:\n%s", goMod())
		}
	})
}
