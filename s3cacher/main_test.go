package s3cacher

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/s3cacher/internal/miniotest"
)

// TestMain keeps the tests hermetic, as the root module's do: no GO* or
// AWS_*/MINIO_* setting of the developer's reaches a test, and the default
// transport (which the Cacher's own transport is cloned from) dials
// loopback only, so the credential search can never reach an instance
// metadata service and no test can reach the internet by mistake.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == miniotest.EnvBinary || k == miniotest.EnvRequire || k == replicaEnv {
			continue
		}
		if (strings.HasPrefix(k, "GO") && k != "GOROOT" && k != "GOCACHE" && k != "GOPATH" && k != "GOMODCACHE") ||
			strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "MINIO_") {
			os.Unsetenv(k)
		}
	}
	t := http.DefaultTransport.(*http.Transport)
	dialer := &net.Dialer{}
	t.Proxy = nil
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("test dialed %s: tests may only reach loopback", addr)
		}
		return dialer.DialContext(ctx, network, addr)
	}
	if cfg := os.Getenv(replicaEnv); cfg != "" {
		os.Exit(runReplica(cfg))
	}
	code := m.Run()
	if s := shared.server; s != nil {
		s.Close()
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// shared is one MinIO server for the tests that do not stop it, started by
// the first that needs it: a server takes a second or two to start.
var shared struct {
	once   sync.Once
	server *miniotest.Server
	dir    string
	err    error
	bucket string
}

// sharedServer returns the shared server and a bucket on it, skipping t
// when there is no MinIO binary (see miniotest.Need).
func sharedServer(t testing.TB) (*miniotest.Server, string) {
	t.Helper()
	bin := miniotest.Need(t)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "s3cacher-test-")
		if shared.err != nil {
			return
		}
		shared.server, shared.err = miniotest.Launch(bin, shared.dir)
		if shared.err == nil {
			shared.bucket = shared.server.NewBucket(t)
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.server, shared.bucket
}

var prefixes atomic.Int64

// newCacher returns a Cacher of its own on the shared server: a Prefix of
// its own in the shared bucket, which is how proxies share a bucket too.
func newCacher(t testing.TB) *Cacher {
	t.Helper()
	s, bucket := sharedServer(t)
	return cacherFor(t, s, bucket, fmt.Sprintf("t%d", prefixes.Add(1)))
}

// cacherFor returns a Cacher for bucket on s with the given prefix, after
// configure (if any) has set more of its fields.
func cacherFor(t testing.TB, s *miniotest.Server, bucket, prefix string, configure ...func(*Cacher)) *Cacher {
	t.Helper()
	c := &Cacher{
		Endpoint:        s.Endpoint,
		Bucket:          bucket,
		Prefix:          prefix,
		Region:          "us-east-1",
		AccessKeyID:     miniotest.AccessKey,
		SecretAccessKey: miniotest.SecretKey,
		// The contract tests look at last uses a second apart.
		UsePrecision: time.Second,
	}
	for _, f := range configure {
		f(c)
	}
	if err := c.Init(); err != nil {
		t.Fatal(err)
	}
	return c
}
