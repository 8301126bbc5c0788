package main

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/goproxy-team/goproxy"
)

// serverMetrics receives what every repository's Proxy measures, through
// the library's Metrics hooks, and keeps it twice: in Prometheus
// collectors for /metrics, and as the figures the status page shows. It
// outlives the Proxies: a reload that makes a repository's Proxy anew
// keeps its counts.
//
// Labels are bounded: repository names and upstreams come from the
// configuration, the rest from the library's constant sets, status codes
// by class. Never a module path or version.
type serverMetrics struct {
	registry *prometheus.Registry

	requests        *prometheus.CounterVec   // repository, kind, code, cache
	requestDuration *prometheus.HistogramVec // repository, kind, cache
	responseBytes   *prometheus.CounterVec   // repository, kind
	fetches         *prometheus.CounterVec   // repository, upstream, kind, outcome
	fetchDuration   *prometheus.HistogramVec // repository, upstream, kind
	fetchBytes      *prometheus.CounterVec   // repository, upstream, kind
	retries         *prometheus.CounterVec   // repository, upstream, kind, code
	verifications   *prometheus.CounterVec   // repository, db, kind, outcome
	inFlight        *prometheus.GaugeVec     // repository, upstream
	downloadBytes   *prometheus.CounterVec   // repository, upstream
	sharedFetches   *prometheus.CounterVec   // repository, kind
	cacheBytes      *prometheus.GaugeVec     // repository
	cacheEntries    *prometheus.GaugeVec     // repository
	evictionRuns    *prometheus.CounterVec   // repository
	evictions       *prometheus.CounterVec   // repository, reason
	evictedFiles    *prometheus.CounterVec   // repository, reason
	evictedBytes    *prometheus.CounterVec   // repository, reason
	scrubbedFiles   *prometheus.CounterVec   // repository, kind, outcome, removed
	scrubbedBytes   *prometheus.CounterVec   // repository
	reloads         *prometheus.CounterVec   // outcome

	mu    sync.Mutex
	repos map[string]*repoFigures // by repository name
}

// repoFigures are a repository's figures for the status page.
type repoFigures struct {
	requests, hits, misses, notFound, failed    atomic.Int64
	runs, evictions, evictedFiles, evictedBytes atomic.Int64
	// evictedSinceRun counts removals since the last eviction run ended,
	// to have the store walked again after a run that removed something.
	evictedSinceRun atomic.Int64

	mu   sync.Mutex
	size cacheSize
}

