package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

func TestValidateReportsAdmissionProblemsByKey(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "goproxy.yaml"), `cache: `+dir+`/cache
admission:
  deny:
    - {match: "example.com/m@<1.2", reason: "no"}
    - {match: "", reason: "empty"}
  allow:
    - {match: "example.com/ok"}
  cooldown:
    age: 72h
    window: 24h
    index_feed: "ftp://index.example.com/index"
    poll_interval: -1s
  vulnerabilities:
    path: `+dir+`/missing
`)
	cfg, src := loadFile(t, file, nil)
	err := cfg.Validate(src, nil)
	if err == nil {
		t.Fatal("Validate passed")
	}
	for _, want := range []string{
		`goproxy.yaml:4: admission.deny[0].match: "example.com/m@<1.2": "1.2" is not a semantic version`,
		`goproxy.yaml:5: admission.deny[1].match: "": no module path pattern`,
		`goproxy.yaml:10: admission.cooldown.window: 24h0m0s is shorter than the cooldown's age 72h0m0s`,
		`goproxy.yaml:11: admission.cooldown.index_feed: not an http or https URL`,
		`goproxy.yaml:12: admission.cooldown.poll_interval: must not be negative`,
		`goproxy.yaml:14: admission.vulnerabilities.path: stat ` + dir + `/missing: no such file or directory`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "allow") {
		t.Errorf("a valid allow entry was reported:\n%v", err)
	}
}

func TestAnOfflineRepositoryRefusesACooldownIndexFeed(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "goproxy.yaml"), `cache: `+dir+`/cache
offline: true
admission:
  cooldown:
    age: 72h
    index_feed: "https://index.example.com/index"
`)
	cfg, src := loadFile(t, file, nil)
	err := cfg.Validate(src, nil)
	if err == nil || !strings.Contains(err.Error(), "admission.cooldown.index_feed: set on an offline repository") {
		t.Fatalf("Validate = %v, want the feed refused on an offline repository", err)
	}
}

// testFeed serves an index feed of fixed entries, as index.golang.org
// does, counting the requests.
type testFeed struct {
	*httptest.Server
	mu       sync.Mutex
	entries  []goproxy.IndexEntry
	requests int
}

func newTestFeed(t *testing.T, entries []goproxy.IndexEntry) *testFeed {
	f := &testFeed{entries: entries}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.requests++
		since, _ := time.Parse(time.RFC3339Nano, r.URL.Query().Get("since"))
		for _, e := range f.entries {
			if !e.Timestamp.Before(since) {
				line, _ := json.Marshal(e)
				fmt.Fprintf(w, "%s\n", line)
			}
		}
	}))
	t.Cleanup(f.Close)
	return f
}

const admissionConfig = `addr: 127.0.0.1:0
cache: CACHE
log: {format: json}
goproxy: UPSTREAM
gosumdb: "off"
admission:
  deny:
    - {match: "example.com/mod003@v1.2.0", reason: "mod003 v1.2.0 deletes your data"}
  cooldown:
    age: 72h
    index_feed: FEED/index
    poll_interval: 1s
  vulnerabilities:
    path: VULNDB
`

