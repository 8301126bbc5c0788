package goproxy

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// discardWriter is a ResponseWriter that keeps nothing, so benchmarks
// measure the handler rather than a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkServeCached measures a warm request for a small immutable file,
// the most frequent request a busy proxy answers, from each cacher. The
// baseline is a handler writing a fixed body of the same size.
func BenchmarkServeCached(b *testing.B) {
	files := testModuleFiles(&testing.T{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(files[r.URL.Path])
	}))
	defer up.Close()
	const path = "/example.com/a/@v/v1.0.0.info"
	body := files[path]
	b.Run("baseline", func(b *testing.B) {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		})
		benchmarkHandler(b, h, path)
	})
	for _, tt := range []struct {
		name string
		p    *Proxy
	}{
		{"hot", &Proxy{Cacher: &MemCacher{}}},
		{"DirCacher", &Proxy{Cacher: DirCacher(b.TempDir()), HotCacheBytes: -1}},
		{"MemCacher", &Proxy{Cacher: &MemCacher{}, HotCacheBytes: -1}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			tt.p.Env = []string{"GOPROXY=" + up.URL, "GOSUMDB=off"}
			tt.p.Transport = http.DefaultTransport
			tt.p.TempDir = b.TempDir()
			b.Cleanup(func() { tt.p.Close() })
			benchmarkHandler(b, tt.p, path)
		})
	}
}

func benchmarkHandler(b *testing.B, h http.Handler, path string) {
	r := httptest.NewRequest("GET", path, nil)
	r.Header.Set("Accept-Encoding", "gzip")
	w := &discardWriter{h: http.Header{}}
	h.ServeHTTP(w, r) // fill the caches
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
	}
}

// BenchmarkConditionalList measures a conditional request for a version
// list of about 160 KB from the cache (lists are never in the hot tier):
// a 304 to If-Modified-Since or If-None-Match, and a Range, against the
// full gzip-compressed 200 the same client would get without them. A
// 304 must cost neither the compression nor a hash of the whole list.
func BenchmarkConditionalList(b *testing.B) {
	var list strings.Builder
	for i := 0; list.Len() < 160<<10; i++ {
		fmt.Fprintf(&list, "v1.%d.%d\n", i/100, i%100)
	}
	body := []byte(list.String())
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	defer up.Close()
	const path = "/example.com/a/@v/list"
	p := &Proxy{Cacher: DirCacher(b.TempDir()), MutableTTL: time.Hour, TempDir: b.TempDir(),
		Env: []string{"GOPROXY=" + up.URL, "GOSUMDB=off"}, Transport: http.DefaultTransport,
		Logger: slog.New(slog.DiscardHandler)}
	b.Cleanup(func() { p.Close() })
	first := do(p, "GET", path)
	if first.Code != 200 {
		b.Fatalf("%d %s", first.Code, first.Body)
	}
	etag := first.Header().Get("Etag")
	for _, tt := range []struct {
		name   string
		header []string
		want   int
	}{
		{"full gzip 200", nil, 200},
		{"304 If-Modified-Since", []string{"If-Modified-Since", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}, 304},
		{"304 If-None-Match", []string{"If-None-Match", etag}, 304},
		{"206 Range", []string{"Range", "bytes=0-99"}, 206},
	} {
		b.Run(tt.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", path, nil)
			r.Header.Set("Accept-Encoding", "gzip")
			for i := 0; i < len(tt.header); i += 2 {
				r.Header.Set(tt.header[i], tt.header[i+1])
			}
			w := &statusRecorder{discardWriter: discardWriter{h: http.Header{}}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.status = 0
				p.ServeHTTP(w, r)
			}
			if w.status != tt.want {
				b.Fatalf("status %d, want %d", w.status, tt.want)
			}
		})
	}
}

// statusRecorder is a discardWriter that keeps the status.
type statusRecorder struct {
	discardWriter
	status int
}

func (w *statusRecorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	return len(b), nil
}
