package goproxy

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/testwait"
)

// conditionalFiles are an upstream's files large enough to be gzipped: a
// version list (mutable) and a .mod (immutable, kept in the hot tier).
func conditionalFiles(t *testing.T) map[string][]byte {
	files := testModuleFiles(t)
	var list, mod strings.Builder
	for i := range 300 {
		list.WriteString("v1.0." + strconv.Itoa(i) + "\n")
	}
	mod.WriteString("module example.com/a\n")
	for range 100 {
		mod.WriteString("// a comment long enough to make the file worth compressing\n")
	}
	files["/example.com/a/@v/list"] = []byte(list.String())
	files["/example.com/a/@v/v1.0.0.mod"] = []byte(mod.String())
	return files
}

// Every precondition, and Range, gets the answer http.ServeContent gives
// for the content as stored, from every source, when the client takes
// gzip: 304 and 412 as for the uncompressed content, ranges of the
// uncompressed content, and a full answer compressed, tagged with the weak
// form of the content's tag.
func TestConditionalRequestsThroughGzip(t *testing.T) {
	files := conditionalFiles(t)
	const (
		list = "/example.com/a/@v/list"
		mod  = "/example.com/a/@v/v1.0.0.mod"
	)
	// The content's tag, as any proxy answers it.
	etagOf := func(path string) string {
		up := newUpstream(t, files)
		return do(newTestProxy(t, up.URL), "GET", path).Header().Get("ETag")
	}
	past := time.Now().Add(-48 * time.Hour).UTC().Format(http.TimeFormat)
	future := time.Now().Add(48 * time.Hour).UTC().Format(http.TimeFormat)

	tiers := []struct {
		name, path, from string
		hotBytes         int64
		warm             bool // asked once before, to fill the cache or the hot tier
	}{
		{"fetched list", list, "miss", 0, false},
		{"cached list", list, "hit", 0, true},
		{"fetched mod", mod, "miss", 0, false},
		{"hot mod", mod, "hot", 0, true},
		{"cached mod", mod, "hit", -1, true},
	}
	for _, tier := range tiers {
		etag := etagOf(tier.path)
		body := files[tier.path]
		cases := []struct {
			name   string
			header []string
			status int
			gzip   bool
		}{
			{"If-Match of the content", []string{"If-Match", etag}, 200, true},
			{"If-Match of other content", []string{"If-Match", `"other"`}, 412, false},
			{"If-None-Match of the content", []string{"If-None-Match", etag}, 304, false},
			{"If-None-Match of its compressed form", []string{"If-None-Match", weakETag(etag)}, 304, false},
			{"If-None-Match of other content", []string{"If-None-Match", `"other"`}, 200, true},
			{"If-Modified-Since a later time", []string{"If-Modified-Since", future}, 304, false},
			{"If-Modified-Since an earlier time", []string{"If-Modified-Since", past}, 200, true},
			{"If-Unmodified-Since an earlier time", []string{"If-Unmodified-Since", past}, 412, false},
			{"If-Unmodified-Since a later time", []string{"If-Unmodified-Since", future}, 200, true},
			{"Range", []string{"Range", "bytes=10-19"}, 206, false},
			{"If-Range of the content", []string{"Range", "bytes=10-19", "If-Range", etag}, 206, false},
			{"If-Range of other content", []string{"Range", "bytes=10-19", "If-Range", `"other"`}, 200, true},
			{"no condition", nil, 200, true},
		}
		for _, tt := range cases {
			t.Run(tier.name+"/"+tt.name, func(t *testing.T) {
				up := newUpstream(t, files)
				var logs syncBuffer
				p := newTestProxy(t, up.URL)
				p.Logger = newBufferLogger(&logs)
				p.HotCacheBytes = tier.hotBytes
				if tier.warm {
					do(p, "GET", tier.path)
					testwait.For(t, p.flights.idle) // stored
				}
				w := do(p, "GET", tier.path, append([]string{"Accept-Encoding", "gzip"}, tt.header...)...)
				if w.Code != tt.status {
					t.Fatalf("status %d, want %d; headers %v", w.Code, tt.status, w.Header())
				}
				if want := "outcome=" + tier.from + " status=" + strconv.Itoa(tt.status); !strings.Contains(logs.String(), want) {
					t.Errorf("answered from elsewhere than %s:\n%s", tier.from, logs.String())
				}
				gzipped := w.Header().Get("Content-Encoding") == "gzip"
				if gzipped != tt.gzip {
					t.Errorf("Content-Encoding %q, want gzip %v", w.Header().Get("Content-Encoding"), tt.gzip)
				}
				switch {
				case gzipped:
					zr, err := gzip.NewReader(w.Body)
					if err != nil {
						t.Fatal(err)
					}
					if got, _ := io.ReadAll(zr); !bytes.Equal(got, body) {
						t.Error("the compressed body is not the content")
					}
					if got := w.Header().Get("ETag"); got != weakETag(etag) {
						t.Errorf("ETag %q, want %q", got, weakETag(etag))
					}
					if w.Header().Get("Content-Length") != strconv.Itoa(len(w.Body.Bytes())) && w.Body.Len() != 0 {
						t.Errorf("Content-Length %q", w.Header().Get("Content-Length"))
					}
				case tt.status == 206:
					if !bytes.Equal(w.Body.Bytes(), body[10:20]) {
						t.Errorf("range %q, want %q", w.Body, body[10:20])
					}
				case tt.status == 304 || tt.status == 412:
					if w.Body.Len() != 0 && tt.status == 304 {
						t.Errorf("a 304 with a body: %q", w.Body)
					}
				}
				if tt.status != 412 && w.Header().Get("Vary") != "Accept-Encoding" {
					t.Errorf("Vary %q", w.Header().Get("Vary"))
				}
			})
		}
	}
}

