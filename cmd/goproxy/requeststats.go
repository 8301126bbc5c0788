package main

import (
	"time"
)

// requestStats counts a repository's requests for module files (lists,
// @latest, .info, .mod, .zip) by outcome, for the status page.
type requestStats struct {
	Requests int64 // all of them
	Hits     int64 // answered from the proxy's memory, the cache or the hosted store (stale answers included)
	Misses   int64 // answered after a fetch from upstream, own or shared
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
// repository name: serverMetrics, from the library's Request metric and
// the cache outcome it carries.
type requestStatsSource interface {
	requestStats(repo string) requestStats
}

// cacheSize is a measurement of a repository's cache.
type cacheSize struct {
	Bytes, Entries int64
	At             time.Time
	By             string // what measured it: "eviction run" or "walk"
	Known          bool   // false before the first measurement
}

// cacheStats is what the status page shows of a repository's cache and
// its eviction.
type cacheStats struct {
	Size         cacheSize // the latest measurement
	EvictionRuns int64
	Evictions    int64 // removals: a version's files together, or one other entry
	EvictedFiles int64
	EvictedBytes int64
}

// cacheStatsSource gives the status page its cache figures by repository
// name: serverMetrics, from the library's CacheSize and Eviction metrics
// and the status page's own walks of the stores.
type cacheStatsSource interface {
	cacheStats(repo string) cacheStats
}
