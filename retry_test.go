package goproxy

import (
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

func TestSilentUpstreamFailsALoneClientAfterSixAttempts(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done() // no header, ever
		return true
	})
	p := newTestProxy(t, up.URL)
	// Attempts are counted as sent: on a loaded machine one may time out
	// before the upstream's handler sees it.
	var asked atomic.Int32
	p.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		asked.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})
	p.Download.HeaderTimeout = 50 * time.Millisecond
	p.Download.DownAfter = -1
	start := time.Now()
	w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod")
	if w.Code != http.StatusGatewayTimeout || !strings.Contains(w.Body.String(), "sent no answer within 50ms") ||
		!strings.Contains(w.Body.String(), "answered none of the last 6") {
		t.Errorf("%d %q, want 504 saying the header never came, six times", w.Code, w.Body)
	}
	if n := asked.Load(); n != maxSilentAttempts {
		t.Errorf("%d attempts, want %d", n, maxSilentAttempts)
	}
	t.Logf("the client got its answer after %v", time.Since(start))
}

// TestSilencesOfAnAnsweringHostAreRetried leaves a request unanswered more
// than six times in a row while its host answers other requests: the host
// is alive, and the request is retried until it gets its answer.
func TestSilencesOfAnAnsweringHostAreRetried(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	const silences = maxSilentAttempts + 2
	var modAsked atomic.Int32
	p := newTestProxy(t, up.URL)
	p.NotFoundTTL = -1
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, ".mod") || modAsked.Add(1) > silences {
			return false
		}
		// While this attempt goes unanswered, another request to the
		// host is answered.
		do(p, "GET", "/example.com/a/@v/list")
		<-r.Context().Done()
		return true
	})
	p.Download.HeaderTimeout = 100 * time.Millisecond
	p.Download.DownAfter = -1
	p.MutableTTL = -1
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod"); w.Code != 200 {
		t.Errorf("%d %q after %d attempts, want the file", w.Code, w.Body, modAsked.Load())
	}
}

func TestRetryBudgetBoundsTheLoadOnAFailingHost(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "broken", http.StatusBadGateway)
		return true
	})
	p := newTestProxy(t, up.URL)
	p.Download.DownAfter = -1
	p.NotFoundTTL = -1
	mod := "/example.com/a/@v/v1.0.0.mod"
	for i, want := range []int{1 + retryReserve + 2, 3, 3} {
		before := up.Requests(mod)
		w := do(p, "GET", mod)
		if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "retry budget") {
			t.Errorf("request %d: %d %q", i, w.Code, w.Body)
		}
		// Once the reserve is spent, each request earns two retries.
		if n := up.Requests(mod) - before; n != want {
			t.Errorf("request %d made %d attempts, want %d", i, n, want)
		}
	}
}

// TestFailingHostIsMarkedDownAndProbed fails every request of an upstream
// until it is marked down, checks that requests then fail at once, heals
// it and waits for the probe to bring it back.
func TestFailingHostIsMarkedDownAndProbed(t *testing.T) {
	var healed atomic.Bool
	up := upstreamDownUntil(t, &healed)
	p := proxyQuickToMarkDown(t, up.URL)
	mod := "/example.com/a/@v/v1.0.0.mod"
	testwait.For(t, func() bool {
		return strings.Contains(do(p, "GET", mod).Body.String(), "is down")
	}, "the upstream to be marked down")
	before := up.Requests(mod)
	w := do(p, "GET", mod)
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "down for maintenance") || up.Requests(mod) != before {
		t.Errorf("while down: %d %q after %d more upstream requests; want 502 at once, with the last error", w.Code, w.Body, up.Requests(mod)-before)
	}
	healed.Store(true)
	testwait.For(t, func() bool { return do(p, "GET", mod).Code == http.StatusOK })
}

// TestRandomFailuresNeverMarkAHostDown sends requests one at a time to an
// upstream failing 30% of them at random, with DownAfter so short that
// only the count of failures in a row protects the host.
func TestRandomFailuresNeverMarkAHostDown(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	var n atomic.Int32
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		// A fixed pattern with 30% failures, at most 3 in a row.
		if i := n.Add(1); i%10 == 1 || i%10 == 4 || i%10 == 7 {
			http.Error(w, "flaky", http.StatusBadGateway)
			return true
		}
		return false
	})
	p := newTestProxy(t, up.URL)
	p.Download.DownAfter = time.Nanosecond
	p.MutableTTL = -1
	for i := range 300 {
		if w := do(p, "GET", "/example.com/a/@v/list"); w.Code != 200 {
			t.Fatalf("request %d: %d %q", i, w.Code, w.Body)
		}
	}
}

