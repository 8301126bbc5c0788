package s3cacher

import (
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"

	"github.com/goproxy-team/goproxy/internal/testcert"
	"github.com/goproxy-team/goproxy/s3cacher/internal/miniotest"
)

func TestHTTPSStoreWithAPrivateCA(t *testing.T) {
	t.Parallel() // a server of its own
	ca := testcert.New(t)
	s := miniotest.StartTLS(t, ca.Issue(t, "127.0.0.1"), ca.ClientConfig())
	if !strings.HasPrefix(s.Endpoint, "https://") {
		t.Fatalf("endpoint %s", s.Endpoint)
	}
	bucket := s.NewBucket(t)
	c := cacherFor(t, s, bucket, "", func(c *Cacher) { c.TLSConfig = ca.ClientConfig() })
	if err := c.Put(t.Context(), "example.com/m/@v/list", strings.NewReader("v1.0.0\n")); err != nil {
		t.Fatal(err)
	}
	f, err := c.Get(t.Context(), "example.com/m/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(got) != "v1.0.0\n" {
		t.Errorf("Get over HTTPS = %q, %v", got, err)
	}

	// Without the CA, the certificate is refused: an error, not a miss.
	untrusting := cacherFor(t, s, bucket, "", func(c *Cacher) { c.Retries = -1 })
	_, err = untrusting.Get(t.Context(), "example.com/m/@v/list")
	if err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Get from a store whose certificate is not trusted: %v, want a certificate error", err)
	}
}
