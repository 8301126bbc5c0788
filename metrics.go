package goproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// Metrics receives the proxy's measurements, for the embedder to export to
// the monitoring system of its choice (Prometheus, OpenTelemetry, expvar):
// the root module imports none. Each field is called as its event happens;
// a nil field is not reported. Later versions add fields, so set them by
// name.
//
// Calls are made on the serving path, from many goroutines at once: they
// must be quick and must not block. What they are passed is a small value
// whose strings are constants or strings the proxy already holds, so that
// reporting costs no allocation; keep it that way by not retaining more
// than the counts. They must not panic either: a hook's panic is no
// request's failure, and on the proxy's background goroutines (eviction
// runs) nothing recovers it.
type Metrics struct {
	// Request reports every answered request, when its response is done.
	Request func(RequestMetric)

	// UpstreamFetch reports every fetch from one upstream (a module proxy,
	// "direct" or a checksum database), retries included in its duration.
	UpstreamFetch func(UpstreamFetchMetric)

	// Retry reports every attempt that failed transiently and is tried
	// again (a connection error, a cut body, a 5xx or 429 answer).
	Retry func(RetryMetric)

	// Verification reports every check of a .mod or .zip against a
	// checksum database.
	Verification func(VerificationMetric)

	// Download reports downloads from upstreams as they start, make
	// progress and end: how many are in flight and the bytes received.
	Download func(DownloadMetric)

	// SharedFetch reports a client's request served by a fetch another
	// started (the flight group's sharing). The proxy's own lookups that
	// join a fetch (the checksum verifier's, the admission policy's,
	// fills, revalidations) are not reported.
	SharedFetch func(SharedFetchMetric)

	// CacheSize reports the cache's size after every eviction run.
	CacheSize func(CacheSizeMetric)

	// Eviction reports every removal by eviction: a module version's files
	// together, or one other entry.
	Eviction func(EvictionMetric)

	// Prefetch reports what prefetching did: a file brought from an
	// upstream ahead of the clients, a client asking for one, a file
	// dropped because too many waited.
	Prefetch func(PrefetchMetric)

	// Scrub reports every .mod and .zip a scrub checked (see
	// [ScrubOptions]).
	Scrub func(ScrubMetric)

	// Admission reports every decision of the Proxy's Admission hook
	// other than the zero one (an admission without a rule): refusals,
	// versions hidden, reports, and exceptions that admitted what a rule
	// would have refused.
	Admission func(AdmissionMetric)

	// StoreError reports every failure of a store: of the Cacher, which
	// the proxy then bypasses (the upstreams answer), or of the Hosted
	// store, whose failures answer 502.
	StoreError func(StoreErrorMetric)
}

// RequestKind is what a request asks for, as metrics and the live view name
// it.
type RequestKind string

// The kinds of requests.
const (
	RequestList    RequestKind = "list"    // <module>/@v/list
	RequestLatest  RequestKind = "latest"  // <module>/@latest
	RequestInfo    RequestKind = "info"    // <module>/@v/<version>.info, queries included
	RequestMod     RequestKind = "mod"     // <module>/@v/<version>.mod
	RequestZip     RequestKind = "zip"     // <module>/@v/<version>.zip
	RequestSumDB   RequestKind = "sumdb"   // /sumdb/<db>/...
	RequestPublish RequestKind = "publish" // PUT of a .zip
	RequestAdmin   RequestKind = "admin"   // /index, /-/cached/, DELETE
	// RequestOther is a request refused before it named a file: a path
	// the protocol has no such file for, a method not allowed, a loop.
	RequestOther RequestKind = "other"
)

// CacheOutcome says where a request's answer came from.
type CacheOutcome string

// The cache outcomes. A request that did not reach the cache (refused,
// malformed, publish, admin) has none: the empty string.
const (
	CacheHot          CacheOutcome = "hot"            // from the proxy's memory
	CacheHit          CacheOutcome = "hit"            // from the Cacher, or published (merged with the upstreams' list, for lists and queries)
	CacheMiss         CacheOutcome = "miss"           // fetched from upstream, or failed to be
	CacheStale        CacheOutcome = "stale"          // a cached answer past its time, upstreams failing
	CacheNotFoundMemo CacheOutcome = "not-found-memo" // a remembered not-found answer
)