// TestBackoffNeverPanicsAndStaysWithinMaxDelay covers delays whose doubling
// overflows: a probe keeps doubling for as long as its host is down.
func TestBackoffNeverPanicsAndStaysWithinMaxDelay(t *testing.T) {
	for _, base := range []time.Duration{time.Nanosecond, 5 * time.Millisecond, 10 * time.Second, time.Hour, math.MaxInt64 / 2} {
		for _, maxDelay := range []time.Duration{time.Second, time.Minute, 24 * time.Hour, math.MaxInt64} {
			for n := range 100 {
				if d := backoff(n, base, maxDelay); d < 0 || d > maxDelay {
					t.Fatalf("backoff(%d, %v, %v) = %v", n, base, maxDelay, d)
				}
			}
		}
	}
}

// TestDownHostTellsNoOtherClientsModule marks a host down through the
// failures of one module's requests: the requests for another module are
// told why, but not which module failed, which their client may not be
// allowed to know of.
func TestDownHostTellsNoOtherClientsModule(t *testing.T) {
	var healed atomic.Bool
	up := upstreamDownUntil(t, &healed)
	p := proxyQuickToMarkDown(t, up.URL)
	mod := "/example.com/a/@v/v1.0.0.mod"
	testwait.For(t, func() bool {
		return strings.Contains(do(p, "GET", "/corp.example.com/secret-project/@v/list").Body.String(), "is down")
	})
	w := do(p, "GET", mod)
	if !strings.Contains(w.Body.String(), "is down") || !strings.Contains(w.Body.String(), "down for maintenance") ||
		strings.Contains(w.Body.String(), "secret-project") {
		t.Errorf("%d %q: want the host down with its last error, without the other module's path", w.Code, w.Body)
	}
	// Healed, so that the probe ends with the test.
	healed.Store(true)
	testwait.For(t, func() bool { return do(p, "GET", mod).Code == http.StatusOK })
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestProbeAsksTheUpstreamNotTheHostRoot: an upstream under a path
// prefix, on a host whose root fails (another application, or none, is
// there), comes back once the upstream itself answers again.
func TestProbeAsksTheUpstreamNotTheHostRoot(t *testing.T) {
	var healed atomic.Bool
	files := testModuleFiles(t)
	host := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, underPrefix := strings.CutPrefix(r.URL.Path, "/goproxy")
		switch {
		case !underPrefix:
			http.Error(w, "nothing here", http.StatusInternalServerError)
		case !healed.Load():
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		case files[name] != nil:
			w.Write(files[name])
		default:
			http.NotFound(w, r)
		}
	}))
	defer host.Close()
	p := proxyQuickToMarkDown(t, host.URL+"/goproxy")
	mod := "/example.com/a/@v/v1.0.0.mod"
	testwait.For(t, func() bool {
		return strings.Contains(do(p, "GET", mod).Body.String(), "is down")
	}, "the upstream to be marked down")
	healed.Store(true)
	testwait.For(t, func() bool { return do(p, "GET", mod).Code == http.StatusOK }, "the probe to find the upstream up")
}

// TestCloseEndsTheProbes: a Proxy closed while a host is down leaves no
// probe running.
func TestCloseEndsTheProbes(t *testing.T) {
	up := upstreamDownUntil(t, new(atomic.Bool))
	p := proxyQuickToMarkDown(t, up.URL)
	testwait.For(t, func() bool {
		return strings.Contains(do(p, "GET", "/example.com/a/@v/list").Body.String(), "is down")
	}, "the upstream to be marked down")
	if !strings.Contains(goroutines(), "(*downloader).probe(") {
		t.Fatal("no probe runs while the host is down")
	}
	p.Close()
	if stacks := goroutines(); strings.Contains(stacks, "(*downloader).probe") {
		t.Errorf("a probe runs after Close:\n%s", stacks)
	}
	if w := do(p, "GET", "/example.com/a/@v/list"); w.Code != http.StatusServiceUnavailable {
		t.Errorf("after Close: %d %q, want 503", w.Code, w.Body)
	}
}

// goroutines returns the stacks of every goroutine.
func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// upstreamDownUntil serves the test module files, answering every request
// 503 until healed is set.
func upstreamDownUntil(t *testing.T, healed *atomic.Bool) *moduletest.Server {
	up := newUpstream(t, testModuleFiles(t))
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if healed.Load() {
			return false
		}
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return true
	})
	return up
}

// proxyQuickToMarkDown is a test proxy of upstream that marks a host down
// after 20 ms of failures, spends no retry budget and remembers no
// failure, so that each request asks again.
func proxyQuickToMarkDown(t *testing.T, upstream string) *Proxy {
	p := newTestProxy(t, upstream)
	p.Download.DownAfter = 20 * time.Millisecond
	p.Download.RetryBudget = -1
	p.NotFoundTTL = -1
	return p
}
