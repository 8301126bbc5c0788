package main

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// heapResult is one big download, watched from inside the process.
type heapResult struct {
	peak      int64 // peak heap object bytes minus the level before
	allocs    int64 // bytes allocated during the transfer
	elapsed   time.Duration
	header    time.Duration // until the response header arrived
	firstByte time.Duration // until the first byte of the body arrived
	received  int64
	samples   int
	// cpu is the process's CPU time (user and system, every goroutine:
	// client, proxy, upstream) over the transfer: what it cost the
	// machine, which other work on it moves less than the elapsed time.
	cpu time.Duration
}

const (
	heapObjects = "/memory/classes/heap/objects:bytes"
	heapAllocs  = "/gc/heap/allocs:bytes"
)

func readHeap() (objects, allocs int64) {
	s := []metrics.Sample{{Name: heapObjects}, {Name: heapAllocs}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64()), int64(s[1].Value.Uint64())
}

// measureDownload GETs url with a fresh client and reads the body to
// io.Discard, sampling the heap every interval meanwhile. The baseline
// level is taken after a full collection, so the peak counts only what
// the transfer (client, proxy and upstream, all in this process) holds.
func measureDownload(url string, want int64, interval time.Duration) heapResult {
	client := &http.Client{Transport: &http.Transport{
		DialContext:        loopbackDialer(),
		DisableCompression: true,
	}}
	defer client.CloseIdleConnections()

	runtime.GC()
	debug.FreeOSMemory()
	base, allocs0 := readHeap()

	stop := make(chan struct{})
	peakc := make(chan [2]int64)
	go func() {
		peak, n := base, int64(0)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-stop:
				cur, _ := readHeap()
				peakc <- [2]int64{max(peak, cur), n + 1}
				return
			}
			cur, _ := readHeap()
			peak = max(peak, cur)
			n++
		}
	}()

	cpu0 := processCPU()
	start := time.Now()
	resp, err := client.Get(url)
	header := time.Since(start)
	if err != nil {
		fatalf("big download: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		fatalf("big download: %s: %s", resp.Status, body)
	}
	var firstByte time.Duration
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, rerr := resp.Body.Read(buf)
		if k > 0 && n == 0 {
			firstByte = time.Since(start)
		}
		n += int64(k)
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
	}
	resp.Body.Close()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	close(stop)
	pk := <-peakc
	_, allocs1 := readHeap()
	if err != nil {
		fatalf("big download: %v after %d bytes", err, n)
	}
	if n != want {
		fatalf("big download: got %d bytes, want %d", n, want)
	}
	return heapResult{peak: pk[0] - base, allocs: allocs1 - allocs0, elapsed: elapsed, header: header, firstByte: firstByte, received: n, samples: int(pk[1]), cpu: cpu}
}

func (r heapResult) String() string {
	return fmt.Sprintf("peak %s over baseline, %s allocated, %s for %d bytes (%.0f MB/s; header after %s, first byte after %s; CPU %s), %d samples",
		mib(r.peak), mib(r.allocs), secs(r.elapsed), r.received, float64(r.received)/1e6/r.elapsed.Seconds(), secs(r.header), secs(r.firstByte), secs(r.cpu), r.samples)
}
