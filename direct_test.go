package goproxy

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gitrepotest"
	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// directMod is a module path the go command fetches with git from
// https://private.example.com/mod without asking the host first (the
// ".git" says which version control system to use), which git's
// url.<base>.insteadOf then sends to a gitrepotest.Server.
const directMod = "private.example.com/mod.git"

// newDirectTestProxy returns a Proxy that fetches the modules of
// private.example.com directly, as GOPRIVATE says, from git's
// repositories, with a module cache of its own in p.Direct.Dir. Only the
// Proxy's Env carries the git configuration: what reaches git is the
// proxy's environment.
func newDirectTestProxy(t *testing.T, git *gitrepotest.Server, env ...string) *Proxy {
	t.Helper()
	home := t.TempDir()
	// Telemetry off, as gocmdtest does: left on, the go command writes
	// counters from a process that can outlive it and race the cleanup.
	for _, dir := range []string{filepath.Join(home, ".config"), filepath.Join(home, "Library", "Application Support")} {
		mode := filepath.Join(dir, "go", "telemetry", "mode")
		if err := os.MkdirAll(filepath.Dir(mode), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(mode, []byte("off"), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	p := newTestProxy(t, "off", append([]string{
		"GOPRIVATE=private.example.com",
		"GIT_CONFIG_GLOBAL=" + git.GitConfig(t, "private.example.com"),
		"GIT_CONFIG_NOSYSTEM=1",
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		// Loopback only, whatever the developer's proxy settings.
		"HTTP_PROXY=", "HTTPS_PROXY=", "ALL_PROXY=", "http_proxy=", "https_proxy=", "all_proxy=",
	}, env...)...)
	p.Direct.Dir = t.TempDir()
	// The git server is on loopback, which the egress policy refuses
	// unless it is allowed.
	p.Egress.Allow = []string{strings.TrimPrefix(git.URL, "http://")}
	return p
}

// newModuleRepo creates the repository of directMod with version v1.0.0.
func newModuleRepo(t *testing.T, git *gitrepotest.Server) *gitrepotest.Repo {
	repo := git.NewRepo(t, "mod")
	repo.WriteFile(t, "go.mod", "module "+directMod+"\n\ngo 1.21\n")
	repo.WriteFile(t, "mod.go", "package mod\n\nconst V = 1\n")
	repo.Commit(t, "first")
	repo.Tag(t, "v1.0.0")
	return repo
}

// leftovers lists the files of a proxy's direct module cache other than
// the repository clones and checksum database tiles it may keep.
func leftovers(t *testing.T, p *Proxy) []string {
	t.Helper()
	modCache := filepath.Join(p.Direct.Dir, "mod")
	var files []string
	for _, f := range filesUnder(t, modCache) {
		rel, _ := filepath.Rel(modCache, f)
		rel = filepath.ToSlash(rel)
		if !strings.HasPrefix(rel, "cache/vcs/") && !strings.HasPrefix(rel, "cache/download/sumdb/") && rel != "cache/lock" {
			files = append(files, rel)
		}
	}
	return files
}

func TestDirectEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and git")
	}
	git := gitrepotest.NewServer(t)
	repo := newModuleRepo(t, git)
	p := newDirectTestProxy(t, git)
	p.MutableTTL = 2 * time.Second
	srv := httptest.NewServer(p)
	defer srv.Close()
	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)

	var dl struct{ Version, Zip, Error string }
	if err := json.Unmarshal([]byte(gocmd.MustRun(t, "mod", "download", "-json", directMod+"@v1.0.0")), &dl); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.OpenReader(dl.Zip)
	if err != nil {
		t.Fatalf("the downloaded zip: %v", err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	zr.Close()
	if want := []string{directMod + "@v1.0.0/go.mod", directMod + "@v1.0.0/mod.go"}; !slices.Equal(names, want) {
		t.Errorf("zip holds %q, want %q", names, want)
	}
	versions := func() string {
		return strings.TrimSpace(gocmd.MustRun(t, "list", "-m", "-versions", directMod))
	}
	if got := versions(); got != directMod+" v1.0.0" {
		t.Errorf("go list -m -versions: %q", got)
	}
	listed := time.Now()
	if files := leftovers(t, p); len(files) > 0 {
		t.Errorf("the proxy's module cache kept %q", files)
	}
	if len(filesUnder(t, filepath.Join(p.Direct.Dir, "mod", "cache", "vcs"))) == 0 {
		t.Error("the repository clone was not kept for the next run")
	}

	repo.WriteFile(t, "mod.go", "package mod\n\nconst V = 2\n")
	repo.Commit(t, "second")
	repo.Tag(t, "v1.1.0")
	// Within its cache time the list is served from the cache (unless
	// this machine is too slow to tell); after it, it is fetched again.
	listPath := "/" + directMod + "/@v/list"
	if w := do(p, "GET", listPath); time.Since(listed) < p.MutableTTL/2 && w.Body.String() != "v1.0.0\n" {
		t.Errorf("list within its cache time: %q, want the cached v1.0.0", w.Body)
	}
	testwait.For(t, func() bool { return strings.Contains(do(p, "GET", listPath).Body.String(), "v1.1.0") }, "the new version to be listed")
	if got := versions(); got != directMod+" v1.0.0 v1.1.0" {
		t.Errorf("go list -m -versions after tagging v1.1.0: %q", got)
	}
	for _, query := range []string{"latest", "main"} {
		var m struct{ Version string }
		if err := json.Unmarshal([]byte(gocmd.MustRun(t, "list", "-m", "-json", directMod+"@"+query)), &m); err != nil {
			t.Fatal(err)
		}
		if m.Version != "v1.1.0" {
			t.Errorf("%s@%s is %s, want v1.1.0", directMod, query, m.Version)
		}
	}
	gocmd.MustRun(t, "mod", "download", directMod+"@v1.1.0")
	if files := leftovers(t, p); len(files) > 0 {
		t.Errorf("the proxy's module cache kept %q", files)
	}
}

// A proxy's list names every tagged version, retracted ones too: the go
// command decides what to make of retractions.
func TestDirectListIncludesRetracted(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and git")
	}
	git := gitrepotest.NewServer(t)
	repo := newModuleRepo(t, git)
	repo.WriteFile(t, "go.mod", "module "+directMod+"\n\ngo 1.21\n\nretract v1.0.0\n")
	repo.Commit(t, "retract v1.0.0")
	repo.Tag(t, "v1.1.0")
	p := newDirectTestProxy(t, git)
	if w := do(p, "GET", "/"+directMod+"/@v/list"); w.Code != http.StatusOK || w.Body.String() != "v1.0.0\nv1.1.0\n" {
		t.Errorf("list: %d %q, want both versions", w.Code, w.Body)
	}
}

func TestDirectNotFound(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and git")
	}
	git := gitrepotest.NewServer(t)
	newModuleRepo(t, git)
	p := newDirectTestProxy(t, git)
	tests := []struct {
		name, path, want string
	}{
		{"no such repository", "/private.example.com/nope.git/@v/list", "no secure protocol found"},
		{"no such repository, version", "/private.example.com/nope.git/@v/v1.0.0.info", "no secure protocol found"},
		{"unknown version", "/" + directMod + "/@v/v1.9.9.info", "unknown revision v1.9.9"},
		{"unknown version mod", "/" + directMod + "/@v/v1.9.9.mod", "unknown revision v1.9.9"},
		{"unknown version zip", "/" + directMod + "/@v/v1.9.9.zip", "unknown revision v1.9.9"},
		{"unknown branch", "/" + directMod + "/@v/nosuchbranch.info", "nosuchbranch"},
		{"no such major version", "/" + directMod + "/v2/@v/v2.0.0.info", "unknown revision v2.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(p, "GET", tt.path)
			if w.Code != http.StatusNotFound && w.Code != http.StatusGone || !strings.Contains(w.Body.String(), tt.want) {
				t.Errorf("GET %s: %d %q, want 404 or 410 saying %q", tt.path, w.Code, w.Body, tt.want)
			}
		})
	}
	if files := leftovers(t, p); len(files) > 0 {
		t.Errorf("the proxy's module cache kept %q", files)
	}

	// The go command shows its users the origin's answer.
	srv := httptest.NewServer(p)
	defer srv.Close()
	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	if _, stderr, err := gocmd.Run("mod", "download", directMod+"@v1.9.8"); err == nil || !strings.Contains(stderr, "unknown revision v1.9.8") {
		t.Errorf("go mod download of an unknown version: %v\n%s", err, stderr)
	}
}

