package moduletest

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Faults makes an upstream hostile in controlled, reproducible ways, so
// that a download engine's parallel Range requests, retries, backoff and
// resumption can be tested against the failures real networks and CDNs
// produce. Wrap a handler (typically Server.Handler) with it:
//
//	f := &moduletest.Faults{FailFraction: 0.2, BytesPerSecond: 4 << 20, Seed: 1}
//	ts := httptest.NewServer(f.Wrap(s.Handler()))
//
// Every knob is off at its zero value. Set the fields before serving;
// to change them while requests are in flight use Update, which holds
// the mutex that request handling reads them under. A request sees the
// configuration as it was when the request arrived.
//
// Random decisions come from one PCG stream seeded with Seed and drawn
// in request arrival order, a fixed number of draws per matching
// request, so a sequential test sees the same faults on every run.
type Faults struct {
	// BytesPerSecond caps the body bandwidth of each response, and so of
	// each connection, to expose how a client splits and parallelizes
	// slow downloads. Responses are paced in small slices and flushed.
	BytesPerSecond int64

	// TooManyFraction of requests are answered 429 Too Many Requests
	// with a Retry-After of RetryAfter rounded up to whole seconds, to
	// check that clients back off as told.
	TooManyFraction float64
	// RetryAfter is the delay advertised by injected 429s; zero sends
	// "Retry-After: 0".
	RetryAfter time.Duration

	// FailFraction of requests are answered 502 Bad Gateway, the
	// transient error retries exist for. The draw is shared with
	// TooManyFraction, so each fraction holds on its own as long as
	// their sum is at most 1 (429s win the overlap).
	FailFraction float64

	// CutFraction of 200 and 206 responses with a known Content-Length
	// (all of Server's) have their body cut at a random point before the
	// end, with the connection dropped, so the client sees
	// io.ErrUnexpectedEOF and must resume or retry. Responses to HEAD
	// are never cut.
	CutFraction float64

	// IgnoreRange models servers and caches that do not support ranges:
	// Range and If-Range are dropped from requests, so the whole body
	// comes back with 200, and Accept-Ranges from responses.
	IgnoreRange bool

	// Match restricts faults (all knobs above) to the requests for which
	// it returns true, such as only zips (see MatchSuffix); nil matches
	// all. It is called without locks held, concurrently.
	Match func(r *http.Request) bool

	// Seed selects the random stream; changing it through Update, or
	// calling Reset, restarts the stream.
	Seed uint64

	mu      sync.Mutex
	rng     *rand.Rand
	rngSeed uint64

	requests, rangeRequests, injected502, injected429, cut, bodyBytes atomic.Int64

	logMu sync.Mutex
	log   []*RequestRecord // updated in place while requests run
}

// RequestRecord describes one request that went through Faults.Wrap, so
// tests can assert what a client asked for and what it was given. Log
// lists records in the order requests arrived and fills them in as the
// responses are sent: whatever a client has received is already in
// the log, so tests need not wait for handlers to return.
type RequestRecord struct {
	Method string
	Path   string
	// Range and IfRange are the request headers as the client sent
	// them, before IgnoreRange dropped them.
	Range   string
	IfRange string
	// Status is the status sent, 0 if none was (the handler aborted
	// first).
	Status int
	// Bytes counts the body bytes written, partial ones included.
	Bytes int64
	// Cut reports that CutFraction cut the body short.
	Cut bool
}

// MatchSuffix returns a Faults.Match that selects requests whose URL
// path ends in one of suffixes, the usual way to hurt only zips
// (MatchSuffix(".zip")) and leave the small files reliable.
func MatchSuffix(suffixes ...string) func(r *http.Request) bool {
	return func(r *http.Request) bool {
		for _, s := range suffixes {
			if strings.HasSuffix(r.URL.Path, s) {
				return true
			}
		}
		return false
	}
}

