package s3cacher

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/cachertest"
	"github.com/goproxy-team/goproxy/internal/testwait"
	"github.com/goproxy-team/goproxy/s3cacher/internal/miniotest"
)

var (
	_ goproxy.Cacher       = (*Cacher)(nil)
	_ goproxy.CacheStater  = (*Cacher)(nil)
	_ goproxy.CacheDeleter = (*Cacher)(nil)
	_ goproxy.CacheWalker  = (*Cacher)(nil)
	_ goproxy.CacheCreator = (*Cacher)(nil)
	// The capabilities that let several proxies share the bucket.
	_ goproxy.CacheUsageRecorder    = (*Cacher)(nil)
	_ goproxy.CacheInfoWalker       = (*Cacher)(nil)
	_ goproxy.CacheUnchangedDeleter = (*Cacher)(nil)
	_ goproxy.CacheIndexLog         = (*Cacher)(nil)
	_ goproxy.CacheLeaser           = (*Cacher)(nil)
	_ goproxy.CacheRedirector       = (*Cacher)(nil)
	_ io.ReaderAt                   = (*objectFile)(nil)
)

func TestContract(t *testing.T) {
	cachertest.Run(t, func(t *testing.T) goproxy.Cacher { return newCacher(t) })
}

func TestPrefixesShareABucket(t *testing.T) {
	s, bucket := sharedServer(t)
	a := cacherFor(t, s, bucket, "shared/team-a") // a "/" is added
	b := cacherFor(t, s, bucket, "shared/team-b/")
	ctx := t.Context()
	if err := a.Put(ctx, "example.com/m/@v/list", strings.NewReader("v1.0.0\n")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "example.com/m/@v/list", strings.NewReader("v2.0.0\n")); err != nil {
		t.Fatal(err)
	}
	for c, want := range map[*Cacher]string{a: "v1.0.0\n", b: "v2.0.0\n"} {
		f, err := c.Get(ctx, "example.com/m/@v/list")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if string(got) != want {
			t.Errorf("prefix %s: Get = %q, want %q", c.Prefix, got, want)
		}
	}
	// The objects are where the prefix says, and Walk sees only its own.
	if _, err := s.Client.StatObject(ctx, bucket, "shared/team-a/example.com/m/@v/list", minio.StatObjectOptions{}); err != nil {
		t.Errorf("object of prefix shared/team-a: %v", err)
	}
	var names []string
	a.Walk(ctx, "", func(name string) error { names = append(names, name); return nil })
	if !slices.Equal(names, []string{"example.com/m/@v/list"}) {
		t.Errorf("Walk of one prefix = %q", names)
	}
	if err := b.Delete(ctx, "example.com/m/@v/list"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Stat(ctx, "example.com/m/@v/list"); err != nil {
		t.Errorf("deleting under one prefix touched another: %v", err)
	}
}

func TestLeasesAreNotEntries(t *testing.T) {
	c := newCacher(t)
	ctx := t.Context()
	l, err := c.AcquireLease(ctx, "example.com/m/@v/v1.0.0.zip", "replica-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	if _, err := c.Get(ctx, "example.com/m/@v/v1.0.0.zip"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get of a name that only has a lease: %v, want fs.ErrNotExist", err)
	}
	var names []string
	c.Walk(ctx, "", func(name string) error { names = append(names, name); return nil })
	if len(names) != 0 {
		t.Errorf("Walk lists leases: %q", names)
	}
}

func TestCredentialsFromTheEnvironment(t *testing.T) {
	s, bucket := sharedServer(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"AWS variables", map[string]string{"AWS_ACCESS_KEY_ID": miniotest.AccessKey, "AWS_SECRET_ACCESS_KEY": miniotest.SecretKey}},
		{"MinIO root user", map[string]string{"MINIO_ROOT_USER": miniotest.AccessKey, "MINIO_ROOT_PASSWORD": miniotest.SecretKey}},
		{"AWS shared credentials file", map[string]string{"AWS_SHARED_CREDENTIALS_FILE": writeFile(t, "[ci]\naws_access_key_id = "+miniotest.AccessKey+"\naws_secret_access_key = "+miniotest.SecretKey+"\n"), "AWS_PROFILE": "ci"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c := &Cacher{Endpoint: s.Endpoint, Bucket: bucket, Prefix: "creds", Region: "us-east-1"}
			if err := c.Put(t.Context(), "example.com/m/@v/list", strings.NewReader("v1.0.0\n")); err != nil {
				t.Fatalf("Put with credentials from %s: %v", tc.name, err)
			}
		})
	}
	t.Run("wrong static keys", func(t *testing.T) {
		c := &Cacher{Endpoint: s.Endpoint, Bucket: bucket, Region: "us-east-1", AccessKeyID: miniotest.AccessKey, SecretAccessKey: "not-the-secret"}
		err := c.Put(t.Context(), "example.com/m/@v/list", strings.NewReader("v1.0.0\n"))
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Put with a wrong secret: %v, want an error that is not a miss", err)
		}
		if _, err := c.Get(t.Context(), "example.com/m/@v/list"); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Get with a wrong secret: %v, want an error that is not a miss", err)
		}
		if strings.Contains(err.Error(), "not-the-secret") {
			t.Errorf("the error shows the secret: %v", err)
		}
	})
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := t.TempDir() + "/credentials"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInitRefusesBadConfiguration(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *Cacher
	}{
		{"no bucket", &Cacher{Endpoint: "http://127.0.0.1:9000"}},
		{"endpoint with a path", &Cacher{Endpoint: "http://127.0.0.1:9000/bucket", Bucket: "b"}},
		{"endpoint with a strange scheme", &Cacher{Endpoint: "ftp://127.0.0.1", Bucket: "b"}},
		{"endpoint with a user", &Cacher{Endpoint: "https://user:secret@s3.example.com", Bucket: "b"}},
		{"part size under S3's minimum", &Cacher{Bucket: "b", PartSize: 1 << 20}},
		{"unknown addressing", &Cacher{Bucket: "b", Addressing: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Init()
			if err == nil {
				t.Fatal("Init succeeded")
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the error shows a password: %v", err)
			}
			if _, err2 := tc.c.Get(context.Background(), "example.com/m/@v/list"); err2 == nil {
				t.Error("Get after a failed Init succeeded")
			}
		})
	}
	for _, endpoint := range []string{"", "s3.example.com", "https://s3.example.com", "http://127.0.0.1:9000", "http://[::1]:9000/"} {
		if err := (&Cacher{Endpoint: endpoint, Bucket: "b"}).Init(); err != nil {
			t.Errorf("Init with Endpoint %q: %v", endpoint, err)
		}
	}
}

