package goproxy

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"strconv"
	"time"
)

// errProxyOff answers requests that reach "off", in the go command's words.
var errProxyOff = &fetchError{
	status: http.StatusForbidden,
	msg:    "module lookup disabled by GOPROXY=off",
}

// fetchError is a failed fetch as the client will see it.
type fetchError struct {
	status int    // HTTP status for the client
	msg    string // what the client reads
	err    error  // the cause, if any

	retry      bool          // another attempt may succeed
	retryAfter time.Duration // what the upstream asked to wait, if anything
	busy       bool          // a 408 or 429: the host works, but asks for patience
	noStore    bool          // a not-found that shared caches must not keep
}

func (e *fetchError) Error() string { return e.msg }

func (e *fetchError) Unwrap() error { return e.err }

// Is makes not-found answers match fs.ErrNotExist, which is what decides
// whether the walk falls through after ','.
func (e *fetchError) Is(target error) bool {
	return target == fs.ErrNotExist && (e.status == http.StatusNotFound || e.status == http.StatusGone)
}

func (p *Proxy) writeFetchError(w http.ResponseWriter, err error) {
	var fe *fetchError
	if errors.As(err, &fe) {
		if fe.Is(fs.ErrNotExist) && p.notFound.ttl > 0 && !fe.noStore {
			w.Header().Set("Cache-Control", p.cacheScope()+", max-age="+strconv.Itoa(int(p.notFound.ttl.Seconds())))
		}
		writeError(w, fe.status, fe.msg)
		return
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		writeError(w, http.StatusGatewayTimeout, "fetch did not finish: "+err.Error())
		return
	}
	writeError(w, http.StatusBadGateway, err.Error())
}