// Update runs fn with the configuration locked, the race-free way to
// change knobs while requests are being served (for example to heal
// the upstream halfway through a test). fn must not call Update or
// Reset, which take the same lock.
func (f *Faults) Update(fn func(f *Faults)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// Requests counts requests that reached the wrapper, matching or not,
// to measure how many attempts a client needed.
func (f *Faults) Requests() int64 { return f.requests.Load() }

// RangeRequests counts requests that carried a Range header, to check
// that a client did (or did not) split or resume downloads.
func (f *Faults) RangeRequests() int64 { return f.rangeRequests.Load() }

// Injected502 counts the 502s FailFraction produced, so tests can
// relate a client's retries to the failures it actually met.
func (f *Faults) Injected502() int64 { return f.injected502.Load() }

// Injected429 counts the 429s TooManyFraction produced.
func (f *Faults) Injected429() int64 { return f.injected429.Load() }

// Cut counts response bodies CutFraction cut short.
func (f *Faults) Cut() int64 { return f.cut.Load() }

// BodyBytes counts body bytes written to clients through the wrapper,
// including those of cut and injected responses, to check that resumes
// did not refetch what had arrived.
func (f *Faults) BodyBytes() int64 { return f.bodyBytes.Load() }

// Log returns a copy of the per-request records so far, for assertions
// on the exact sequence of requests (Range, If-Range, statuses).
func (f *Faults) Log() []RequestRecord {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	log := make([]RequestRecord, len(f.log))
	for i, r := range f.log {
		log[i] = *r
	}
	return log
}

// Reset zeroes the counters, empties the log and restarts the random
// stream, so a test can measure, and reproduce, one phase alone.
// Requests in flight at the time keep adding to the counters but not to
// the log.
func (f *Faults) Reset() {
	f.mu.Lock()
	f.rng = nil
	f.mu.Unlock()
	for _, c := range []*atomic.Int64{&f.requests, &f.rangeRequests, &f.injected502, &f.injected429, &f.cut, &f.bodyBytes} {
		c.Store(0)
	}
	f.logMu.Lock()
	f.log = nil
	f.logMu.Unlock()
}

// plan is what Faults decided for one request.
type plan struct {
	rate        int64
	ignoreRange bool
	tooMany     bool
	retryAfter  time.Duration
	fail        bool
	cut         bool
	cutPoint    float64 // where to cut, as a fraction of the body in [0, 1)
}

// decide snapshots the configuration and draws the random decisions for
// r; requests Match rejects draw nothing, so they cannot shift the
// stream seen by the others.
func (f *Faults) decide(r *http.Request) plan {
	f.mu.Lock()
	match := f.Match
	f.mu.Unlock()
	if match != nil && !match(r) {
		return plan{}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rng == nil || f.rngSeed != f.Seed {
		f.rng = rand.New(rand.NewPCG(f.Seed, f.Seed^0x9e3779b97f4a7c15))
		f.rngSeed = f.Seed
	}
	// Always three draws, so turning one knob does not change which
	// requests the others hit.
	u, c, point := f.rng.Float64(), f.rng.Float64(), f.rng.Float64()
	return plan{
		rate:        f.BytesPerSecond,
		ignoreRange: f.IgnoreRange,
		tooMany:     u < f.TooManyFraction,
		retryAfter:  f.RetryAfter,
		fail:        u < max(f.TooManyFraction, 0)+f.FailFraction, // tooMany is checked first
		cut:         c < f.CutFraction,
		cutPoint:    point,
	}
}

// Wrap returns h behind the configured faults. The faults act on the
// wire: injected responses never reach h, and cuts abort the connection
// with http.ErrAbortHandler, so h and any handler in between must not
// recover that panic.
func (f *Faults) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		rec := &RequestRecord{
			Method:  r.Method,
			Path:    r.URL.Path,
			Range:   r.Header.Get("Range"),
			IfRange: r.Header.Get("If-Range"),
		}
		if rec.Range != "" {
			f.rangeRequests.Add(1)
		}
		f.logMu.Lock()
		f.log = append(f.log, rec)
		f.logMu.Unlock()
		p := f.decide(r)
		fw := &faultWriter{
			ResponseWriter: w,
			rc:             http.NewResponseController(w),
			f:              f,
			rec:            rec,
			ctx:            r.Context(),
			plan:           p,
			cutAt:          -1,
			head:           r.Method == http.MethodHead,
		}
		defer func() {
			if fw.timer != nil {
				fw.timer.Stop()
			}
		}()

		switch {
		case p.tooMany:
			f.injected429.Add(1)
			secs := int64(0)
			if p.retryAfter > 0 {
				secs = int64((p.retryAfter + time.Second - 1) / time.Second)
			}
			fw.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			writeText(fw, http.StatusTooManyRequests, "429 Too Many Requests: injected fault\n")
		case p.fail:
			f.injected502.Add(1)
			writeText(fw, http.StatusBadGateway, "502 Bad Gateway: injected fault\n")
		default:
			if p.ignoreRange && (r.Header.Get("Range") != "" || r.Header.Get("If-Range") != "") {
				r = r.Clone(r.Context())
				r.Header.Del("Range")
				r.Header.Del("If-Range")
			}
			h.ServeHTTP(fw, r)
		}
		if fw.status == 0 {
			fw.WriteHeader(http.StatusOK) // as net/http would, but logged
		}
	})
}