// Buckets of the duration histograms, in seconds: answers from the cache
// take microseconds to milliseconds, fetches seconds to minutes.
var (
	requestBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
	fetchBuckets   = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

func newServerMetrics() *serverMetrics {
	m := &serverMetrics{registry: prometheus.NewRegistry(), repos: map[string]*repoFigures{}}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "goproxy", Name: name, Help: help}, labels)
		m.registry.MustRegister(c)
		return c
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "goproxy", Name: name, Help: help}, labels)
		m.registry.MustRegister(g)
		return g
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "goproxy", Name: name, Help: help, Buckets: buckets}, labels)
		m.registry.MustRegister(h)
		return h
	}
	m.requests = counter("requests_total",
		"Requests answered by a repository, by kind, status class and cache outcome.",
		"repository", "kind", "code", "cache")
	m.requestDuration = histogram("request_duration_seconds",
		"Time from a request's arrival to the end of its response.", requestBuckets,
		"repository", "kind", "cache")
	m.responseBytes = counter("response_bytes_total",
		"Body bytes written to clients.", "repository", "kind")
	m.fetches = counter("upstream_fetches_total",
		"Fetches of a file from one upstream, retries included, by outcome.",
		"repository", "upstream", "kind", "outcome")
	m.fetchDuration = histogram("upstream_fetch_duration_seconds",
		"Time a fetch from one upstream took, retries and validation included.", fetchBuckets,
		"repository", "upstream", "kind")
	m.fetchBytes = counter("upstream_fetch_bytes_total",
		"Bytes of the files fetched from upstreams (successful fetches).",
		"repository", "upstream", "kind")
	m.retries = counter("upstream_retries_total",
		"Attempts that failed transiently and were tried again, by the status class of the failure (error: no answer, or a cut body).",
		"repository", "upstream", "kind", "code")
	m.verifications = counter("checksum_verifications_total",
		"Checks of .mod and .zip files against a checksum database, by outcome.",
		"repository", "db", "kind", "outcome")
	m.inFlight = gauge("downloads_in_flight",
		"Downloads from upstreams under way.", "repository", "upstream")
	m.downloadBytes = counter("download_bytes_total",
		"Bytes received from upstreams, as they arrive (failed downloads included).",
		"repository", "upstream")
	m.sharedFetches = counter("shared_fetches_total",
		"Requests served by a fetch another request started.", "repository", "kind")
	m.cacheBytes = gauge("cache_bytes",
		"Size of the repository's cache at its last measurement (eviction run or status page walk).", "repository")
	m.cacheEntries = gauge("cache_entries",
		"Files in the repository's cache at its last measurement (eviction run or status page walk).", "repository")
	m.evictionRuns = counter("eviction_runs_total",
		"Eviction runs completed.", "repository")
	m.evictions = counter("evictions_total",
		"Removals by eviction (a module version's files together, or one other entry), by reason.",
		"repository", "reason")
	m.evictedFiles = counter("evicted_files_total",
		"Files removed by eviction, by reason.", "repository", "reason")
	m.evictedBytes = counter("evicted_bytes_total",
		"Bytes removed by eviction, by reason.", "repository", "reason")
	m.scrubbedFiles = counter("scrubbed_files_total",
		"Cached .mod and .zip files a scrub checked, by outcome (ok, mismatch, invalid, unverifiable) and whether it removed them.",
		"repository", "kind", "outcome", "removed")
	m.scrubbedBytes = counter("scrubbed_bytes_total",
		"Bytes of the files scrubs checked.", "repository")
	m.reloads = counter("config_reloads_total",
		"Configuration reloads, by outcome (applied or refused).", "outcome")
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	return m
}

// figures returns the status page figures of a repository, made at its
// first use.
func (m *serverMetrics) figures(repo string) *repoFigures {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.repos[repo]
	if f == nil {
		f = &repoFigures{}
		m.repos[repo] = f
	}
	return f
}

// statusClasses name the classes of HTTP status codes, by hundreds.
var statusClasses = [...]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

func statusClass(code int) string {
	if c := code / 100; c >= 1 && c <= 5 {
		return statusClasses[c]
	}
	return statusClasses[0]
}

// cacheLabel is a cache outcome as a label: "none" for requests that did
// not reach the cache (refused, publish, admin).
func cacheLabel(c goproxy.CacheOutcome) string {
	if c == "" {
		return "none"
	}
	return string(c)
}

// isModuleFile reports whether a request kind reads a module file: what
// the status page's hit ratio is about.
func isModuleFile(k goproxy.RequestKind) bool {
	switch k {
	case goproxy.RequestList, goproxy.RequestLatest, goproxy.RequestInfo, goproxy.RequestMod, goproxy.RequestZip:
		return true
	}
	return false
}