func TestDirectModuleCacheTrim(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and git")
	}
	git := gitrepotest.NewServer(t)
	newModuleRepo(t, git)
	p := newDirectTestProxy(t, git)
	zipPath := "/" + directMod + "/@v/v1.0.0.zip"
	if w := do(p, "GET", zipPath); w.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %q", zipPath, w.Code, w.Body)
	}
	if files := leftovers(t, p); len(files) > 0 {
		t.Errorf("the proxy's module cache kept %q", files)
	}
	vcs := filepath.Join(p.Direct.Dir, "mod", "cache", "vcs")
	if len(filesUnder(t, vcs)) == 0 {
		t.Fatal("no clone kept")
	}
	ctx := context.Background()

	// Within the budget, the clone stays.
	if !p.direct.trim(ctx, 1<<40) || len(filesUnder(t, vcs)) == 0 {
		t.Error("trim within the budget removed the clone")
	}
	// Not while a go command runs.
	p.direct.runs.RLock()
	ran := p.direct.trim(ctx, 0)
	p.direct.runs.RUnlock()
	if ran {
		t.Error("trim ran while a go command was running")
	}
	// Over it, the clone goes, with what interrupted runs left behind.
	leftover := filepath.Join(p.Direct.Dir, "mod", "cache", "download", "private.example.com", "x", "@v", "v1.0.0.zip")
	os.MkdirAll(filepath.Dir(leftover), 0o700)
	os.WriteFile(leftover, []byte("partial"), 0o600)
	if !p.direct.trim(ctx, 0) {
		t.Fatal("trim did not run")
	}
	if files := filesUnder(t, vcs); len(files) > 0 {
		t.Errorf("trim to 0 bytes kept %q", files)
	}
	if files := leftovers(t, p); len(files) > 0 {
		t.Errorf("trim kept %q", files)
	}
	// The next fetch clones again.
	p.Cacher = &MemCacher{}
	if w := do(p, "GET", zipPath); w.Code != http.StatusOK {
		t.Fatalf("GET %s after the trim: %d %q", zipPath, w.Code, w.Body)
	}
}

