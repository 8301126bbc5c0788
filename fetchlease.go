package goproxy

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Proxies sharing a store that grants leases ([CacheLeaser]) make one
// upstream fetch between them for an immutable file that several of them
// miss at once. Within a proxy the flight group already makes concurrent
// requests share one fetch; that fetch then takes the lease
// "fetch/<name>" before asking the upstreams, and holds it until the file
// is stored. A proxy that finds the lease held waits for the file to
// appear in the store, looking with growing pauses, and takes the lease
// over if its holder releases it without storing (its fetch failed) or
// dies (the lease lapses): whichever way, one fetch at a time per file,
// and every proxy answers with the bytes in the store.

// While another proxy holds the lease, the store is looked at (a Stat)
// after pauses growing from fetchLeaseFirstPause to fetchLeaseMaxPause, and
// the lease asked for (two requests, where a Stat is one) every
// fetchLeaseRetry, to take it over once its holder gives it up or dies.
const (
	fetchLeaseFirstPause = 20 * time.Millisecond
	fetchLeaseMaxPause   = 250 * time.Millisecond
	fetchLeaseRetry      = time.Second
)

// fetchClaim is this proxy's lease on fetching one file. Its zero value
// (and nil) holds nothing.
type fetchClaim struct{ release func() }

// done gives the lease up.
func (c *fetchClaim) done() {
	if c != nil && c.release != nil {
		c.release()
	}
}

// claimFetch takes the lease on fetching req's file when the cache is
// shared with other proxies, waiting while another proxy holds it. It
// returns errStoredMeanwhile once the file is in the cache, stored by
// whoever held the lease. A store that fails to grant leases is bypassed,
// as a failing cache always is: the fetch goes ahead without a lease.
func (p *Proxy) claimFetch(ctx context.Context, req *request) (*fetchClaim, error) {
	leaser, ok := p.conf.cacher.(CacheLeaser)
	if !ok || cacheUnreadable(ctx, req.name) {
		// Waiting for a file to be stored is no use when it is stored
		// but cannot be read.
		return nil, nil
	}
	name := "fetch/" + req.name
	pause := fetchLeaseFirstPause
	start := time.Now()
	for waited := false; ; waited = true {
		asked := time.Now()
		release, err := leaser.HoldLease(ctx, name)
		switch {
		case err == nil:
			// Stored by another proxy between our look and the lease?
			if p.cached(ctx, req) {
				release()
				return nil, errStoredMeanwhile
			}
			if waited {
				p.logger().LogAttrs(ctx, slog.LevelInfo, "took over the fetch of another proxy sharing the cache",
					slog.String("file", req.name), slog.Duration("waited", time.Since(start)))
			}
			return &fetchClaim{release: release}, nil
		case ctx.Err() != nil:
			return nil, failed(failTimedOut, "%s: waiting for another proxy sharing the cache to fetch it: %w", req, ctx.Err())
		case !errors.Is(err, ErrLeaseHeld):
			p.logger().LogAttrs(ctx, slog.LevelWarn, "fetch lease failed, fetching without it",
				slog.String("file", req.name), slog.String("error", err.Error()))
			p.conf.metrics.storeError(StoreErrorMetric{Role: StoreCache, Op: StoreLease})
			return nil, nil
		case !waited:
			p.logger().LogAttrs(ctx, slog.LevelDebug, "waiting for another proxy sharing the cache to fetch",
				slog.String("file", req.name), slog.String("lease", err.Error()))
		}
		for time.Since(asked) < fetchLeaseRetry {
			// A pause of pause ± a quarter, so that waiting proxies do
			// not look all at once.
			wait := pause*3/4 + rand.N(pause/2+1)
			select {
			case <-ctx.Done():
				return nil, failed(failTimedOut, "%s: waiting for another proxy sharing the cache to fetch it: %w", req, ctx.Err())
			case <-time.After(wait):
			}
			if p.cached(ctx, req) {
				return nil, errStoredMeanwhile
			}
			pause = min(2*pause, fetchLeaseMaxPause)
		}
	}
}

// cached reports whether req's file is in the cache, with a Stat where
// the cache has one.
func (p *Proxy) cached(ctx context.Context, req *request) bool {
	if s, ok := p.conf.cacher.(CacheStater); ok {
		_, err := s.Stat(ctx, req.name)
		return err == nil
	}
	cf, err := p.conf.cacher.Get(ctx, req.name)
	if err == nil {
		cf.Close()
	}
	return err == nil
}

// unreadableKey is the context key of withCacheUnreadable.
type unreadableKey struct{}

// withCacheUnreadable marks ctx as a fetch of name, which the cache says
// it has but which could not be read from it: that fetch must not end
// with errStoredMeanwhile, which would send its caller back to the cache.
func withCacheUnreadable(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, unreadableKey{}, name)
}

// cacheUnreadable reports whether ctx is marked by withCacheUnreadable
// for name.
func cacheUnreadable(ctx context.Context, name string) bool {
	n, ok := ctx.Value(unreadableKey{}).(string)
	return ok && n == name
}