// A file keeps its entity tag and Last-Modified from the answer that
// fetched it to the answers from the cache, so that a client revalidating
// with the first answer's tag gets 304.
func TestValidatorsHoldFromFetchToCache(t *testing.T) {
	for _, cacher := range []struct {
		name string
		new  func(t *testing.T) Cacher
	}{
		{"MemCacher", func(t *testing.T) Cacher { return &MemCacher{} }},
		{"DirCacher", func(t *testing.T) Cacher { return DirCacher(t.TempDir()) }},
	} {
		for _, path := range []string{"/example.com/a/@v/list", "/example.com/a/@latest", "/example.com/a/@v/v1.0.0.mod", "/example.com/a/@v/v1.0.0.zip"} {
			t.Run(cacher.name+path, func(t *testing.T) {
				up := newUpstream(t, testModuleFiles(t))
				p := newTestProxy(t, up.URL)
				p.Cacher = cacher.new(t)
				p.HotCacheBytes = -1
				first := do(p, "GET", path)
				testwait.For(t, p.flights.idle) // stored
				etag, lastModified := first.Header().Get("ETag"), first.Header().Get("Last-Modified")
				if etag == "" || lastModified == "" {
					t.Fatalf("the first answer has ETag %q, Last-Modified %q", etag, lastModified)
				}
				if w := do(p, "GET", path, "If-None-Match", etag); w.Code != http.StatusNotModified {
					t.Errorf("If-None-Match of the first answer's tag: %d, want 304", w.Code)
				}
				if w := do(p, "GET", path); w.Header().Get("Last-Modified") != lastModified || w.Header().Get("ETag") != etag {
					t.Errorf("from the cache: ETag %q, Last-Modified %q; the first answer had %q, %q",
						w.Header().Get("ETag"), w.Header().Get("Last-Modified"), etag, lastModified)
				}
				if n := up.Requests(path); n != 1 {
					t.Errorf("fetched %d times, want 1", n)
				}
			})
		}
	}
}

