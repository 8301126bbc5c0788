package goproxy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/goproxy-team/goproxy/internal/filelock"
)

// DownloadOptions tunes the download engine that every upstream request of
// the proxy goes through. The zero value gives the defaults.
type DownloadOptions struct {
	// Connections is how many HTTP Range requests fetch one large file at
	// once, when the upstream supports ranges. Zero means 4; 1 fetches every
	// file in a single stream.
	Connections int

	// RangeThreshold is the size above which a file is fetched in parallel
	// ranges. Zero means 512 KiB.
	RangeThreshold int64

	// MaxConcurrent bounds the downloads in progress across the proxy;
	// further ones wait for a slot. Zero means 16.
	MaxConcurrent int

	// Attempts caps how many times one request, or one part of a file, is
	// tried. A failure that another attempt may cure (a connection
	// refused or reset, a stall, a cut body, 5xx, 408, 429) is retried
	// until the fetch's Timeout would pass before the next attempt, the
	// upstream host's RetryBudget is spent, the host is marked down, or
	// the attempts reach this cap; other answers are final. Zero means 30:
	// at a fault rate of 30%, one request then fails for good once in
	// 0.3³⁰ ≈ 2·10⁻¹⁶ tries, so a cold download of a graph making 10⁵
	// upstream requests fails with a chance of about 2·10⁻¹¹.
	Attempts int

	// RetryBudget bounds the retries to one upstream host as a ratio to
	// its requests: every first attempt earns RetryBudget retries, every
	// retry spends one, a host starts with 10 and saves up to 100. When
	// the budget is spent, failures are final: a failing host is not sent
	// several times its load. Zero means 2, twice what half of all
	// requests failing needs (one retry per request, on average; at 30%
	// failures, 0.43); negative means no budget.
	RetryBudget float64

	// DownAfter is how long an upstream host must fail every request, at
	// least 20 in a row, before it is marked down: its requests then fail
	// at once (the walk moving on where GOPROXY allows), while a probe in
	// the background asks the upstream's own URL (a checksum database's
	// latest tree), with the backoff below, until it answers anything but
	// 5xx; Proxy.Close ends it. One success resets the count, so random
	// failures do not mark a host down. Zero means 10 s; negative never
	// marks a host down.
	DownAfter time.Duration

	// BaseDelay and MaxDelay shape the backoff between attempts: retry n
	// waits a random time up to min(MaxDelay, BaseDelay·2ⁿ). A Retry-After
	// answer is honoured up to MaxDelay. Zero means 5 ms and 10 s: the
	// first retries follow at once, since most failures are momentary and
	// every one already cost a round trip, while the retry budget, not the
	// backoff, keeps a failing host from being flooded; a request that
	// keeps failing waits 10 s between attempts after about 11 of them.
	BaseDelay, MaxDelay time.Duration

	// HeaderTimeout bounds the wait for an answer's header, connecting
	// included, and BodyIdleTimeout the time an answer's body may send
	// nothing: past either, the request is cut and retried. Zero means
	// 30 s for each. A fetch that every waiting client has left goes on
	// only while it brings at least 64 KiB every BodyIdleTimeout, so that
	// a large file still gets cached but a stalling one ends.
	HeaderTimeout, BodyIdleTimeout time.Duration

	// Timeout bounds one fetch from the upstreams, every attempt included,
	// whoever waits for it. Zero means 10 minutes.
	Timeout time.Duration

	// PartialDir keeps interrupted downloads of large files, with what is
	// needed to check them, so that the next request for the file, also
	// after a restart, fetches only what is missing. Empty means
	// "goproxy-partial" in the Proxy's TempDir. Downloads in progress are
	// written there too: when its disk is full, the downloads that need
	// more space fail with 507 Insufficient Storage, and free what they
	// held.
	PartialDir string

	// PartialBytes bounds the bytes of interrupted downloads kept in
	// PartialDir for resuming; past it, the oldest go first. Downloads in
	// progress do not count. Zero means 1 GiB; negative keeps none.
	PartialBytes int64

	// Progress, if set, is called while a file downloads, at most every
	// quarter second and once at the end, with the bytes received so far and
	// the total (-1 while unknown). It must not block.
	Progress func(module, version string, done, total int64)
}

// maxErrorBody caps how much of an upstream's error answer is read.
const maxErrorBody = 4 << 10

// progressInterval is the least time between two Progress calls for a file.
const progressInterval = 250 * time.Millisecond

// maxRestarts bounds how often one download starts over because the file
// changed under it.
const maxRestarts = 8

