package main

import (
	"context"
	"fmt"
	"time"

	"github.com/goproxy-team/goproxy"
)

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
