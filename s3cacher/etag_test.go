package s3cacher

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// TestAZipKeepsItsValidatorsOnceInTheBucket: the answer that fetched a zip
// and every later answer from the bucket, through any replica, carry the
// same ETag and Last-Modified, so a client revalidating with the first gets
// 304. (The bucket's own ETag and Last-Modified are not the fetch's: Put
// keeps the fetch's time with the object.)
func TestAZipKeepsItsValidatorsOnceInTheBucket(t *testing.T) {
	c := newCacher(t)
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	newProxy := func() *httptest.Server {
		p := &goproxy.Proxy{
			Cacher:    c,
			Env:       []string{"GOPROXY=" + up.URL, "GOSUMDB=off"},
			TempDir:   t.TempDir(),
			Transport: http.DefaultTransport,
			Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		}
		srv := httptest.NewServer(p)
		t.Cleanup(srv.Close)
		return srv
	}
	escPath, _ := module.EscapePath(vs[0].Path)
	name := escPath + "/@v/" + vs[0].Version + ".zip"
	get := func(t *testing.T, srv *httptest.Server, etag string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/"+name, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	first := get(t, newProxy(), "")
	etag, lastModified := first.Header.Get("ETag"), first.Header.Get("Last-Modified")
	if first.StatusCode != http.StatusOK || etag == "" || lastModified == "" {
		t.Fatalf("fetching answer: %s, ETag %q, Last-Modified %q", first.Status, etag, lastModified)
	}
	testwait.Within(t, time.Minute, func() bool { _, err := c.Stat(t.Context(), name); return err == nil }, name, " in the bucket")
	up.Close()

	other := newProxy() // another replica: nothing in memory
	if later := get(t, other, ""); later.StatusCode != http.StatusOK ||
		later.Header.Get("ETag") != etag || later.Header.Get("Last-Modified") != lastModified {
		t.Errorf("answer from the bucket: %s, ETag %q, Last-Modified %q; the fetching answer had %q, %q",
			later.Status, later.Header.Get("ETag"), later.Header.Get("Last-Modified"), etag, lastModified)
	}
	if revalidated := get(t, other, etag); revalidated.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the fetching answer's ETag: %s, want 304", revalidated.Status)
	}
}
