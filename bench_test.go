package goproxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
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