// fakeGo writes a stand-in for the go command, a shell script that runs
// body with $RUNS naming a file it may write to, which does not exist
// until it does. It returns the script and that file. A script that
// waits should also stop once $RUNS is gone with the test's files.
func fakeGo(t *testing.T, body string) (bin, runs string) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the fake go command is a shell script")
	}
	dir := t.TempDir()
	bin, runs = filepath.Join(dir, "go"), filepath.Join(dir, "runs")
	script := "#!/bin/sh\nRUNS='" + runs + "'\n" + body + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, runs
}

func TestDirectHostileInput(t *testing.T) {
	bin, runs := fakeGo(t, `echo "$@" >> "$RUNS"`)
	p := newTestProxy(t, "direct")
	p.Direct.GoBin = bin
	paths := []string{
		"/private.example.com/m/@v/-x.info",
		"/private.example.com/m/@v/--upload-pack=touch%20pwned.info",
		"/private.example.com/m/@v/--upload-pack=pwn.info",
		"/private.example.com/m/@v/--upload-pack=touch%20%2Ftmp%2Fpwned.info",
		"/private.example.com/m/@v/$(touch%20pwned).info",
		"/private.example.com/m/@v/%60touch%20pwned%60.info",
		"/private.example.com/m/@v/a;touch%20pwned.info",
		"/private.example.com/m/@v/a&b.info",
		"/private.example.com/m/@v/a%7Cb.info",
		"/private.example.com/m/@v/'a'.info",
		"/private.example.com/m/@v/%22a%22.info",
		"/private.example.com/m/@v/a%5Cb.info",
		"/private.example.com/m/@v/a%0Ab.info",
		"/private.example.com/m/@v/v1.0.0%0D.info",
		"/private.example.com/m/@v/a%09b.info",
		"/private.example.com/m/@v/a%00b.info",
		"/private.example.com/m/@v/a..b.info",
		"/private.example.com/m/@v/...info",
		"/private.example.com/m/@v/main~1.info",
		"/private.example.com/m/@v/main%5E.info",
		"/private.example.com/m/@v/v1@x.info",
		"/private.example.com/m/@v/-x.mod",
		"/private.example.com/m/@v/-x.zip",
		"/-x/@v/list",
		"/--upload-pack=pwn/@v/list",
		"/private.example.com/../m/@v/list",
		"/private.example.com/m;touch%20pwned/@v/list",
		"/private.example.com/a%20b/@v/list",
		"/private.example.com/m%0A/@latest",
	}
	for _, path := range paths {
		w := do(p, "GET", path)
		if w.Code < 400 || w.Code > 499 {
			t.Errorf("GET %s: %d %q, want 4xx", path, w.Code, w.Body)
		}
	}
	if data, err := os.ReadFile(runs); err == nil {
		t.Errorf("the go command ran for hostile input:\n%s", data)
	}

	// The fake does record runs: a sound request starts one.
	do(p, "GET", "/private.example.com/m/@v/v1.0.0.info")
	if data, _ := os.ReadFile(runs); string(data) != "list -e -m -json -- private.example.com/m@v1.0.0\n" {
		t.Errorf("a sound request ran %q", data)
	}
}

