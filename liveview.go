package goproxy

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// LiveView returns what the Proxy is doing now: the downloads from its
// upstreams in flight, and the latest that failed. It is cheap enough to
// call every second for a status page or progress bars; before Init it
// is empty.
func (p *Proxy) LiveView() LiveView {
	return p.downloads.view()
}

// trackFetch registers a fetch of req's file from upstream (a name
// without credentials) with the live view and the Download metric. The
// context it returns carries the download to the engine, which counts its
// bytes, size and retries into it; done ends it and reports the
// UpstreamFetch metric.
func (p *Proxy) trackFetch(ctx context.Context, req *request, upstream string) (context.Context, func(f *fetched, err error)) {
	start := time.Now()
	d := p.downloads.start(req.modPath, req.version, req.metricKind(), upstream, func() int { return p.flights.users(req.name) })
	fctx := context.WithValue(ctx, trackedKey{}, d)
	return fctx, func(f *fetched, err error) {
		p.downloads.finish(d, err)
		outcome, status := fetchOutcome(fctx, err)
		if upstream == "direct" {
			status = 0
		}
		var size int64
		if f != nil {
			size = f.size
		}
		p.conf.metrics.upstreamFetch(UpstreamFetchMetric{Upstream: upstream, Kind: d.kind, Outcome: outcome, Status: status,
			Bytes: size, Duration: time.Since(start), Prefetch: prefetching(fctx)})
	}
}

type trackedKey struct{}

// trackedFrom returns the download ctx carries, or nil; a nil download
// counts nothing.
func trackedFrom(ctx context.Context) *trackedDownload {
	d, _ := ctx.Value(trackedKey{}).(*trackedDownload)
	return d
}

// untracked returns ctx without its download, for requests that are not
// part of it.
func untracked(ctx context.Context) context.Context {
	if trackedFrom(ctx) == nil {
		return ctx
	}
	return context.WithValue(ctx, trackedKey{}, (*trackedDownload)(nil))
}

// LiveView is what the proxy is doing now, for status pages and progress
// bars: the downloads from upstreams in flight and the latest failures.
type LiveView struct {
	// Downloads are the downloads in flight, oldest first.
	Downloads []DownloadStatus
	// Failures are the latest failed downloads, newest first, at most
	// maxRecentFailures of them.
	Failures []DownloadFailure
}

// DownloadStatus describes a download in flight.
type DownloadStatus struct {
	Module   string
	Version  string // the version or query; empty for a list or @latest
	Kind     RequestKind
	Upstream string // without credentials
	Started  time.Time
	Done     int64   // bytes received, at most Total once that is known
	Total    int64   // bytes expected, -1 while unknown
	Rate     float64 // bytes per second, since the previous look at least rateWindow ago
	Waiting  int     // clients waiting for it
}

// DownloadFailure describes a download that failed.
type DownloadFailure struct {
	Module   string
	Version  string
	Kind     RequestKind
	Upstream string
	Time     time.Time
	Error    string
}

// maxRecentFailures bounds the failures a LiveView keeps.
const maxRecentFailures = 64

// rateWindow is the shortest time a download's rate is measured over.
const rateWindow = 2 * time.Second

// downloadTracker keeps the downloads in flight for the live view and the
// Download metric. Registering and finishing take a mutex; progress is an
// atomic add, so the download loop never waits for a status page.
type downloadTracker struct {
	metrics  *Metrics
	inFlight atomic.Int64

	mu       sync.Mutex
	active   []*trackedDownload // by start
	failures [maxRecentFailures]DownloadFailure
	next     int // where the next failure goes
	count    int // failures kept
}

// trackedDownload is one download in flight.
type trackedDownload struct {
	module, version, upstream string
	kind                      RequestKind
	started                   time.Time
	waiting                   func() int

	tracker *downloadTracker
	done    atomic.Int64
	total   atomic.Int64

	// The last rate measurement, guarded by tracker.mu.
	sampleAt   time.Time
	sampleDone int64
	rate       float64
}