// fetched is a file downloaded from an upstream: small files in memory, zips
// in a file that lives as long as someone reads it.
type fetched struct {
	data    []byte
	file    *os.File
	size    int64
	modTime time.Time
	// unverified is set when the checksum database could not be reached
	// and AllowUnverified let the file through: it is served, not cached.
	unverified bool
}

// reader returns an independent reader over the content, so that every
// request sharing one download reads it at its own pace.
func (f *fetched) reader() io.ReadSeeker {
	if f.file != nil {
		return io.NewSectionReader(f.file, 0, f.size)
	}
	return bytes.NewReader(f.data)
}

// close removes the file before closing it: it is locked while open, so
// nobody can take the name over in between.
func (f *fetched) close() {
	if f.file != nil {
		os.Remove(f.file.Name())
		f.file.Close()
	}
}

// downloader is the download engine: bounded concurrency, retries with
// backoff, parallel ranges and resumable partial files.
type downloader struct {
	opts   DownloadOptions
	client *http.Client
	sem    *semaphore.Weighted
	logger *slog.Logger
	via    string // this proxy's Via entry, which reveals a loop
	hosts  hostTable

	// writeAt writes to the files of PartialDir; tests replace it to
	// fill the disk.
	writeAt func(f *os.File, b []byte, off int64) (int, error)
	// tidied is set once PartialDir has been rid of what killed
	// processes left.
	tidied atomic.Bool

	// Probes of hosts that are down (retry.go) run until stopProbes is
	// closed, by close.
	probing    sync.Mutex // orders starting probes with close
	probes     sync.WaitGroup
	stopProbes chan struct{}
}

func newDownloader(opts DownloadOptions, client *http.Client, logger *slog.Logger, via string) *downloader {
	if check := client.CheckRedirect; check != nil {
		// A redirect refused is refused again on every attempt: final.
		c := *client
		c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			err := check(req, via)
			if err != nil && !errors.Is(err, http.ErrUseLastResponse) {
				return &redirectRefused{err}
			}
			return err
		}
		client = &c
	}
	return &downloader{opts: opts, client: client, sem: semaphore.NewWeighted(int64(opts.MaxConcurrent)), logger: logger, via: via,
		writeAt: (*os.File).WriteAt, stopProbes: make(chan struct{})}
}

// redirectRefused is a redirect the client's policy refused.
type redirectRefused struct{ err error }

func (e *redirectRefused) Error() string { return e.err.Error() }
func (e *redirectRefused) Unwrap() error { return e.err }

// target describes what a download is for.
type target struct {
	module, version string
	toFile          bool  // zips go to a file, the rest to memory
	limit           int64 // most bytes accepted
	// probe is a cheap URL of the same upstream, which is asked while
	// the upstream's host is down; empty means the host's root.
	probe string
}

// get downloads rawURL: a zip into a file, anything else into memory.
func (d *downloader) get(ctx context.Context, rawURL string, t target) (*fetched, error) {
	if t.probe != "" {
		d.hosts.get(rawURL).probeWith(t.probe)
	}
	if err := d.sem.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	defer d.sem.Release(1)
	if t.toFile {
		return d.getFile(ctx, rawURL, t)
	}
	return d.getSmall(ctx, rawURL, t)
}