func TestCheckDirectArgs(t *testing.T) {
	good := [][2]string{
		{"example.com/m", ""},
		{"example.com/m", "v1.0.0"},
		{"example.com/m", "latest"},
		{"example.com/m", "master"},
		{"example.com/m", "v1.2"},
		{"example.com/m", "v0.0.0-20240102030405-abcdefabcdef"},
		{"example.com/m", "v2.0.0+incompatible"},
		{"example.com/m/v2", "v2.0.0"},
		{"example.com/~user/m", "release-1_x"},
	}
	for _, a := range good {
		if err := checkDirectArgs(a[0], a[1]); err != nil {
			t.Errorf("checkDirectArgs(%q, %q): %v", a[0], a[1], err)
		}
	}
	bad := [][2]string{
		{"", ""},
		{"-x", ""},
		{"--upload-pack=touch /tmp/pwned", ""},
		{"example.com/m", "-x"},
		{"example.com/m", "--upload-pack=touch /tmp/pwned"},
		{"example.com/m", "--upload-pack=pwn"},
		{"example.com/m;touch pwned", ""},
		{"example.com/m", "a;b"},
		{"example.com/m", "a|b"},
		{"example.com/m", "a&b"},
		{"example.com/m", "$(touch pwned)"},
		{"example.com/m", "${IFS}"},
		{"example.com/m", "`id`"},
		{"example.com/m", "a'b"},
		{"example.com/m", `a"b`},
		{"example.com/m", `a\b`},
		{"example.com/m", "a b"},
		{"example.com/m", "a\tb"},
		{"example.com/m", "a\nb"},
		{"example.com/m\n", ""},
		{"example.com/m", "v1.0.0\r"},
		{"example.com/m", "a\x00b"},
		{"example.com/m", "a\u2028b"},
		{"example.com/m", "a\u00a0b"},
		{"example.com/../m", ""},
		{"example.com/m/..", ""},
		{"example.com/m", ".."},
		{"example.com/m", "a..b"},
		{"example.com/m", "../../etc/passwd"},
		{"example.com/m", "main~1"},
		{"example.com/m", "main^"},
		{"example.com/m", "main:go.mod"},
		{"example.com/m", "v1@x"},
		{"example.com/m", "v2.0.0"}, // wrong major version for the path
	}
	for _, a := range bad {
		if err := checkDirectArgs(a[0], a[1]); err == nil {
			t.Errorf("checkDirectArgs(%q, %q) accepted them", a[0], a[1])
		}
	}
}

// countLines counts the lines of the file at path that equal line.
func countLines(path, line string) int {
	data, _ := os.ReadFile(path)
	n := 0
	for l := range strings.SplitSeq(string(data), "\n") {
		if l == line {
			n++
		}
	}
	return n
}

func TestDirectConcurrencyBound(t *testing.T) {
	release := filepath.Join(t.TempDir(), "release")
	bin, runs := fakeGo(t, `echo start >> "$RUNS"
while [ ! -e '`+release+`' ] && [ -e "$RUNS" ]; do sleep 0.01; done
echo end >> "$RUNS"`)
	p := newTestProxy(t, "direct")
	p.Direct.GoBin = bin
	p.Direct.MaxConcurrent = 2
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	const n = 5
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { do(p, "GET", fmt.Sprintf("/example.com/m%d/@v/list", i)) })
	}
	testwait.For(t, func() bool { return countLines(runs, "start") == 2 && p.direct.waiting.Load() == n-2 })
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	data, _ := os.ReadFile(runs)
	running, most, started := 0, 0, 0
	for l := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		if l == "start" {
			running++
			started++
		} else {
			running--
		}
		most = max(most, running)
	}
	if started != n || most > 2 {
		t.Errorf("%d runs, at most %d at once; want %d, at most 2:\n%s", started, most, n, data)
	}
}