// RequestMetric describes an answered request.
type RequestMetric struct {
	Kind     RequestKind
	Status   int
	Cache    CacheOutcome
	Bytes    int64         // body bytes written
	Duration time.Duration // from arrival to the end of the response
	// Aborted is set when the response was cut after it started
	// (an upstream failed midway: the connection is aborted so that the
	// client sees an error, not a short file). Status is then the status
	// that was sent, and Bytes what was written before the cut.
	Aborted bool

	// Context is the request's context, so that the embedder can tie the
	// measurement to what it keeps of the request (its ID, its access log
	// line) through a value it put there. It is valid during the call
	// only: keep none of it.
	Context context.Context
}

// FetchOutcome is how a fetch from an upstream ended.
type FetchOutcome string

// The fetch outcomes.
const (
	FetchOK       FetchOutcome = "ok"
	FetchNotFound FetchOutcome = "not-found" // 404 or 410: the walk of upstreams may go on
	FetchInvalid  FetchOutcome = "invalid"   // an answer that failed validation or verification
	FetchError    FetchOutcome = "error"     // any other failure, after retries
	FetchCanceled FetchOutcome = "canceled"  // every waiting client left, or the timeout passed
)

// UpstreamFetchMetric describes one fetch from one upstream.
type UpstreamFetchMetric struct {
	// Upstream is the upstream's URL without credentials, "direct", or
	// "sumdb/<name>" for a checksum database.
	Upstream string
	Kind     RequestKind
	Outcome  FetchOutcome
	Status   int // the last HTTP status, 0 without one
	Bytes    int64
	Duration time.Duration
	// Prefetch is set for a fetch that prefetching started (see
	// PrefetchOptions), its checksum database lookups included: no
	// client had asked for the file yet.
	Prefetch bool
}

// RetryMetric describes an attempt that is tried again.
type RetryMetric struct {
	Upstream string
	Kind     RequestKind
	Attempt  int // the attempt that failed, from 1
	Status   int // its HTTP status, 0 for a connection error or a cut body
}

// VerificationOutcome is how a check against a checksum database ended.
type VerificationOutcome string

// The verification outcomes.
const (
	VerifyOK          VerificationOutcome = "ok"
	VerifyMismatch    VerificationOutcome = "mismatch"    // the hashes differ: the file is refused
	VerifyUnreachable VerificationOutcome = "unreachable" // the database could not be asked, or had no answer for it: refused
	VerifyUnverified  VerificationOutcome = "unverified"  // could not be asked, let through by AllowUnverified
)

// VerificationMetric describes a check against a checksum database.
type VerificationMetric struct {
	DB      string // the database's name, such as "sum.golang.org"
	Kind    RequestKind
	Outcome VerificationOutcome
}

// DownloadEvent is what happened to a download.
type DownloadEvent string

// The download events.
const (
	DownloadStarted  DownloadEvent = "started"
	DownloadProgress DownloadEvent = "progress"
	DownloadEnded    DownloadEvent = "ended" // whether it succeeded or not
)

// DownloadMetric describes a download from an upstream starting, making
// progress or ending.
type DownloadMetric struct {
	Upstream string
	Event    DownloadEvent
	InFlight int   // downloads running in the proxy after this event
	Bytes    int64 // bytes received since this download's last report
}

// SharedFetchMetric describes a request that joined another's fetch.
type SharedFetchMetric struct {
	Kind RequestKind
}

// CacheSizeMetric describes the cache as an eviction run left it.
type CacheSizeMetric struct {
	Bytes   int64
	Entries int
}

// EvictionReason says why eviction removed something.
type EvictionReason string

// The eviction reasons.
const (
	EvictedByAge  EvictionReason = "age"  // unused for longer than MaxAge
	EvictedBySize EvictionReason = "size" // least recently used while over MaxBytes
)

// EvictionMetric describes one removal by eviction.
type EvictionMetric struct {
	Reason EvictionReason
	Files  int
	Bytes  int64
}

// PrefetchEvent is what happened to a prefetched file.
type PrefetchEvent string

// The prefetch events.
const (
	PrefetchFetched PrefetchEvent = "fetched" // brought from an upstream (and cached) ahead of the clients
	PrefetchUsed    PrefetchEvent = "used"    // a client asked for a file prefetched, the first time
	PrefetchDropped PrefetchEvent = "dropped" // not prefetched: too many files waited
)

// PrefetchMetric describes a prefetched file.
type PrefetchMetric struct {
	Kind  RequestKind // mod or info
	Event PrefetchEvent
}

// ScrubOutcome is what a scrub found of a file.
type ScrubOutcome string

