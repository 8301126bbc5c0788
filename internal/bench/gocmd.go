package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
)

// benchTB lets a main program use gocmdtest, whose constructor takes a
// testing.TB. gocmdtest only calls Helper, TempDir, Cleanup, Fatal and
// Fatalf; those are implemented here. The embedded interface is nil, so
// any other method would panic, which is the right failure for a
// gocmdtest change this adapter has not caught up with.
type benchTB struct {
	testing.TB
	dir string // parent of every TempDir
}

func (t *benchTB) Helper() {}

func (t *benchTB) TempDir() string {
	d, err := os.MkdirTemp(t.dir, "gocmd-")
	if err != nil {
		fatalf("%v", err)
	}
	return d
}

func (t *benchTB) Cleanup(f func()) { atExit(f) }

func (t *benchTB) Fatal(args ...any) { fatalf("%s", fmt.Sprint(args...)) }

func (t *benchTB) Fatalf(format string, args ...any) { fatalf(format, args...) }

// goRunner is one side of a go command comparison: an isolated gocmdtest
// environment whose main module requires the whole generated graph.
type goRunner struct {
	env   *gocmdtest.Env
	tb    *benchTB
	goMod []byte
	// wantZips is how many zips each run must leave in the module cache.
	wantZips int
	// args is the command each run times: "mod download" unless set.
	args []string
}

func newGoRunner(dir string, goproxy string, goMod []byte, wantZips int) *goRunner {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		fatalf("%v", err)
	}
	tb := &benchTB{dir: dir}
	r := &goRunner{env: gocmdtest.New(tb), tb: tb, goMod: goMod, wantZips: wantZips}
	r.env.Set("GOPROXY", goproxy)
	return r
}

// modDownload runs "go mod download" in a fresh module cache, from a
// pristine go.mod and no go.sum, and returns how long the go command took;
// a failure ends the benchmark.
func (r *goRunner) modDownload() time.Duration {
	d, err := r.tryModDownload()
	if err != nil {
		fatalf("%v", err)
	}
	return d
}

// tryModDownload is modDownload for runs that may fail: it returns the
// go command's error, with its output, instead of ending the benchmark.
func (r *goRunner) tryModDownload() (time.Duration, error) {
	// Old caches stay until the end: removing them now would put the
	// file system's work for the deletion into the timed runs. Those in
	// memory go right after their run, below.
	r.env.FreshModCache(r.tb)
	os.Remove(filepath.Join(r.env.Dir, "go.sum"))
	r.env.WriteGoMod(r.goMod)
	start := time.Now()
	args := r.args
	if args == nil {
		args = []string{"mod", "download"}
	}
	stdout, stderr, err := r.env.Run(args...)
	d := time.Since(start)
	defer r.dropModCache()
	if err != nil {
		return d, fmt.Errorf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	// A run that downloaded less than every module's zip measured nothing.
	zips := 0
	filepath.WalkDir(filepath.Join(r.env.GOMODCACHE, "cache", "download"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasSuffix(path, ".zip") {
			zips++
		}
		return nil
	})
	if zips < r.wantZips {
		return d, fmt.Errorf("go mod download left %d zips in the module cache, want %d", zips, r.wantZips)
	}
	return d, nil
}

// dropModCache removes the module cache of the last run if it is in
// memory (/dev/shm), where a realistic graph's zips of every run would
// add up to gigabytes; removing files from memory costs no disk work.
func (r *goRunner) dropModCache() {
	if !strings.HasPrefix(r.env.GOMODCACHE, "/dev/shm/") {
		return
	}
	for _, dir := range []string{r.env.GOMODCACHE, r.env.GOPATH} {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(path, 0o777)
			}
			return nil
		})
		os.RemoveAll(dir)
	}
}
