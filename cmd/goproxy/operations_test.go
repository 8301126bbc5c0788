package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testcert"
)

// TestServerRenewedCertificateReachesNewConnections replaces the
// certificate files while the server runs: the next connection gets the
// new certificate, without a reload.
func TestServerRenewedCertificateReachesNewConnections(t *testing.T) {
	buildServer(t)
	dir := t.TempDir()
	ca := testcert.New(t)
	certFile, keyFile, first := serverCert(t, ca, dir)
	srv := startServer(t, []string{"-addr", "127.0.0.1:0", "-cache", filepath.Join(dir, "cache"),
		"-tls-cert", certFile, "-tls-key", keyFile, "-log-format", "json"}, serverEnv(t, "GOPROXY=off"))
	addr := strings.TrimPrefix(srv.URL, "https://")
	if got := peerCertificate(t, addr, ca); !got.Equal(first) {
		t.Fatalf("serving certificate %v, not the configured %v", got.SerialNumber, first.SerialNumber)
	}
	// A connection open before the renewal keeps working.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientConfig()}}
	if resp, err := client.Get(srv.URL + "/healthz"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}

	_, _, second := serverCert(t, ca, dir)
	if got := peerCertificate(t, addr, ca); !got.Equal(second) {
		t.Errorf("a new connection got certificate %v, not the renewed %v", got.SerialNumber, second.SerialNumber)
	}
	if resp, err := client.Get(srv.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("the kept connection: %v", err)
	}

	// A broken renewal (a key that does not match) keeps the last good one.
	os.WriteFile(certFile, ca.PEM(), 0o600)
	if got := peerCertificate(t, addr, ca); !got.Equal(second) {
		t.Errorf("after a broken renewal: certificate %v", got.SerialNumber)
	}
	srv.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return strings.Contains(fmt.Sprint(m["msg"]), "does not load")
	})
}