// getSmall downloads a size-capped file into memory, retrying as configured.
func (d *downloader) getSmall(ctx context.Context, rawURL string, t target) (*fetched, error) {
	var data []byte
	err := d.retry(ctx, rawURL, func() error {
		trackedFrom(ctx).restart() // each attempt asks for the whole file
		resp, err := d.send(ctx, rawURL, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return upstreamAnswered(rawURL, resp.StatusCode, "a part of a file, for a request of the whole")
		}
		if resp.ContentLength > t.limit {
			return tooLarge(rawURL, t.limit)
		}
		trackedFrom(ctx).setTotal(resp.ContentLength)
		var buf bytes.Buffer
		if resp.ContentLength > 0 {
			buf.Grow(int(resp.ContentLength))
		}
		if _, err := buf.ReadFrom(io.LimitReader(resp.Body, t.limit+1)); err != nil {
			return retryable(readFailed(rawURL, err))
		}
		if int64(buf.Len()) > t.limit {
			return tooLarge(rawURL, t.limit)
		}
		data = buf.Bytes()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &fetched{data: data, size: int64(len(data)), modTime: time.Now()}, nil
}

// Stalls: an answer whose header does not come in HeaderTimeout, or whose
// body sends nothing for BodyIdleTimeout, is cut with one of these causes.
var (
	errNoHeader    = errors.New("no answer")
	errBodyStalled = errors.New("the body stalled")
)

// send makes one GET request and sorts the answer: 200 and 206 are
// returned, their body cut if it stalls; everything else becomes an error
// that says whether it is worth another attempt.
func (d *downloader) send(ctx context.Context, rawURL string, header http.Header) (*http.Response, error) {
	actx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(actx, http.MethodGet, rawURL, nil)
	if err != nil {
		cancel(nil)
		return nil, &failure{kind: failUnavailable, msg: "invalid upstream URL " + redactURL(rawURL), err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "goproxy")
	req.Header.Set("Via", d.via)
	noHeader := time.AfterFunc(d.opts.HeaderTimeout, func() { cancel(errNoHeader) })
	resp, err := d.client.Do(req)
	if !noHeader.Stop() && err == nil {
		// The header came just as the time ran out, too late to read.
		resp.Body.Close()
		err = errNoHeader
	}
	if err != nil {
		cancel(nil)
		if errors.Is(context.Cause(actx), errNoHeader) && ctx.Err() == nil {
			return nil, retryable(&failure{kind: failTimedOut, err: errNoHeader,
				msg: fmt.Sprintf("upstream %s sent no answer within %v", redactURL(rawURL), d.opts.HeaderTimeout)})
		}
		// net/http strips passwords from the URLs in its errors.
		fe := &failure{kind: failUnavailable, msg: err.Error(), err: err}
		if egressRefusal(err) != nil {
			fe.kind = failRefused // and final: the policy will not change its mind
			return nil, fe
		}
		var dnsErr *net.DNSError
		var refused *redirectRefused
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound || errors.As(err, &refused) {
			// A name that does not exist will not exist in a second
			// either; a redirect refused will be refused again.
			return nil, fe
		}
		return nil, retryable(fe)
	}
	resp.Body = &watchedBody{ReadCloser: resp.Body, ctx: actx, cancel: cancel, idle: d.opts.BodyIdleTimeout, meter: meterFrom(ctx),
		tracked: trackedFrom(ctx), timer: time.AfterFunc(d.opts.BodyIdleTimeout, func() { cancel(errBodyStalled) })}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent:
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	msg := upstreamMessage(body, resp.Header.Get("Content-Type"))
	switch code := resp.StatusCode; {
	case code == http.StatusNotFound || code == http.StatusGone:
		if msg == "" {
			msg = "not found: " + redactURL(rawURL)
		}
		kind := failNotFound
		if code == http.StatusGone {
			kind = failGone
		}
		return nil, &failure{kind: kind, msg: msg}
	case code == http.StatusProxyAuthRequired:
		// From an egress proxy (HTTP_PROXY), about the proxy's own
		// credentials: the client can do nothing about it, another
		// attempt neither.
		return nil, upstreamAnswered(rawURL, code, "the egress proxy in front of this proxy refused its credentials")
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		fe := retryable(upstreamAnswered(rawURL, code, msg))
		fe.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		fe.busy = code < 500
		return nil, fe
	case code == http.StatusRequestedRangeNotSatisfiable && header.Get("Range") != "":
		// The range is ours, not the client's: a part past the end of
		// the file (an upstream ignoring If-Range) means the file is no
		// longer the one the parts were cut from.
		if header.Get("If-Range") != "" {
			return nil, errFileChanged
		}
		return nil, upstreamAnswered(rawURL, code, msg)
	case code >= 400:
		// A refusal (401, 403, 451, ...) is passed on as what it is.
		fe := upstreamAnswered(rawURL, code, msg)
		fe.kind, fe.status = failUpstreamRefused, code
		return nil, fe
	}
	return nil, upstreamAnswered(rawURL, resp.StatusCode, msg)
}

// watchedBody is an answer's body, cut when it sends nothing for its idle
// time, counting what arrives into the fetch's progress and into its
// download in the live view.
type watchedBody struct {
	io.ReadCloser
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	idle    time.Duration
	meter   *progressMeter
	tracked *trackedDownload
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(b.idle)
		b.meter.add(int64(n))
		b.tracked.add(int64(n))
	}
	if err != nil && err != io.EOF && errors.Is(context.Cause(b.ctx), errBodyStalled) {
		err = fmt.Errorf("%w: nothing arrived for %v", errBodyStalled, b.idle)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.timer.Stop()
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

func upstreamAnswered(rawURL string, code int, msg string) *failure {
	if msg != "" {
		msg = ": " + msg
	}
	f := failed(failUnavailable, "upstream %s answered %d %s%s", redactURL(rawURL), code, http.StatusText(code), msg)
	f.status = code
	return f
}

func tooLarge(rawURL string, limit int64) *failure {
	return failed(failTooLarge, "upstream %s sent more than the limit of %d bytes", redactURL(rawURL), limit)
}

func readFailed(rawURL string, err error) *failure {
	return failed(failUnavailable, "reading %s: %w", redactURL(rawURL), err)
}

// errFileChanged stops a download whose parts turned out to be of different
// versions of the file, or whose upstream answered a part with the whole
// file: it starts over, since stitching two versions would corrupt it.
var errFileChanged = failed(failUnavailable, "the upstream file changed during the download")

// diskError is a failed write to the temporary directory.
type diskError struct {
	dir string
	err error
}

func (e *diskError) Error() string { return e.err.Error() }
func (e *diskError) Unwrap() error { return e.err }

// diskFailed describes a failed write for the client: a full disk is 507,
// and names the directory that lacks the space.
func (d *downloader) diskFailed(t target, err error) *failure {
	kind, what := failInternal, "cannot write"
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		kind, what = failNoSpace, "no space left"
	}
	return &failure{kind: kind, err: &diskError{dir: d.opts.PartialDir, err: err},
		msg: fmt.Sprintf("%s@%s: %s in the proxy's temporary directory %s for the download: %v", t.module, t.version, what, d.opts.PartialDir, err)}
}

func isDiskError(err error) bool {
	var de *diskError
	return errors.As(err, &de)
}

// partialState is what is kept beside a partial download to resume it: the
// file's identity (size and validators) and how far each part has come.
type partialState struct {
	Size         int64
	ETag         string // strong only: If-Range takes no other
	LastModified string // only when a strong validator (see strongDate)
	// WeakETag is the first answer's ETag when weak: useless for
	// If-Range, but a part answered with another is of another version.
	WeakETag string `json:",omitempty"`
	Parts    []partState
}

type partState struct {
	Start, End int64 // byte range [Start, End)
	Done       int64 // bytes of the range on disk
}

// fileDownload is one download of a file to disk.
type fileDownload struct {
	d      *downloader
	url    string
	t      target
	f      *os.File
	meta   string // path of the saved partialState; "" when not resumable
	mu     sync.Mutex
	state  partialState
	done   []atomic.Int64 // per part, mirrors state.Parts[i].Done
	total  atomic.Int64   // bytes received, for Progress
	sized  atomic.Int64   // total size once known, else -1
	resume bool           // state came from disk
	// tracked is the download in the live view, told the size.
	tracked *trackedDownload
	// resets counts reset calls, guarded by mu: a save that began before
	// one must not put the state it took back on disk after it.
	resets int

	// unvalidated is set once the upstream sent a part of the file with
	// nothing (no ETag, no Last-Modified) to tie other parts to its
	// version: from then on the file is asked for whole.
	unvalidated bool
	// stashed is a whole-file answer a part request got, to start over
	// with; stashCancel ends its request. Guarded by mu.
	stashed     *http.Response
	stashCancel func()
}

// getFile downloads a file to disk, in parallel ranges when it is large and
// the upstream allows, resuming a partial download of the same URL left by
// an earlier attempt or process.
func (d *downloader) getFile(ctx context.Context, rawURL string, t target) (*fetched, error) {
	if !d.tidied.Swap(true) {
		d.trimPartials(d.opts.PartialBytes)
	}
	dl, err := d.openPartial(rawURL, t)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			d.trimPartials(0)
		}
		return nil, d.diskFailed(t, err)
	}
	dl.tracked = trackedFrom(ctx)
	stopProgress := dl.reportProgress(ctx)
	err = recovering(func() error { return dl.download(ctx) })
	stopProgress()
	if err != nil {
		if dl.keepable(err) && dl.save() == nil {
			dl.f.Close() // kept for the next attempt
			d.trimPartials(d.opts.PartialBytes)
		} else {
			dl.discard()
		}
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			// What is kept for resuming matters less than downloads
			// that are running.
			d.trimPartials(0)
		}
		return nil, err
	}
	if dl.meta != "" {
		os.Remove(dl.meta)
	}
	return &fetched{file: dl.f, size: dl.sized.Load(), modTime: time.Now()}, nil
}

