package moduletest

import (
	"context"
	"math/rand/v2"
	"net"
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

	// UnavailableFraction of requests are answered 503 Service
	// Unavailable with RetryAfter as their Retry-After, as a server
	// going through maintenance or shedding load does.
	UnavailableFraction float64

	// ResetFraction of requests have their connection reset before any
	// byte of the answer is sent, as a crashing server's are.
	ResetFraction float64

	// StallHeadersFraction of requests get no answer at all: the
	// handler holds the connection open without sending a header until
	// the client goes away or StallFor passes, then drops it.
	StallHeadersFraction float64

	// RangeIgnoredFraction of requests carrying a Range header are
	// answered as if they had none (nor If-Range): 200 with the whole
	// body, as from a cache node that does not do ranges.
	RangeIgnoredFraction float64

	// FlapFraction of responses carry other validators than the file's
	// (a marked ETag, a Last-Modified an hour later), as from a second
	// origin server that computes them differently. A flapped request
	// judges If-Range by its own validators, so a resumption tied to
	// the other server's gets the whole body with 200, as it would from
	// a real server.
	FlapFraction float64

	// The draw that picks TooManyFraction and FailFraction also picks
	// UnavailableFraction, ResetFraction, StallHeadersFraction,
	// RangeIgnoredFraction and FlapFraction, in that order: each holds
	// on its own as long as their sum is at most 1.

	// CutFraction of 200 and 206 responses with a known Content-Length
	// (all of Server's) have their body cut at a random point before the
	// end, with the connection dropped, so the client sees
	// io.ErrUnexpectedEOF and must resume or retry. Responses to HEAD
	// are never cut.
	CutFraction float64

	// CutUnvalidatedFraction of 200 and 206 responses are cut as
	// CutFraction's are, after losing their ETag and Last-Modified: the
	// answer of a crashing server or CDN node, which ties the bytes sent
	// to no version of the file.
	CutUnvalidatedFraction float64

	// StallBodyFraction of 200 and 206 responses with a known
	// Content-Length stop at a random point of their body and hold the
	// connection open, sending nothing, until the client goes away or
	// StallFor passes; then the connection is dropped.
	StallBodyFraction float64

	// CutFraction, CutUnvalidatedFraction and StallBodyFraction share a
	// draw of their own, in that order, independent of the one above.

	// StallFor bounds the stalls; zero means they last until the client
	// goes away.
	StallFor time.Duration

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

	requests, rangeRequests, bodyBytes atomic.Int64
	counts                             [numFaults]atomic.Int64

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
	// Cut reports that CutFraction or CutUnvalidatedFraction cut the
	// body short.
	Cut bool
	// Fault names the fault injected into this request ("" for none),
	// as FaultCounts names them: "TooMany", "Failed", "Cut", ...
	Fault string
	// PacedBytes counts the body bytes that this response's own pacer
	// held to PacedRate bytes per second (BytesPerSecond): the cap is per
	// response, so responses in parallel each have the whole rate, and a
	// test can check it without timing them.
	PacedBytes, PacedRate int64
}

// FaultCounts counts the faults injected since the start or Reset, one
// field per knob, so that a test can check that a client met every kind
// it was meant to meet. A fault is counted when it happens, not when it
// is drawn: a RangeIgnored draw for a request without Range, or a Cut
// draw for a 404, injects nothing.
type FaultCounts struct {
	TooMany        int64 // 429 answers
	Failed         int64 // 502 answers
	Unavailable    int64 // 503 answers
	Reset          int64 // connections reset before the header
	StalledHeaders int64 // requests that never got a header
	RangeIgnored   int64 // 200 answers to Range requests
	Flapped        int64 // answers with the other validators
	Cut            int64 // bodies cut, validators kept
	CutUnvalidated int64 // bodies cut, validators removed
	StalledBody    int64 // bodies stalled midway
}

// Total is the number of faults of every kind.
func (c FaultCounts) Total() int64 {
	return c.TooMany + c.Failed + c.Unavailable + c.Reset + c.StalledHeaders + c.RangeIgnored +
		c.Flapped + c.Cut + c.CutUnvalidated + c.StalledBody
}

