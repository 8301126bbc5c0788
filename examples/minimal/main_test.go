package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// TestExampleServer builds the example as the README runs it, starts it
// against a test upstream, and has the go command download a module graph
// through it.
func TestExampleServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example and the go command")
	}
	bin := filepath.Join(t.TempDir(), "minimal")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cache := filepath.Join(t.TempDir(), "cache")
	cmd := exec.Command(bin, "-addr", addr, "-cache", cache)
	// GONOPROXY sends 127.0.0.1/... direct, which the egress policy refuses.
	cmd.Env = append(os.Environ(), "GOPROXY="+up.URL, "GOSUMDB=off", "GOPRIVATE=", "GONOPROXY=127.0.0.1",
		"HTTP_PROXY=", "HTTPS_PROXY=", "ALL_PROXY=", "DNS_SERVER=")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	go func() {
		for s := bufio.NewScanner(stderr); s.Scan(); {
			t.Log(s.Text())
		}
	}()
	// Wait until the server accepts connections.
	testwait.Within(t, 30*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "the example server to start")

	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", "http://"+addr)
	gocmd.WriteGoMod(moduletest.RootGoMod(vs))
	gocmd.MustRun(t, "mod", "download")
	if out := gocmd.MustRun(t, "list", "-m", "-versions", moduletest.GraphPath(1)); !strings.Contains(out, "v1.2.0") {
		t.Errorf("go list -m -versions: %q", out)
	}
	// Immutable files are stored while they are served: wait for the write.
	testwait.For(t, func() bool {
		_, err := os.Stat(filepath.Join(cache, moduletest.GraphPath(1), "@v", "v1.2.0.mod"))
		return err == nil
	}, "the module to be cached in -cache")

	// A client cannot make the server connect to its own host.
	resp, err := http.Get("http://" + addr + "/127.0.0.1/x/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "egress policy") {
		t.Errorf("a direct fetch of 127.0.0.1/x: %s %q, want 403 from the egress policy", resp.Status, body)
	}
}

// TestExampleServerNeedsACacheDirectory: without -cache and without a
// user cache directory, the example says so instead of caching in
// whatever directory it was started from.
func TestExampleServerNeedsACacheDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example")
	}
	bin := filepath.Join(t.TempDir(), "minimal")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0")
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GOPROXY=off"} // no HOME, no XDG_CACHE_HOME
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no user cache directory") {
		t.Errorf("started without a cache directory: %v\n%s", err, out)
	}
}