// openPartial opens the partial file for rawURL, taking it over (and its
// saved state) if no other download holds it; a download that finds it
// held gets a private, non-resumable file instead.
func (d *downloader) openPartial(rawURL string, t target) (*fileDownload, error) {
	dir := d.opts.PartialDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key := partialKey(rawURL)
	dl := &fileDownload{d: d, url: rawURL, t: t}
	dl.sized.Store(-1)
	f, err := os.OpenFile(filepath.Join(dir, key+partSuffix), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if ok, err := filelock.TryLock(f); err != nil || !ok || !stillNamed(f) {
		// Held by another download, or unlinked by one that finished
		// between our open and our lock: work on a private file, locked
		// too, so that tidying PartialDir tells it from a dead one's.
		f.Close()
		if f, err = os.CreateTemp(dir, key+"-*"+privateSuffix); err != nil {
			return nil, err
		}
		filelock.TryLock(f)
		dl.f = f
		return dl, nil
	}
	dl.f = f
	dl.meta = filepath.Join(dir, key+stateSuffix)
	if b, err := os.ReadFile(dl.meta); err == nil && json.Unmarshal(b, &dl.state) == nil && dl.state.valid(t.limit) {
		dl.resume = true
		dl.done = make([]atomic.Int64, len(dl.state.Parts))
		for i, p := range dl.state.Parts {
			dl.done[i].Store(p.Done)
			dl.total.Add(p.Done)
		}
		dl.sized.Store(dl.state.Size)
		return dl, nil
	}
	dl.reset()
	return dl, nil
}

func partialKey(rawURL string) string {
	sum := sha256.Sum256([]byte(rawURL))
	return hex.EncodeToString(sum[:16])
}

// stillNamed reports whether f is still the file its name points to.
func stillNamed(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	named, err := os.Stat(f.Name())
	return err == nil && os.SameFile(fi, named)
}

// valid checks a loaded state before it is trusted: parts in order, inside
// the size, progress inside the parts.
func (s *partialState) valid(limit int64) bool {
	if s.Size <= 0 || s.Size > limit || len(s.Parts) == 0 || (s.ETag == "" && s.LastModified == "") {
		return false
	}
	var next int64
	for _, p := range s.Parts {
		if p.Start != next || p.End <= p.Start || p.Done < 0 || p.Done > p.End-p.Start {
			return false
		}
		next = p.End
	}
	return next == s.Size
}

// reset forgets any progress and empties the file. A stashed answer stays:
// it is what the download starts over with.
func (dl *fileDownload) reset() {
	dl.resume = false
	dl.mu.Lock()
	dl.resets++
	dl.state = partialState{}
	dl.done = nil
	dl.mu.Unlock()
	dl.total.Store(0)
	dl.tracked.restart()
	dl.sized.Store(-1)
	dl.f.Truncate(0)
	if dl.meta != "" {
		os.Remove(dl.meta)
	}
}

// discard removes the file and its state.
func (dl *fileDownload) discard() {
	dl.dropStash()
	if dl.meta != "" {
		os.Remove(dl.meta)
	}
	os.Remove(dl.f.Name())
	dl.f.Close()
}

// keepable reports whether what a failed download got is worth keeping
// for the next attempt: bytes tied by validators to one version of the
// file, with no disk trouble.
func (dl *fileDownload) keepable(err error) bool {
	if dl.meta == "" || dl.d.opts.PartialBytes < 0 || errors.Is(err, errFileChanged) || isDiskError(err) {
		return false
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.state.valid(dl.t.limit) && dl.total.Load() > 0
}

// save writes the progress beside the file, after syncing the file, so the
// state never claims bytes the disk does not have.
func (dl *fileDownload) save() error {
	if dl.meta == "" {
		return errors.New("not resumable")
	}
	// Snapshot under the lock; state.Parts itself is never written after
	// it is set up, so the parts' readers need no lock.
	dl.mu.Lock()
	st := dl.state
	st.Parts = slices.Clone(dl.state.Parts)
	done := dl.done
	resets := dl.resets
	dl.mu.Unlock()
	if len(st.Parts) == 0 {
		return errors.New("nothing to resume")
	}
	for i := range st.Parts {
		st.Parts[i].Done = done[i].Load()
	}
	if err := dl.f.Sync(); err != nil {
		return err
	}
	b, _ := json.Marshal(&st)
	tmp, err := os.CreateTemp(filepath.Dir(dl.meta), filepath.Base(dl.meta)+"-*"+privateSuffix)
	if err != nil {
		return err
	}
	filelock.TryLock(tmp) // in use, for trimPartials
	_, err = dl.d.writeAt(tmp, b, 0)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// A reset meanwhile (a restart, as the periodic save runs beside
		// the download) emptied the file: the state taken would claim
		// bytes it no longer has. A reset after the rename removes it.
		dl.mu.Lock()
		if dl.resets != resets {
			err = errors.New("the download started over")
		} else {
			err = os.Rename(tmp.Name(), dl.meta)
		}
		dl.mu.Unlock()
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// reportProgress calls the Progress hook and saves the state periodically
// until the returned func is called, which reports once more.
func (dl *fileDownload) reportProgress(ctx context.Context) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(progressInterval)
		defer ticker.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ticker.C:
				dl.progress()
				dl.save()
			}
		}
	})
	return func() {
		close(quit)
		wg.Wait()
		dl.progress()
	}
}