func TestDirectWaitingRespectsContext(t *testing.T) {
	release := filepath.Join(t.TempDir(), "release")
	bin, runs := fakeGo(t, `echo start >> "$RUNS"
while [ ! -e '`+release+`' ] && [ -e "$RUNS" ]; do sleep 0.01; done`)
	p := newTestProxy(t, "direct")
	p.Direct.GoBin = bin
	p.Direct.MaxConcurrent = 1
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	busy := make(chan struct{})
	go func() {
		do(p, "GET", "/example.com/busy/@v/list")
		close(busy)
	}()
	defer func() {
		os.WriteFile(release, nil, 0o644)
		<-busy
	}()
	testwait.For(t, func() bool { return countLines(runs, "start") == 1 })

	// Waiting for a slot ends with the fetch's context; nothing runs.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := p.direct.fetch(ctx, &request{modPath: "example.com/other", kind: kindList})
		done <- err
	}()
	testwait.For(t, func() bool { return p.direct.waiting.Load() == 1 })
	cancel()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("fetch after its context ended: %v", err)
	}
	if n := countLines(runs, "start"); n != 1 {
		t.Errorf("%d runs, want 1", n)
	}
}

func TestDirectTimeout(t *testing.T) {
	// A go command that never ends, with a child of its own.
	bin, _ := fakeGo(t, `sleep 60 & while :; do sleep 0.01; done`)
	p := newTestProxy(t, "direct")
	p.Direct.GoBin = bin
	p.Direct.Timeout = 100 * time.Millisecond
	start := time.Now()
	w := do(p, "GET", "/example.com/m/@v/list")
	if w.Code != http.StatusGatewayTimeout || !strings.Contains(w.Body.String(), "timed out") {
		t.Errorf("got %d %q, want 504 saying the go command timed out", w.Code, w.Body)
	}
	// Stopping the process group ends it at once, without waiting for
	// goWaitDelay because the child holds the output open.
	if d := time.Since(start); d > goWaitDelay/2 {
		t.Errorf("the fetch took %v", d)
	}
}

func TestDirectEnvironment(t *testing.T) {
	bin, runs := fakeGo(t, `env > "$RUNS.env"
pwd > "$RUNS.pwd"
echo '{"Path":"example.com/m","Version":"v1.0.0","Time":"2024-01-02T03:04:05Z","Origin":{"VCS":"git","URL":"https://example.com/m"}}'`)
	// The process's own GO settings must not reach the go command once
	// the Proxy has its own.
	t.Setenv("GOFLAGS", "-tags=leaked")
	t.Setenv("GOVCS", "leaked")
	var logs syncBuffer
	p := newTestProxy(t, "direct",
		"GOPRIVATE=example.com/private", "GONOSUMDB=example.com/nosum", "GOINSECURE=example.com/insecure",
		"GOFLAGS=-insecure", "GOTOOLCHAIN=go1.99.0", "GIT_CONFIG_GLOBAL=/proxy/gitconfig")
	p.Direct.GoBin = bin
	p.Direct.Dir = t.TempDir()
	p.Logger = newBufferLogger(&logs)
	p.Routes = []Route{{Pattern: "example.com/secret", Upstreams: []Upstream{{URL: "direct"}}, Private: true}}
	p.Dialer = &Dialer{Proxy: "http://egress.example:3128"}

	w := do(p, "GET", "/example.com/m/@v/v1.0.0.info")
	var info struct {
		Version string
		Time    time.Time
		Origin  struct{ URL string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &info); w.Code != 200 || err != nil || info.Version != "v1.0.0" || info.Time.IsZero() || info.Origin.URL != "https://example.com/m" {
		t.Errorf("GET .info: %d %q", w.Code, w.Body)
	}
	env := map[string]string{}
	data, _ := os.ReadFile(runs + ".env")
	for l := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	for k, want := range map[string]string{
		"GOPROXY":             "direct",
		"GONOPROXY":           "",
		"GOPRIVATE":           "example.com/private",
		"GONOSUMDB":           "example.com/nosum",
		"GOSUMDB":             "off",
		"GOINSECURE":          "example.com/insecure",
		"GOFLAGS":             "-mod=mod -modcacherw",
		"GOTOOLCHAIN":         "local",
		"GO111MODULE":         "on",
		"GOWORK":              "off",
		"GOENV":               "off",
		"GOPATH":              filepath.Join(p.Direct.Dir, "gopath"),
		"GOMODCACHE":          filepath.Join(p.Direct.Dir, "mod"),
		"GOCACHE":             filepath.Join(p.Direct.Dir, "gocache"),
		"GIT_TERMINAL_PROMPT": "0",
		"GIT_CONFIG_GLOBAL":   "/proxy/gitconfig",
		// The egress policy's: git only.
		"GOVCS":    "public:git,private:git",
		"NO_PROXY": "",
		"no_proxy": "",
	} {
		if got, ok := env[k]; !ok || got != want {
			t.Errorf("the go command's %s is %q (set: %v), want %q", k, got, ok, want)
		}
	}
	// The go command would count every scheme of GIT_ALLOW_PROTOCOL as
	// secure: git's own settings say where it may fetch.
	if v, ok := env["GIT_ALLOW_PROTOCOL"]; ok {
		t.Errorf("the go command's GIT_ALLOW_PROTOCOL is %q, want it unset", v)
	}
	gitConfig := gitConfigOf(t, env)
	for k, want := range map[string]string{
		"protocol.allow":       "never",
		"protocol.https.allow": "always",
		"protocol.http.allow":  "always",
		"protocol.ssh.allow":   "never",
		"protocol.file.allow":  "never",
		"protocol.ext.allow":   "never",
		// git's http.proxy setting would win over the variables.
		"http.proxyAuthMethod": "basic",
	} {
		if got := gitConfig[k]; got != want {
			t.Errorf("git's %s is %q, want %q", k, got, want)
		}
	}
	// Every connection goes through the run's own egress proxy, on
	// loopback, with a credential of its own: it chains to the Dialer's.
	egress := env["HTTPS_PROXY"]
	if u, err := url.Parse(egress); err != nil || u.Hostname() != "127.0.0.1" || u.User == nil {
		t.Errorf("the go command's HTTPS_PROXY is %q, want the run's egress proxy on 127.0.0.1 with credentials", egress)
	}
	for _, k := range []string{"https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		if env[k] != egress {
			t.Errorf("the go command's %s is %q, want %q", k, env[k], egress)
		}
	}
	if gitConfig["http.proxy"] != egress {
		t.Errorf("git's http.proxy is %q, want %q", gitConfig["http.proxy"], egress)
	}
	if pwd, _ := os.ReadFile(runs + ".pwd"); strings.TrimSpace(string(pwd)) != filepath.Join(p.Direct.Dir, "work") {
		t.Errorf("the go command ran in %s", pwd)
	}
	if !strings.Contains(logs.String(), `msg="go command" module=example.com/m version=v1.0.0 command="go list -e -m -json" duration=`) ||
		!strings.Contains(logs.String(), "outcome=ok") {
		t.Errorf("no log line for the run:\n%s", logs.String())
	}

	// A private route keeps its modules from checksum databases in the go
	// command too.
	do(p, "GET", "/example.com/secret/@v/v1.0.0.info")
	data, _ = os.ReadFile(runs + ".env")
	if !strings.Contains(string(data), "\nGONOSUMDB=example.com/nosum,example.com/secret\n") {
		t.Errorf("the go command's environment for a private route:\n%s", data)
	}
}

