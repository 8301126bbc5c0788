package main

import (
	"net/http"
	"strings"
	"sync"
)

// pathCounter counts the requests a handler gets, by URL path, and those
// asking for a part of a file (a Range other than the whole, "bytes=0-").
type pathCounter struct {
	h      http.Handler
	mu     sync.Mutex
	paths  map[string]int
	ranged int
	total  int
}

func newPathCounter(h http.Handler) *pathCounter {
	return &pathCounter{h: h, paths: map[string]int{}}
}

func (c *pathCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.paths[r.URL.Path]++
	c.total++
	if rng := r.Header.Get("Range"); rng != "" && rng != "bytes=0-" {
		c.ranged++
	}
	c.mu.Unlock()
	c.h.ServeHTTP(w, r)
}

// requestCounts is what a pathCounter counted over a phase.
type requestCounts struct {
	requests int // all of them
	files    int // distinct paths
	repeated int // paths asked more than once
	ranged   int // requests for a part of a file
	paths    map[string]int
}

// take returns the counts since the last take, and starts afresh.
func (c *pathCounter) take() requestCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc := requestCounts{requests: c.total, files: len(c.paths), ranged: c.ranged, paths: c.paths}
	for _, n := range c.paths {
		if n > 1 {
			rc.repeated++
		}
	}
	c.paths, c.total, c.ranged = map[string]int{}, 0, 0
	return rc
}

// requestsSoFar returns how many requests came since the last take.
func (c *pathCounter) requestsSoFar() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// kinds counts paths by the kind of file they ask for.
func (rc requestCounts) kinds() map[string]int {
	k := map[string]int{}
	for p, n := range rc.paths {
		switch {
		case strings.HasSuffix(p, ".mod"):
			k["mod"] += n
		case strings.HasSuffix(p, ".info"):
			k["info"] += n
		case strings.HasSuffix(p, ".zip"):
			k["zip"] += n
		default:
			k["other"] += n
		}
	}
	return k
}
