package goproxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"time"
)

// Errors of the package's API, for errors.Is.
var (
	// ErrPublishingDisabled is returned by [Proxy.Publish] when the Proxy
	// has no Hosted store. Over HTTP, a PUT answers 405 Method Not Allowed.
	ErrPublishingDisabled = errors.New("publishing is not enabled on this proxy (no Hosted store)")

	// ErrVersionConflict is returned (wrapped) by [Proxy.Publish] when the
	// version was published before with different content: published
	// versions never change. Over HTTP it answers 409 Conflict.
	ErrVersionConflict = errors.New("version already published with different content")

	// ErrInvalidModule is returned (wrapped) by [Proxy.Publish] for a zip,
	// path or version that is not a valid module version, along with the
	// golang.org/x/mod error that says why. Over HTTP it answers 400 with
	// the reason.
	ErrInvalidModule = errors.New("invalid module")

	// ErrUnauthenticated is what an authorization hook returns (or wraps)
	// when a request carries no valid credentials: the proxy answers 401
	// with a WWW-Authenticate challenge. Any other error from the hook
	// answers 403.
	ErrUnauthenticated = errors.New("authentication required")
)

// failKind says what went wrong. Kinds are errors too, so that
// errors.Is(err, failNotFound) asks whether err is a not-found; which HTTP
// status each one answers is decided in one place, answerFor.
type failKind int

const (
	// failUnavailable: a source the answer depends on (an upstream, the
	// published store, the go command) could not be reached or failed.
	failUnavailable failKind = iota
	// failNotFound: no upstream has the file; failGone: an origin said
	// it is gone for good.
	failNotFound
	failGone
	// failNotCached: the file is not cached and the client asked that
	// nothing be fetched: not remembered, not to be kept by shared caches.
	failNotCached
	// failInvalidContent: an upstream sent content that fails validation.
	failInvalidContent
	// failUnverifiable: the checksum database could not say whether the
	// content is genuine (unreachable, or caught misbehaving).
	failUnverifiable
	// failChecksumMismatch: the content is not what the checksum database
	// recorded.
	failChecksumMismatch
	// failTooLarge: an upstream sent more than the limit for the file.
	failTooLarge
	// failTimedOut: an upstream or the go command did not answer in time.
	failTimedOut
	// failRefused: the configuration refuses it: the egress policy, or
	// GOPROXY=off.
	failRefused
	// failUpstreamRefused: an upstream refused the request (401, 403,
	// 451, ...), a refusal passed on with the upstream's status.
	failUpstreamRefused
	// failNoSpace: the proxy's temporary directory is full.
	failNoSpace
	// failInternal: the proxy itself failed.
	failInternal
	// Refusals of the client's request: malformed, too long, a method not
	// served there, a loop through this very proxy, missing or
	// insufficient credentials, something the cache cannot do.
	failBadRequest
	failPathTooLong
	failMethod
	failLoop
	failUnauthenticated
	failForbidden
	failNotImplemented
	// failConflict: a version published before with other content.
	failConflict
	// failClosed: the Proxy is closed (see Proxy.Close).
	failClosed
	// failAdmission: the admission policy refuses the module version
	// (an AdmissionError).
	failAdmission
)

var failKindNames = [...]string{
	failUnavailable:      "unavailable",
	failNotFound:         "not found",
	failGone:             "gone",
	failNotCached:        "not cached",
	failInvalidContent:   "invalid upstream content",
	failUnverifiable:     "unverifiable",
	failChecksumMismatch: "checksum mismatch",
	failTooLarge:         "too large",
	failTimedOut:         "timed out",
	failRefused:          "refused by policy",
	failUpstreamRefused:  "refused by the upstream",
	failNoSpace:          "no space left",
	failInternal:         "internal error",
	failBadRequest:       "bad request",
	failPathTooLong:      "path too long",
	failMethod:           "method not allowed",
	failLoop:             "loop",
	failUnauthenticated:  "unauthenticated",
	failForbidden:        "forbidden",
	failNotImplemented:   "not implemented",
	failConflict:         "conflict",
	failClosed:           "closed",
	failAdmission:        "refused by admission",
}

// errClosed answers the requests that come after Close, and ends the
// fetches it cancels.
var errClosed = failed(failClosed, "the proxy is shutting down")

func (k failKind) Error() string { return failKindNames[k] }

// lasting reports whether a fetch that failed so fails again for a while,
// whoever asks: a not-found, or a refusal. Such answers are remembered for
// NotFoundTTL, since the go command's probing of module path prefixes
// would repeat them.
func (k failKind) lasting() bool {
	switch k {
	case failNotFound, failGone, failRefused, failUpstreamRefused, failBadRequest:
		return true
	}
	return false
}

