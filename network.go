package goproxy

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

// The proxy's network modes: by default it fetches what it lacks, and
// with StaleWhileRevalidate answers a list or @latest slightly past its
// time at once while refreshing it behind the client's back; Offline, it
// never asks anyone. openStored and fetch call what follows.

// errOffline answers, offline, a request for what the cache lacks: not
// remembered, and not to be kept by shared caches, since the proxy may be
// filled or brought online later.
func errOffline(req *request) error {
	return failed(failNotCached, "%s is not cached, and this proxy is offline: it asks no upstream and no checksum database", req)
}

// offlineList returns, offline, the version list to serve for req: the
// cached list with the versions whose .info is cached added, so that
// versions brought in by a fill or an import are listed even when no list
// of their module was ever fetched. cached is the cached list, or nil; so
// is the result when neither has a version.
func (p *Proxy) offlineList(ctx context.Context, req *request, cached *content) *content {
	walker, ok := p.conf.cacher.(CacheWalker)
	if !ok {
		return cached
	}
	listed := map[string]bool{}
	var lines []string
	if cached != nil {
		for line := range strings.SplitSeq(string(cached.data), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				listed[f[0]] = true
				lines = append(lines, line)
			}
		}
	}
	var more []string
	err := walker.Walk(ctx, strings.TrimSuffix(req.name, "list"), func(name string) error {
		if path, version, ok := versionInfoName(name); ok && path == req.modPath && !listed[version] {
			listed[version] = true
			more = append(more, version)
		}
		return nil
	})
	if err != nil {
		p.logger().LogAttrs(ctx, slog.LevelWarn, "listing the cached versions", slog.String("module", req.modPath), slog.String("error", err.Error()))
	}
	if len(more) == 0 {
		return cached
	}
	semver.Sort(more)
	var modTime time.Time
	if cached != nil {
		modTime = cached.modTime
		cached.close()
	}
	data := strings.Join(append(lines, more...), "\n") + "\n"
	return memContent([]byte(data), modTime, fromCache)
}

// revalidates reports whether a cached mutable entry of req's, age old
// and past its time, is answered at once while it is fetched again in
// the background: a module's list, @latest or query answer within the
// StaleWhileRevalidate window. Checksum database files are not: the
// verifier needs the latest tree when it asks.
func (p *Proxy) revalidates(req *request, age time.Duration) bool {
	return p.conf.staleGrace > 0 && req.db == nil && age < p.ttl(req)+p.conf.staleGrace
}

// revalidate fetches req's file again in the background, unless a
// revalidation of it is under way: the fetch stores the fresh copy, which
// the next request finds.
func (p *Proxy) revalidate(req *request) {
	if _, running := p.revalidating.LoadOrStore(req.name, true); running {
		return
	}
	started := p.background(func(ctx context.Context) {
		defer p.revalidating.Delete(req.name)
		_, release, err := p.fetch(ctx, req)
		if err != nil {
			p.logger().LogAttrs(ctx, slog.LevelWarn, "revalidating a stale entry", slog.String("file", req.name), slog.String("error", err.Error()))
			return
		}
		release()
	})
	if !started {
		p.revalidating.Delete(req.name)
	}
}

// background runs fn on a goroutine of its own that Close waits for,
// unless the Proxy is closed: then it reports false and fn does not run.
// fn's context carries no deadline; the fetches it starts end with Close.
func (p *Proxy) background(fn func(ctx context.Context)) bool {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.closed.Load() {
		return false
	}
	p.working.Go(func() { fn(context.Background()) })
	return true
}