// A 304 carries the entity tag the full answer to the same request would
// have carried (RFC 9110, 15.4.5): the weak one when the client takes
// gzip, the strong one otherwise. A cache that refreshes its stored gzip
// answer with the 304's headers must not come away with a strong tag for
// it, which it could then use in If-Range.
func TestNotModifiedCarriesTheTagOfTheAnswerItStandsFor(t *testing.T) {
	files := conditionalFiles(t)
	for _, path := range []string{"/example.com/a/@v/list", "/example.com/a/@v/v1.0.0.mod"} {
		t.Run(path, func(t *testing.T) {
			up := newUpstream(t, files)
			p := newTestProxy(t, up.URL)
			strong := do(p, "GET", path).Header().Get("ETag")
			testwait.For(t, p.flights.idle) // stored
			weak := do(p, "GET", path, "Accept-Encoding", "gzip").Header().Get("ETag")
			if weak != weakETag(strong) || weak == strong {
				t.Fatalf("tags %q and %q, want a strong one and its weak form", strong, weak)
			}
			for _, tt := range []struct {
				header []string
				want   string
			}{
				{[]string{"Accept-Encoding", "gzip", "If-None-Match", weak}, weak},
				{[]string{"Accept-Encoding", "gzip", "If-None-Match", strong}, weak},
				{[]string{"If-None-Match", weak}, strong},
				{[]string{"If-None-Match", strong}, strong},
			} {
				w := do(p, "GET", path, tt.header...)
				if w.Code != http.StatusNotModified || w.Header().Get("ETag") != tt.want {
					t.Errorf("%q: %d with ETag %q, want 304 with %q", tt.header, w.Code, w.Header().Get("ETag"), tt.want)
				}
			}
		})
	}
}

// The proxy adds Accept-Encoding to a Vary header that a handler around it
// (CORS, for one) has set, rather than replacing it: a shared cache would
// otherwise hand one origin's answer to another.
func TestVaryKeepsWhatAnOuterHandlerSet(t *testing.T) {
	up := newUpstream(t, conditionalFiles(t))
	p := newTestProxy(t, up.URL)
	outer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Origin")
		p.ServeHTTP(w, r)
	})
	for _, path := range []string{"/example.com/a/@v/list", "/example.com/a/@v/v1.0.0.mod", "/example.com/a/@v/v1.0.0.mod"} {
		w := do(outer, "GET", path, "Accept-Encoding", "gzip")
		testwait.For(t, p.flights.idle) // stored: the second .mod is hot
		if got := w.Header().Values("Vary"); strings.Join(got, ", ") != "Origin, Accept-Encoding" {
			t.Errorf("GET %s: Vary %q, want Origin and Accept-Encoding", path, got)
		}
	}
}

