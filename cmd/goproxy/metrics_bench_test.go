package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// discardResponse is a ResponseWriter that keeps nothing, so that a
// benchmark measures the proxy.
type discardResponse struct{ h http.Header }

func (d *discardResponse) Header() http.Header         { return d.h }
func (d *discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardResponse) WriteHeader(int)             {}

// BenchmarkWarmHit serves a cached .info from a Proxy's memory and from
// its DirCacher, without Metrics hooks and with the server's (Prometheus
// and the status page's figures, and the access log's holder in the
// request's context), for the cost of the hooks per request.
func BenchmarkWarmHit(b *testing.B) {
	up := moduletest.NewServer(moduletest.Graph(10))
	defer up.Close()
	for _, tier := range []struct {
		name     string
		hotBytes int64
	}{{"hot", 0}, {"DirCacher", -1}} {
		for _, hooks := range []string{"none", "server"} {
			b.Run(tier.name+"/hooks="+hooks, func(b *testing.B) {
				p := &goproxy.Proxy{Cacher: goproxy.DirCacher(b.TempDir()), TempDir: b.TempDir(), HotCacheBytes: tier.hotBytes,
					Env: []string{"GOPROXY=" + up.URL, "GOSUMDB=off"}, Logger: slog.New(slog.DiscardHandler)}
				if hooks == "server" {
					p.Metrics = newServerMetrics().hooks("public", nil)
				}
				if err := p.Init(); err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				r := httptest.NewRequest("GET", "/"+moduletest.GraphPath(1)+"/@v/v1.0.0.info", nil)
				r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, &requestInfo{}))
				w := &discardResponse{h: http.Header{}}
				p.ServeHTTP(w, r)
				p.ServeHTTP(w, r) // warm
				b.ReportAllocs()
				for b.Loop() {
					clear(w.h)
					p.ServeHTTP(w, r)
				}
			})
		}
	}
}

// BenchmarkServerMetricsHooks measures what the server's hooks cost the
// calls the library makes for a hit (Request) and for each chunk of a
// download (Download progress).
func BenchmarkServerMetricsHooks(b *testing.B) {
	h := newServerMetrics().hooks("public", nil)
	ctx := context.WithValue(context.Background(), requestInfoKey{}, &requestInfo{})
	b.Run("Request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.Request(goproxy.RequestMetric{Kind: goproxy.RequestInfo, Status: 200, Cache: goproxy.CacheHot, Bytes: 120, Context: ctx})
		}
	})
	b.Run("Download", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.Download(goproxy.DownloadMetric{Upstream: "https://proxy.golang.org", Event: goproxy.DownloadProgress, InFlight: 1, Bytes: 32 << 10})
		}
	})
}