func TestDirectDirInsideModule(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/outer\n"), 0o644)
	p := newTestProxy(t, "direct")
	p.Direct.Dir = filepath.Join(dir, "direct")
	if err := p.Init(); err == nil || !strings.Contains(err.Error(), "inside the module") {
		t.Errorf("Init with Direct.Dir inside a module: %v", err)
	}
	// A proxy that never goes direct does not care.
	p = newTestProxy(t, "https://proxy.example")
	p.Direct.Dir = filepath.Join(dir, "direct")
	if err := p.Init(); err != nil {
		t.Errorf("Init without direct: %v", err)
	}
}

func TestDirectMissingGoCommand(t *testing.T) {
	p := newTestProxy(t, "direct")
	p.Direct.GoBin = filepath.Join(t.TempDir(), "no-such-go")
	if err := p.Init(); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if w := do(p, "GET", "/example.com/m/@v/list"); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "no-such-go") {
		t.Errorf("got %d %q, want 502 naming the missing command", w.Code, w.Body)
	}
}

func TestDirectErrorStatus(t *testing.T) {
	const vcs = "git ls-remote -q origin in $GOMODCACHE/cache/vcs/0123abcd: exit status 128:\n\t"
	tests := []struct {
		msg  string
		want int
	}{
		{"example.com/m@v1.9.9: invalid version: unknown revision v1.9.9", 404},
		{"no secure protocol found for repository", 404},
		{"example.com/m@latest: no matching versions for query \"latest\"", 404},
		{`example.com/m@v2.0.0+incompatible: invalid version: module contains a go.mod file, so module path must match major version ("example.com/m/v2")`, 404},
		{"example.com/m@v1.0.0: parsing go.mod:\n\tmodule declares its path as: example.com/n\n\t        but was required as: example.com/m", 404},
		{`example.com/m@v1.0.0: unrecognized import path "example.com/m": reading https://example.com/m?go-get=1: 404 Not Found`, 404},
		{`example.com/m@v1.0.0: unrecognized import path "example.com/m": parse https://example.com/m?go-get=1: no go-import meta tags ()`, 404},
		{"github.com/o/r@v1.0.0: invalid version: " + vcs + "fatal: could not read Username for 'https://github.com': terminal prompts disabled", 404},
		{"git.internal/r@v1.0.0: invalid version: " + vcs + "fatal: repository 'https://git.internal/r/' not found", 404},
		{"git.internal/r@v1.0.0: invalid version: " + vcs + "fatal: unable to access 'https://git.internal/r/': The requested URL returned error: 404", 404},
		{"example.com/m@v1.0.0: reading https://example.com/m/@v/v1.0.0.info: 410 Gone", 410},

		{`example.com/m@v1.0.0: unrecognized import path "example.com/m": https fetch: Get "https://example.com/m?go-get=1": dial tcp: lookup example.com on 10.0.0.53:53: no such host`, 502},
		{"git.internal/r@v1.0.0: invalid version: " + vcs + "fatal: unable to access 'https://git.internal/r/': Could not resolve host: git.internal", 502},
		{"git.internal/r@v1.0.0: invalid version: " + vcs + "fatal: unable to access 'https://git.internal/r/': Failed to connect to git.internal port 443: Connection refused", 502},
		{"git.internal/r@v1.0.0: invalid version: " + vcs + "fatal: unable to access 'https://git.internal/r/': The requested URL returned error: 503", 502},
		{"git.internal/r@v1.0.0: invalid version: " + vcs + "fatal: unable to access 'https://git.internal/r/': SSL certificate problem: self-signed certificate", 502},
		{"git.internal/r@v1.0.0: invalid version: " + vcs + "remote: HTTP Basic: Access denied\nfatal: Authentication failed for 'https://git.internal/r/'", 502},
		{`example.com/m@v1.0.0: verifying module: example.com/m@v1.0.0: reading https://sum.golang.org/lookup/example.com/m@v1.0.0: 404 Not Found`, 502},
		{"verifying example.com/m@v1.0.0: checksum mismatch\n\tdownloaded: h1:a\n\tsum.golang.org: h1:b\n\nSECURITY ERROR", 502},
		{`example.com/m@v1.0.0: invalid version: exec: "git": executable file not found in $PATH`, 502},
		{"signal: killed", 502},
	}
	for _, tt := range tests {
		if got, _ := answerFor(&failure{kind: directFailKind(tt.msg)}); got != tt.want {
			t.Errorf("directFailKind(%q) answers %d, want %d", tt.msg, got, tt.want)
		}
	}
}

