package s3cacher

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// countingTransport records the requests a Cacher sends and how many body
// bytes the store answered with.
type countingTransport struct {
	next http.RoundTripper

	mu    sync.Mutex
	reqs  []string // "METHOD Range"
	bytes int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	entry := r.Method
	if rg := r.Header.Get("Range"); rg != "" {
		entry += " " + rg
		if r.Header.Get("If-Match") == "" {
			entry += " without If-Match"
		}
	}
	c.reqs = append(c.reqs, entry)
	if err == nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, c: c}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	c *countingTransport
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.mu.Lock()
	b.c.bytes += int64(n)
	b.c.mu.Unlock()
	return n, err
}

// take returns the requests and body bytes counted so far and starts over.
func (c *countingTransport) take() ([]string, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	reqs, n := c.reqs, c.bytes
	c.reqs, c.bytes = nil, 0
	return reqs, n
}

// countingCacher is newCacher with its requests counted.
func countingCacher(t *testing.T) (*Cacher, *countingTransport) {
	s, bucket := sharedServer(t)
	ct := &countingTransport{next: http.DefaultTransport}
	c := &Cacher{
		Endpoint: s.Endpoint, Bucket: bucket, Prefix: fmt.Sprintf("t%d", prefixes.Add(1)), Region: "us-east-1",
		AccessKeyID: "goproxy-test", SecretAccessKey: "goproxy-test-secret",
		Transport: ct,
	}
	return c, ct
}

func TestRangedReadsFetchOnlyWhatIsRead(t *testing.T) {
	c, ct := countingCacher(t)
	ctx := t.Context()
	const size = 40 << 20 // over PartSize: a multipart object
	content := patternBytes(size)
	if err := c.Put(ctx, "example.com/m/@v/v1.0.0.zip", bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if reqs, _ := ct.take(); !contains(reqs, "POST") {
		t.Errorf("a %d MiB Put was not a multipart upload: %q", size>>20, reqs)
	}

	f, err := c.Get(ctx, "example.com/m/@v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if reqs, _ := ct.take(); len(reqs) != 1 || reqs[0] != "HEAD" {
		t.Errorf("Get sent %q, want one HEAD", reqs)
	}

	t.Run("a kilobyte in the middle is one small GET", func(t *testing.T) {
		const off = 25 << 20
		f.Seek(off, io.SeekStart)
		got := make([]byte, 1024)
		if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, content[off:off+1024]) {
			t.Fatalf("reading 1 KB at 25 MiB: %v", err)
		}
		reqs, n := ct.take()
		want := fmt.Sprintf("GET bytes=%d-%d", off, off+firstWindow-1)
		if len(reqs) != 1 || reqs[0] != want {
			t.Errorf("reading 1 KB sent %q, want [%s]", reqs, want)
		}
		if n > firstWindow {
			t.Errorf("reading 1 KB fetched %d bytes", n)
		}
	})

	t.Run("ReadAt asks for exactly its range", func(t *testing.T) {
		got := make([]byte, 3000)
		if _, err := f.(io.ReaderAt).ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, content[1<<20:1<<20+3000]) {
			t.Fatalf("ReadAt: %v", err)
		}
		reqs, _ := ct.take()
		if want := fmt.Sprintf("GET bytes=%d-%d", 1<<20, 1<<20+3000-1); len(reqs) != 1 || reqs[0] != want {
			t.Errorf("ReadAt sent %q, want [%s]", reqs, want)
		}
	})

	t.Run("reading it all takes a few growing ranges", func(t *testing.T) {
		f.Seek(0, io.SeekStart)
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(content); !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatal("the whole read differs from what was stored")
		}
		reqs, n := ct.take()
		if n != size {
			t.Errorf("reading %d bytes fetched %d", size, n)
		}
		// 64 KiB doubling to 8 MiB (8 GETs), then the rest in one.
		if len(reqs) != 9 {
			t.Errorf("reading %d MiB sent %d requests, want 9: %q", size>>20, len(reqs), reqs)
		}
		next := int64(0)
		for _, r := range reqs {
			var from, to int64
			if _, err := fmt.Sscanf(r, "GET bytes=%d-%d", &from, &to); err != nil || from != next || strings.Contains(r, "without") {
				t.Errorf("request %q does not carry on at %d with If-Match", r, next)
				break
			}
			next = to + 1
		}
	})

	t.Run("http.ServeContent with a Range header", func(t *testing.T) {
		g, err := c.Get(ctx, "example.com/m/@v/v1.0.0.zip")
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		ct.take()
		req := httptest.NewRequest(http.MethodGet, "/example.com/m/@v/v1.0.0.zip", nil)
		req.Header.Set("Range", "bytes=30000000-30000999")
		w := httptest.NewRecorder()
		w.Header().Set("Content-Type", "application/zip")
		http.ServeContent(w, req, "", g.ModTime(), g)
		if w.Code != http.StatusPartialContent || !bytes.Equal(w.Body.Bytes(), content[30000000:30001000]) {
			t.Fatalf("ServeContent: %d, %d bytes", w.Code, w.Body.Len())
		}
		if reqs, n := ct.take(); len(reqs) != 1 || n > firstWindow {
			t.Errorf("a 1000-byte Range request sent %q and fetched %d bytes", reqs, n)
		}
	})
}

func TestAReplacedObjectFailsTheReadInsteadOfMixingVersions(t *testing.T) {
	c := newCacher(t)
	ctx := t.Context()
	old := patternBytes(4 << 20)
	if err := c.Put(ctx, "example.com/m/@v/v1.0.0.zip", bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	f, err := c.Get(ctx, "example.com/m/@v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 100<<10)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, "example.com/m/@v/v1.0.0.zip", bytes.NewReader(bytes.Repeat([]byte("new"), 1<<20))); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(f)
	if err == nil {
		t.Fatalf("reading on after the object was replaced succeeded (%d bytes)", len(rest))
	}
	if !strings.Contains(err.Error(), "changed") {
		t.Errorf("error %q does not say the object changed", err)
	}
	if got := append(head, rest...); !bytes.Equal(got, old[:len(got)]) {
		t.Error("the bytes read before the error are not all the old object's")
	}
}

func contains(reqs []string, method string) bool {
	for _, r := range reqs {
		if strings.HasPrefix(r, method) {
			return true
		}
	}
	return false
}

// patternBytes returns n pseudo-random bytes (xorshift), distinct at every
// offset a mistaken range could land on.
func patternBytes(n int) []byte {
	b := make([]byte, n)
	x := uint64(88172645463325252)
	for i := 0; i+8 <= n; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := range 8 {
			b[i+j] = byte(x >> (8 * j))
		}
	}
	return b[:n:n]
}