func (dl *fileDownload) progress() {
	dl.tracked.setTotal(dl.sized.Load())
	if hook := dl.d.opts.Progress; hook != nil {
		hook(dl.t.module, dl.t.version, dl.total.Load(), dl.sized.Load())
	}
}

// download fetches the file, starting over when it changes under the
// download, a bounded number of times.
func (dl *fileDownload) download(ctx context.Context) error {
	for restarts := 0; ; restarts++ {
		err := dl.run(ctx)
		if !errors.Is(err, errFileChanged) {
			return err
		}
		if restarts == maxRestarts {
			return &failure{kind: failUnavailable, err: errFileChanged, msg: fmt.Sprintf(
				"the upstream file %s changed under each of %d downloads (its size or its ETag or Last-Modified moved); try again later",
				redactURL(dl.url), maxRestarts+1)}
		}
		dl.d.logger.LogAttrs(ctx, slog.LevelInfo, "upstream file changed, starting over", slog.String("url", redactURL(dl.url)),
			slog.Int("restart", restarts+1))
		dl.reset()
	}
}

// run fetches whatever the file still lacks.
func (dl *fileDownload) run(ctx context.Context) error {
	if !dl.resume {
		if err := dl.d.retry(ctx, dl.url, func() error { return dl.first(ctx) }); err != nil {
			return err
		}
	}
	dl.resume = false
	if len(dl.state.Parts) == 0 {
		return nil // the upstream sent the whole file in one answer
	}
	return dl.fetchParts(ctx)
}