// TestServerShutdownLetsDownloadsFinish sends SIGTERM while the go
// command downloads a large zip that the upstream serves slowly: the
// download completes, new connections are refused, and the server exits
// cleanly.
func TestServerShutdownLetsDownloadsFinish(t *testing.T) {
	buildServer(t)
	dir := t.TempDir()
	const path, version = "example.com/large", "v1.0.0"
	large, err := moduletest.LargeVersion(dir, path, version, 6<<20)
	if err != nil {
		t.Fatal(err)
	}
	up := moduletest.NewServer([]*moduletest.Version{large})
	defer up.Close()
	faults := &moduletest.Faults{BytesPerSecond: 2 << 20, Match: moduletest.MatchSuffix(".zip")}
	slow := httptest.NewServer(faults.Wrap(up.Handler()))
	defer slow.Close()
	config := writeFile(t, filepath.Join(dir, "goproxy.json"), fmt.Sprintf(`{
	"addr": "127.0.0.1:0",
	"cache": %q,
	"log": {"format": "json"},
	"http": {"shutdown_timeout": "1m"},
	"goproxy": %q,
	"gosumdb": "off",
	"download": {"connections": 1}
}
`, filepath.Join(dir, "cache"), slow.URL))
	srv := startServer(t, []string{"-config", config}, serverEnv(t))

	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	gocmd.WriteGoMod([]byte("module example.com/root\n\ngo 1.21\n"))
	type result struct {
		out, stderr string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		out, stderr, err := gocmd.Run("mod", "download", "-json", path+"@"+version)
		done <- result{out, stderr, err}
	}()
	// Wait until the zip is on its way, then ask the server to stop.
	zipStarted := func() bool {
		for _, r := range faults.Log() {
			if strings.HasSuffix(r.Path, ".zip") && r.Bytes > 0 {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(60 * time.Second); !zipStarted(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the zip download did not start")
		}
	}
	srv.signal(t, syscall.SIGTERM)
	srv.waitLog(t, 10*time.Second, func(m map[string]any) bool { return strings.HasPrefix(fmt.Sprint(m["msg"]), "shutting down") })
	if faults.BodyBytes() >= 6<<20 {
		t.Fatal("the download was over before the shutdown began: make it slower")
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(srv.URL, "http://"), time.Second); err == nil {
		c.Close()
		t.Error("a new connection was accepted during the shutdown")
	}

	var r result
	select {
	case r = <-done:
	case <-time.After(gocmdtest.Timeout):
		t.Fatal("the go command did not finish")
	}
	if r.err != nil {
		t.Fatalf("go mod download during the shutdown: %v\n%s", r.err, r.stderr)
	}
	want := fileDigest(t, large.ZipFile)
	got := fileDigest(t, filepath.Join(gocmd.GOMODCACHE, "cache", "download", path, "@v", version+".zip"))
	if got != want {
		t.Error("the downloaded zip differs from the upstream's")
	}
	if err := srv.wait(t, 30*time.Second); err != nil {
		t.Errorf("the server exited with %v", err)
	}
	srv.waitLog(t, time.Second, func(m map[string]any) bool { return m["msg"] == "stopped" })
}

func fileDigest(t *testing.T, name string) [32]byte {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// TestServerReportsConfigErrorsWithTheirLine: a bad config file stops the
// server at start with every problem, each with its file, line and key.
func TestServerReportsConfigErrorsWithTheirLine(t *testing.T) {
	bin := buildServer(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file, config string
		want               []string
	}{
		{
			name: "unknown keys and bad values",
			file: "goproxy.yaml",
			config: `addr: 127.0.0.1:0
http:
  read_header_timeout: ten seconds
users:
  alice:
    password: hunter2
`,
			want: []string{
				`goproxy.yaml:3: http.read_header_timeout: "ten seconds" is not a duration`,
				`goproxy.yaml:6: users.alice.password: unknown key "password": secrets are not written in the config file`,
			},
		},
		{
			name: "inconsistent settings",
			file: "goproxy.yaml",
			config: `addr: 127.0.0.1:0
tokens:
  ci:
    token_env: NO_SUCH_VARIABLE
repositories:
  - name: corp
    prefix: /corp
    type: mirror
  - prefix: /corp
    access:
      grants:
        bob: {read: "*"}
`,
			want: []string{
				`goproxy.yaml:3: tokens.ci: token: environment variable NO_SUCH_VARIABLE is empty or not set`,
				`goproxy.yaml:8: repositories[0].type: "mirror" is not proxy, hosted or group`,
				`goproxy.yaml:9: repositories[1].prefix: "/corp" is also the prefix of repositories[0]`,
				`goproxy.yaml:12: repositories[1].access.grants.bob: "bob" is neither a user nor a token`,
			},
		},
		{
			name:   "JSON syntax",
			file:   "goproxy.json",
			config: "{\n\t\"addr\": \"127.0.0.1:0\",\n\t\"cache\": \"x\",,\n}\n",
			want:   []string{`goproxy.json:3: invalid character ','`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := writeFile(t, filepath.Join(dir, tc.file), tc.config)
			cmd := exec.Command(bin, "-config", config)
			cmd.Env = serverEnv(t)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the server started with a bad config:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("no %q in:\n%s", w, out)
				}
			}
		})
	}
}

var withoutTimeouts = flag.Bool("slowclients.notimeouts", false, "run TestServerSlowClientsDoNotStopService with the header and idle timeouts off, to see it fail")

// TestServerSlowClientsDoNotStopService runs the server with 512 file
// descriptors and opens 600 connections that send their headers a byte
// a second: a normal request is still served while they are open. (With
// -slowclients.notimeouts the timeouts are off and it fails.)
func TestServerSlowClientsDoNotStopService(t *testing.T) {
	buildServer(t)
	if _, err := os.Stat("/proc/self/limits"); err != nil {
		t.Skip("needs Linux's /proc to check the limit")
	}
	dir := t.TempDir()
	timeouts := "read_header_timeout: 1s\n  idle_timeout: 5s"
	if *withoutTimeouts {
		timeouts = "read_header_timeout: 0\n  idle_timeout: 0"
	}
	config := writeFile(t, filepath.Join(dir, "goproxy.yaml"), "addr: 127.0.0.1:0\nlog: {format: json}\naccess_log: {disabled: true}\nhttp:\n  "+timeouts+"\n")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, []string{"-config", config, "-cache", filepath.Join(dir, "cache")},
		serverEnv(t, "GOPROXY=off", nofileVar+"=512"), self)
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", srv.cmd.Process.Pid))
	if err != nil || !bytes.Contains(limits, []byte("Max open files            512                  512")) {
		t.Fatalf("the server's open-file limit is not 512: %v\n%s", err, limits)
	}
	addr := strings.TrimPrefix(srv.URL, "http://")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	var open atomic.Int64
	const slowClients = 600
	for range slowClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slowClient(ctx, addr, &open)
		}()
	}
	for deadline := time.Now().Add(30 * time.Second); open.Load() < slowClients*9/10; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d slow connections opened", open.Load())
		}
	}

	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	resp, err := client.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatalf("a normal request while %d slow connections are open: %v", open.Load(), err)
	}
	resp.Body.Close()
	t.Logf("served in %v with %d slow connections open", time.Since(start).Round(time.Millisecond), open.Load())
	if resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
}

// slowClient keeps a connection open sending a request header a byte a
// second, connecting again when the server closes it, until ctx ends.
// open counts connections that sent their first byte.
func slowClient(ctx context.Context, addr string, open *atomic.Int64) {
	header := []byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 100))
	var d net.Dialer
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		counted := false
		for i := 0; ctx.Err() == nil; i = (i + 1) % len(header) {
			if _, err := c.Write(header[i : i+1]); err != nil {
				break
			}
			if !counted {
				counted = true
				open.Add(1)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		if counted {
			open.Add(-1)
		}
		stop()
		c.Close()
	}
}
