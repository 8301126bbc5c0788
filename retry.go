package goproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The retry policy of the download engine: which failures are worth another
// attempt, how long to wait before it, and when to stop. Attempts stop at
// the first of: success, an answer that another attempt would not change,
// the Attempts cap, the fetch's deadline, the upstream host's retry budget,
// or the host being marked down.

// Constants of the policy that are not options.
const (
	// downFailures is how many failures in a row, besides DownAfter of
	// failing, mark an upstream host down.
	downFailures = 20
	// retryReserve is the retry budget a host starts with, and
	// maxRetryBalance the most it can save up: enough for bursts, not
	// for a failing host to take several times its load for long.
	retryReserve    = 10
	maxRetryBalance = 100
	// minProbeDelay is the least time between two probes of a host that
	// is down, and probeIdle how long it is probed with nobody asking
	// for it: then it is forgotten, and the next request tries it again.
	minProbeDelay = 100 * time.Millisecond
	probeIdle     = 2 * time.Minute
	// maxSilentAttempts bounds the attempts of one request that get no
	// answer in a row (HeaderTimeout each) while its host answers
	// nothing else: a silent host fails a lone client after 6 of them
	// (3 minutes at the default) rather than when the retry budget runs
	// out (about 13). A host that answers other requests meanwhile is
	// alive and keeps being retried; a lone request under 30% of random
	// silences fails this way once in 0.3⁻⁶ ≈ 1,400.
	maxSilentAttempts = 6
)

// retryable marks a copy of err as worth another attempt.
func retryable(err *failure) *failure {
	c := *err
	c.retry = true
	return &c
}

// maxRetryAfter caps what a Retry-After header may ask, before MaxDelay
// caps it again: it keeps the arithmetic far from overflowing.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date. It
// returns zero for anything else, and at most maxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		return time.Duration(min(secs, uint64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

// backoff is the wait before retry n (from 0): a random time up to
// min(maxDelay, base·2ⁿ), the "full jitter" that keeps clients failing
// together from retrying together.
func backoff(n int, base, maxDelay time.Duration) time.Duration {
	// base·2ⁿ only where it cannot overflow: a BaseDelay above 8.6 s
	// shifted 30 times, as a long probe does, would wrap negative and
	// make rand.N panic.
	d := maxDelay
	if n < 63 && base <= maxDelay>>n {
		d = base << n
	}
	return rand.N(min(max(d, 0), math.MaxInt64-1) + 1)
}

