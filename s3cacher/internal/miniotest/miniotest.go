// Package miniotest runs a real MinIO server on 127.0.0.1 for tests, so
// that the S3 cacher is tested against an S3 implementation rather than a
// mock of one.
//
// The server binary is found through the GOPROXY_TEST_MINIO environment
// variable, or else as "minio" in PATH. Without one, tests that need it are
// skipped with a message saying how to install it, unless
// GOPROXY_TEST_REQUIRE_MINIO is set (as the CI script sets it): then they
// fail, so that CI cannot pass by testing nothing. MinIO is AGPL software:
// it runs here as a separate test server and is never linked into goproxy.
package miniotest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	// EnvBinary names the environment variable holding the path of the
	// minio binary.
	EnvBinary = "GOPROXY_TEST_MINIO"
	// EnvRequire names the environment variable that, when not empty, makes
	// a missing binary a test failure instead of a skip.
	EnvRequire = "GOPROXY_TEST_REQUIRE_MINIO"

	// Install is how to get the binary the tests expect; .ci/run pins the
	// same version.
	Install = "go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"

	// AccessKey and SecretKey are the root credentials of every server.
	AccessKey = "goproxy-test"
	SecretKey = "goproxy-test-secret"

	// startTimeout bounds how long a server may take to become ready.
	startTimeout = 60 * time.Second
)

// Binary returns the path of the minio binary, or an error saying how to
// install one.
func Binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("miniotest: %s=%s: %w", EnvBinary, p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("miniotest: no MinIO server: install one with %q and put it in PATH or set %s to its path", Install, EnvBinary)
}

// Need returns the binary's path, or skips t (fails it when EnvRequire is
// set) if there is none.
func Need(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("%v (%s is set, so this is a failure)", err, EnvRequire)
		}
		t.Skip(err)
	}
	return bin
}

// Server is a running (or stopped) MinIO server with its own data
// directory, listening on a loopback port that stays the same across Stop
// and Start.
type Server struct {
	// Endpoint is the server's URL, "http://127.0.0.1:port".
	Endpoint string
	// Addr is its host:port.
	Addr string
	// Client is a minio-go client with the root credentials, for tests to
	// look at the bucket behind the code under test.
	Client *minio.Client

	bin   string
	dir   string
	logs  *logBuffer
	probe *http.Client // for the readiness checks

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	buckets atomic.Int64
}

// Start starts a server for t and stops it (and removes its data) when t
// ends. It skips t when there is no binary; see Need.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Launch(Need(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// StartTLS is Start for a server that speaks HTTPS only, presenting cert
// (which must be valid for 127.0.0.1); trust is the client configuration
// that trusts it, used by Client and the readiness checks.
func StartTLS(t testing.TB, cert tls.Certificate, trust *tls.Config) *Server {
	t.Helper()
	bin := Need(t)
	dir := t.TempDir()
	if err := writeCert(filepath.Join(dir, "certs"), cert); err != nil {
		t.Fatal(err)
	}
	s, err := launch(bin, dir, trust)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// writeCert stores cert where MinIO looks for its own: public.crt and
// private.key in the certs directory.
func writeCert(dir string, cert tls.Certificate) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "public.crt"), chain, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "private.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
}

// Launch starts a server whose data lives in dir, on a free loopback port,
// and waits until it is ready. The caller must Close it; this suits a
// server shared by a package's tests through TestMain.
func Launch(bin, dir string) (*Server, error) { return launch(bin, dir, nil) }

// launch starts a server, speaking HTTPS when trust is not nil.
func launch(bin, dir string, trust *tls.Config) (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{Endpoint: "http://" + addr, Addr: addr, bin: bin, dir: dir, logs: &logBuffer{}, probe: &http.Client{Timeout: time.Second}}
	var transport http.RoundTripper
	if trust != nil {
		s.Endpoint = "https://" + addr
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = trust.Clone()
		transport = t
		s.probe.Transport = t
	}
	client, err := minio.New(addr, &minio.Options{
		Creds:        credentials.NewStaticV4(AccessKey, SecretKey, ""),
		Secure:       trust != nil,
		Transport:    transport,
		BucketLookup: minio.BucketLookupPath,
		Region:       "us-east-1",
	})
	if err != nil {
		return nil, err
	}
	s.Client = client
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start starts a stopped server again, on the same port and data, and waits
// until it is ready; it fails t if it cannot.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("miniotest: server already running")
	}
	cmd := exec.Command(s.bin, "server",
		"--address", s.Addr,
		"--certs-dir", filepath.Join(s.dir, "certs"),
		"--quiet",
		filepath.Join(s.dir, "data"))
	cmd.Env = append(minioEnv(),
		"MINIO_ROOT_USER="+AccessKey,
		"MINIO_ROOT_PASSWORD="+SecretKey,
		"MINIO_BROWSER=off", // no console: nothing but the S3 API listens
		"MINIO_UPDATE=off",
		"MINIO_CALLHOME_ENABLE=off",
		"HOME="+s.dir,
	)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("miniotest: starting %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	if err := s.waitReady(exited); err != nil {
		cmd.Process.Kill()
		<-exited
		s.cmd = nil
		return err
	}
	return nil
}

// minioEnv is the test process's environment without anything that could
// point the server elsewhere (MINIO_* settings, proxies).
func minioEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "MINIO_"), strings.HasSuffix(strings.ToUpper(k), "_PROXY"):
			continue
		}
		env = append(env, kv)
	}
	return env
}

// waitReady polls the readiness endpoint until it answers 200, the process
// exits, or startTimeout passes.
func (s *Server) waitReady(exited chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 250*time.Millisecond) {
		resp, err := s.probe.Get(s.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("miniotest: minio exited before it was ready:\n%s", s.logs)
		case <-time.After(pause):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("miniotest: minio not ready after %v:\n%s", startTimeout, s.logs)
		}
	}
}

// Stop kills the server abruptly, as a crash or a lost network would take a
// store away: open connections are cut and new ones refused until Start.
// What it had stored stays in its data directory.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Close stops the server; its data directory is the caller's to remove.
func (s *Server) Close() { s.Stop() }

// NewBucket creates a bucket with a name no other call returns, so tests
// sharing a server do not see each other's objects.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test-%d", s.buckets.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
	return name
}

// Logs returns what the server has printed, for failure messages.
func (s *Server) Logs() string { return s.logs.String() }

// logBuffer keeps the last 64 KiB a server printed.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - 64<<10; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