// strongETag returns the ETag of h if it is strong: If-Range needs one.
func strongETag(h http.Header) string {
	etag := h.Get("ETag")
	if strings.HasPrefix(etag, "W/") {
		return ""
	}
	return etag
}

// strongDate returns h's Last-Modified if it is a strong validator: at
// least a second before the answer's Date (RFC 9110, 8.8.2.2). A file
// changed twice within its second keeps its Last-Modified, so an If-Range
// with it would match both versions.
func strongDate(h http.Header) string {
	lm := h.Get("Last-Modified")
	modTime, err := http.ParseTime(lm)
	if err != nil {
		return ""
	}
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil || date.Sub(modTime) < time.Second {
		return ""
	}
	return lm
}

// first makes the first request, or takes the whole-file answer a part
// request got. It asks for the first RangeThreshold bytes (or, with one
// connection, everything) as a range: a small file comes whole, a large
// one reveals its size and validators and whether ranges work, with no
// extra round trip for a HEAD request. Parts follow only an answer with
// validators, which tie them to one version of the file; a file without
// is fetched in one answer, and from its start again when that is cut.
func (dl *fileDownload) first(ctx context.Context) error {
	opts := dl.d.opts
	dl.reset()
	resp := dl.takeStash()
	if resp == nil {
		var h http.Header
		if !dl.unvalidated {
			want := "bytes=0-"
			if opts.Connections > 1 {
				want += strconv.FormatInt(opts.RangeThreshold-1, 10)
			}
			h = http.Header{"Range": {want}}
		}
		var err error
		if resp, err = dl.d.send(ctx, dl.url, h); err != nil {
			return err
		}
	}
	defer resp.Body.Close()
	etag, lastModified := strongETag(resp.Header), strongDate(resp.Header)
	validated := etag != "" || lastModified != ""
	st := partialState{ETag: etag, LastModified: lastModified}
	if etag == "" {
		st.WeakETag = resp.Header.Get("ETag")
	}
	if resp.StatusCode == http.StatusOK {
		if !validated || resp.ContentLength < 0 {
			return dl.whole(resp)
		}
		if resp.ContentLength > dl.t.limit {
			return tooLarge(dl.url, dl.t.limit)
		}
		st.Size = resp.ContentLength
		st.Parts = []partState{{Start: 0, End: st.Size}}
	} else {
		start, end, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if dl.unvalidated || !ok || start != 0 || size <= 0 {
			return failed(failInvalidContent, "upstream %s sent an unusable Content-Range %q", redactURL(dl.url), resp.Header.Get("Content-Range"))
		}
		if size > dl.t.limit {
			return tooLarge(dl.url, dl.t.limit)
		}
		if !validated && end+1 < size {
			// Nothing would tie the other parts to the version of
			// these bytes.
			dl.unvalidated = true
			resp.Body.Close()
			return dl.first(ctx)
		}
		st.Size = size
		st.Parts = splitParts(end+1, size, opts.Connections, opts.RangeThreshold)
	}
	dl.sized.Store(st.Size)
	dl.mu.Lock()
	dl.state = st
	dl.done = make([]atomic.Int64, len(st.Parts))
	dl.mu.Unlock()
	err := dl.copyPart(0, resp.Body)
	if err != nil && validated && !isDiskError(err) {
		return nil // fetchParts resumes the first part where it broke off
	}
	return err
}

