package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// requestStats counts a repository's requests for module files (lists,
// @latest, .info, .mod, .zip) by outcome, for the status page.
type requestStats struct {
	Requests int64 // all of them
	Hits     int64 // answered from the cache or the hosted store
	Misses   int64 // answered after a fetch from upstream
	NotFound int64 // 404 and 410
	Failed   int64 // any other error, refusals included
}

// HitRatio is the part of the answered requests that came from the
// cache, -1 before any.
func (s requestStats) HitRatio() float64 {
	if s.Hits+s.Misses == 0 {
		return -1
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

// requestStatsSource gives the status page its request counts by
// repository name. The library's metrics hook (RequestMetric, with its
// cache outcome) will replace today's requestCounters behind it.
type requestStatsSource interface {
	requestStats(repo string) requestStats
}

// requestCounters is the requestStatsSource the server keeps by
// watching each repository's responses. Whether an answer came from the
// cache is read from the Proxy's log: a request during which it logged
// an upstream fetch or a go command run was a miss. A request that
// waited for a fetch another request started counts as a hit: only the
// library knows better.
type requestCounters struct {
	mu    sync.Mutex
	repos map[string]*repoCounters
}

type repoCounters struct {
	requests, hits, misses, notFound, failed atomic.Int64
}

func newRequestCounters() *requestCounters {
	return &requestCounters{repos: map[string]*repoCounters{}}
}

func (c *requestCounters) of(repo string) *repoCounters {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc := c.repos[repo]
	if rc == nil {
		rc = &repoCounters{}
		c.repos[repo] = rc
	}
	return rc
}

func (c *requestCounters) requestStats(repo string) requestStats {
	rc := c.of(repo)
	return requestStats{Requests: rc.requests.Load(), Hits: rc.hits.Load(), Misses: rc.misses.Load(),
		NotFound: rc.notFound.Load(), Failed: rc.failed.Load()}
}

// isModuleFileRequest reports whether r reads a module file (what the
// hit ratio is about), by its path within the repository.
func isModuleFileRequest(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	return !strings.HasPrefix(p, "/sumdb/") && !strings.HasPrefix(p, "/-/") &&
		(strings.Contains(p, "/@v/") || strings.HasSuffix(p, "/@latest"))
}

// count records the outcome of a module file request answered with
// status.
func (c *requestCounters) count(repo string, status int, fetched bool) {
	rc := c.of(repo)
	rc.requests.Add(1)
	switch {
	case status == http.StatusOK || status == http.StatusPartialContent || status == http.StatusNotModified:
		if fetched {
			rc.misses.Add(1)
		} else {
			rc.hits.Add(1)
		}
	case status == http.StatusNotFound || status == http.StatusGone:
		rc.notFound.Add(1)
	default:
		rc.failed.Add(1)
	}
}

// fetchObserver is the log handler of a repository's Proxy: it passes
// records on, and marks the request in whose context an upstream fetch
// or a go command run was logged as one that fetched.
type fetchObserver struct{ slog.Handler }

// Enabled lets info records through whatever the level, to be seen;
// Handle passes on only what the level wants.
func (h fetchObserver) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.Handler.Enabled(ctx, l)
}

func (h fetchObserver) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "upstream fetch" || r.Message == "go command" {
		infoFrom(ctx).fetched.Store(true)
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h fetchObserver) WithAttrs(attrs []slog.Attr) slog.Handler {
	return fetchObserver{h.Handler.WithAttrs(attrs)}
}

func (h fetchObserver) WithGroup(name string) slog.Handler {
	return fetchObserver{h.Handler.WithGroup(name)}
}
