package gocmdtest_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
)

func goEnv(t *testing.T, e *gocmdtest.Env, keys ...string) map[string]string {
	t.Helper()
	out := e.MustRun(t, append([]string{"env", "-json"}, keys...)...)
	m := make(map[string]string)
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("go env -json: %v\n%s", err, out)
	}
	return m
}

func TestNewIsolates(t *testing.T) {
	// Leaked settings that would make a proxy test talk to the wrong
	// place or behave differently on a developer machine.
	t.Setenv("GOPROXY", "http://leaked.invalid")
	t.Setenv("GOFLAGS", "-x")
	t.Setenv("GONOSUMCHECK", "1")
	t.Setenv("https_proxy", "http://127.0.0.1:1")
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("GOCMDTEST_KEEP", "dropped too") // any GO prefix goes
	t.Setenv("XKEEP", "kept")

	e := gocmdtest.New(t)
	for _, kv := range e.Vars {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "GOPROXY", k == "GONOSUMCHECK", k == "GOCMDTEST_KEEP",
			strings.EqualFold(k, "https_proxy"), strings.EqualFold(k, "http_proxy"):
			t.Errorf("%s leaked into Env.Vars", kv)
		}
	}
	if !slices.Contains(e.Vars, "XKEEP=kept") {
		t.Errorf("ordinary variable XKEEP was dropped")
	}
	if e.Get("GOENV") != "off" {
		t.Errorf("GOENV = %q, want off so no go env file is read", e.Get("GOENV"))
	}
	if !filepath.IsAbs(e.Dir) || !filepath.IsAbs(e.GOMODCACHE) {
		t.Errorf("dirs not absolute: %+v", e)
	}

	got := goEnv(t, e, "GOPROXY", "GOFLAGS", "GOTOOLCHAIN", "GOSUMDB", "GOMODCACHE", "GOPATH", "GOCACHE", "GOWORK", "GONOPROXY", "GOPRIVATE")
	want := map[string]string{
		"GOPROXY":     "https://proxy.golang.org,direct", // the default: nothing leaked
		"GOFLAGS":     "-mod=mod -modcacherw",
		"GOTOOLCHAIN": "local",
		"GOSUMDB":     "off",
		"GOMODCACHE":  e.GOMODCACHE,
		"GOPATH":      e.GOPATH,
		"GOCACHE":     e.GOCACHE,
		"GOWORK":      "off",
		"GONOPROXY":   "",
		"GOPRIVATE":   "",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("go env %s = %q, want %q", k, got[k], w)
		}
	}

	// With telemetry off the go command writes nothing under HOME.
	home := e.Get("HOME")
	filepath.WalkDir(home, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != "mode" {
			t.Errorf("go command wrote %s under HOME", path)
		}
		return nil
	})
}

func TestSetReplaces(t *testing.T) {
	e := gocmdtest.New(t)
	saved := slices.Clone(e.Vars)
	alias := e.Vars
	e.Set("GOPROXY", "off")
	e.Set("GOPROXY", "file:///nowhere")
	n := 0
	for _, kv := range e.Vars {
		if strings.HasPrefix(kv, "GOPROXY=") {
			n++
		}
	}
	if n != 1 || e.Get("GOPROXY") != "file:///nowhere" {
		t.Errorf("after two Sets: %d GOPROXY entries, Get = %q", n, e.Get("GOPROXY"))
	}
	if !slices.Equal(alias, saved) {
		t.Errorf("Set modified a slice the caller held")
	}
	if got := goEnv(t, e, "GOPROXY")["GOPROXY"]; got != "file:///nowhere" {
		t.Errorf("go env GOPROXY = %q", got)
	}
}

func TestFreshModCache(t *testing.T) {
	e := gocmdtest.New(t)
	old := e.GOMODCACHE
	if err := os.WriteFile(filepath.Join(old, "marker"), nil, 0o666); err != nil {
		t.Fatal(err)
	}
	e.FreshModCache(t)
	if e.GOMODCACHE == old {
		t.Fatal("GOMODCACHE unchanged")
	}
	if got := goEnv(t, e, "GOMODCACHE")["GOMODCACHE"]; got != e.GOMODCACHE {
		t.Errorf("go env GOMODCACHE = %q, want %q", got, e.GOMODCACHE)
	}
	if ents, _ := os.ReadDir(e.GOMODCACHE); len(ents) != 0 {
		t.Errorf("fresh module cache not empty: %v", ents)
	}
}

func TestRunReportsFailure(t *testing.T) {
	e := gocmdtest.New(t)
	e.WriteGoMod([]byte("module example.com/m\n\ngo 1.21\n"))
	if out := e.MustRun(t, "list", "-m"); strings.TrimSpace(out) != "example.com/m" {
		t.Errorf("go list -m = %q", out)
	}
	_, stderr, err := e.Run("no-such-subcommand")
	if err == nil || !strings.Contains(err.Error(), "no-such-subcommand") || stderr == "" {
		t.Errorf("Run(bad) = err %v, stderr %q; want error naming the command and stderr", err, stderr)
	}
}

func TestReadOnlyModCacheCleanup(t *testing.T) {
	// Without -modcacherw the go command leaves read-only directories,
	// which t.TempDir cleanup cannot remove (as non-root); the subtest
	// fails at cleanup if Env does not restore write permission.
	t.Run("sub", func(t *testing.T) {
		e := gocmdtest.New(t)
		dir := filepath.Join(e.GOMODCACHE, "example.com", "m@v1.0.0")
		if err := os.MkdirAll(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), nil, 0o444); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
	})
}