// The limits the egress policy sets on git and on the version control
// tools answer 403, saying how to lift them.
func TestDirectToolRefusalsAreForbidden(t *testing.T) {
	r := &directRunner{modCache: "/srv/proxy/mod"}
	req := &request{modPath: "example.com/m", version: "v1.0.0", kind: kindInfo}
	const vcs = "example.com/m@v1.0.0: invalid version: git ls-remote -q --end-of-options ssh://git@example.com/m in $GOMODCACHE/cache/vcs/0123: exit status 128:\n\t"
	for msg, want := range map[string]string{
		vcs + "fatal: transport 'ssh' not allowed":                                                   "Egress.AllowSSH",
		vcs + "fatal: transport 'file' not allowed":                                                  "https and http only",
		vcs + "fatal: transport 'ext' not allowed":                                                   "https and http only",
		"example.com/m@v1.0.0: GOVCS disallows using hg for public example.com/m; see 'go help vcs'": "GOVCS in Proxy.Env",
	} {
		err := r.goError(req, "example.com/m@v1.0.0", msg)
		if status, msg := answerFor(err); status != http.StatusForbidden || !strings.Contains(msg, want) {
			t.Errorf("goError(%q) = %v, want 403 saying %q", msg, err, want)
		}
	}
	// A module path cannot make a refusal of an ordinary failure.
	err := r.goError(&request{modPath: "example.com/transport", version: "v1.0.0"}, "example.com/transport@v1.0.0", "example.com/transport@v1.0.0: invalid version: unknown revision v1.0.0")
	if status, _ := answerFor(err); status != http.StatusNotFound {
		t.Errorf("an unknown revision: %v", err)
	}
}

