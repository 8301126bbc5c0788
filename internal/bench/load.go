package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult is one timed load run.
type loadResult struct {
	requests int64 // answered with 200 and read to the end (wrk: answered)
	errors   int64 // failed or answered otherwise
	elapsed  time.Duration
	rate     float64       // wrk's own Requests/sec; 0 for the in-process generator
	p99      time.Duration // wrk's 99th percentile latency; 0 for the in-process generator
	// CPU used during the run by this process (the servers) and by wrk,
	// for the CPU each request costs either side; 0 when not measured.
	serverCPU, loadCPU time.Duration
}

func (r loadResult) rps() float64 {
	if r.rate > 0 {
		return r.rate
	}
	return float64(r.requests) / r.elapsed.Seconds()
}

func medianRPS(rs []loadResult) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = r.rps()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// rpsList shows each round as rate (requests/time, errors).
func rpsList(rs []loadResult) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString("  ")
		}
		fmt.Fprintf(&b, "%.0f (%d/%s", r.rps(), r.requests, secs(r.elapsed))
		if r.p99 > 0 {
			fmt.Fprintf(&b, ", p99 %s", r.p99)
		}
		if r.serverCPU > 0 && r.requests > 0 {
			fmt.Fprintf(&b, ", CPU per request %.1f µs here, %.1f µs wrk", float64(r.serverCPU.Nanoseconds())/1e3/float64(r.requests),
				float64(r.loadCPU.Nanoseconds())/1e3/float64(r.requests))
		}
		if r.errors > 0 {
			fmt.Fprintf(&b, ", %d ERRORS", r.errors)
		}
		b.WriteString(")")
	}
	return b.String()
}

// loadClient is a keep-alive HTTP/1.1 client sized for the load: enough
// idle connections per host that no client goroutine ever dials again, and
// no transparent compression, so every body is read as sent.
func loadClient(clients int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         loopbackDialer(),
			MaxIdleConns:        2 * clients,
			MaxIdleConnsPerHost: 2 * clients,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
		Timeout: 30 * time.Second,
	}
}

func loadPhase(client *http.Client, base string, paths []string, clients int, dur time.Duration, maxRequests int64) loadResult {
	var sent, ok, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for c := range clients {
		wg.Go(func() {
			// Requests are built once and reused, as are read buffers.
			reqs := make([]*http.Request, len(paths))
			for i, p := range paths {
				req, err := http.NewRequest(http.MethodGet, base+p, nil)
				if err != nil {
					fatalf("%v", err)
				}
				reqs[i] = req
			}
			buf := make([]byte, 8<<10)
			for i := c * 7; ; i++ {
				if sent.Add(1) > maxRequests || time.Now().After(deadline) {
					return
				}
				resp, err := client.Do(reqs[i%len(reqs)])
				if err != nil {
					failed.Add(1)
					continue
				}
				err = drain(resp.Body, buf)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	return loadResult{requests: ok.Load(), errors: failed.Load(), elapsed: time.Since(start)}
}

// drain reads r to its end into buf, so that the connection can be reused.
func drain(r io.Reader, buf []byte) error {
	for {
		_, err := r.Read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// medianP99 is the median of the rounds' p99 latencies.
func medianP99(rs []loadResult) time.Duration {
	var ds []time.Duration
	for _, r := range rs {
		ds = append(ds, r.p99)
	}
	return median(ds)
}

// sameBytesHandler is the baseline: the bare net/http server cost of
// answering the same paths with the same bytes, from a map.
func sameBytesHandler(answers map[string]answer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(a.body)
	})
}

// answer is a body and the headers the proxy sent with it.
type answer struct {
	body   []byte
	header http.Header
}

// sameAnswersHandler answers the paths as the proxy did, headers too
// (those net/http sets itself, Date and Content-Length, but for a
// Content-Length the proxy set on a longer body), from a map: what
// serving the same answers costs net/http and the client, without the
// proxy's work.
func sameAnswersHandler(answers map[string]answer) http.Handler {
	prepared := map[string]answer{}
	for path, a := range answers {
		h := a.header.Clone()
		h.Del("Date")
		if len(a.body) < 2000 {
			h.Del("Content-Length")
		}
		prepared[path] = answer{body: a.body, header: h}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := prepared[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		out := w.Header()
		for k, v := range a.header {
			out[k] = v
		}
		w.Write(a.body)
	})
}
