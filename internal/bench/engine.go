package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goproxy-team/goproxy"
)

// engineRun is one download of the big zip through a fresh proxy whose
// upstream caps every connection's bandwidth.
type engineRun struct {
	conns    int
	res      heapResult
	upReqs   int64 // requests that reached the capped upstream
	rangeReq int64 // of which with a Range header
}

// parseConns reads a comma-separated list of connection counts, which
// must include 1, and returns them in ascending order.
func parseConns(s string) ([]int, error) {
	var ns []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("invalid connection count %q", f)
		}
		if !slices.Contains(ns, n) {
			ns = append(ns, n)
		}
	}
	if !slices.Contains(ns, 1) {
		return nil, fmt.Errorf("the connection counts must include 1, the baseline")
	}
	slices.Sort(ns) // 1 first
	return ns, nil
}

// waitCached waits until the proxy's cache holds name: the proxy stores a
// zip while it serves it, and a copy still being written (and synced)
// would burden the next timed run's disk.
func waitCached(p *goproxy.Proxy, name string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		f, err := p.Cacher.Get(context.Background(), name)
		if err == nil {
			f.Close()
			return
		}
		if time.Now().After(deadline) {
			progress("  WARNING: %s was not in the proxy's cache after %v: %v", name, timeout, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// engineStats gathers the runs of one connection count.
func engineStats(runs []engineRun, conns int) (times []time.Duration, peak int64) {
	for _, r := range runs {
		if r.conns == conns {
			times = append(times, r.res.elapsed)
			peak = max(peak, r.res.peak)
		}
	}
	return times, peak
}

// formatRate prints a per-connection bandwidth cap.
func formatRate(bps int64) string {
	switch {
	case bps >= 1<<20 && bps%(1<<20) == 0:
		return fmt.Sprintf("%dMiB/s", bps>>20)
	case bps >= 1e6 && bps%1e6 == 0:
		return fmt.Sprintf("%dMB/s", bps/1e6)
	}
	return fmt.Sprintf("%dB/s", bps)
}
