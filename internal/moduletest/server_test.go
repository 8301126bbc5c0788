package moduletest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

type response struct {
	code int
	body string
	hdr  http.Header
}

// get is fetch for a GET whose body must read completely.
func get(t *testing.T, url string, hdr ...string) response {
	t.Helper()
	r := fetch(t, "GET", url, hdr...)
	if r.err != nil {
		t.Fatal(r.err)
	}
	return response{r.code, string(r.body), r.hdr}
}

func TestServerProtocol(t *testing.T) {
	t.Parallel()
	vs := moduletest.Graph(10)
	find := func(path, version string) *moduletest.Version {
		for _, v := range vs {
			if v.Path == path && v.Version == version {
				return v
			}
		}
		t.Fatalf("no %s@%s in graph", path, version)
		return nil
	}
	s := moduletest.NewServer(vs)
	defer s.Close()

	mod000 := find("example.com/mod000", "v1.1.0")
	mod001 := find("example.com/mod001", "v1.2.0")
	upper := find(moduletest.UpperCasePath, "v1.1.0")
	legacy := find(moduletest.LegacyPath, moduletest.LegacyIncompatible)
	pseudo := find(moduletest.PseudoPath, moduletest.PseudoVersion)
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/example.com/mod000/@v/list", 200, "v1.0.0\nv1.1.0\n"},
		{"/example.com/mod001/@v/list", 200, "v1.0.0\nv1.1.0\nv1.2.0\n"},
		{"/example.com/mod001/@latest", 200, string(mod001.Info())},
		{"/example.com/mod000/@v/v1.1.0.info", 200, `{"Version":"v1.1.0","Time":"2024-01-02T00:00:00Z"}`},
		{"/example.com/mod000/@v/v1.1.0.mod", 200, string(mod000.Mod)},
		{"/example.com/mod000/@v/v1.1.0.zip", 200, string(mod000.Zip)},
		{"/example.com/mod001/@v/master.info", 200, string(mod001.Info())},
		{"/example.com/mod001/@v/latest.info", 200, string(mod001.Info())},
		{"/example.com/mod001/@v/v1.1.info", 200, string(find("example.com/mod001", "v1.1.0").Info())},
		{"/example.com/!upper!case/!mod/@v/list", 200, "v1.0.0\nv1.1.0\n"},
		{"/example.com/!upper!case/!mod/@v/v1.1.0.zip", 200, string(upper.Zip)},
		{"/example.com/uppercase/mod/@v/list", 404, "not found: example.com/uppercase/mod@list"},
		{"/example.com/legacy/@latest", 200, string(legacy.Info())},
		{"/example.com/legacy/@v/v2.0.0+incompatible.mod", 200, "module example.com/legacy\n"},
		{"/example.com/legacy/@v/v2.0.0.mod", 404, "not found: example.com/legacy@v2.0.0"},
		{"/example.com/pseudo/@v/list", 200, ""},
		{"/example.com/pseudo/@latest", 200, `{"Version":"v0.0.0-20240102030405-abcdefabcdef","Time":"2024-01-02T03:04:05Z"}`},
		{"/example.com/pseudo/@v/" + moduletest.PseudoVersion + ".zip", 200, string(pseudo.Zip)},
		{"/example.com/mod000/@v/v1.9.0.info", 404, "not found: example.com/mod000@v1.9.0"},
		{"/example.com/mod000/@v/master.mod", 404, "not found: example.com/mod000@master"},
		{"/example.com/nope/@v/v1.0.0.zip", 404, "not found: example.com/nope@v1.0.0"},
		{"/example.com/mod000/@v/v1.0.0.txt", 404, "not found: /example.com/mod000/@v/v1.0.0.txt"},
		{"/example.com/nope/@latest", 404, "not found: example.com/nope@latest"},
		{"/", 404, "not found: /"},
		{"/example.com/mod000/@v/latest", 404, "not found: /example.com/mod000/@v/latest"},
	} {
		r := get(t, s.URL+tc.path)
		if r.code != tc.code || r.body != tc.body {
			t.Errorf("GET %s = %d %q, want %d %q", tc.path, r.code, trunc(r.body), tc.code, trunc(tc.body))
		}
		if r.hdr.Get("Content-Length") != fmt.Sprint(len(r.body)) {
			t.Errorf("GET %s: Content-Length %q, body %d bytes", tc.path, r.hdr.Get("Content-Length"), len(r.body))
		}
		if tc.code == 404 && !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/plain") {
			t.Errorf("GET %s: 404 Content-Type %q", tc.path, r.hdr.Get("Content-Type"))
		}
	}

	zipURL := s.URL + "/example.com/mod000/@v/v1.1.0.zip"
	full := get(t, zipURL)
	if full.hdr.Get("ETag") == "" || full.hdr.Get("Last-Modified") != "Tue, 02 Jan 2024 00:00:00 GMT" {
		t.Errorf("zip validators: ETag %q, Last-Modified %q", full.hdr.Get("ETag"), full.hdr.Get("Last-Modified"))
	}
	if r := get(t, zipURL, "Range", "bytes=10-19"); r.code != 206 || r.body != string(mod000.Zip[10:20]) {
		t.Errorf("range request: %d %q", r.code, r.body)
	}
	if r := get(t, zipURL, "If-None-Match", full.hdr.Get("ETag")); r.code != 304 {
		t.Errorf("If-None-Match: %d", r.code)
	}
	resp, err := http.Post(zipURL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func TestServerInstrumentation(t *testing.T) {
	t.Parallel()
	vs := moduletest.Graph(10)
	s := moduletest.NewServer(vs)
	defer s.Close()

	list := "/example.com/mod000/@v/list"
	get(t, s.URL+list)
	get(t, s.URL+list)
	z := get(t, s.URL+"/example.com/mod000/@v/v1.0.0.zip")
	if s.Requests(list) != 2 || s.TotalRequests() != 3 {
		t.Errorf("Requests(list) = %d, TotalRequests = %d; want 2, 3", s.Requests(list), s.TotalRequests())
	}
	if want := int64(2*len("v1.0.0\nv1.1.0\n") + len(z.body)); s.BytesSent() != want {
		t.Errorf("BytesSent = %d, want %d", s.BytesSent(), want)
	}
	s.Reset()
	if s.Requests(list) != 0 || s.TotalRequests() != 0 || s.BytesSent() != 0 || s.MaxInFlight() != 0 {
		t.Errorf("counters not reset")
	}

	// Concurrent requests overlap while the latency holds them.
	s.SetLatency(200 * time.Millisecond)
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() { get(t, s.URL+list) })
	}
	wg.Wait()
	if s.MaxInFlight() != 5 || s.Requests(list) != 5 {
		t.Errorf("MaxInFlight = %d, Requests = %d; want 5, 5", s.MaxInFlight(), s.Requests(list))
	}

	// A client giving up ends the wait at once.
	s.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+list, nil)
	start := time.Now()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Error("request succeeded despite 1h latency")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("canceled request took %v", d)
	}
	s.SetLatency(0)
}