// hooks returns the Metrics hooks of a Proxy of repository repo. They
// are quick and never block: Prometheus' collectors are atomic adds
// behind a read-locked map, the status page's figures atomic adds.
func (m *serverMetrics) hooks(repo string, rescan func()) goproxy.Metrics {
	fig := m.figures(repo)
	// The series of a request, found once per kind, status class and
	// cache outcome: a lookup by labels costs a hit more than the rest of
	// its measuring.
	var series sync.Map // requestSeriesKey -> *requestSeries
	requestSeriesOf := func(r goproxy.RequestMetric) *requestSeries {
		key := requestSeriesKey{r.Kind, r.Status / 100, r.Cache}
		if s, ok := series.Load(key); ok {
			return s.(*requestSeries)
		}
		kind, cache := string(r.Kind), cacheLabel(r.Cache)
		s, _ := series.LoadOrStore(key, &requestSeries{
			requests: m.requests.WithLabelValues(repo, kind, statusClass(r.Status), cache),
			duration: m.requestDuration.WithLabelValues(repo, kind, cache),
			bytes:    m.responseBytes.WithLabelValues(repo, kind),
		})
		return s.(*requestSeries)
	}
	return goproxy.Metrics{
		Request: func(r goproxy.RequestMetric) {
			s := requestSeriesOf(r)
			s.requests.Inc()
			s.duration.Observe(r.Duration.Seconds())
			s.bytes.Add(float64(r.Bytes))
			fig.count(r)
			if r.Context != nil {
				// The request's access log line says where its answer
				// came from.
				if info, ok := r.Context.Value(requestInfoKey{}).(*requestInfo); ok {
					info.cache = string(r.Cache)
				}
			}
		},
		UpstreamFetch: func(f goproxy.UpstreamFetchMetric) {
			kind := string(f.Kind)
			m.fetches.WithLabelValues(repo, f.Upstream, kind, string(f.Outcome)).Inc()
			m.fetchDuration.WithLabelValues(repo, f.Upstream, kind).Observe(f.Duration.Seconds())
			if f.Outcome == goproxy.FetchOK {
				m.fetchBytes.WithLabelValues(repo, f.Upstream, kind).Add(float64(f.Bytes))
			}
		},
		Retry: func(r goproxy.RetryMetric) {
			code := "error"
			if r.Status != 0 {
				code = statusClass(r.Status)
			}
			m.retries.WithLabelValues(repo, r.Upstream, string(r.Kind), code).Inc()
		},
		Verification: func(v goproxy.VerificationMetric) {
			m.verifications.WithLabelValues(repo, v.DB, string(v.Kind), string(v.Outcome)).Inc()
		},
		Download: func(d goproxy.DownloadMetric) {
			switch d.Event {
			case goproxy.DownloadStarted:
				m.inFlight.WithLabelValues(repo, d.Upstream).Inc()
			case goproxy.DownloadEnded:
				m.inFlight.WithLabelValues(repo, d.Upstream).Dec()
			case goproxy.DownloadProgress:
				m.downloadBytes.WithLabelValues(repo, d.Upstream).Add(float64(d.Bytes))
			}
		},
		SharedFetch: func(s goproxy.SharedFetchMetric) {
			m.sharedFetches.WithLabelValues(repo, string(s.Kind)).Inc()
		},
		CacheSize: func(c goproxy.CacheSizeMetric) {
			m.evictionRuns.WithLabelValues(repo).Inc()
			fig.runs.Add(1)
			m.measured(repo, cacheSize{Bytes: c.Bytes, Entries: int64(c.Entries), At: time.Now(), By: "eviction run", Known: true})
			if fig.evictedSinceRun.Swap(0) > 0 && rescan != nil {
				// The module list of the status page is a walk's.
				rescan()
			}
		},
		Eviction: func(e goproxy.EvictionMetric) {
			reason := string(e.Reason)
			m.evictions.WithLabelValues(repo, reason).Inc()
			m.evictedFiles.WithLabelValues(repo, reason).Add(float64(e.Files))
			m.evictedBytes.WithLabelValues(repo, reason).Add(float64(e.Bytes))
			fig.evictions.Add(1)
			fig.evictedFiles.Add(int64(e.Files))
			fig.evictedBytes.Add(e.Bytes)
			fig.evictedSinceRun.Add(1)
		},
		Scrub: func(sc goproxy.ScrubMetric) {
			m.scrubbedFiles.WithLabelValues(repo, string(sc.Kind), string(sc.Outcome), strconv.FormatBool(sc.Removed)).Inc()
			m.scrubbedBytes.WithLabelValues(repo).Add(float64(sc.Bytes))
		},
	}
}

// requestSeriesKey tells apart the series a request is counted in.
type requestSeriesKey struct {
	kind  goproxy.RequestKind
	class int // the status by hundreds
	cache goproxy.CacheOutcome
}

// requestSeries are the series a request is counted in.
type requestSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
	bytes    prometheus.Counter
}

