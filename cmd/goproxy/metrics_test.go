package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
)

// sample is one line of the Prometheus text format: a series and its
// value.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scraped is what a scrape of /metrics returned.
type scraped []sample

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// parseMetrics reads the Prometheus text format.
func parseMetrics(t *testing.T, r io.Reader) scraped {
	t.Helper()
	var out scraped
	s := bufio.NewScanner(r)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a sample: %q", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		labels := map[string]string{}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			labels[p[1]], _ = strconv.Unquote(`"` + p[2] + `"`)
		}
		out = append(out, sample{m[1], labels, v})
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sum adds up the samples of name whose labels include match (given as
// key, value pairs).
func (s scraped) sum(name string, match ...string) float64 {
	var total float64
	for _, x := range s {
		if x.name != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(match); i += 2 {
			ok = ok && x.labels[match[i]] == match[i+1]
		}
		if ok {
			total += x.value
		}
	}
	return total
}

// has reports whether a series of name is there.
func (s scraped) has(name string) bool {
	for _, x := range s {
		if x.name == name {
			return true
		}
	}
	return false
}

// scrape GETs a metrics URL with client, failing unless it answers 200.
func scrape(t *testing.T, client *http.Client, url string, header ...string) scraped {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("%s: Content-Type %q", url, ct)
	}
	return parseMetrics(t, resp.Body)
}