// whole stores an answer that cannot be resumed: a 200 without validators
// or size, as from an upstream that ignores ranges. If it breaks off, the
// next attempt starts from zero.
func (dl *fileDownload) whole(resp *http.Response) error {
	if resp.ContentLength > dl.t.limit {
		return tooLarge(dl.url, dl.t.limit)
	}
	dl.sized.Store(resp.ContentLength)
	var done atomic.Int64
	w := &partWriter{dl: dl, done: &done}
	n, err := io.Copy(w, io.LimitReader(resp.Body, dl.t.limit+1))
	switch {
	case w.err != nil:
		return dl.d.diskFailed(dl.t, w.err)
	case err != nil:
		return retryable(readFailed(dl.url, err))
	case n > dl.t.limit:
		return tooLarge(dl.url, dl.t.limit)
	case resp.ContentLength >= 0 && n != resp.ContentLength:
		return retryable(readFailed(dl.url, io.ErrUnexpectedEOF))
	}
	dl.sized.Store(n)
	return nil
}

// stash keeps a whole-file answer to start over with, reporting false if
// one is kept already.
func (dl *fileDownload) stash(resp *http.Response, cancel func()) bool {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.stashed != nil {
		return false
	}
	dl.stashed, dl.stashCancel = resp, cancel
	return true
}

// takeStash returns the stashed answer, if any; closing its body ends its
// request.
func (dl *fileDownload) takeStash() *http.Response {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	resp, cancel := dl.stashed, dl.stashCancel
	dl.stashed, dl.stashCancel = nil, nil
	if resp != nil {
		resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	}
	return resp
}

func (dl *fileDownload) dropStash() {
	if resp := dl.takeStash(); resp != nil {
		resp.Body.Close()
	}
}

type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// splitParts cuts [0, size) into parts: the first ends at firstEnd (what
// the first answer covers), the rest is shared among conns connections.
func splitParts(firstEnd, size int64, conns int, minPart int64) []partState {
	parts := []partState{{Start: 0, End: min(firstEnd, size)}}
	rest := size - parts[0].End
	if rest <= 0 {
		return parts
	}
	// One part per connection: each part costs a round trip, and parts
	// resume from where they stopped, so more parts buy nothing.
	partSize := max((rest+int64(conns)-1)/int64(conns), minPart)
	for start := parts[0].End; start < size; start += partSize {
		parts = append(parts, partState{Start: start, End: min(start+partSize, size)})
	}
	return parts
}

