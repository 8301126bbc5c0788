package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// runOp runs a subcommand in process, as main would, returning its
// output and error.
func runOp(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, env, strings.NewReader(""), &out, &errOut)
	t.Logf("goproxy %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	return out.String(), errOut.String(), err
}

// airGappedConfig is the configuration of the server beyond the gap: one
// offline repository, its cache filled by goproxy import, an admin token.
const airGappedConfig = `addr: 127.0.0.1:0
cache: CACHE
offline: true
goproxy: off
gosumdb: "off"
log:
  format: json
audit_log:
  file: AUDIT
tokens:
  ops:
    token_file: TOKEN_FILE
access:
  grants:
    ops:
      administer: true
`

// TestSubcommandsCarryAGraphAcrossAnAirGapToAnOfflineServer fills a cache
// from a go.mod with goproxy fill, exports it as a bundle with goproxy
// export, imports the bundle into another cache with goproxy import, and
// serves that cache offline: the go command downloads the graph through
// it. goproxy scrub then finds a zip altered on disk there and removes it;
// the scrub endpoint answers administrators only, and is audited.
func TestSubcommandsCarryAGraphAcrossAnAirGapToAnOfflineServer(t *testing.T) {
	buildServer(t)
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	dir := t.TempDir()
	gomod := writeFile(t, filepath.Join(dir, "go.mod"), string(moduletest.RootGoMod(vs)))
	online := []string{"GOPROXY=" + up.URL, "GOSUMDB=off", "TMPDIR=" + t.TempDir(), "HOME=" + t.TempDir()}
	cacheA, cacheB := filepath.Join(dir, "a"), filepath.Join(dir, "b")

	out, _, err := runOp(t, online, "fill", "-cache", cacheA, "-journal", filepath.Join(dir, "fill.journal"), gomod)
	if err != nil || !strings.Contains(out, "15 fetched, 0 already cached, 0 failed") {
		t.Fatalf("fill: %v\n%s", err, out)
	}
	bundle := filepath.Join(dir, "graph.tar.gz")
	if out, _, err := runOp(t, online, "export", "-cache", cacheA, "-o", bundle, "-all"); err != nil || !strings.Contains(out, "15 module versions") {
		t.Fatalf("export: %v\n%s", err, out)
	}
	up.Close()
	offline := []string{"GOPROXY=off", "GOSUMDB=off", "TMPDIR=" + t.TempDir(), "HOME=" + t.TempDir()}
	if out, _, err := runOp(t, offline, "import", "-cache", cacheB, bundle); err != nil || !strings.Contains(out, "15 module versions") {
		t.Fatalf("import: %v\n%s", err, out)
	}

	audit := filepath.Join(dir, "audit.log")
	config := strings.NewReplacer("CACHE", cacheB, "AUDIT", audit,
		"TOKEN_FILE", writeFile(t, filepath.Join(dir, "token"), "ops-token\n")).Replace(airGappedConfig)
	srv := startServer(t, []string{"-config", writeFile(t, filepath.Join(dir, "goproxy.yaml"), config)}, serverEnv(t))
	e := gocmdtest.New(t)
	e.Set("GOPROXY", srv.URL)
	e.WriteGoMod(moduletest.RootGoMod(vs))
	e.MustRun(t, "mod", "download", "all")
	if _, stderr, err := e.Run("mod", "download", moduletest.GraphPath(1)+"@v1.0.0"); err == nil || !strings.Contains(stderr, "offline") {
		t.Errorf("a version not carried over: %v\n%s", err, stderr)
	}

	victim := filepath.Join(cacheB, moduletest.GraphPath(4), "@v", "v1.0.0.zip")
	if err := os.WriteFile(victim, []byte("not a zip any more"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err = runOp(t, offline, "scrub", "-cache", cacheB)
	if err == nil || !strings.Contains(out, moduletest.GraphPath(4)+"/@v/v1.0.0.zip (invalid, removed)") {
		t.Errorf("scrub: %v\n%s", err, out)
	}
	if _, err := os.Stat(victim); !os.IsNotExist(err) {
		t.Errorf("the damaged zip is still there: %v", err)
	}

	scrub := func(token string) int {
		req, _ := http.NewRequest("POST", srv.URL+"/-/scrub", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := scrub(""); code != http.StatusUnauthorized {
		t.Errorf("an anonymous scrub: %d", code)
	}
	if code := scrub("ops-token"); code != http.StatusOK {
		t.Errorf("a scrub by the administrator: %d", code)
	}
	data, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), `"action":"scrub"`); n != 2 {
		t.Errorf("%d scrubs audited, want 2:\n%s", n, data)
	}
}

// TestFillKilledMidwayResumesFromItsJournal kills a goproxy fill process
// (SIGKILL) while the upstream holds one of its downloads: run again with
// the same journal, the fill skips the versions the first one finished and
// fetches the rest.
func TestFillKilledMidwayResumesFromItsJournal(t *testing.T) {
	bin := buildServer(t)
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	held := "/" + moduletest.GraphPath(6) + "/@v/"
	release := make(chan struct{})
	defer close(release)
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, held) && strings.HasSuffix(r.URL.Path, ".zip") {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	dir := t.TempDir()
	gomod := writeFile(t, filepath.Join(dir, "go.mod"), string(moduletest.RootGoMod(vs)))
	journal := filepath.Join(dir, "fill.journal")
	cache := filepath.Join(dir, "cache")
	env := []string{"GOPROXY=" + up.URL, "GOSUMDB=off", "TMPDIR=" + t.TempDir(), "HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	cmd := exec.Command(bin, "fill", "-cache", cache, "-journal", journal, "-concurrency", "1", gomod)
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, func() bool {
		data, _ := os.ReadFile(journal)
		return strings.Count(string(data), "\ndone ") >= 3 && up.Requests(held+"v1.0.0.zip")+up.Requests(held+"v1.1.0.zip") > 0
	})
	cmd.Process.Kill()
	cmd.Wait()
	data, _ := os.ReadFile(journal)
	done := strings.Count(string(data), "\ndone ")
	up.SetHandlerHook(nil)

	out, _, err := runOp(t, env, "fill", "-cache", cache, "-journal", journal, gomod)
	if err != nil || !strings.Contains(out, ", 0 failed, "+strconv.Itoa(done)+" done before (journal)") {
		t.Errorf("the fill run again: %v\n%s", err, out)
	}
}
