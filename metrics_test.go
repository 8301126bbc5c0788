package goproxy

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestMetricsReportWithoutAllocating(t *testing.T) {
	var requests, bytes atomic.Int64
	var hits [5]atomic.Int64 // by CacheOutcome, in the order of the constants
	outcomes := []CacheOutcome{CacheHot, CacheHit, CacheMiss, CacheStale, CacheNotFoundMemo}
	m := &Metrics{
		Request: func(r RequestMetric) {
			requests.Add(1)
			bytes.Add(r.Bytes)
			for i, o := range outcomes {
				if r.Cache == o {
					hits[i].Add(1)
				}
			}
		},
		UpstreamFetch: func(UpstreamFetchMetric) { requests.Add(1) },
		Download:      func(DownloadMetric) { requests.Add(1) },
	}
	req := &request{kind: kindInfo}
	upstream := "https://proxy.example.com"
	allocs := testing.AllocsPerRun(1000, func() {
		m.request(RequestMetric{Kind: req.metricKind(), Status: 200, Cache: CacheHot, Bytes: 120, Duration: time.Microsecond})
		m.upstreamFetch(UpstreamFetchMetric{Upstream: upstream, Kind: RequestZip, Outcome: FetchOK, Status: 200, Bytes: 1 << 20})
		m.download(DownloadMetric{Upstream: upstream, Event: DownloadProgress, InFlight: 1, Bytes: 32 << 10})
	})
	if allocs != 0 {
		t.Errorf("reporting allocates %v times", allocs)
	}
	if hits[0].Load() == 0 || bytes.Load() == 0 {
		t.Error("the hooks were not called")
	}
}

func TestMetricsWithoutHooksReportNothing(t *testing.T) {
	var m *Metrics
	m.request(RequestMetric{})
	m.eviction(EvictionMetric{})
	(&Metrics{}).cacheSize(CacheSizeMetric{})
}

func BenchmarkMetricsRequest(b *testing.B) {
	var n atomic.Int64
	m := &Metrics{Request: func(r RequestMetric) { n.Add(int64(r.Status)) }}
	b.ReportAllocs()
	for b.Loop() {
		m.request(RequestMetric{Kind: RequestInfo, Status: 200, Cache: CacheHit, Bytes: 100})
	}
}