// fault is one kind of injected fault, indexing Faults.counts.
type fault int

const (
	noFault fault = iota
	faultTooMany
	faultFailed
	faultUnavailable
	faultReset
	faultStalledHeaders
	faultRangeIgnored
	faultFlapped
	faultCut
	faultCutUnvalidated
	faultStalledBody
	numFaults
)

var faultNames = [numFaults]string{"", "TooMany", "Failed", "Unavailable", "Reset", "StalledHeaders",
	"RangeIgnored", "Flapped", "Cut", "CutUnvalidated", "StalledBody"}

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
func (f *Faults) Injected502() int64 { return f.counts[faultFailed].Load() }

// Injected429 counts the 429s TooManyFraction produced.
func (f *Faults) Injected429() int64 { return f.counts[faultTooMany].Load() }

// Cut counts response bodies CutFraction and CutUnvalidatedFraction cut
// short.
func (f *Faults) Cut() int64 {
	return f.counts[faultCut].Load() + f.counts[faultCutUnvalidated].Load()
}

// Counts returns the faults injected so far, by kind.
func (f *Faults) Counts() FaultCounts {
	c := func(k fault) int64 { return f.counts[k].Load() }
	return FaultCounts{
		TooMany: c(faultTooMany), Failed: c(faultFailed), Unavailable: c(faultUnavailable), Reset: c(faultReset),
		StalledHeaders: c(faultStalledHeaders), RangeIgnored: c(faultRangeIgnored), Flapped: c(faultFlapped),
		Cut: c(faultCut), CutUnvalidated: c(faultCutUnvalidated), StalledBody: c(faultStalledBody),
	}
}

// inject counts a fault of kind k in rec.
func (f *Faults) inject(rec *RequestRecord, k fault) {
	f.counts[k].Add(1)
	f.logMu.Lock()
	rec.Fault = faultNames[k]
	if k == faultCut || k == faultCutUnvalidated {
		rec.Cut = true
	}
	f.logMu.Unlock()
}

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
	for _, c := range []*atomic.Int64{&f.requests, &f.rangeRequests, &f.bodyBytes} {
		c.Store(0)
	}
	for i := range f.counts {
		f.counts[i].Store(0)
	}
	f.logMu.Lock()
	f.log = nil
	f.logMu.Unlock()
}

// plan is what Faults decided for one request.
type plan struct {
	rate        int64
	ignoreRange bool
	retryAfter  time.Duration
	stallFor    time.Duration
	request     fault   // a request-level fault, or noFault
	body        fault   // a body fault (cut or stall), or noFault
	cutPoint    float64 // where to cut or stall, as a fraction of the body in [0, 1)
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
	p := plan{
		rate:        f.BytesPerSecond,
		ignoreRange: f.IgnoreRange,
		retryAfter:  f.RetryAfter,
		stallFor:    f.StallFor,
		cutPoint:    point,
	}
	p.request = pick(u, []float64{f.TooManyFraction, f.FailFraction, f.UnavailableFraction, f.ResetFraction,
		f.StallHeadersFraction, f.RangeIgnoredFraction, f.FlapFraction},
		faultTooMany, faultFailed, faultUnavailable, faultReset, faultStalledHeaders, faultRangeIgnored, faultFlapped)
	p.body = pick(c, []float64{f.CutFraction, f.CutUnvalidatedFraction, f.StallBodyFraction},
		faultCut, faultCutUnvalidated, faultStalledBody)
	return p
}