func TestPresignedGetServesTheObject(t *testing.T) {
	c := newCacher(t)
	ctx := t.Context()
	content := strings.Repeat("zip bytes ", 1000)
	if err := c.Put(ctx, "example.com/m/@v/v1.0.0.zip", strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	u, err := c.PresignGet(ctx, "example.com/m/@v/v1.0.0.zip", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// A client with no credentials at all, as the go command is.
	resp, err := http.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(got) != content {
		t.Errorf("GET of the presigned URL: %s, %d bytes", resp.Status, len(got))
	}
	// Ranges work through it too.
	req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
	req.Header.Set("Range", "bytes=10-19")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(got) != content[10:20] {
		t.Errorf("ranged GET of the presigned URL: %s, %q", resp.Status, got)
	}
	// The URL names one object: another key with the same signature is refused.
	other := *u
	other.Path = strings.Replace(other.Path, "v1.0.0.zip", "v1.0.1.zip", 1)
	resp, err = http.Get(other.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET of another key with the signature: %s, want 403", resp.Status)
	}
	for _, expiry := range []time.Duration{0, time.Millisecond, 8 * 24 * time.Hour} {
		if _, err := c.PresignGet(ctx, "example.com/m/@v/v1.0.0.zip", expiry); err == nil {
			t.Errorf("PresignGet with expiry %v succeeded", expiry)
		}
	}
}

func TestPresignedGetExpires(t *testing.T) {
	t.Parallel() // mostly waiting for the URL to expire
	c := newCacher(t)
	ctx := t.Context()
	if err := c.Put(ctx, "example.com/m/@v/v1.0.0.zip", strings.NewReader("zip")); err != nil {
		t.Fatal(err)
	}
	u, err := c.PresignGet(ctx, "example.com/m/@v/v1.0.0.zip", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The store judges expiry in whole seconds: wait until it refuses,
	// with a deadline, rather than for a guessed time.
	status := ""
	testwait.Within(t, 10*time.Second, func() bool {
		resp, err := http.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		status = resp.Status
		return resp.StatusCode == http.StatusForbidden
	}, "a presigned URL for one second to be refused; last answer: ", testwait.Show(func() string { return status }))
}

// hostCounter counts the requests to each host.
type hostCounter struct {
	next  http.RoundTripper
	mu    sync.Mutex
	hosts map[string]int
}

func (h *hostCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.hosts[r.URL.Hostname()]++
	h.mu.Unlock()
	return h.next.RoundTrip(r)
}

func (h *hostCounter) take(host string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.hosts[host]
	h.hosts[host] = 0
	return n
}

func TestFindingNoCredentialsIsRemembered(t *testing.T) {
	s, bucket := sharedServer(t)
	t.Setenv("HOME", t.TempDir()) // no ~/.aws, no ~/.mc
	hosts := &hostCounter{next: http.DefaultTransport, hosts: map[string]int{}}
	c := &Cacher{Endpoint: s.Endpoint, Bucket: bucket, Region: "us-east-1", Transport: hosts}
	for i := range 3 {
		err := c.Put(t.Context(), "example.com/m/@v/list", strings.NewReader("v1.0.0\n"))
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("an anonymous Put: %v, want refused", err)
		}
		// The search ends at the instance metadata service, which the
		// first Put asks (TestMain keeps it from leaving the machine) and
		// the later ones do not.
		if n := hosts.take("169.254.169.254"); (i == 0) != (n > 0) {
			t.Errorf("Put %d asked the instance metadata service %d times", i+1, n)
		}
	}
}