// count adds an answered request to the status page's figures: requests
// for module files, by outcome.
func (f *repoFigures) count(r goproxy.RequestMetric) {
	if !isModuleFile(r.Kind) {
		return
	}
	f.requests.Add(1)
	switch s := r.Status; {
	case s == http.StatusOK || s == http.StatusPartialContent || s == http.StatusNotModified:
		switch r.Cache {
		case goproxy.CacheMiss:
			f.misses.Add(1)
		case goproxy.CacheHot, goproxy.CacheHit, goproxy.CacheStale:
			f.hits.Add(1)
		}
	case s == http.StatusNotFound || s == http.StatusGone:
		f.notFound.Add(1)
	default:
		f.failed.Add(1)
	}
}

// measured records a measurement of a repository's cache, if it is newer
// than the one kept: eviction runs and the status page's walks both
// measure it.
func (m *serverMetrics) measured(repo string, size cacheSize) {
	f := m.figures(repo)
	f.mu.Lock()
	defer f.mu.Unlock()
	if size.At.Before(f.size.At) {
		return
	}
	f.size = size
	m.cacheBytes.WithLabelValues(repo).Set(float64(size.Bytes))
	m.cacheEntries.WithLabelValues(repo).Set(float64(size.Entries))
}

// forget drops the gauges of repositories no longer served (counters stay:
// they only ever grow, and a repository may come back).
func (m *serverMetrics) forget(served map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, f := range m.repos {
		if served[name] {
			continue
		}
		m.cacheBytes.DeleteLabelValues(name)
		m.cacheEntries.DeleteLabelValues(name)
		f.mu.Lock()
		f.size = cacheSize{}
		f.mu.Unlock()
	}
}

// reloaded counts a configuration reload.
func (m *serverMetrics) reloaded(err error) {
	outcome := "applied"
	if err != nil {
		outcome = "refused"
	}
	m.reloads.WithLabelValues(outcome).Inc()
}

func (m *serverMetrics) requestStats(repo string) requestStats {
	f := m.figures(repo)
	return requestStats{Requests: f.requests.Load(), Hits: f.hits.Load(), Misses: f.misses.Load(),
		NotFound: f.notFound.Load(), Failed: f.failed.Load()}
}

func (m *serverMetrics) cacheStats(repo string) cacheStats {
	f := m.figures(repo)
	f.mu.Lock()
	size := f.size
	f.mu.Unlock()
	return cacheStats{Size: size, EvictionRuns: f.runs.Load(), Evictions: f.evictions.Load(),
		EvictedFiles: f.evictedFiles.Load(), EvictedBytes: f.evictedBytes.Load()}
}

// handler serves the metrics in Prometheus' text format (or the format
// the scraper asks for). Scrapes beyond a few at once are answered 503,
// so that a misconfigured scraper cannot pile up gatherings.
func (m *serverMetrics) handler(logger *slog.Logger) http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(logger.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	})
}

// serveMetrics answers the metrics path, as metrics.access of st says:
// to anyone, or to identities with admin (401 without credentials, 403
// without admin, as for a reload).
func (s *server) serveMetrics(w http.ResponseWriter, r *http.Request, st *serverState) {
	m := st.plan.cfg.Metrics
	if !m.Enabled || r.URL.Path != m.Path {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the metrics are read with GET", http.StatusMethodNotAllowed)
		return
	}
	if m.Access == metricsAdmin {
		_, auth, admin := st.plan.identities.identify(r)
		switch {
		case auth == "none" || auth == "invalid":
			w.Header().Set("WWW-Authenticate", `Basic realm="goproxy"`)
			http.Error(w, "authentication required to read the metrics", http.StatusUnauthorized)
			return
		case !admin:
			http.Error(w, "not allowed to read the metrics: the identity is not an admin", http.StatusForbidden)
			return
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	s.metricsHTTP.ServeHTTP(w, r)
}

// metricsListener serves the metrics alone, on metrics.addr, with the
// settings of the state in force.
func (s *server) metricsListener() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveMetrics(w, r, s.state.Load())
	})
}