// start registers a download. waiting, if not nil, counts the clients
// waiting for it when a view is taken.
func (t *downloadTracker) start(module, version string, kind RequestKind, upstream string, waiting func() int) *trackedDownload {
	d := &trackedDownload{module: module, version: version, kind: kind, upstream: upstream,
		started: time.Now(), waiting: waiting, tracker: t}
	d.total.Store(-1)
	d.sampleAt = d.started
	t.mu.Lock()
	t.active = append(t.active, d)
	t.mu.Unlock()
	t.metrics.download(DownloadMetric{Upstream: upstream, Event: DownloadStarted, InFlight: int(t.inFlight.Add(1))})
	return d
}

// add counts n bytes received.
func (d *trackedDownload) add(n int64) {
	if d == nil {
		return
	}
	d.done.Add(n)
	d.tracker.metrics.download(DownloadMetric{Upstream: d.upstream, Event: DownloadProgress, InFlight: int(d.tracker.inFlight.Load()), Bytes: n})
}

// Write counts what it is given, so that a download can be teed into it.
func (d *trackedDownload) Write(p []byte) (int, error) {
	d.add(int64(len(p)))
	return len(p), nil
}

// restart forgets the bytes counted so far, for a download that starts
// over from its first byte (an answer cut and asked again whole, a
// partial file emptied): Done must not count a byte twice.
func (d *trackedDownload) restart() {
	if d == nil || d.done.Load() == 0 {
		return
	}
	d.tracker.mu.Lock()
	d.done.Store(0)
	d.sampleAt, d.sampleDone, d.rate = time.Now(), 0, 0
	d.tracker.mu.Unlock()
}

// setTotal records the size expected, once known.
func (d *trackedDownload) setTotal(n int64) {
	if d != nil && n >= 0 {
		d.total.Store(n)
	}
}

// retried reports the Retry metric for an attempt that failed with status
// (0 without one) and is tried again.
func (d *trackedDownload) retried(attempt, status int) {
	if d != nil {
		d.tracker.metrics.retry(RetryMetric{Upstream: d.upstream, Kind: d.kind, Attempt: attempt, Status: status})
	}
}

// finish unregisters a download; a failure other than not-found is kept
// among the recent ones.
func (t *downloadTracker) finish(d *trackedDownload, err error) {
	t.mu.Lock()
	if i := slices.Index(t.active, d); i >= 0 {
		t.active = slices.Delete(t.active, i, i+1)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.failures[t.next] = DownloadFailure{Module: d.module, Version: d.version, Kind: d.kind,
			Upstream: d.upstream, Time: time.Now(), Error: err.Error()}
		t.next = (t.next + 1) % maxRecentFailures
		t.count = min(t.count+1, maxRecentFailures)
	}
	t.mu.Unlock()
	t.metrics.download(DownloadMetric{Upstream: d.upstream, Event: DownloadEnded, InFlight: int(t.inFlight.Add(-1))})
}

// view returns the downloads in flight and the recent failures.
func (t *downloadTracker) view() LiveView {
	now := time.Now()
	t.mu.Lock()
	active := slices.Clone(t.active)
	v := LiveView{Downloads: make([]DownloadStatus, 0, len(active)), Failures: make([]DownloadFailure, 0, t.count)}
	for i := range t.count {
		v.Failures = append(v.Failures, t.failures[(t.next-1-i+2*maxRecentFailures)%maxRecentFailures])
	}
	for _, d := range active {
		done := d.done.Load()
		if elapsed := now.Sub(d.sampleAt); elapsed >= rateWindow || d.rate == 0 && elapsed > 0 {
			d.rate = float64(done-d.sampleDone) / elapsed.Seconds()
			if elapsed >= rateWindow {
				d.sampleAt, d.sampleDone = now, done
			}
		}
		total := d.total.Load()
		if total >= 0 {
			// Parts asked again after a cut may bring bytes twice.
			done = min(done, total)
		}
		v.Downloads = append(v.Downloads, DownloadStatus{Module: d.module, Version: d.version, Kind: d.kind,
			Upstream: d.upstream, Started: d.started, Done: done, Total: total, Rate: d.rate})
	}
	t.mu.Unlock()
	// Counted outside the lock: it takes the flight group's.
	for i, d := range active {
		if d.waiting != nil {
			v.Downloads[i].Waiting = d.waiting()
		}
	}
	return v
}
