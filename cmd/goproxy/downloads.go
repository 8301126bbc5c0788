package main

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/goproxy-team/goproxy"
)

// transfer is a download from an upstream in flight, as the progress
// display and the status page show it.
type transfer struct {
	Repo     string // the repository whose Proxy downloads it
	Module   string
	Version  string // the version or query; empty for a list or @latest
	Kind     goproxy.RequestKind
	Upstream string // without credentials; "direct" for the go command
	Started  time.Time
	Done     int64   // bytes received
	Total    int64   // bytes expected, -1 while unknown
	Rate     float64 // bytes per second lately, 0 while unknown
	Waiting  int     // clients waiting for it
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

// Label names the download: module@version for a zip, with the file for
// the others.
func (t transfer) Label() string { return downloadLabel(t.Module, t.Version, t.Kind, t.Upstream) }

// key tells downloads apart, for the displays that follow them.
func (t transfer) key() transferKey {
	return transferKey{t.Repo, t.Module, t.Version, t.Kind, t.Upstream, t.Started}
}

type transferKey struct {
	repo, module, version string
	kind                  goproxy.RequestKind
	upstream              string
	started               time.Time
}

// downloadLabel names a download of the library's live view.
func downloadLabel(module, version string, kind goproxy.RequestKind, upstream string) string {
	switch kind {
	case goproxy.RequestZip:
		return module + "@" + version
	case goproxy.RequestInfo:
		return module + "@" + version + " (.info)"
	case goproxy.RequestMod:
		return module + "@" + version + " (.mod)"
	case goproxy.RequestList:
		return module + " (version list)"
	case goproxy.RequestLatest:
		return module + "@latest"
	}
	if module != "" { // a checksum database lookup
		return module + "@" + version + " (" + upstream + ")"
	}
	return upstream + " (tile)"
}

// failedDownload is a download from an upstream that failed, as the
// status page shows it.
type failedDownload struct {
	Repo     string
	Module   string
	Version  string
	Kind     goproxy.RequestKind
	Upstream string
	Time     time.Time
	Error    string
}

// Label names the download, as transfer.Label does.
func (f failedDownload) Label() string { return downloadLabel(f.Module, f.Version, f.Kind, f.Upstream) }

// downloadSource lists the downloads in flight, oldest first, for the
// progress bars, the progress lines and the status page.
type downloadSource interface {
	downloads() []transfer
}

// failureSource lists the downloads that failed lately, newest first,
// for the status page.
type failureSource interface {
	recentFailures() []failedDownload
}

// maxFailuresShown bounds the failed downloads the status page lists.
const maxFailuresShown = 50

// liveViews is the downloadSource and failureSource of the server: the
// library's live view of every Proxy that serves or finishes requests
// (a reload retires Proxies when their requests are done), each download
// with the repository it is for.
type liveViews struct {
	mu      sync.Mutex
	proxies map[*goproxy.Proxy]string // to repository names
}

func newLiveViews() *liveViews { return &liveViews{proxies: map[*goproxy.Proxy]string{}} }

// add makes p's downloads seen, as repo's.
func (l *liveViews) add(p *goproxy.Proxy, repo string) {
	l.mu.Lock()
	l.proxies[p] = repo
	l.mu.Unlock()
}

// remove forgets p, once it is closed.
func (l *liveViews) remove(p *goproxy.Proxy) {
	l.mu.Lock()
	delete(l.proxies, p)
	l.mu.Unlock()
}

// views takes every Proxy's live view, outside the lock.
func (l *liveViews) views(fn func(repo string, v goproxy.LiveView)) {
	l.mu.Lock()
	proxies := make(map[*goproxy.Proxy]string, len(l.proxies))
	for p, repo := range l.proxies {
		proxies[p] = repo
	}
	l.mu.Unlock()
	for p, repo := range proxies {
		fn(repo, p.LiveView())
	}
}

func (l *liveViews) downloads() []transfer {
	var out []transfer
	l.views(func(repo string, v goproxy.LiveView) {
		for _, d := range v.Downloads {
			out = append(out, transfer{Repo: repo, Module: d.Module, Version: d.Version, Kind: d.Kind, Upstream: d.Upstream,
				Started: d.Started, Done: d.Done, Total: d.Total, Rate: d.Rate, Waiting: d.Waiting})
		}
	})
	slices.SortFunc(out, func(a, b transfer) int {
		return cmp.Or(a.Started.Compare(b.Started), cmp.Compare(a.Repo, b.Repo), cmp.Compare(a.Label(), b.Label()))
	})
	return out
}

func (l *liveViews) recentFailures() []failedDownload {
	var out []failedDownload
	l.views(func(repo string, v goproxy.LiveView) {
		for _, f := range v.Failures {
			out = append(out, failedDownload{Repo: repo, Module: f.Module, Version: f.Version, Kind: f.Kind,
				Upstream: f.Upstream, Time: f.Time, Error: truncate(f.Error)})
		}
	})
	slices.SortStableFunc(out, func(a, b failedDownload) int { return b.Time.Compare(a.Time) })
	return out[:min(len(out), maxFailuresShown)]
}
