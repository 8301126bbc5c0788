package goproxy

import (
	"context"
	"net/http"
	"time"
)

// DirectOptions tunes how the proxy fetches modules from their origin
// repositories, by running the go command, when "direct" is reached in an
// upstream list or a module matches GONOPROXY. The zero value gives the
// defaults.
type DirectOptions struct {
	// GoBin is the go command to run. Empty means "go" from PATH.
	GoBin string

	// Dir holds the proxy's own module cache and work directory for direct
	// fetches, never the user's. Empty means "goproxy-direct" in the
	// Proxy's TempDir.
	Dir string

	// Timeout bounds one run of the go command. Zero means 5 minutes.
	Timeout time.Duration

	// MaxConcurrent bounds the go commands running at once. Zero means 4.
	MaxConcurrent int
}

// fetchDirect fetches req's file from the module's origin repository.
func (p *Proxy) fetchDirect(ctx context.Context, req *request) (*fetched, error) {
	return nil, &fetchError{
		status: http.StatusNotFound,
		msg:    "direct fetching from origin repositories is not configured on this proxy",
	}
}