func TestDirectMessagesHideCredentials(t *testing.T) {
	r := &directRunner{modCache: "/srv/proxy/mod"}
	msg := r.cleanMessage("go: git.internal/r@v1.0.0: invalid version: git ls-remote -q origin in /srv/proxy/mod/cache/vcs/0123: exit status 128:\n" +
		"\tfatal: unable to access 'https://oauth2:s3cret@git.internal/r/': The requested URL returned error: 503\n" +
		"\tssh://deploy:t0ken@git.internal/r and https://token-only@git.internal\n" +
		"\thttps://ghp_usertoken:x-oauth-basic@github.com/o/r")
	for _, secret := range []string{"s3cret", "t0ken", "token-only", "ghp_usertoken", "/srv/proxy"} {
		if strings.Contains(msg, secret) {
			t.Errorf("message shows %q: %s", secret, msg)
		}
	}
	if !strings.HasPrefix(msg, "git.internal/r@v1.0.0: invalid version") || !strings.Contains(msg, "https://xxxxx@git.internal/r/") || !strings.Contains(msg, "ssh://xxxxx@git.internal/r and https://xxxxx@git.internal") {
		t.Errorf("message: %s", msg)
	}
}

func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	ctx := context.Background()
	unlockA, err := k.lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Another key is free.
	unlockB, err := k.lock(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	unlockB()
	// The same key waits, and gives up with its context.
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := k.lock(short, "a"); err == nil {
		t.Error("locked a held key")
	}
	got := make(chan struct{})
	go func() {
		unlock, err := k.lock(ctx, "a")
		if err == nil {
			unlock()
		}
		close(got)
	}()
	unlockA()
	<-got
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.locks) != 0 {
		t.Errorf("%d keys remembered after every unlock", len(k.locks))
	}
}

// The zip a direct fetch serves is the proxy's own file, private to it.
func TestDirectZipIsPrivateTempFile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and git")
	}
	git := gitrepotest.NewServer(t)
	newModuleRepo(t, git)
	p := newDirectTestProxy(t, git)
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	f, err := p.direct.fetch(context.Background(), &request{modPath: directMod, version: "v1.0.0", kind: kindZip, canonical: true})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.file.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if dir := filepath.Dir(f.file.Name()); dir != filepath.Clean(p.TempDir) {
		t.Errorf("zip in %s, want the Proxy's TempDir %s", dir, p.TempDir)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("zip mode %v, want 0600", fi.Mode().Perm())
	}
	if fi.Size() != f.size || f.size == 0 {
		t.Errorf("size %d, file %d", f.size, fi.Size())
	}
	name := f.file.Name()
	f.close()
	if _, err := os.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after close: %v", err)
	}
}

// AllowSSH lets git use ssh; a GOVCS of the Proxy's environment replaces
// the policy's git-only default.
func TestDirectEnvironmentFollowsEgressSettings(t *testing.T) {
	bin, runs := fakeGo(t, `env > "$RUNS.env"
echo '{"Path":"example.com/m","Version":"v1.0.0"}'`)
	p := newTestProxy(t, "direct", "GOVCS=example.com:git|hg")
	p.Direct.GoBin = bin
	p.Direct.Dir = t.TempDir()
	p.Egress.AllowSSH = true
	if w := do(p, "GET", "/example.com/m/@v/v1.0.0.info"); w.Code != http.StatusOK {
		t.Fatalf("GET .info: %d %q", w.Code, w.Body)
	}
	data, _ := os.ReadFile(runs + ".env")
	for _, want := range []string{"\nGOVCS=example.com:git|hg\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the go command's environment lacks %q:\n%s", strings.TrimSpace(want), data)
		}
	}
	env := map[string]string{}
	for l := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	if got := gitConfigOf(t, env)["protocol.ssh.allow"]; got != "always" {
		t.Errorf("git's protocol.ssh.allow is %q, want always", got)
	}
}

// gitConfigOf returns the git settings an environment carries in
// GIT_CONFIG_COUNT, GIT_CONFIG_KEY_n and GIT_CONFIG_VALUE_n, the last of
// each key winning as in git.
func gitConfigOf(t *testing.T, env map[string]string) map[string]string {
	t.Helper()
	n, err := strconv.Atoi(env["GIT_CONFIG_COUNT"])
	if err != nil {
		t.Fatalf("GIT_CONFIG_COUNT is %q", env["GIT_CONFIG_COUNT"])
	}
	config := map[string]string{}
	for i := range n {
		key, ok := env["GIT_CONFIG_KEY_"+strconv.Itoa(i)]
		if !ok {
			t.Fatalf("GIT_CONFIG_KEY_%d is missing", i)
		}
		config[key] = env["GIT_CONFIG_VALUE_"+strconv.Itoa(i)]
	}
	return config
}