// failure is an error that says what happened, in words for the client,
// keeping its cause for errors.Is and errors.As.
type failure struct {
	kind failKind
	msg  string // what the client reads
	err  error  // the cause, if any

	// status is the upstream's HTTP status, when it answered one: the
	// status a failUpstreamRefused answers with, and what metrics report.
	status int
	// allow is the Allow header of a failMethod.
	allow string
	// mayPass marks a lasting failure (a not-found, a refusal) chosen by
	// a walk of the upstreams that also met a failure that may pass:
	// neither the not-found memo nor shared caches may keep it.
	mayPass bool

	// For the download engine's retries:
	retry      bool          // another attempt may succeed
	retryAfter time.Duration // what the upstream asked to wait, if anything
	busy       bool          // a 408 or 429: the host works, but asks for patience
}

// failed returns a failure of kind whose message is formatted as
// fmt.Errorf formats it; the errors of its %w verbs are its causes.
func failed(kind failKind, format string, args ...any) *failure {
	err := fmt.Errorf(format, args...)
	return &failure{kind: kind, msg: err.Error(), err: err}
}

func (e *failure) Error() string { return e.msg }

func (e *failure) Unwrap() error { return e.err }

// Is matches the failure's kind, and makes not-found answers match
// fs.ErrNotExist, which is what decides whether the walk falls through
// after ','.
func (e *failure) Is(target error) bool {
	if k, ok := target.(failKind); ok {
		return e.kind == k
	}
	return target == fs.ErrNotExist && (e.kind == failNotFound || e.kind == failGone || e.kind == failNotCached)
}

// kindOf returns what err says happened: its failure's kind, or what a
// plain error means. An unknown error is a source's failure.
func kindOf(err error) failKind {
	var f *failure
	var ae *AdmissionError
	switch {
	case errors.As(err, &f):
		return f.kind
	case errors.As(err, &ae):
		return failAdmission
	case errors.Is(err, fs.ErrNotExist):
		return failNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return failTimedOut
	case egressRefusal(err) != nil:
		return failRefused
	case errors.Is(err, ErrVersionConflict):
		return failConflict
	case errors.Is(err, ErrPublishingDisabled):
		return failMethod
	case errors.Is(err, ErrInvalidModule):
		return failBadRequest
	case errors.Is(err, ErrUnauthenticated):
		return failUnauthenticated
	}
	return failUnavailable
}

// notFound reports whether err says that the file does not exist: what
// lets the walk of the upstreams go on after ','. The outermost failure
// decides, whatever its causes say: a checksum database's 404 is no
// module's.
func notFound(err error) bool {
	switch kindOf(err) {
	case failNotFound, failGone, failNotCached:
		return true
	}
	return false
}

// answerFor is where an error becomes an HTTP answer: the one place that
// chooses the status, and the message the client reads.
func answerFor(err error) (status int, msg string) {
	msg = err.Error()
	switch kind := kindOf(err); kind {
	case failNotFound, failNotCached:
		return http.StatusNotFound, msg
	case failGone:
		return http.StatusGone, msg
	case failUpstreamRefused:
		var f *failure
		errors.As(err, &f)
		return f.status, msg
	case failRefused, failForbidden, failAdmission:
		// Never 404 or 410, on which the go command would try its next
		// GOPROXY entry or direct.
		return http.StatusForbidden, msg
	case failTimedOut:
		var f *failure
		if !errors.As(err, &f) {
			msg = "fetch did not finish: " + msg
		}
		return http.StatusGatewayTimeout, msg
	case failNoSpace:
		return http.StatusInsufficientStorage, msg
	case failInternal:
		return http.StatusInternalServerError, msg
	case failBadRequest:
		return http.StatusBadRequest, msg
	case failPathTooLong:
		return http.StatusRequestURITooLong, msg
	case failMethod:
		return http.StatusMethodNotAllowed, msg
	case failLoop:
		return http.StatusLoopDetected, msg
	case failUnauthenticated:
		return http.StatusUnauthorized, msg
	case failNotImplemented:
		return http.StatusNotImplemented, msg
	case failConflict:
		return http.StatusConflict, msg
	case failClosed:
		return http.StatusServiceUnavailable, msg
	}
	// failUnavailable, failInvalidContent, failUnverifiable,
	// failChecksumMismatch, failTooLarge: what the proxy stands in
	// front of failed.
	return http.StatusBadGateway, msg
}

// writeFailure answers a request that failed with err, with the headers
// the failure calls for: how long a not-found may be kept, the methods
// allowed, the authentication schemes. It returns the status.
func (p *Proxy) writeFailure(w http.ResponseWriter, err error) int {
	status, msg := answerFor(err)
	h := w.Header()
	switch kind := kindOf(err); {
	case (kind == failNotFound || kind == failGone) && p.conf.notFoundTTL > 0 && remembered(err):
		h.Set("Cache-Control", p.cacheScope()+", max-age="+strconv.Itoa(int(p.conf.notFoundTTL.Seconds())))
	case kind == failMethod:
		if f := (*failure)(nil); errors.As(err, &f) && f.allow != "" {
			h.Set("Allow", f.allow)
		}
	case kind == failUnauthenticated:
		h.Set("WWW-Authenticate", `Basic realm="goproxy"`)
		h.Add("WWW-Authenticate", `Bearer realm="goproxy"`)
	}
	writeMessage(w, status, msg)
	return status
}