// fetchParts fetches the unfinished parts over the configured number of
// connections, each part retried on its own from where it stopped. The
// first part to meet another version of the file (or a whole-file answer)
// stops the others.
func (dl *fileDownload) fetchParts(ctx context.Context) error {
	todo := make(chan int, len(dl.state.Parts))
	for i, p := range dl.state.Parts {
		if dl.done[i].Load() < p.End-p.Start {
			todo <- i
		}
	}
	close(todo)
	pctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var wg sync.WaitGroup
	for range min(dl.d.opts.Connections, len(todo)) {
		wg.Go(func() {
			for i := range todo {
				err := recovering(func() error {
					return dl.d.retry(pctx, dl.url, func() error { return dl.fetchPart(ctx, pctx, stop, i) })
				})
				if err != nil {
					stop(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if pctx.Err() != nil {
		return context.Cause(pctx)
	}
	return nil
}

// fetchPart requests what part i lacks, tied by If-Range to the version of
// the file the other parts came from. Its request lives in ctx while
// pctx, which stops the parts, has not ended, so that a whole-file answer
// can outlive the other parts to be started over with.
func (dl *fileDownload) fetchPart(ctx, pctx context.Context, stop context.CancelCauseFunc, i int) error {
	p := dl.state.Parts[i]
	from := p.Start + dl.done[i].Load()
	if from >= p.End {
		return nil
	}
	h := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", from, p.End-1)}}
	if dl.state.ETag != "" {
		h.Set("If-Range", dl.state.ETag)
	} else if dl.state.LastModified != "" {
		h.Set("If-Range", dl.state.LastModified)
	}
	reqCtx, cancelReq := context.WithCancel(ctx)
	unlink := context.AfterFunc(pctx, cancelReq)
	resp, err := dl.d.send(reqCtx, dl.url, h)
	if err != nil {
		unlink()
		cancelReq()
		return err
	}
	if resp.StatusCode == http.StatusOK {
		// If-Range found another version, or the upstream ignored the
		// range: a whole file either way, to start over with.
		if unlink() && dl.stash(resp, cancelReq) {
			stop(errFileChanged)
		} else {
			resp.Body.Close()
			cancelReq()
		}
		return errFileChanged
	}
	defer func() {
		resp.Body.Close()
		unlink()
		cancelReq()
	}()
	start, end, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
	if !ok || start != from || end != p.End-1 || size != dl.state.Size || !dl.sameVersion(resp.Header) {
		return errFileChanged
	}
	return dl.copyPart(i, resp.Body)
}

// sameVersion reports whether a part's answer carries no validator that
// contradicts those the download started with. One without any is taken
// at its word, since If-Range asked for this version or nothing.
func (dl *fileDownload) sameVersion(h http.Header) bool {
	if etag, want := h.Get("ETag"), cmp.Or(dl.state.ETag, dl.state.WeakETag); etag != "" && want != "" && etag != want {
		return false
	}
	if lm := h.Get("Last-Modified"); lm != "" && dl.state.LastModified != "" && lm != dl.state.LastModified {
		return false
	}
	return true
}

// copyPart writes body into part i from where it stands, counting progress
// as bytes land; a short body is a retryable error, a failed write a disk
// error.
func (dl *fileDownload) copyPart(i int, body io.Reader) error {
	p := dl.state.Parts[i]
	off := p.Start + dl.done[i].Load()
	w := &partWriter{dl: dl, off: off, done: &dl.done[i]}
	_, err := io.Copy(w, io.LimitReader(body, p.End-off))
	if err == nil && dl.done[i].Load() < p.End-p.Start {
		err = io.ErrUnexpectedEOF
	}
	switch {
	case w.err != nil:
		return dl.d.diskFailed(dl.t, w.err)
	case err != nil:
		return retryable(readFailed(dl.url, err))
	}
	return nil
}

// partWriter writes at a moving offset and counts what it wrote.
type partWriter struct {
	dl   *fileDownload
	off  int64
	done *atomic.Int64
	err  error // of the last write
}

func (w *partWriter) Write(b []byte) (int, error) {
	n, err := w.dl.d.writeAt(w.dl.f, b, w.off)
	w.off += int64(n)
	w.done.Add(int64(n))
	w.dl.total.Add(int64(n))
	w.err = err
	return n, err
}

// recovering runs fn, turning a panic into an error: a part runs on a
// goroutine of its own, where a panic would end the whole process, and a
// download that panics must still stop its progress ticker and give its
// file back.
func recovering(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = failed(failInternal, "internal error: %v", v)
		}
	}()
	return fn()
}

// parseContentRange parses "bytes start-end/size"; size is -1 for "*".
// Numbers are digits only: no sign, no space.
func parseContentRange(v string) (start, end, size int64, ok bool) {
	v, ok = strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, 0, false
	}
	rng, total, ok := strings.Cut(v, "/")
	if !ok {
		return 0, 0, 0, false
	}
	s, e, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, false
	}
	var ok1, ok2, ok3 bool
	start, ok1 = parseDigits(s)
	end, ok2 = parseDigits(e)
	size, ok3 = -1, true
	if total != "*" {
		size, ok3 = parseDigits(total)
	}
	if !ok1 || !ok2 || !ok3 || end < start || (size >= 0 && end >= size) {
		return 0, 0, 0, false
	}
	return start, end, size, true
}

// parseDigits parses a non-negative decimal int64 of digits only.
func parseDigits(s string) (int64, bool) {
	n, err := strconv.ParseUint(s, 10, 63)
	return int64(n), err == nil
}