// retry calls attempt until it succeeds or fails for good, waiting between
// tries as the upstream asked (Retry-After, up to MaxDelay) or with
// backoff, and keeping the health of rawURL's host up to date.
func (d *downloader) retry(ctx context.Context, rawURL string, attempt func() error) error {
	h := d.hosts.get(rawURL)
	started := time.Now()
	silent := 0 // attempts in a row that got no answer
	for n := 0; ; n++ {
		if err := h.checkUp(); err != nil {
			return err
		}
		if n == 0 {
			h.deposit(d.opts.RetryBudget)
		}
		err := attempt()
		var fe *failure
		if err == nil || !errors.As(err, &fe) || !fe.retry {
			if err == nil || fe != nil {
				h.succeeded() // the host answered, if only to refuse
			}
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		if !fe.busy {
			d.noteFailure(h, fe, rawURL)
		}
		if errors.Is(fe, errNoHeader) {
			silent++
		} else {
			silent = 0
		}
		giveUp := ""
		delay := min(cmpOr(fe.retryAfter, backoff(n, d.opts.BaseDelay, d.opts.MaxDelay)), d.opts.MaxDelay)
		switch {
		case n+1 >= d.opts.Attempts:
			giveUp = fmt.Sprintf("gave up after %d attempts", d.opts.Attempts)
		case !h.withdraw(d.opts.RetryBudget):
			giveUp = fmt.Sprintf("gave up after %d attempts: the retry budget for %s is spent, too many of its requests fail", n+1, h.name)
		case deadlineBefore(ctx, delay):
			giveUp = fmt.Sprintf("gave up after %d attempts: the fetch's time is up", n+1)
		case silent >= maxSilentAttempts && !h.answeredSince(started):
			giveUp = fmt.Sprintf("gave up after %d attempts: %s answered none of the last %d, nor any other request since", n+1, h.name, silent)
		}
		if giveUp != "" {
			c := *fe
			c.msg = fmt.Sprintf("%s (%s)", fe.msg, giveUp)
			c.retry = false
			return &c
		}
		d.logger.LogAttrs(ctx, slog.LevelInfo, "upstream retry", slog.String("url", redactURL(rawURL)),
			slog.Int("attempt", n+1), slog.Duration("delay", delay), slog.String("error", fe.msg))
		trackedFrom(ctx).retried(n+1, fe.status)
		if err := sleep(ctx, delay); err != nil {
			return fe
		}
	}
}

func cmpOr(d, otherwise time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return otherwise
}

// deadlineBefore reports whether ctx ends within d.
func deadlineBefore(ctx context.Context, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return ok && time.Until(deadline) < d
}

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// hostHealth is what the engine knows of one upstream host (scheme, host and
// port): its retry budget and whether it is failing.
type hostHealth struct {
	name string // scheme://host, for messages

	mu       sync.Mutex
	balance  float64   // retries available
	failures int       // consecutive failures
	since    time.Time // of the first of them
	lastErr  string
	down     bool
	asked    time.Time // when a request last wanted the host
	answered time.Time // when a request last got an answer
	probeURL string    // what a probe asks; empty for the host's root
}

// probeWith sets what a probe of the host asks: a cheap URL of an
// upstream on it, which answers as the upstream does where the host's
// root (another application, or nothing, under a path prefix) may not.
func (h *hostHealth) probeWith(url string) {
	h.mu.Lock()
	h.probeURL = url
	h.mu.Unlock()
}

// hostTable holds the hosts' health, created on first use.
type hostTable struct {
	mu    sync.Mutex
	hosts map[string]*hostHealth
}

// get returns the health of rawURL's host.
func (t *hostTable) get(rawURL string) *hostHealth {
	name := rawURL
	if u, err := url.Parse(rawURL); err == nil {
		name = u.Scheme + "://" + u.Host
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hosts == nil {
		t.hosts = make(map[string]*hostHealth)
	}
	h := t.hosts[name]
	if h == nil {
		h = &hostHealth{name: name, balance: retryReserve}
		t.hosts[name] = h
	}
	return h
}

// checkUp fails fast while the host is down.
func (h *hostHealth) checkUp() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.asked = time.Now()
	if !h.down {
		return nil
	}
	return failed(failUnavailable,
		"upstream %s is down: %d requests in a row failed since %s, the last with: %s (it is probed in the background; try again later)",
		redactURL(h.name), h.failures, h.since.UTC().Format(time.RFC3339), h.lastErr)
}

// deposit earns the retries a new request brings to the budget.
func (h *hostHealth) deposit(ratio float64) {
	if ratio < 0 {
		return
	}
	h.mu.Lock()
	h.balance = min(h.balance+ratio, maxRetryBalance)
	h.mu.Unlock()
}

// withdraw spends one retry, reporting false when none is left.
func (h *hostHealth) withdraw(ratio float64) bool {
	if ratio < 0 {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.balance < 1 {
		return false
	}
	h.balance--
	return true
}

func (h *hostHealth) succeeded() {
	h.mu.Lock()
	h.failures = 0
	h.answered = time.Now()
	h.mu.Unlock()
}

// answeredSince reports whether a request to the host got an answer after t.
func (h *hostHealth) answeredSince(t time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.answered.After(t)
}

// noteFailure records a failure of the host, and marks it down (starting a
// probe) when it has failed every request for DownAfter.
func (d *downloader) noteFailure(h *hostHealth, fe *failure, rawURL string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if h.failures == 0 {
		h.since = now
	}
	h.failures++
	// Every request for the host is told this while it is down: the
	// module path in the URL was asked by another client, who may be
	// allowed to read modules this one may not even know of.
	h.lastErr = strings.ReplaceAll(fe.msg, redactURL(rawURL), redactURL(h.name)+"/…")
	if h.down || d.opts.DownAfter < 0 || h.failures < downFailures || now.Sub(h.since) < d.opts.DownAfter {
		return
	}
	h.down = true
	d.logger.LogAttrs(context.Background(), slog.LevelWarn, "upstream down", slog.String("upstream", redactURL(h.name)),
		slog.Int("failures", h.failures), slog.Time("since", h.since), slog.String("error", fe.msg))
	d.probing.Lock()
	defer d.probing.Unlock()
	select {
	case <-d.stopProbes:
		// Closed: requests fail fast until the process ends.
	default:
		d.probes.Go(func() { d.probe(h) })
	}
}

// close ends the probes and waits for them.
func (d *downloader) close() {
	d.probing.Lock()
	select {
	case <-d.stopProbes:
	default:
		close(d.stopProbes)
	}
	d.probing.Unlock()
	d.probes.Wait()
}

// probe asks a host that is down for its upstream's probe URL until it
// answers anything but a failure, then marks it up. A host nobody asks for
// is forgotten. Close ends it.
func (d *downloader) probe(h *hostHealth) {
	for n := 0; ; n++ {
		t := time.NewTimer(max(backoff(n, d.opts.BaseDelay, d.opts.MaxDelay), minProbeDelay))
		select {
		case <-d.stopProbes:
			t.Stop()
			return
		case <-t.C:
		}
		h.mu.Lock()
		idle := time.Since(h.asked) > probeIdle
		h.mu.Unlock()
		if idle || d.probeOnce(h) {
			h.mu.Lock()
			h.down, h.failures = false, 0
			h.mu.Unlock()
			d.logger.LogAttrs(context.Background(), slog.LevelInfo, "upstream up", slog.String("upstream", redactURL(h.name)),
				slog.Bool("forgotten", idle))
			return
		}
	}
}

// probeOnce makes one probe request, reporting whether the host answered
// as a working server does.
func (d *downloader) probeOnce(h *hostHealth) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.HeaderTimeout)
	defer cancel()
	go func() { // Close ends a probe under way too
		select {
		case <-d.stopProbes:
			cancel()
		case <-ctx.Done():
		}
	}()
	h.mu.Lock()
	probeURL := h.probeURL
	h.mu.Unlock()
	if probeURL == "" {
		probeURL = h.name + "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, probeURL, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "goproxy")
	req.Header.Set("Via", d.via)
	req.Header.Set("Range", "bytes=0-0")
	resp, err := d.client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	return resp.StatusCode < 500
}