// The scrub outcomes.
const (
	ScrubOK ScrubOutcome = "ok"
	// ScrubMismatch: the file does not hash to what the checksum database
	// recorded.
	ScrubMismatch ScrubOutcome = "mismatch"
	// ScrubInvalid: the file is damaged: a zip that fails CheckZip or a
	// CRC, a go.mod that does not parse.
	ScrubInvalid ScrubOutcome = "invalid"
	// ScrubUnverifiable: the checksum database could not be asked, or
	// has no record of the version: the file is kept.
	ScrubUnverifiable ScrubOutcome = "unverifiable"
)

// ScrubMetric describes one file a scrub checked.
type ScrubMetric struct {
	Kind    RequestKind // RequestMod or RequestZip
	Outcome ScrubOutcome
	// Published is set for a file of the published store, which a
	// scrub never removes.
	Published bool
	// Removed is set when the scrub removed the file from the cache.
	Removed bool
	Bytes   int64
}

// AdmissionUse says what an admission decision was made for.
type AdmissionUse string

// The uses of admission decisions.
const (
	// AdmissionRequest: a client asked for the version's .info, .mod or
	// .zip, or a query or @latest resolved to it.
	AdmissionRequest AdmissionUse = "request"
	// AdmissionList: the version is in a version list being served, or is
	// a candidate for @latest. Every version of every list served is
	// decided: these count list entries, not versions.
	AdmissionList AdmissionUse = "list"
	// AdmissionFetch: the proxy is about to fetch the version for itself:
	// a prefetch, a fill or an import.
	AdmissionFetch AdmissionUse = "fetch"
)

// AdmissionMetric describes one admission decision.
type AdmissionMetric struct {
	// Rule is the decision's Rule, as the hook gave it ("deny",
	// "vulnerable", "cooldown", "allow", "policy" for AdmissionPolicy).
	Rule       string
	Verdict    AdmissionVerdict
	ReportOnly bool
	Use        AdmissionUse
}

// StoreRole says which store failed.
type StoreRole string

// The roles of stores.
const (
	StoreCache  StoreRole = "cache"  // the Cacher: bypassed when it fails
	StoreHosted StoreRole = "hosted" // the Hosted store: 502 when it fails
)

// StoreOperation is what the proxy asked of a store that failed.
type StoreOperation string

// The operations on stores.
const (
	StoreGet      StoreOperation = "get"      // reading an entry (or finding it missing)
	StorePut      StoreOperation = "put"      // storing an entry
	StoreList     StoreOperation = "list"     // listing entries
	StoreLease    StoreOperation = "lease"    // taking a lease shared with other proxies
	StoreRedirect StoreOperation = "redirect" // making a URL to download an entry from the store
)

// StoreErrorMetric describes a failure of a store.
type StoreErrorMetric struct {
	Role StoreRole
	Op   StoreOperation
}

// The report methods check for nil, so that call sites stay one line; they
// are small enough to be inlined, so an unset hook costs a comparison.

func (m *Metrics) request(r RequestMetric) {
	if m != nil && m.Request != nil {
		m.Request(r)
	}
}

func (m *Metrics) upstreamFetch(r UpstreamFetchMetric) {
	if m != nil && m.UpstreamFetch != nil {
		m.UpstreamFetch(r)
	}
}

func (m *Metrics) retry(r RetryMetric) {
	if m != nil && m.Retry != nil {
		m.Retry(r)
	}
}

func (m *Metrics) verification(r VerificationMetric) {
	if m != nil && m.Verification != nil {
		m.Verification(r)
	}
}

func (m *Metrics) download(r DownloadMetric) {
	if m != nil && m.Download != nil {
		m.Download(r)
	}
}

func (m *Metrics) sharedFetch(r SharedFetchMetric) {
	if m != nil && m.SharedFetch != nil {
		m.SharedFetch(r)
	}
}

func (m *Metrics) cacheSize(r CacheSizeMetric) {
	if m != nil && m.CacheSize != nil {
		m.CacheSize(r)
	}
}

func (m *Metrics) eviction(r EvictionMetric) {
	if m != nil && m.Eviction != nil {
		m.Eviction(r)
	}
}

func (m *Metrics) prefetch(r PrefetchMetric) {
	if m != nil && m.Prefetch != nil {
		m.Prefetch(r)
	}
}

func (m *Metrics) scrub(r ScrubMetric) {
	if m != nil && m.Scrub != nil {
		m.Scrub(r)
	}
}

func (m *Metrics) admission(r AdmissionMetric) {
	if m != nil && m.Admission != nil {
		m.Admission(r)
	}
}

func (m *Metrics) storeError(r StoreErrorMetric) {
	if m != nil && m.StoreError != nil {
		m.StoreError(r)
	}
}

