package s3cacher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// A store that stops answering (a hung server, a network that drops
// packets) costs every request the Cacher's Timeout, times the tries; and
// one proxy request asks the store several things in turn (Get, the fetch
// lease, Put): minutes per client while the store hangs, where a failing
// cache must cost caching only. So once a request to the store gets no
// answer, the store is taken for unresponsive for a while, during which
// requests fail at once; then one request at a time is let through to
// find out whether it answers again.

// unresponsiveFor is how long the store is taken for unresponsive after a
// request got no answer, at most: Timeout, if shorter.
const unresponsiveFor = 5 * time.Second

// errUnresponsive is what requests fail with while the store is taken for
// unresponsive.
var errUnresponsive = errors.New("the store left a request unanswered lately")

// unresponsiveTransport fails requests at once while the store is taken for
// unresponsive (see above), and otherwise passes them on.
type unresponsiveTransport struct {
	next   http.RoundTripper
	window time.Duration

	mu      sync.Mutex
	until   time.Time // requests fail at once until then
	since   time.Time // when the store stopped answering; zero while it answers
	probing bool      // a request is finding out whether it answers again
}

func (t *unresponsiveTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	probe, err := t.admit()
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // as a RoundTripper must, even on error
		}
		return nil, err
	}
	resp, err := t.next.RoundTrip(req)
	t.report(req.Context(), probe, err)
	return resp, err
}

// refuse returns an error while requests fail at once: the Cacher's
// methods ask first, so that minio-go does not try each of them again
// after pauses.
func (t *unresponsiveTransport) refuse() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.since.IsZero() && time.Now().Before(t.until) {
		return t.errLocked()
	}
	return nil
}

func (t *unresponsiveTransport) errLocked() error {
	return fmt.Errorf("%w (unanswered since %s): not asked again yet", errUnresponsive, t.since.Format(time.RFC3339))
}

// admit lets a request through, reporting whether it probes the store, or
// says why not.
func (t *unresponsiveTransport) admit() (probe bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch now := time.Now(); {
	case t.since.IsZero():
		return false, nil
	case now.Before(t.until) || t.probing:
		return false, t.errLocked()
	}
	t.probing = true
	return true, nil
}

// report learns from a request's outcome: an answer, whatever its status,
// means the store answers; a timeout (to connect, to send, or for the
// answer) that is not its caller's means it does not. Other errors (a
// refused or reset connection) fail fast by themselves and say nothing.
func (t *unresponsiveTransport) report(ctx context.Context, probe bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if probe {
		t.probing = false
	}
	var ne net.Error
	switch {
	case err == nil:
		t.since = time.Time{}
	case ctx.Err() == nil && errors.As(err, &ne) && ne.Timeout():
		now := time.Now()
		if t.since.IsZero() {
			t.since = now
		}
		t.until = now.Add(t.window)
	}
}