// A file read from the cache is remembered with its time and size, so
// that conditional requests do not read it again: a file stored again,
// same size, other bytes, is read again and gets its own tag.
func TestAFileStoredAgainIsNotAnsweredFromWhatWasReadBefore(t *testing.T) {
	p := newTestProxy(t, "off")
	p.Cacher = DirCacher(t.TempDir())
	p.MutableTTL = time.Hour
	const name = "example.com/a/@v/list"
	ctx := t.Context()
	old, updated := "v1.0.0\nv1.0.1\n", "v1.0.0\nv1.0.2\n"
	if err := p.Cacher.Put(ctx, name, strings.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	first := do(p, "GET", "/"+name)
	if first.Code != 200 || first.Body.String() != old {
		t.Fatalf("%d %q", first.Code, first.Body)
	}
	if w := do(p, "GET", "/"+name, "If-None-Match", first.Header().Get("Etag")); w.Code != http.StatusNotModified {
		t.Fatalf("unchanged, If-None-Match: %d", w.Code)
	}
	if err := p.Cacher.Put(ctx, name, strings.NewReader(updated)); err != nil {
		t.Fatal(err)
	}
	w := do(p, "GET", "/"+name, "If-None-Match", first.Header().Get("Etag"))
	if w.Code != 200 || w.Body.String() != updated || w.Header().Get("Etag") == first.Header().Get("Etag") {
		t.Errorf("stored again: %d %q, tag %s (was %s)", w.Code, w.Body, w.Header().Get("Etag"), first.Header().Get("Etag"))
	}
}

// goModRequiring is a go.mod of example.com/a requiring n modules.
func goModRequiring(n int) string {
	var b strings.Builder
	b.WriteString("module example.com/a\n\nrequire (\n")
	for i := range n {
		fmt.Fprintf(&b, "\texample.com/dep%03d v1.0.0\n", i)
	}
	b.WriteString(")\n")
	return b.String()
}

// A hot file is answered with the headers of its kind but for
// Accept-Ranges, and a short one without a Content-Length of its own:
// through a server, every answer still carries its length (net/http works
// it out for a short body), a HEAD too, and a Range is still answered.
// Vary is sent only where a compressed answer is possible.
func TestHotAnswersCarryTheirLength(t *testing.T) {
	files := map[string][]byte{
		"/example.com/a/@v/v1.0.0.mod": []byte("module example.com/a\n"),
		"/example.com/a/@v/v1.1.0.mod": []byte(goModRequiring(200)),
	}
	up := newUpstream(t, files)
	p := newTestProxy(t, up.URL)
	p.Prefetch.Off = true
	srv := httptest.NewServer(p)
	defer srv.Close()
	send := func(method, path string, header ...string) (*http.Response, []byte) {
		t.Helper()
		r, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Accept-Encoding", "identity")
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		resp, err := srv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	for path, want := range files {
		send("GET", path)
		testwait.For(t, p.flights.idle) // stored: now hot
		resp, body := send("GET", path)
		if resp.StatusCode != 200 || !bytes.Equal(body, want) {
			t.Fatalf("GET %s: %d, %d bytes", path, resp.StatusCode, len(body))
		}
		if resp.ContentLength != int64(len(want)) || len(resp.TransferEncoding) > 0 {
			t.Errorf("GET %s: Content-Length %d, transfer encoding %q, want %d", path, resp.ContentLength, resp.TransferEncoding, len(want))
		}
		if got, wantVary := resp.Header.Get("Vary"), len(want) >= gzipMinSize; (got != "") != wantVary {
			t.Errorf("GET %s (%d bytes): Vary %q", path, len(want), got)
		}
		if resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" || resp.Header.Get("Cache-Control") == "" {
			t.Errorf("GET %s: headers %v", path, resp.Header)
		}
		if resp, _ := send("HEAD", path); resp.StatusCode != 200 || resp.ContentLength != int64(len(want)) {
			t.Errorf("HEAD %s: %d, Content-Length %d, want %d", path, resp.StatusCode, resp.ContentLength, len(want))
		}
		if resp, body := send("GET", path, "Range", "bytes=2-9"); resp.StatusCode != 206 || !bytes.Equal(body, want[2:10]) {
			t.Errorf("GET %s, a range: %d %q", path, resp.StatusCode, body)
		}
	}
}

// A hot compressed answer shorter than net/http's buffer goes without a
// Content-Length of ours too: over HTTP/1.1 and HTTP/2 it still carries
// the compressed body's length, a HEAD too, and says Vary.
func TestHotCompressedAnswersCarryTheirLength(t *testing.T) {
	want := goModRequiring(60)
	const path = "/example.com/a/@v/v1.0.0.mod"
	up := newUpstream(t, map[string][]byte{path: []byte(want)})
	p := newTestProxy(t, up.URL)
	p.Prefetch.Off = true
	for _, h2 := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(p)
		srv.EnableHTTP2 = h2
		srv.StartTLS()
		client := srv.Client()
		client.Transport.(*http.Transport).DisableCompression = true
		for _, method := range []string{"GET", "GET", "HEAD"} { // a miss, then hot
			r, err := http.NewRequest(method, srv.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Accept-Encoding", "gzip")
			resp, err := client.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%s over %s: %d %v", method, resp.Proto, resp.StatusCode, err)
			}
			testwait.For(t, p.flights.idle) // stored: now hot
			if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Vary") != "Accept-Encoding" || len(resp.TransferEncoding) > 0 {
				t.Errorf("%s over %s: headers %v, transfer encoding %q", method, resp.Proto, resp.Header, resp.TransferEncoding)
			}
			if method == "HEAD" {
				if resp.ContentLength <= 0 || resp.ContentLength >= int64(len(want)) {
					t.Errorf("HEAD over %s: Content-Length %d, want that of the compressed body", resp.Proto, resp.ContentLength)
				}
				continue
			}
			if resp.ContentLength != int64(len(body)) || len(body) >= serverBuffered {
				t.Errorf("GET over %s: Content-Length %d for %d bytes (want a compressed body under %d)", resp.Proto, resp.ContentLength, len(body), serverBuffered)
			}
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(zr); err != nil || string(got) != want {
				t.Errorf("GET over %s: the body does not gunzip to the file (%v)", resp.Proto, err)
			}
		}
		srv.Close()
	}
}