func TestServerHookAndAdd(t *testing.T) {
	t.Parallel()
	vs := moduletest.Graph(10)
	s := moduletest.NewServer(vs)
	defer s.Close()

	s.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, ".zip") {
			http.Error(w, "boom", http.StatusInternalServerError)
			return true
		}
		return false
	})
	if r := get(t, s.URL+"/example.com/mod000/@v/v1.0.0.zip"); r.code != 500 {
		t.Errorf("hooked zip: %d", r.code)
	}
	if r := get(t, s.URL+"/example.com/mod000/@v/v1.0.0.mod"); r.code != 200 {
		t.Errorf("unhooked mod: %d", r.code)
	}
	if s.Requests("/example.com/mod000/@v/v1.0.0.zip") != 1 {
		t.Error("hooked request not counted")
	}
	s.SetHandlerHook(nil)
	if r := get(t, s.URL+"/example.com/mod000/@v/v1.0.0.zip"); r.code != 200 {
		t.Errorf("zip after removing hook: %d", r.code)
	}

	nv := *vs[0]
	nv.Version = "v1.5.0"
	nv.Zip = nil // a version whose zip is not (yet) available
	s.Add(&nv)
	if r := get(t, s.URL+"/example.com/mod000/@v/list"); r.body != "v1.0.0\nv1.1.0\nv1.5.0\n" {
		t.Errorf("list after Add = %q", r.body)
	}
	if r := get(t, s.URL+"/example.com/mod000/@latest"); !strings.Contains(r.body, "v1.5.0") {
		t.Errorf("@latest after Add = %q", r.body)
	}
	if r := get(t, s.URL+"/example.com/mod000/@v/v1.5.0.zip"); r.code != 404 {
		t.Errorf("zip-less version: %d", r.code)
	}
}

func TestServerCloseCutsStalledRequests(t *testing.T) {
	t.Parallel()
	s := moduletest.NewServer(moduletest.Graph(10))
	s.SetLatency(time.Hour)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.Get(s.URL + "/example.com/mod000/@v/list")
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	testwait.For(t, func() bool { return s.TotalRequests() != 0 }, "the request to arrive")
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := <-errc; err == nil {
		t.Error("stalled request succeeded after Close")
	}
	if _, err := http.Get(s.URL + "/example.com/mod000/@v/list"); err == nil {
		t.Error("request after Close succeeded")
	}
}

// A file set by path is served verbatim, without validators, ahead of the
// modules, and counted like any request.
func TestSetFileServesVerbatim(t *testing.T) {
	s := moduletest.NewServer(moduletest.Graph(10))
	defer s.Close()
	list := "/" + moduletest.GraphPath(0) + "/@v/list"
	s.SetFile(list, []byte("not a version\n"))
	resp, err := http.Get(s.URL + list)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "not a version\n" || resp.Header.Get("ETag") != "" || resp.Header.Get("Last-Modified") != "" {
		t.Errorf("got %q, ETag %q, Last-Modified %q", body, resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"))
	}
	s.SetFile(list, nil)
	resp, err = http.Get(s.URL + list)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "v1.0.0") {
		t.Errorf("after removing the file: %q, want the module's list", body)
	}
	if n := s.Requests(list); n != 2 {
		t.Errorf("Requests = %d, want 2", n)
	}
}
