package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// minioServer is a MinIO server for the tests of buckets in the config
// file: the binary s3cacher's tests use (GOPROXY_TEST_MINIO, or minio in
// PATH; see s3cacher/internal/miniotest, which this module cannot
// import), on a loopback port that stays the same across stop and start.
type minioServer struct {
	endpoint, addr, bin, dir string
	cmd                      *exec.Cmd
}

const minioKey, minioSecret = "goproxy-test", "goproxy-test-secret"

func startMinIO(t *testing.T) *minioServer {
	t.Helper()
	bin := os.Getenv("GOPROXY_TEST_MINIO")
	if bin == "" {
		bin, _ = exec.LookPath("minio")
	}
	if bin == "" {
		if os.Getenv("GOPROXY_TEST_REQUIRE_MINIO") != "" {
			t.Fatal("no MinIO server: set GOPROXY_TEST_MINIO (see the README)")
		}
		t.Skip("no MinIO server: set GOPROXY_TEST_MINIO (see the README)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	m := &minioServer{endpoint: "http://" + addr, addr: addr, bin: bin, dir: t.TempDir()}
	m.start(t)
	t.Cleanup(m.stop)
	client, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(minioKey, minioSecret, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.MakeBucket(context.Background(), "goproxy", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *minioServer) start(t *testing.T) {
	t.Helper()
	m.cmd = exec.Command(m.bin, "server", "--address", m.addr, "--quiet", filepath.Join(m.dir, "data"))
	m.cmd.Env = []string{"HOME=" + m.dir, "MINIO_ROOT_USER=" + minioKey, "MINIO_ROOT_PASSWORD=" + minioSecret,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CALLHOME_ENABLE=off"}
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testwait.Within(t, time.Minute, func() bool {
		resp, err := http.Get(m.endpoint + "/minio/health/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "MinIO ready")
}

func (m *minioServer) stop() {
	if m.cmd != nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
		m.cmd = nil
	}
}

const bucketRepositories = `addr: 127.0.0.1:0
log: {format: json}
repositories:
  - name: public
    prefix: /public
    goproxy: UPSTREAM
    gosumdb: "off"
    cache_s3:
      endpoint: ENDPOINT
      bucket: goproxy
      prefix: public
      region: us-east-1
      access_key_id_env: S3_ACCESS_KEY
      secret_access_key_file: SECRET_FILE
      addressing: path
      timeout: 2s
      redirect_downloads: true
  - name: corp
    prefix: /corp
    type: group
    goproxy: UPSTREAM
    gosumdb: "off"
    cache: CACHE
    hosted_s3:
      endpoint: ENDPOINT
      bucket: goproxy
      prefix: corp-hosted
      region: us-east-1
      access_key_id_env: S3_ACCESS_KEY
      secret_access_key_file: SECRET_FILE
      addressing: path
      timeout: 2s
`

// TestServerWithBucketStores runs the built server with a cache and a
// hosted store in a MinIO bucket: the go command through it, zips
// redirected to the bucket, and /readyz as the bucket stops and starts.
func TestServerWithBucketStores(t *testing.T) {
	buildServer(t)
	m := startMinIO(t)
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	dir := t.TempDir()
	config := strings.NewReplacer("UPSTREAM", up.URL, "ENDPOINT", m.endpoint, "CACHE", filepath.Join(dir, "cache"),
		"SECRET_FILE", writeFile(t, filepath.Join(dir, "s3-secret"), minioSecret+"\n")).Replace(bucketRepositories)
	srv := startServer(t, []string{"-config", writeFile(t, filepath.Join(dir, "goproxy.yaml"), config)},
		serverEnv(t, "S3_ACCESS_KEY="+minioKey))
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		resp, err := noRedirects.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header
	}

	t.Run("ready", func(t *testing.T) {
		code, body, _ := get("/readyz")
		if code != http.StatusOK || !strings.Contains(body, "public: cache s3://goproxy/public/: ok") || !strings.Contains(body, "corp: hosted s3://goproxy/corp-hosted/: ok") {
			t.Errorf("/readyz: %d\n%s", code, body)
		}
	})

	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL+"/public")
	gocmd.WriteGoMod(moduletest.RootGoMod(vs))
	t.Run("the go command through the bucket, then redirected to it", func(t *testing.T) {
		gocmd.MustRun(t, "mod", "download")
		zip := fmt.Sprintf("/public/%s/@v/v1.0.0.zip", moduletest.GraphPath(1))
		testwait.Within(t, time.Minute, func() bool { code, _, _ := get(zip); return code == http.StatusTemporaryRedirect }, zip, " redirected")
		_, _, h := get(zip)
		if loc := h.Get("Location"); !strings.HasPrefix(loc, m.endpoint+"/goproxy/public/") {
			t.Errorf("redirected to %q, not to the bucket", loc)
		}
		gocmd.FreshModCache(t)
		gocmd.MustRun(t, "mod", "download")
	})

	m.stop()
	t.Run("the bucket stopped", func(t *testing.T) {
		var code int
		var body string
		// /readyz answers what it found within the last second.
		testwait.Within(t, 10*time.Second, func() bool {
			code, body, _ = get("/readyz")
			return code != http.StatusOK
		}, "/readyz to notice the bucket stopped")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "public: cache s3://goproxy/public/: bypassed") || !strings.Contains(body, "corp: hosted s3://goproxy/corp-hosted/: ") {
			t.Errorf("/readyz with the bucket stopped: %d\n%s", code, body)
		}
		// The cache's bucket is bypassed: the upstream answers.
		if code, body, _ := get(fmt.Sprintf("/public/%s/@v/v1.1.0.mod", moduletest.GraphPath(4))); code != http.StatusOK {
			t.Errorf("a .mod not cached, with the cache's bucket stopped: %d %s", code, body)
		}
		// The hosted store alone knows what is published: 502.
		if code, _, _ := get(fmt.Sprintf("/corp/%s/@v/list", moduletest.GraphPath(4))); code != http.StatusBadGateway {
			t.Errorf("a list through the group, with its hosted bucket stopped: %d, want 502", code)
		}
	})
	m.start(t)
	t.Run("the bucket back", func(t *testing.T) {
		testwait.Within(t, time.Minute, func() bool { code, _, _ := get("/readyz"); return code == http.StatusOK }, "ready again")
	})
}

func TestValidateChecksBuckets(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "goproxy.yaml"), `repositories:
  - name: a
    prefix: /a
    cache: `+dir+`/a
    cache_s3: {bucket: b, prefix: shared, addressing: sideways, access_key_id_env: KEY}
  - name: b
    prefix: /b
    type: group
    cache_s3: {bucket: b, prefix: shared/b}
    hosted_s3: {endpoint: "http://127.0.0.1:9", bucket: "", redirect_downloads: true}
  - name: c
    prefix: /c
    hosted_s3: {bucket: c}
`)
	cfg, src := loadFile(t, file, nil)
	err := cfg.Validate(src, []string{"KEY=key"})
	if err == nil {
		t.Fatal("Validate passed")
	}
	for _, want := range []string{
		`repositories[0].cache_s3: cache is set too`,
		`repositories[0].cache_s3.addressing: "sideways" is not auto, path or virtual_host`,
		`repositories[0].cache_s3: give both access_key_id and secret_access_key`,
		`repositories[1].hosted_s3.bucket: must be set`,
		`repositories[1].hosted_s3.redirect_downloads: only a cache's zips are redirected`,
		`repositories[1]: the buckets of repositories[0] (s3://b/shared/) and repositories[1] (s3://b/shared/b/) overlap`,
		`repositories[2].hosted: a proxy repository has no hosted store`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
}

func TestBucketsOverlapHoweverTheirEndpointIsSpelled(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"", "https://s3.amazonaws.com"},
		{"s3.amazonaws.com", "https://S3.amazonaws.com/"},
		{"http://minio:9000", "http://MinIO:9000/"},
	} {
		a := &s3Spec{Endpoint: tc.a, Bucket: "b", Prefix: "cache/"}
		b := &s3Spec{Endpoint: tc.b, Bucket: "b", Prefix: "cache/corp/"}
		if !a.nests(b) || !b.nests(a) {
			t.Errorf("%q and %q: overlap not found", tc.a, tc.b)
		}
	}
	a := &s3Spec{Endpoint: "http://minio:9000", Bucket: "b", Prefix: "cache/"}
	if b := (&s3Spec{Endpoint: "https://minio:9000", Bucket: "b", Prefix: "cache/"}); a.nests(b) {
		t.Error("http and https on one host taken for one store")
	}
}
