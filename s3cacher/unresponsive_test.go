package s3cacher

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/s3cacher/internal/miniotest"
)

// sentCounter counts the requests that reach the network.
type sentCounter struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (s *sentCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	s.n.Add(1)
	return s.next.RoundTrip(r)
}

// TestAFrozenCacheIsBypassedWithoutWaitingOnItAgain: a proxy request asks
// the cache several things in turn (Get, the fetch lease, Put), each tried
// three times; with a store that accepts connections and never answers,
// that cost every client about ten Timeouts (five minutes by default).
// Once the store has left a request unanswered, the next requests fail at
// once, so a client pays at most one more timeout, and caching resumes
// once the store answers again.
func TestAFrozenCacheIsBypassedWithoutWaitingOnItAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("waits on a frozen store")
	}
	t.Parallel() // a server of its own, mostly waiting
	s := miniotest.Start(t)
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.ResponseHeaderTimeout = outageTimeout
	sent := &sentCounter{next: base}
	c := cacherFor(t, s, s.NewBucket(t), "", func(c *Cacher) { c.Timeout = outageTimeout; c.Transport = sent })
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := &goproxy.Proxy{
		Cacher: c, Env: []string{"GOPROXY=" + up.URL, "GOSUMDB=off"}, TempDir: t.TempDir(),
		Transport: http.DefaultTransport, HotCacheBytes: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	srv := httptest.NewServer(p)
	defer srv.Close()
	get := func(path string, want []byte) {
		t.Helper()
		start := time.Now()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || !bytes.Equal(body, want) {
			t.Errorf("GET %s: %s, %v, or other bytes", path, resp.Status, err)
		}
		t.Logf("GET %s: %v", path, time.Since(start).Round(time.Millisecond))
	}

	s.Freeze(t)
	defer s.Thaw(t)
	get("/"+escapedName(vs[0], ".mod"), vs[0].Mod) // finds the store frozen
	before := sent.n.Load()
	get("/"+escapedName(vs[1], ".zip"), upstreamZip(t, vs[1]))
	get("/"+escapedName(vs[2], ".mod"), vs[2].Mod)
	// Stored in the background: wait for that to have failed too.
	waitFor(t, outageBound, "done with the frozen store", func() bool {
		_, err := c.Stat(t.Context(), escapedName(vs[2], ".mod"))
		return err != nil
	})
	// At most a probe per window after the first timeout, where each of
	// the three requests' operations was three tries before.
	if n := sent.n.Load() - before; n > 3 {
		t.Errorf("%d requests sent to the frozen store for two more clients, want at most 3 (a probe now and then)", n)
	}

	s.Thaw(t)
	waitFor(t, outageBound, "caching again after the thaw", func() bool {
		get("/"+escapedName(vs[3], ".mod"), vs[3].Mod)
		_, err := c.Stat(t.Context(), escapedName(vs[3], ".mod"))
		return err == nil
	})
}
