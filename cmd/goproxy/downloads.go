package main

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// transfer is a download from an upstream in flight, as the progress
// display and the status page show it.
type transfer struct {
	Repo    string // the repository whose Proxy downloads it
	Module  string
	Version string
	Started time.Time
	Done    int64   // bytes received
	Total   int64   // bytes expected, -1 while unknown
	Rate    float64 // bytes per second lately, 0 while unknown
	// Waiting and Upstream are not known yet (0 and ""): the library's
	// live view will tell them.
	Waiting  int
	Upstream string
}

// Percent is how much is done, -1 while the total is unknown.
func (t transfer) Percent() int {
	if t.Total <= 0 {
		return -1
	}
	return int(min(100, t.Done*100/t.Total))
}

// ETA is the time left at the current rate, -1 while it is unknown.
func (t transfer) ETA() time.Duration {
	if t.Total < 0 || t.Rate <= 0 {
		return -1
	}
	return time.Duration(float64(max(t.Total-t.Done, 0)) / t.Rate * float64(time.Second))
}

// Label names the download: module@version.
func (t transfer) Label() string { return t.Module + "@" + t.Version }

// downloadSource lists the downloads in flight, oldest first. The
// progress bars, the progress lines and the status page read it, so that
// the library's live view of downloads (which knows the rate, the waiting
// clients and the upstream) can replace today's progressTracker behind
// it without changing them.
type downloadSource interface {
	downloads() []transfer
}

// progressTracker is the downloadSource fed by each Proxy's
// DownloadOptions.Progress hook. The hook reports zips downloaded from
// upstream proxies (not the go command's direct fetches) every quarter
// second while they run and once at the end, but never says that a
// download ended: one is over when all its bytes are in, or when the
// hook has not been called for staleAfter (a failure).
type progressTracker struct {
	now func() time.Time

	mu     sync.Mutex
	active map[transferKey]*trackedTransfer
}

type transferKey struct{ repo, module, version string }

type trackedTransfer struct {
	transfer
	lastCall time.Time
	// samples are the latest (time, bytes) reports, oldest first, for the rate.
	samples []progressSample
}

type progressSample struct {
	at   time.Time
	done int64
}

const (
	// staleAfter is how long a download may go without a report before
	// it is taken for ended. The hook is called every 250 ms, stalled
	// or not, so this leaves room for a busy machine.
	staleAfter = 3 * time.Second
	// rateSamples is how many reports the rate is measured over: about
	// two seconds' worth.
	rateSamples = 9
)

func newProgressTracker() *progressTracker {
	return &progressTracker{now: time.Now, active: map[transferKey]*trackedTransfer{}}
}

// hook returns the DownloadOptions.Progress hook of a repository's Proxy.
// It never blocks for long: one map update under a mutex.
func (pt *progressTracker) hook(repo string) func(module, version string, done, total int64) {
	return func(module, version string, done, total int64) {
		pt.report(repo, module, version, done, total)
	}
}

func (pt *progressTracker) report(repo, module, version string, done, total int64) {
	now := pt.now()
	key := transferKey{repo, module, version}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if total >= 0 && done >= total {
		delete(pt.active, key) // the last report of a finished download
		return
	}
	t := pt.active[key]
	if t == nil {
		t = &trackedTransfer{transfer: transfer{Repo: repo, Module: module, Version: version, Started: now}}
		pt.active[key] = t
	}
	if done < t.Done {
		t.samples = t.samples[:0] // started over: the file changed upstream
	}
	t.Done, t.Total, t.lastCall = done, total, now
	if len(t.samples) == rateSamples {
		t.samples = append(t.samples[:0], t.samples[1:]...)
	}
	t.samples = append(t.samples, progressSample{now, done})
	if first := t.samples[0]; now.Sub(first.at) > 0 {
		t.Rate = float64(done-first.done) / now.Sub(first.at).Seconds()
	}
}

func (pt *progressTracker) downloads() []transfer {
	now := pt.now()
	pt.mu.Lock()
	defer pt.mu.Unlock()
	out := make([]transfer, 0, len(pt.active))
	for key, t := range pt.active {
		if now.Sub(t.lastCall) > staleAfter {
			delete(pt.active, key)
			continue
		}
		out = append(out, t.transfer)
	}
	slices.SortFunc(out, func(a, b transfer) int {
		return cmp.Or(a.Started.Compare(b.Started), cmp.Compare(a.Repo, b.Repo), cmp.Compare(a.Label(), b.Label()))
	})
	return out
}
