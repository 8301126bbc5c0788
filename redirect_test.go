package goproxy

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// redirectingStore is a MemCacher whose entries are also served by a test
// server, at URLs it gives out as an object store presigns them.
type redirectingStore struct {
	*MemCacher
	srv    *httptest.Server
	expiry time.Duration
	fail   bool
}

func newRedirectingStore(t *testing.T) *redirectingStore {
	s := &redirectingStore{MemCacher: &MemCacher{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cf, err := s.Get(r.Context(), strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer cf.Close()
		http.ServeContent(w, r, "", cf.ModTime(), cf)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *redirectingStore) PresignGet(ctx context.Context, name string, expiry time.Duration) (*url.URL, error) {
	if s.fail {
		return nil, errors.New("the store cannot sign")
	}
	s.expiry = expiry
	return url.Parse(s.srv.URL + "/" + name + "?signature=secret")
}

func TestRedirectSendsPlainGetsOfCachedZipsToTheStore(t *testing.T) {
	v := moduletest.Graph(10)[0]
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	store := newRedirectingStore(t)
	p := newTestProxy(t, up.URL)
	p.Cacher = store
	p.Redirect = DownloadRedirect{Enabled: true}
	zip := "/" + escapedName(v, ".zip")
	get := func(method, path string, header ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		return w
	}
	// The first request fetches: the zip is not in the store yet.
	if w := get("GET", zip); w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), v.Zip) {
		t.Fatalf("GET of a zip not cached: %d", w.Code)
	}
	waitCached(t, store, escapedName(v, ".zip"))

	w := get("GET", zip)
	if w.Code != http.StatusTemporaryRedirect {
		t.Fatalf("GET of a cached zip: %d, want 307", w.Code)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("the redirect's Cache-Control is %q, want no-store", cc)
	}
	if store.expiry != time.Minute {
		t.Errorf("URLs signed for %v, want the default minute", store.expiry)
	}
	resp, err := http.Get(w.Header().Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(body.Bytes(), v.Zip) {
		t.Errorf("the redirect's target served %d bytes, not the zip", body.Len())
	}

	for _, tc := range []struct {
		name   string
		method string
		path   string
		header []string
	}{
		{"a range", "GET", zip, []string{"Range", "bytes=0-9"}},
		{"a condition", "GET", zip, []string{"If-None-Match", `"x"`}},
		{"a HEAD", "HEAD", zip, nil},
		{"a .mod", "GET", "/" + escapedName(v, ".mod"), nil},
	} {
		if w := get(tc.method, tc.path, tc.header...); w.Code == http.StatusTemporaryRedirect {
			t.Errorf("%s was redirected", tc.name)
		}
	}

	store.fail = true
	if w := get("GET", zip); w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), v.Zip) {
		t.Errorf("GET with a store that cannot sign: %d, want the zip served by the proxy", w.Code)
	}
}

// TestNoRedirectFromHTTPSToAPlainHTTPStore: the go command refuses to
// follow one (and prints the URL, signature included, in its error), so
// the proxy serves the zip itself.
func TestNoRedirectFromHTTPSToAPlainHTTPStore(t *testing.T) {
	v := moduletest.Graph(10)[0]
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	store := newRedirectingStore(t) // plain http
	name := escapedName(v, ".zip")
	store.Put(t.Context(), name, bytes.NewReader(v.Zip))
	p := newTestProxy(t, up.URL)
	p.Cacher = store
	p.Redirect = DownloadRedirect{Enabled: true}
	srv := httptest.NewTLSServer(p)
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get(srv.URL + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body.Bytes(), v.Zip) {
		t.Errorf("GET over https with the store on http: %s (Location %q), want the zip served by the proxy", resp.Status, resp.Header.Get("Location"))
	}
}

func TestRedirectWithAuthorizeNeedsAllow(t *testing.T) {
	v := moduletest.Graph(10)[0]
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	store := newRedirectingStore(t)
	name := escapedName(v, ".zip")
	store.Put(t.Context(), name, bytes.NewReader(v.Zip))
	for _, tc := range []struct {
		name  string
		allow func(*http.Request, string) bool
		want  int
	}{
		{"without Allow", nil, http.StatusOK},
		{"Allow refusing", func(*http.Request, string) bool { return false }, http.StatusOK},
		{"Allow granting", func(_ *http.Request, modPath string) bool { return modPath == v.Path }, http.StatusTemporaryRedirect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProxy(t, up.URL)
			p.Cacher = store
			p.Authorize = func(*http.Request, Operation, string) error { return nil }
			p.Redirect = DownloadRedirect{Enabled: true, Allow: tc.allow}
			w := httptest.NewRecorder()
			p.ServeHTTP(w, httptest.NewRequest("GET", "/"+name, nil))
			if w.Code != tc.want {
				t.Errorf("GET: %d, want %d", w.Code, tc.want)
			}
		})
	}
}

func TestRedirectNeedsACacherThatGivesURLs(t *testing.T) {
	p := &Proxy{Cacher: &MemCacher{}, Redirect: DownloadRedirect{Enabled: true}, Env: []string{"GOPROXY=off"}}
	if err := p.Init(); err == nil || !strings.Contains(err.Error(), "CacheRedirector") {
		t.Errorf("Init with redirects over a MemCacher: %v", err)
	}
}

// waitCached waits until name is in c: files are stored in the
// background while clients are served.
func waitCached(t *testing.T, c Cacher, name string) {
	t.Helper()
	testwait.For(t, func() bool {
		cf, err := c.Get(t.Context(), name)
		if err == nil {
			cf.Close()
		}
		return err == nil
	}, name, "stored")
}