// TestMetricsHooksFeedPrometheusAndTheStatusPage reports a scripted set
// of measurements through a repository's hooks: the Prometheus series
// and the status page's figures count them, labels stay within their
// sets, and the access log's holder in the request's context gets the
// cache outcome.
func TestMetricsHooksFeedPrometheusAndTheStatusPage(t *testing.T) {
	m := newServerMetrics()
	rescans := 0
	h := m.hooks("public", func() { rescans++ })
	info := &requestInfo{}
	ctx := httptest.NewRequest("GET", "/", nil).Context()
	ctx = context.WithValue(ctx, requestInfoKey{}, info)
	for _, r := range []goproxy.RequestMetric{
		{Kind: goproxy.RequestZip, Status: 200, Cache: goproxy.CacheMiss, Bytes: 1000, Duration: time.Second},
		{Kind: goproxy.RequestZip, Status: 200, Cache: goproxy.CacheHit, Bytes: 1000, Duration: time.Millisecond},
		{Kind: goproxy.RequestInfo, Status: 304, Cache: goproxy.CacheHot, Duration: time.Microsecond},
		{Kind: goproxy.RequestList, Status: 200, Cache: goproxy.CacheStale, Bytes: 10},
		{Kind: goproxy.RequestMod, Status: 404, Cache: goproxy.CacheNotFoundMemo},
		{Kind: goproxy.RequestMod, Status: 502, Cache: goproxy.CacheMiss},
		{Kind: goproxy.RequestPublish, Status: 201},
		{Kind: goproxy.RequestSumDB, Status: 200, Cache: goproxy.CacheHit, Context: ctx},
	} {
		h.Request(r)
	}
	if info.cache != "hit" {
		t.Errorf("the access log's holder got cache %q, want hit", info.cache)
	}
	h.UpstreamFetch(goproxy.UpstreamFetchMetric{Upstream: "https://proxy.example.com", Kind: goproxy.RequestZip, Outcome: goproxy.FetchOK, Status: 200, Bytes: 1000, Duration: time.Second})
	h.UpstreamFetch(goproxy.UpstreamFetchMetric{Upstream: "direct", Kind: goproxy.RequestMod, Outcome: goproxy.FetchError, Duration: time.Second})
	h.Retry(goproxy.RetryMetric{Upstream: "https://proxy.example.com", Kind: goproxy.RequestZip, Attempt: 1, Status: 503})
	h.Retry(goproxy.RetryMetric{Upstream: "https://proxy.example.com", Kind: goproxy.RequestZip, Attempt: 2})
	h.Verification(goproxy.VerificationMetric{DB: "sum.golang.org", Kind: goproxy.RequestZip, Outcome: goproxy.VerifyOK})
	h.Download(goproxy.DownloadMetric{Upstream: "https://proxy.example.com", Event: goproxy.DownloadStarted, InFlight: 1})
	h.Download(goproxy.DownloadMetric{Upstream: "https://proxy.example.com", Event: goproxy.DownloadProgress, InFlight: 1, Bytes: 600})
	h.Download(goproxy.DownloadMetric{Upstream: "https://proxy.example.com", Event: goproxy.DownloadProgress, InFlight: 1, Bytes: 400})
	h.Download(goproxy.DownloadMetric{Upstream: "direct", Event: goproxy.DownloadStarted, InFlight: 2})
	h.Download(goproxy.DownloadMetric{Upstream: "https://proxy.example.com", Event: goproxy.DownloadEnded, InFlight: 1})
	h.SharedFetch(goproxy.SharedFetchMetric{Kind: goproxy.RequestZip})
	h.Eviction(goproxy.EvictionMetric{Reason: goproxy.EvictedBySize, Files: 3, Bytes: 3000})
	h.Eviction(goproxy.EvictionMetric{Reason: goproxy.EvictedByAge, Files: 1, Bytes: 100})
	h.CacheSize(goproxy.CacheSizeMetric{Bytes: 5000, Entries: 7})
	h.Scrub(goproxy.ScrubMetric{Kind: goproxy.RequestZip, Outcome: goproxy.ScrubOK, Bytes: 700})
	h.Scrub(goproxy.ScrubMetric{Kind: goproxy.RequestZip, Outcome: goproxy.ScrubMismatch, Removed: true, Bytes: 300})

	rec := httptest.NewRecorder()
	m.handler(slog.New(slog.DiscardHandler)).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	s := parseMetrics(t, rec.Body)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"goproxy_requests_total", []string{"repository", "public"}, 8},
		{"goproxy_requests_total", []string{"kind", "zip", "cache", "miss", "code", "2xx"}, 1},
		{"goproxy_requests_total", []string{"kind", "info", "cache", "hot", "code", "3xx"}, 1},
		{"goproxy_requests_total", []string{"kind", "mod", "code", "5xx"}, 1},
		{"goproxy_requests_total", []string{"kind", "publish", "cache", "none", "code", "2xx"}, 1},
		{"goproxy_request_duration_seconds_count", []string{"kind", "zip"}, 2},
		{"goproxy_request_duration_seconds_sum", []string{"kind", "zip"}, 1.001},
		{"goproxy_response_bytes_total", []string{"kind", "zip"}, 2000},
		{"goproxy_upstream_fetches_total", []string{"upstream", "https://proxy.example.com", "outcome", "ok"}, 1},
		{"goproxy_upstream_fetches_total", []string{"upstream", "direct", "kind", "mod", "outcome", "error"}, 1},
		{"goproxy_upstream_fetch_bytes_total", nil, 1000},
		{"goproxy_upstream_fetch_duration_seconds_count", nil, 2},
		{"goproxy_upstream_retries_total", []string{"code", "5xx"}, 1},
		{"goproxy_upstream_retries_total", []string{"code", "error"}, 1},
		{"goproxy_checksum_verifications_total", []string{"db", "sum.golang.org", "outcome", "ok"}, 1},
		{"goproxy_downloads_in_flight", []string{"upstream", "https://proxy.example.com"}, 0},
		{"goproxy_downloads_in_flight", []string{"upstream", "direct"}, 1},
		{"goproxy_download_bytes_total", nil, 1000},
		{"goproxy_shared_fetches_total", []string{"kind", "zip"}, 1},
		{"goproxy_evictions_total", nil, 2},
		{"goproxy_evicted_files_total", []string{"reason", "size"}, 3},
		{"goproxy_evicted_bytes_total", []string{"reason", "age"}, 100},
		{"goproxy_eviction_runs_total", nil, 1},
		{"goproxy_cache_bytes", []string{"repository", "public"}, 5000},
		{"goproxy_cache_entries", []string{"repository", "public"}, 7},
		{"goproxy_scrubbed_files_total", []string{"kind", "zip", "outcome", "mismatch", "removed", "true"}, 1},
		{"goproxy_scrubbed_files_total", []string{"outcome", "ok", "removed", "false"}, 1},
		{"goproxy_scrubbed_bytes_total", nil, 1000},
	} {
		if got := s.sum(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "go_build_info"} {
		if !s.has(name) {
			t.Errorf("no %s", name)
		}
	}
	for _, x := range s {
		for k, v := range x.labels {
			if strings.Contains(v, "example.com/") && k != "upstream" {
				t.Errorf("%s has a module path in label %s: %q", x.name, k, v)
			}
		}
	}

	stats := m.requestStats("public")
	// Module files only (not publish, not sumdb): hits are the cache
	// hit, the hot 304 and the stale list; the miss is the zip fetched.
	if want := (requestStats{Requests: 6, Hits: 3, Misses: 1, NotFound: 1, Failed: 1}); stats != want {
		t.Errorf("the status page's request stats: %+v, want %+v", stats, want)
	}
	cs := m.cacheStats("public")
	if cs.Size.Bytes != 5000 || cs.Size.Entries != 7 || cs.Size.By != "eviction run" || cs.EvictionRuns != 1 ||
		cs.Evictions != 2 || cs.EvictedFiles != 4 || cs.EvictedBytes != 3100 {
		t.Errorf("the status page's cache stats: %+v", cs)
	}
	if rescans != 1 {
		t.Errorf("%d walks asked for after a run that evicted, want 1", rescans)
	}
	// A walk older than the run does not replace its figures; a newer
	// one does.
	m.measured("public", cacheSize{Bytes: 1, Entries: 1, At: cs.Size.At.Add(-time.Second), By: "walk", Known: true})
	if got := m.cacheStats("public").Size; got.By != "eviction run" {
		t.Errorf("an older walk replaced the run's figures: %+v", got)
	}
	m.measured("public", cacheSize{Bytes: 2, Entries: 1, At: time.Now().Add(time.Second), By: "walk", Known: true})
	if got := m.cacheStats("public").Size; got.By != "walk" || got.Bytes != 2 {
		t.Errorf("a newer walk did not replace the run's figures: %+v", got)
	}
}

// TestEveryMetricIsDocumented checks that the README's table of metrics
// names every metric the server exports of its own.
func TestEveryMetricIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// Vectors without series are not gathered: give each one.
	m := newServerMetrics()
	h := m.hooks("r", nil)
	h.Request(goproxy.RequestMetric{})
	h.UpstreamFetch(goproxy.UpstreamFetchMetric{Outcome: goproxy.FetchOK})
	h.Retry(goproxy.RetryMetric{})
	h.Verification(goproxy.VerificationMetric{})
	h.Download(goproxy.DownloadMetric{Event: goproxy.DownloadStarted})
	h.Download(goproxy.DownloadMetric{Event: goproxy.DownloadProgress})
	h.SharedFetch(goproxy.SharedFetchMetric{})
	h.CacheSize(goproxy.CacheSizeMetric{})
	h.Eviction(goproxy.EvictionMetric{})
	m.reloaded(nil)
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, "goproxy_") {
			continue
		}
		n++
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("the README does not document %s", name)
		}
	}
	if n < 18 {
		t.Errorf("only %d goproxy_ metrics gathered", n)
	}
}