// pick returns the fault whose slice of [0, 1), laid out by fractions in
// order, holds u; noFault past them all.
func pick(u float64, fractions []float64, faults ...fault) fault {
	var sum float64
	for i, fr := range fractions {
		sum += max(fr, 0)
		if u < sum {
			return faults[i]
		}
	}
	return noFault
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

		switch p.request {
		case faultTooMany, faultUnavailable:
			f.inject(rec, p.request)
			secs := int64(0)
			if p.retryAfter > 0 {
				secs = int64((p.retryAfter + time.Second - 1) / time.Second)
			}
			fw.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			if p.request == faultTooMany {
				writeText(fw, http.StatusTooManyRequests, "429 Too Many Requests: injected fault\n")
			} else {
				writeText(fw, http.StatusServiceUnavailable, "503 Service Unavailable: injected fault\n")
			}
		case faultFailed:
			f.inject(rec, p.request)
			writeText(fw, http.StatusBadGateway, "502 Bad Gateway: injected fault\n")
		case faultReset:
			f.inject(rec, p.request)
			reset(w)
			return
		case faultStalledHeaders:
			f.inject(rec, p.request)
			stall(r.Context(), p.stallFor)
			panic(http.ErrAbortHandler)
		default:
			ranged := r.Header.Get("Range") != "" || r.Header.Get("If-Range") != ""
			switch {
			case ranged && p.ignoreRange:
				r = withoutRange(r)
			case ranged && p.request == faultRangeIgnored && r.Header.Get("Range") != "":
				f.inject(rec, p.request)
				r = withoutRange(r)
			case p.request == faultFlapped:
				if ir := r.Header.Get("If-Range"); ir != "" {
					r = r.Clone(r.Context())
					r.Header.Set("If-Range", unflap(ir))
				}
			}
			h.ServeHTTP(fw, r)
		}
		if fw.status == 0 {
			fw.WriteHeader(http.StatusOK) // as net/http would, but logged
		}
	})
}

func withoutRange(r *http.Request) *http.Request {
	r = r.Clone(r.Context())
	r.Header.Del("Range")
	r.Header.Del("If-Range")
	return r
}

// flapMark marks the ETags of flapped responses.
const flapMark = "flap-"

// flap turns a file's validator into the other server's.
func flap(header http.Header) bool {
	flapped := false
	if etag := header.Get("ETag"); etag != "" {
		tag, weak := strings.CutPrefix(etag, "W/")
		prefix := ""
		if weak {
			prefix = "W/"
		}
		header.Set("ETag", prefix+`"`+flapMark+strings.TrimPrefix(tag, `"`))
		flapped = true
	}
	if lm, err := http.ParseTime(header.Get("Last-Modified")); err == nil {
		header.Set("Last-Modified", lm.Add(time.Hour).UTC().Format(http.TimeFormat))
		flapped = true
	}
	return flapped
}

// unflap translates an If-Range into the terms of the file's own
// validators as a flapped request sees them: the other server's become
// the file's, and the file's own become ones that match nothing.
func unflap(ifRange string) string {
	if t, err := http.ParseTime(ifRange); err == nil {
		return t.Add(-time.Hour).UTC().Format(http.TimeFormat)
	}
	if tag, ok := strings.CutPrefix(ifRange, `"`+flapMark); ok {
		return `"` + tag
	}
	return `"unflapped-` + strings.TrimPrefix(ifRange, `"`)
}

// reset drops the connection with a TCP reset, before any byte of an
// answer: the client sees "connection reset by peer".
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// stall waits until ctx ends, or d passes if it is positive.
func stall(ctx context.Context, d time.Duration) {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
	case <-timeout:
	}
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
	if w.plan.request == faultFlapped && flap(w.Header()) {
		w.f.inject(w.rec, faultFlapped)
	}
	if w.plan.body != noFault && !w.head && (code == http.StatusOK || code == http.StatusPartialContent) {
		if n, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64); err == nil && n > 0 {
			// At least one byte short, at least one byte sent when
			// there is more than one, so a resumption is possible and
			// needed.
			w.cutAt = min(1+int64(w.plan.cutPoint*float64(n-1)), n-1)
			if w.plan.body == faultCutUnvalidated {
				w.Header().Del("ETag")
				w.Header().Del("Last-Modified")
			}
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
			// announced, it reads io.ErrUnexpectedEOF. A stall first
			// holds the connection open with nothing more to read.
			w.rc.Flush()
			w.f.inject(w.rec, w.plan.body)
			if w.plan.body == faultStalledBody {
				stall(w.ctx, w.plan.stallFor)
			}
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
	w.f.logMu.Lock()
	w.rec.PacedBytes, w.rec.PacedRate = w.paced, w.plan.rate
	w.f.logMu.Unlock()
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