// faultWriter applies a plan's bandwidth cap, cut and header changes
// to one response. Unwrap keeps http.ResponseController usable.
type faultWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	f    *Faults
	rec  *RequestRecord // guarded by f.logMu
	ctx  context.Context
	plan plan
	head bool

	status  int
	cutAt   int64 // body offset to cut at, or -1
	written int64 // body bytes written

	paceStart time.Time
	paced     int64 // body bytes accounted for by the pacer
	timer     *time.Timer
}

func (w *faultWriter) WriteHeader(code int) {
	if w.status != 0 || code < 200 {
		// Informational or superfluous: net/http handles (or logs) it.
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.status = code
	w.f.logMu.Lock()
	w.rec.Status = code
	w.f.logMu.Unlock()
	if w.plan.ignoreRange {
		w.Header().Del("Accept-Ranges")
	}
	if w.plan.cut && !w.head && (code == http.StatusOK || code == http.StatusPartialContent) {
		if n, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64); err == nil && n > 0 {
			// At least one byte short, at least one byte sent when
			// there is more than one, so a resumption is possible and
			// needed.
			w.cutAt = min(1+int64(w.plan.cutPoint*float64(n-1)), n-1)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *faultWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	total := 0
	for len(b) > 0 || w.cutAt == w.written {
		n := len(b)
		if w.plan.rate > 0 {
			// Slices of about 20ms at the cap, so pacing is smooth at
			// low rates and cheap at high ones.
			n = min(n, int(min(max(w.plan.rate/50, 512), 32<<10)))
		}
		cutting := w.cutAt >= 0 && w.written+int64(n) >= w.cutAt
		if cutting {
			n = int(w.cutAt - w.written)
		}
		if w.plan.rate > 0 && n > 0 {
			if err := w.pace(n); err != nil {
				return total, err
			}
		}
		// Counted before the write, so that a client can never see bytes
		// that the counters and the log do not, and corrected after.
		w.count(int64(n))
		m, err := w.ResponseWriter.Write(b[:n])
		if m < n {
			w.count(int64(m - n))
		}
		total += m
		w.written += int64(m)
		if err != nil {
			return total, err
		}
		if cutting {
			// Flush so the client really gets the partial body, then
			// drop the connection: with the full Content-Length
			// announced, it reads io.ErrUnexpectedEOF.
			w.rc.Flush()
			w.f.cut.Add(1)
			w.f.logMu.Lock()
			w.rec.Cut = true
			w.f.logMu.Unlock()
			panic(http.ErrAbortHandler)
		}
		if w.plan.rate > 0 {
			w.rc.Flush()
		}
		b = b[n:]
	}
	return total, nil
}

func (w *faultWriter) count(n int64) {
	w.f.bodyBytes.Add(n)
	w.f.logMu.Lock()
	w.rec.Bytes += n
	w.f.logMu.Unlock()
}

// pace waits until sending n more bytes keeps the response's cumulative
// rate within the cap, measured from its first body write, so timer
// overshoot on one slice is made up on the next.
func (w *faultWriter) pace(n int) error {
	now := time.Now()
	if w.paceStart.IsZero() {
		w.paceStart = now
	}
	w.paced += int64(n)
	due := w.paceStart.Add(time.Duration(float64(w.paced) / float64(w.plan.rate) * float64(time.Second)))
	d := due.Sub(now)
	if d <= 0 {
		return nil
	}
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	select {
	case <-w.timer.C:
		return nil
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
}

// Flush sends the header through WriteHeader first, so that flushing
// before any write still gets the header changes and the cut planned.
func (w *faultWriter) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.rc.Flush()
}

func (w *faultWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