// TestServerAdmissionPolicy runs the server with an admission section: a
// deny entry, a cooldown dated by an index feed on a loopback address
// (which the egress policy lets through because the configuration names
// it) and a vulnerability database, with the go command as the client;
// the repository page shows the policy at work.
func TestServerAdmissionPolicy(t *testing.T) {
	buildServer(t)
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	// Every version entered the feed five days ago, within its window,
	// but example.com/mod001@v1.2.0, an hour ago.
	var entries []goproxy.IndexEntry
	old := time.Now().Add(-5 * 24 * time.Hour).UTC()
	for i, v := range vs {
		if v.Path == "example.com/mod001" && v.Version == "v1.2.0" {
			continue
		}
		entries = append(entries, goproxy.IndexEntry{Path: v.Path, Version: v.Version, Timestamp: old.Add(time.Duration(i) * time.Second)})
	}
	entries = append(entries, goproxy.IndexEntry{Path: "example.com/mod001", Version: "v1.2.0", Timestamp: time.Now().Add(-time.Hour).UTC()})
	feed := newTestFeed(t, entries)
	dir := t.TempDir()
	vulndb := filepath.Join(dir, "vulndb")
	os.Mkdir(vulndb, 0o755)
	writeFile(t, filepath.Join(vulndb, "GO-2099-0100.json"), `{"id": "GO-2099-0100", "aliases": ["CVE-2099-0100"],
  "affected": [{"package": {"name": "example.com/mod009", "ecosystem": "Go"},
    "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.1.0"}, {"fixed": "1.2.0"}]}]}]}`)
	config := strings.NewReplacer("CACHE", filepath.Join(dir, "cache"), "UPSTREAM", up.URL, "FEED", feed.URL, "VULNDB", vulndb).Replace(admissionConfig)
	srv := startServer(t, []string{"-config", writeFile(t, filepath.Join(dir, "goproxy.yaml"), config)}, serverEnv(t))
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, readAll(t, resp.Body)
	}
	// The feed is read once the server serves, in the background.
	var page string
	testwait.Within(t, 30*time.Second, func() bool {
		_, page = get("/-/status/repositories/root")
		return strings.Contains(page, "index feed <b>") && strings.Contains(page, "read ") && !strings.Contains(page, "not read yet")
	}, "the index feed to be read:\n", testwait.Show(func() string { return page }))

	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	gocmd.WriteGoMod([]byte("module example.com/root\n\ngo 1.21\n"))
	if out := gocmd.MustRun(t, "list", "-m", "-versions", "example.com/mod001"); strings.TrimSpace(out) != "example.com/mod001 v1.0.0 v1.1.0" {
		t.Errorf("a version an hour in the feed: go list -m -versions: %q", out)
	}
	gocmd.MustRun(t, "get", "example.com/mod001@latest")
	if data, _ := os.ReadFile(filepath.Join(gocmd.Dir, "go.mod")); !strings.Contains(string(data), "example.com/mod001 v1.1.0") {
		t.Errorf("go get @latest: go.mod\n%s", data)
	}
	if _, stderr, err := gocmd.Run("get", "example.com/mod003@v1.2.0"); err == nil || !strings.Contains(stderr, "mod003 v1.2.0 deletes your data") {
		t.Errorf("a denied version: %v\n%s", err, stderr)
	}
	if _, stderr, err := gocmd.Run("get", "example.com/mod009@v1.1.0"); err == nil || !strings.Contains(stderr, "GO-2099-0100") {
		t.Errorf("a vulnerable version: %v\n%s", err, stderr)
	}
	gocmd.MustRun(t, "get", "example.com/mod009@v1.2.0")

	code, page := get("/-/status/repositories/root")
	for _, want := range []string{
		`deny entries <b>1</b>`, `cooldown <b>3d 0h</b>`, `first seen by the index feed`,
		"index feed <b>" + fmt.Sprint(len(entries)) + " versions</b>", `known vulnerabilities <b>1</b>`,
		`<tr><td>deny</td><td>refuse</td><td>requests</td>`,
		`<tr><td>vulnerable</td><td>refuse</td><td>requests</td>`,
		`<tr><td>cooldown</td><td>refuse</td><td>list entries</td>`,
	} {
		if code != http.StatusOK || !strings.Contains(page, want) {
			t.Errorf("the repository page (%d) lacks %q:\n%s", code, want, page)
		}
	}
	if refused := srv.logLines("admission"); len(refused) == 0 {
		t.Error("no admission decision was logged")
	}
}

func TestACooldownLongerThanAWeekHasTheFeedRememberedAsLong(t *testing.T) {
	// The feed dates what it does not list at the start of its window;
	// its own default, 7 days, under a 14-day cooldown would have every
	// old version refused.
	p := &goproxy.Proxy{Cacher: &goproxy.MemCacher{}}
	a := newAdmission(AdmissionConfig{Cooldown: CooldownConfig{Age: Duration(14 * 24 * time.Hour), IndexFeed: "https://index.example/index"}}, p, nil)
	if a.feed.Window != 14*24*time.Hour {
		t.Errorf("feed window %v, want the cooldown's age", a.feed.Window)
	}
	if err := a.policy.Init(); err != nil {
		t.Errorf("Init: %v", err)
	}
}
