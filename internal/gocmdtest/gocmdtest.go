// Package gocmdtest runs the installed go command hermetically, so proxy
// tests exercise the real client without touching the developer's module
// cache, build cache, go env file, credentials or network configuration.
package gocmdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Timeout bounds each Run, so a proxy bug that makes the go command hang
// fails the test instead of stalling the whole test binary.
const Timeout = 2 * time.Minute

// Env is an isolated environment for go commands: its own main module
// directory, GOPATH, module cache, build cache and HOME. Create it with
// New; a zero Env has no test to report to.
//
// Each Env has a fresh GOCACHE. Proxy tests mostly run "go mod download",
// "go get" and "go list -m", which build nothing, so sharing a cache
// across tests would save little and cost isolation.
type Env struct {
	// Dir is the working directory of every Run: the main module.
	Dir string
	// GOPATH and GOMODCACHE change with FreshModCache; tests read them
	// to inspect what the go command downloaded.
	GOPATH     string
	GOMODCACHE string
	// GOCACHE is the build cache, private to this Env.
	GOCACHE string
	// Vars is the complete environment (KEY=value) passed to the go
	// command; use Set rather than appending, so a key occurs only once.
	Vars []string

	t testing.TB
}

// New returns an Env whose environment keeps the process's ordinary
// variables (PATH, TMPDIR, ...) but drops everything that could leak the
// developer's setup into a test: all GO* variables except GOROOT, any
// HTTP/HTTPS/ALL/NO_PROXY (so loopback upstreams are never proxied and
// nothing reaches a real proxy by accident) and XDG config/cache
// directories. It then pins the settings a proxy test needs: no
// toolchain switching, no checksum database, no private-module rules,
// no workspace, a writable module cache (so t.TempDir cleanup can delete
// it) and a throwaway HOME with go telemetry off. Set GOPROXY before
// running anything.
func New(t testing.TB) *Env {
	t.Helper()
	e := &Env{Dir: t.TempDir(), GOCACHE: t.TempDir(), t: t}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if dropVar(k) {
			continue
		}
		e.Vars = append(e.Vars, kv)
	}
	e.newModCache(t)
	e.Set("GOCACHE", e.GOCACHE)
	e.Set("GOTOOLCHAIN", "local")
	e.Set("GOFLAGS", "-mod=mod -modcacherw")
	e.Set("GONOSUMDB", "")
	e.Set("GOSUMDB", "off")
	e.Set("GOENV", "off")
	e.Set("GOPRIVATE", "")
	e.Set("GONOPROXY", "")
	e.Set("GOINSECURE", "")
	e.Set("GOWORK", "off")
	e.Set("GIT_TERMINAL_PROMPT", "0")
	e.setHome(t)
	return e
}

// setHome gives the go command a throwaway HOME with telemetry turned
// off. Left at its default ("local"), telemetry makes the go command
// write counter files under the user config directory, partly from a
// child process that outlives the command, and that races with
// t.TempDir's cleanup ("directory not empty").
func (e *Env) setHome(t testing.TB) {
	home := t.TempDir()
	e.Set("HOME", home)
	var config string
	switch runtime.GOOS {
	case "darwin", "ios":
		config = filepath.Join(home, "Library", "Application Support")
	case "windows":
		config = filepath.Join(home, "AppData")
		e.Set("APPDATA", config)
		e.Set("USERPROFILE", home)
	default:
		config = filepath.Join(home, ".config")
		e.Set("XDG_CONFIG_HOME", config)
	}
	mode := filepath.Join(config, "go", "telemetry", "mode")
	if err := os.MkdirAll(filepath.Dir(mode), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mode, []byte("off"), 0o666); err != nil {
		t.Fatal(err)
	}
}

func dropVar(k string) bool {
	if strings.HasPrefix(k, "GO") && k != "GOROOT" {
		return true
	}
	switch strings.ToUpper(k) {
	case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "XDG_CONFIG_HOME", "XDG_CACHE_HOME":
		return true
	}
	return false
}

// newModCache points GOPATH and GOMODCACHE at new empty directories.
func (e *Env) newModCache(t testing.TB) {
	e.GOPATH = t.TempDir()
	e.GOMODCACHE = t.TempDir()
	e.Set("GOPATH", e.GOPATH)
	e.Set("GOMODCACHE", e.GOMODCACHE)
	// The go command makes the module cache read-only unless it sees
	// -modcacherw. A test that overrides GOFLAGS would then break
	// t.TempDir's cleanup; restoring write permission first avoids
	// that. Cleanups run last-in first-out, so this precedes removal.
	dir := e.GOMODCACHE
	t.Cleanup(func() { makeWritable(dir) })
}

func makeWritable(root string) {
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(path, 0o777)
		}
		return nil
	})
}

// Set gives key the value for later runs, replacing any earlier value,
// since duplicate keys in an environment resolve inconsistently.
func (e *Env) Set(key, value string) {
	prefix := key + "="
	vars := make([]string, 0, len(e.Vars)+1) // never alias a caller's copy
	for _, kv := range e.Vars {
		if !strings.HasPrefix(kv, prefix) {
			vars = append(vars, kv)
		}
	}
	e.Vars = append(vars, prefix+value)
}

// Get returns the value of key in the environment, so tests can build on
// what New set (for example to append to GOFLAGS).
func (e *Env) Get(key string) string {
	prefix := key + "="
	for _, kv := range e.Vars {
		if v, ok := strings.CutPrefix(kv, prefix); ok {
			return v
		}
	}
	return ""
}

// WriteGoMod makes Dir a main module with the given go.mod, plus a
// trivial main package so "go build" and "go list ./..." also work there.
func (e *Env) WriteGoMod(content []byte) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.Dir, "go.mod"), content, 0o666); err != nil {
		e.t.Fatal(err)
	}
	main := filepath.Join(e.Dir, "main.go")
	if _, err := os.Stat(main); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(main, []byte("package main\n\nfunc main() {}\n"), 0o666); err != nil {
			e.t.Fatal(err)
		}
	}
}

// FreshModCache switches to new, empty GOPATH and GOMODCACHE directories,
// so the next run must fetch everything from the proxy again.
func (e *Env) FreshModCache(t testing.TB) {
	t.Helper()
	e.newModCache(t)
}

var goBin = sync.OnceValues(func() (string, error) {
	// "go test" puts $GOROOT/bin first in PATH, so this finds the go
	// command that built the test binary.
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("gocmdtest: go command not found in PATH or $GOROOT/bin")
})

// Run runs the go command with args in Dir and returns its output; err
// is non-nil if it could not start, failed, or exceeded Timeout.
func (e *Env) Run(args ...string) (stdout, stderr string, err error) {
	bin, err := goBin()
	if err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = e.Dir
	cmd.Env = e.Vars
	// Children (git, a toolchain) may hold the pipes open after the go
	// command is killed; do not wait for them forever.
	cmd.WaitDelay = 10 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("go %s: timed out after %v: %w", strings.Join(args, " "), Timeout, ctx.Err())
	} else if err != nil {
		err = fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), err
}

// MustRun is Run for steps that are expected to succeed; on failure it
// stops the test and shows the go command's stderr, which names the
// request that went wrong.
func (e *Env) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	stdout, stderr, err := e.Run(args...)
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	return stdout
}