// metricKind names a request's kind for metrics.
func (req *request) metricKind() RequestKind {
	switch req.kind {
	case kindList:
		return RequestList
	case kindLatest:
		return RequestLatest
	case kindInfo:
		return RequestInfo
	case kindMod:
		return RequestMod
	case kindZip:
		return RequestZip
	}
	return RequestSumDB
}

// measuredResponse passes a response on, keeping what the Request metric
// reports of it. Pooled, so that measuring a hit allocates nothing.
type measuredResponse struct {
	http.ResponseWriter
	arrived time.Time
	status  int
	bytes   int64
	kind    RequestKind
	cache   CacheOutcome
	aborted bool
	ctx     context.Context
}

var measuredResponses = sync.Pool{New: func() any { return new(measuredResponse) }}

// measureResponse starts measuring the response to r, arriving now.
func measureResponse(w http.ResponseWriter, r *http.Request) *measuredResponse {
	m := measuredResponses.Get().(*measuredResponse)
	*m = measuredResponse{ResponseWriter: w, arrived: time.Now(), kind: RequestOther, ctx: r.Context()}
	return m
}

func (m *measuredResponse) WriteHeader(status int) {
	if m.status == 0 && status >= 200 {
		m.status = status
	}
	m.ResponseWriter.WriteHeader(status)
}

func (m *measuredResponse) Write(b []byte) (int, error) {
	if m.status == 0 {
		m.status = http.StatusOK
	}
	n, err := m.ResponseWriter.Write(b)
	m.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the connection's own ReadFrom (sendfile) within reach.
func (m *measuredResponse) ReadFrom(r io.Reader) (int64, error) {
	if m.status == 0 {
		m.status = http.StatusOK
	}
	n, err := io.Copy(m.ResponseWriter, r)
	m.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (m *measuredResponse) Unwrap() http.ResponseWriter { return m.ResponseWriter }

// reportRequest reports the Request metric of a response measured by m,
// once written (or aborted), and gives m back to the pool.
func (p *Proxy) reportRequest(m *measuredResponse) {
	status := m.status
	if status == 0 {
		status = http.StatusOK // what net/http sends for an empty answer
	}
	p.conf.metrics.request(RequestMetric{Kind: m.kind, Status: status, Cache: m.cache, Bytes: m.bytes, Duration: time.Since(m.arrived),
		Aborted: m.aborted, Context: m.ctx})
	*m = measuredResponse{}
	measuredResponses.Put(m)
}

// reportRequestPanicking is reportRequest for a response whose handler
// is panicking with v: the response was cut (http.ErrAbortHandler, or a
// bug), which the metric says; the panic goes on.
func (p *Proxy) reportRequestPanicking(m *measuredResponse, v any) {
	m.aborted = true
	p.reportRequest(m)
	panic(v)
}

// noteRequestKind tells the Request metric, if measured, what the
// request asks for.
func noteRequestKind(w http.ResponseWriter, k RequestKind) {
	if m, ok := w.(*measuredResponse); ok {
		m.kind = k
	}
}

// noteCacheOutcome tells the Request metric, if measured, where the
// answer came from, given the outcome's name in logs.
func noteCacheOutcome(w http.ResponseWriter, outcome string) {
	m, ok := w.(*measuredResponse)
	if !ok {
		return
	}
	switch outcome {
	case "hot":
		m.cache = CacheHot
	case "hit", "published", "merged":
		m.cache = CacheHit
	case "stale":
		m.cache = CacheStale
	case "miss", "failed":
		m.cache = CacheMiss
	case "remembered":
		m.cache = CacheNotFoundMemo
	}
}

// fetchOutcome says how a fetch from one upstream ended, and the last
// HTTP status it had (0 when unknown). ctx is the fetch's.
func fetchOutcome(ctx context.Context, err error) (FetchOutcome, int) {
	var f *failure
	errors.As(err, &f)
	switch kind := kindOf(err); {
	case err == nil:
		return FetchOK, http.StatusOK
	case kind == failNotFound || kind == failNotCached:
		return FetchNotFound, http.StatusNotFound
	case kind == failGone:
		return FetchNotFound, http.StatusGone
	case ctx.Err() != nil:
		return FetchCanceled, 0
	case kind == failInvalidContent || kind == failChecksumMismatch || kind == failUnverifiable || kind == failTooLarge:
		return FetchInvalid, http.StatusOK // what failed was the content of an answer
	case f != nil:
		return FetchError, f.status
	}
	return FetchError, 0
}
