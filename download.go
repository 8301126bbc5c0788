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
	// Connections is the most connections that fetch one file at once.
	// A file starts on one, whose first request asks for all of it; more
	// join, each taking over part of the rest with an HTTP Range request
	// tied to the file's version by If-Range, only when the first one's
	// rate says they would finish the file at least a second sooner (a
	// paced or distant upstream) and the upstream answers ranges with a
	// strong validator. Zero means 12; 1 fetches every file in a single
	// stream.
	Connections int

	// RangeThreshold is the smallest part of a file another connection
	// takes over: a file under twice this size is fetched on one
	// connection. Zero means 512 KiB.
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
	// held. It is resumed from only when it is a directory of this
	// process's user that others may not write to; otherwise downloads
	// use private files in a directory of their own in TempDir.
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
	// stream is set for a zip that clients may read while it arrives;
	// its file is the download's until owned is set, when the download
	// has ended well.
	stream    *zipStream
	owned     atomic.Bool
	closeOnce sync.Once
}

// reader returns an independent reader over the content, so that every
// request sharing one download reads it at its own pace.
func (f *fetched) reader() io.ReadSeeker {
	return f.readerFor(context.Background())
}

// readerFor is reader for a client whose request lives in ctx: a zip still
// arriving is read as it does, until ctx ends.
func (f *fetched) readerFor(ctx context.Context) io.ReadSeeker {
	if f.stream != nil {
		return f.stream.reader(ctx)
	}
	if f.file != nil {
		return io.NewSectionReader(f.file, 0, f.size)
	}
	return bytes.NewReader(f.data)
}

// close removes the file before closing it: it is locked while open, so
// nobody can take the name over in between. A stream's file that the
// download did not hand over is the download's to keep or remove.
func (f *fetched) close() {
	f.closeOnce.Do(func() {
		if f.file == nil || f.stream != nil && !f.owned.Load() {
			return
		}
		os.Remove(f.file.Name())
		f.file.Close()
	})
}

// downloader is the download engine: bounded concurrency, retries with
// backoff, parallel ranges and resumable partial files.
type downloader struct {
	opts   DownloadOptions
	client *http.Client
	sem    *semaphore.Weighted
	// prefetchSem bounds the prefetches' downloads instead (see
	// prefetch.go), which never take a client's slot.
	prefetchSem *semaphore.Weighted
	logger      *slog.Logger
	via         string // this proxy's Via entry, which reveals a loop
	hosts       hostTable

	// writeAt writes to the files of PartialDir; tests replace it to
	// fill the disk.
	writeAt func(f *os.File, b []byte, off int64) (int, error)
	// tidied is set once PartialDir has been rid of what killed
	// processes left.
	tidied atomic.Bool
	// minGain is splitMinGain, and saveEvery and saveBytes the
	// saveInterval and saveBytes of progress, which tests shorten.
	minGain   time.Duration
	saveEvery time.Duration
	saveBytes int64
	// tempDir is the Proxy's TempDir; ownDir a directory of this
	// downloader's own in it, made when PartialDir is not private.
	tempDir    string
	ownDirOnce sync.Once
	ownDir     string
	ownDirErr  error

	// Probes of hosts that are down (retry.go) run until stopProbes is
	// closed, by close.
	probing    sync.Mutex // orders starting probes with close
	probes     sync.WaitGroup
	stopProbes chan struct{}
}

func newDownloader(opts DownloadOptions, client *http.Client, logger *slog.Logger, via, tempDir string) *downloader {
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
		writeAt: (*os.File).WriteAt, tempDir: tempDir, minGain: splitMinGain, saveEvery: saveInterval, saveBytes: saveBytes,
		stopProbes: make(chan struct{})}
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
	// sink, if set, follows a file download as its bytes land.
	sink downloadSink
	// probe is a cheap URL of the same upstream, which is asked while
	// the upstream's host is down; empty means the host's root.
	probe string
}

// downloadSink follows a download to a file as its bytes land, so that
// they can be checked and sent on while the rest arrives.
type downloadSink interface {
	// begin says that the file f will have size bytes, once the first
	// answer (or the saved state) tells the size, again after a restart.
	// An error fails the download for good.
	begin(f *os.File, size int64) error
	// landed says that the first n bytes of the file are on disk.
	landed(n int64)
	// restart says that the download starts over. It returns how many
	// bytes from the start reached clients: the new answer must bring
	// them again, unchanged, or the download fails.
	restart() int64
}

// get downloads rawURL: a zip into a file, anything else into memory.
func (d *downloader) get(ctx context.Context, rawURL string, t target) (*fetched, error) {
	if t.probe != "" {
		d.hosts.get(rawURL).probeWith(t.probe)
	}
	sem := d.sem
	if d.prefetchSem != nil && onPrefetchSlots(ctx) {
		sem = d.prefetchSem
	}
	if err := sem.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	defer sem.Release(1)
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
	d    *downloader
	url  string
	t    target
	f    *os.File
	meta string // path of the saved partialState; "" when not resumable
	mu   sync.Mutex
	// state holds the file's size and validators; its Parts are taken
	// from spans when it is saved. Guarded by mu.
	state partialState
	// spans cover the file in order, each fetched by one connection at a
	// time (see spans.go). Guarded by mu.
	spans  []*span
	total  atomic.Int64 // bytes received, for Progress
	sized  atomic.Int64 // total size once known, else -1
	resume bool         // state came from disk
	// tracked is the download in the live view, told the size.
	tracked *trackedDownload
	// resets counts reset calls, guarded by mu: a save that began before
	// one must not put the state it took back on disk after it.
	resets int

	// unvalidated is set once the upstream sent a part of the file with
	// nothing (no ETag, no Last-Modified) to tie other parts to its
	// version: from then on the file is asked for whole.
	unvalidated bool
	// rangesOK is set when the upstream answers Range requests, so that
	// more connections may share the file.
	rangesOK bool
	// rtt is how long the first answer's header took: what one more
	// connection costs before it brings anything.
	rtt time.Duration
	// requests counts the requests made for the file, guarded by mu: the
	// splitting of spans stops at a bound.
	requests int
	// stashed is a whole-file answer a part request got, to start over
	// with; stashCancel ends its request. Guarded by mu.
	stashed     *http.Response
	stashCancel func()

	// prefix is how many bytes from the start of the file are on disk,
	// what t.sink is told of.
	prefix atomic.Int64
	// keep is how many bytes from the start reached clients before the
	// download started over: the new answer must bring them again,
	// unchanged, or the download fails (see writeAt).
	keep int64
	// connRate is the latest rate of one connection, in bytes per second
	// (float64 bits), which tells whether taking over half of a span
	// pays.
	connRate atomic.Uint64
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
// held gets a private, non-resumable file instead, and so does one whose
// PartialDir another user could have written to.
func (d *downloader) openPartial(rawURL string, t target) (*fileDownload, error) {
	dir, resumable, err := d.partialDir()
	if err != nil {
		return nil, err
	}
	key := partialKey(rawURL)
	dl := &fileDownload{d: d, url: rawURL, t: t}
	dl.sized.Store(-1)
	private := func() (*fileDownload, error) {
		// Locked too, so that tidying PartialDir tells it from a
		// dead one's.
		f, err := os.CreateTemp(dir, key+"-*"+privateSuffix)
		if err != nil {
			return nil, err
		}
		filelock.TryLock(f)
		dl.f = f
		dl.reset()
		return dl, nil
	}
	if !resumable {
		return private()
	}
	f, err := os.OpenFile(filepath.Join(dir, key+partSuffix), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if ok, err := filelock.TryLock(f); err != nil || !ok || !stillNamed(f) {
		// Held by another download, or unlinked by one that finished
		// between our open and our lock.
		f.Close()
		return private()
	}
	dl.f = f
	dl.meta = filepath.Join(dir, key+stateSuffix)
	var st partialState
	if b, err := os.ReadFile(dl.meta); err == nil && json.Unmarshal(b, &st) == nil && st.valid(t.limit) {
		dl.resume = true
		dl.state = st
		for _, p := range st.Parts {
			s := &span{start: p.Start, end: p.End}
			s.done.Store(p.Done)
			dl.spans = append(dl.spans, s)
			dl.total.Add(p.Done)
		}
		dl.state.Parts = nil
		dl.sized.Store(st.Size)
		dl.rangesOK = true // it was split, or resumed, with ranges
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

// reset forgets any progress and empties the file, but for the bytes that
// reached clients, which the next answer must bring again. A stashed
// answer stays: it is what the download starts over with.
func (dl *fileDownload) reset() {
	dl.resume = false
	dl.mu.Lock()
	dl.resets++
	dl.state = partialState{}
	dl.spans = nil
	dl.mu.Unlock()
	dl.total.Store(0)
	dl.tracked.restart()
	dl.sized.Store(-1)
	dl.prefix.Store(0)
	if dl.t.sink != nil {
		dl.keep = dl.t.sink.restart()
	}
	dl.f.Truncate(dl.keep)
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
	if dl.meta == "" || dl.d.opts.PartialBytes < 0 || errors.Is(err, errFileChanged) || errors.Is(err, errReleasedChanged) || isDiskError(err) {
		return false
	}
	st, _ := dl.snapshot()
	return st.valid(dl.t.limit) && dl.total.Load() > 0
}

// snapshot returns the state with the spans' progress, and the count of
// resets it was taken after.
func (dl *fileDownload) snapshot() (partialState, int) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	st := dl.state
	st.Parts = make([]partState, 0, len(dl.spans))
	for _, s := range dl.spans {
		st.Parts = append(st.Parts, partState{Start: s.start, End: s.limit(), Done: s.done.Load()})
	}
	return st, dl.resets
}

// save writes the progress beside the file, after syncing the file, so the
// state never claims bytes the disk does not have.
func (dl *fileDownload) save() error {
	if dl.meta == "" {
		return errors.New("not resumable")
	}
	st, resets := dl.snapshot()
	if len(st.Parts) == 0 {
		return errors.New("nothing to resume")
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

// Saving the progress syncs the file, which costs the disk: it is done
// when saveInterval has passed and saveBytes have arrived since the last
// save, whichever comes first. A process killed in between refetches at
// most that much.
const (
	saveInterval = 2 * time.Second
	saveBytes    = 8 << 20
)

// reportProgress calls the Progress hook, and saves the state now and
// then, until the returned func is called, which reports once more.
func (dl *fileDownload) reportProgress(ctx context.Context) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(progressInterval)
		defer ticker.Stop()
		savedAt, savedBytes := time.Now(), dl.total.Load()
		for {
			select {
			case <-quit:
				return
			case <-ticker.C:
			}
			dl.progress()
			if n := dl.total.Load(); time.Since(savedAt) >= dl.d.saveEvery || n-savedBytes >= dl.d.saveBytes {
				dl.save()
				savedAt, savedBytes = time.Now(), n
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

// run fetches whatever the file still lacks: from the first answer on one
// connection, more joining when that pays (see spans.go).
func (dl *fileDownload) run(ctx context.Context) error {
	var resp *http.Response
	if !dl.resume {
		whole := false
		err := dl.d.retry(ctx, dl.url, func() error {
			r, w, err := dl.first(ctx)
			resp, whole = r, w
			if err != nil || !w {
				return err
			}
			defer r.Body.Close()
			return dl.whole(r)
		})
		if err != nil || whole {
			return err
		}
	} else if err := dl.begin(dl.sized.Load()); err != nil {
		return err
	}
	dl.resume = false
	return dl.fetchSpans(ctx, resp)
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
// request got. It asks for the whole file as the range "bytes=0-": one
// request brings it all, and the answer says whether ranges work, with
// no extra round trip for a HEAD request or a probe. Other connections
// may join later (see spans.go), but only after an answer with
// validators, which tie their parts to one version of the file; an
// answer without is reported as whole, for whole to read in one go,
// from its start again when it is cut. Otherwise the answer returned
// brings the first span, for fetchSpans to read.
func (dl *fileDownload) first(ctx context.Context) (resp *http.Response, whole bool, err error) {
	dl.reset()
	resp = dl.takeStash()
	if resp == nil {
		var h http.Header
		if !dl.unvalidated {
			h = http.Header{"Range": {"bytes=0-"}}
		}
		sent := time.Now()
		if resp, err = dl.d.send(ctx, dl.url, h); err != nil {
			return nil, false, err
		}
		dl.rtt = time.Since(sent)
		dl.mu.Lock()
		dl.requests++
		dl.mu.Unlock()
	}
	etag, lastModified := strongETag(resp.Header), strongDate(resp.Header)
	validated := etag != "" || lastModified != ""
	st := partialState{ETag: etag, LastModified: lastModified}
	if etag == "" {
		st.WeakETag = resp.Header.Get("ETag")
	}
	var firstEnd int64
	if resp.StatusCode == http.StatusOK {
		if !validated || resp.ContentLength < 0 {
			return resp, true, nil
		}
		st.Size, firstEnd = resp.ContentLength, resp.ContentLength
		dl.rangesOK = strings.EqualFold(resp.Header.Get("Accept-Ranges"), "bytes")
	} else {
		start, end, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if dl.unvalidated || !ok || start != 0 || size <= 0 {
			resp.Body.Close()
			return nil, false, failed(failInvalidContent, "upstream %s sent an unusable Content-Range %q", redactURL(dl.url), resp.Header.Get("Content-Range"))
		}
		if !validated {
			if end+1 < size {
				// Nothing would tie the other parts to the version of
				// these bytes.
				dl.unvalidated = true
				resp.Body.Close()
				return dl.first(ctx)
			}
			return resp, true, nil
		}
		st.Size, firstEnd = size, end+1
		dl.rangesOK = true
	}
	if st.Size > dl.t.limit {
		resp.Body.Close()
		return nil, false, tooLarge(dl.url, dl.t.limit)
	}
	spans := []*span{{start: 0, end: firstEnd}}
	if firstEnd < st.Size {
		spans = append(spans, &span{start: firstEnd, end: st.Size})
	}
	dl.sized.Store(st.Size)
	dl.mu.Lock()
	dl.state, dl.spans = st, spans
	dl.mu.Unlock()
	if err := dl.begin(st.Size); err != nil {
		resp.Body.Close()
		return nil, false, err
	}
	return resp, false, nil
}

// begin tells the sink, if any, that the file has size bytes, and what of
// it is on disk already.
func (dl *fileDownload) begin(size int64) error {
	if dl.t.sink == nil || size < 0 {
		return nil
	}
	if err := dl.t.sink.begin(dl.f, size); err != nil {
		return err
	}
	dl.advanced(nil)
	return nil
}

// whole stores an answer that cannot be resumed: one without validators
// or size, as from an upstream that ignores ranges. If it breaks off, the
// next attempt starts from zero.
func (dl *fileDownload) whole(resp *http.Response) error {
	size := resp.ContentLength
	if size > dl.t.limit {
		return tooLarge(dl.url, dl.t.limit)
	}
	dl.sized.Store(size)
	s := &span{start: 0, end: dl.t.limit + 1}
	if size >= 0 {
		s.end = size
	}
	dl.mu.Lock()
	dl.spans = []*span{s}
	dl.mu.Unlock()
	if err := dl.begin(size); err != nil {
		return err
	}
	w := &spanWriter{dl: dl, s: s}
	buf := copyBuffers.Get().(*[]byte)
	n, err := io.CopyBuffer(w, resp.Body, *buf)
	copyBuffers.Put(buf)
	switch {
	case w.err != nil:
		return dl.d.diskFailed(dl.t, w.err)
	case errors.Is(err, errReleasedChanged):
		return err
	case errors.Is(err, errSpanEnd) || n > dl.t.limit:
		if size >= 0 {
			break // the answer is longer than it said: its length holds
		}
		return tooLarge(dl.url, dl.t.limit)
	case err != nil:
		return retryable(readFailed(dl.url, err))
	case size >= 0 && n != size:
		return retryable(readFailed(dl.url, io.ErrUnexpectedEOF))
	}
	if size < 0 {
		s.mu.Lock()
		s.end = n
		s.mu.Unlock()
		dl.sized.Store(n)
	}
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

// fetchSpan requests what span s lacks, tied by If-Range to the version of
// the file the other spans came from. Its request lives in ctx while
// pctx, which stops the spans, has not ended, so that a whole-file answer
// can outlive the other spans to be started over with.
func (dl *fileDownload) fetchSpan(ctx, pctx context.Context, stop context.CancelCauseFunc, s *span) error {
	from, end := s.start+s.done.Load(), s.limit()
	if from >= end {
		return nil
	}
	h := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", from, end-1)}}
	if dl.state.ETag != "" {
		h.Set("If-Range", dl.state.ETag)
	} else if dl.state.LastModified != "" {
		h.Set("If-Range", dl.state.LastModified)
	}
	reqCtx, cancelReq := context.WithCancel(ctx)
	unlink := context.AfterFunc(pctx, cancelReq)
	dl.mu.Lock()
	dl.requests++
	dl.mu.Unlock()
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
	start, last, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
	if !ok || start != from || last != end-1 || size != dl.state.Size || !dl.sameVersion(resp.Header) {
		return errFileChanged
	}
	return dl.copySpan(s, resp.Body)
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

// copySpan writes body into span s from where it stands until the span's
// end (which may move down meanwhile), counting progress as bytes land; a
// short body is a retryable error, a failed write a disk error.
func (dl *fileDownload) copySpan(s *span, body io.Reader) error {
	s.mu.Lock()
	s.claimed = s.done.Load()
	s.mu.Unlock()
	w := &spanWriter{dl: dl, s: s}
	buf := copyBuffers.Get().(*[]byte)
	_, err := io.CopyBuffer(w, body, *buf)
	copyBuffers.Put(buf)
	if errors.Is(err, errSpanEnd) {
		err = nil
	}
	if err == nil && !s.finished() {
		err = io.ErrUnexpectedEOF
	}
	switch {
	case w.err != nil:
		return dl.d.diskFailed(dl.t, w.err)
	case errors.Is(err, errReleasedChanged):
		return err
	case err != nil:
		return retryable(readFailed(dl.url, err))
	}
	return nil
}

// copyBuffers hold the buffers answers are copied to disk through: large,
// so that a fast download costs few system calls and few wake-ups of the
// clients streaming it.
var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 256<<10)
	return &b
}}

// errSpanEnd stops the copy of an answer at the end of its span, which
// another connection took over from there.
var errSpanEnd = errors.New("the span ends here")

// errReleasedChanged fails a download that started over with a file other
// than the one whose first bytes clients already have: they must not get
// the rest of another.
var errReleasedChanged = failed(failUnavailable,
	"the upstream file changed during the download, after its first bytes were sent; try again")

// spanWriter writes into its span at the span's moving offset, never past
// its end.
type spanWriter struct {
	dl  *fileDownload
	s   *span
	err error // of the last write to disk
}

func (w *spanWriter) Write(b []byte) (int, error) {
	s := w.s
	s.mu.Lock()
	off := s.start + s.claimed
	k := min(int64(len(b)), s.end-off)
	if k > 0 {
		s.claimed += k
	}
	s.mu.Unlock()
	if k <= 0 {
		return 0, errSpanEnd
	}
	n, err := w.dl.writeAt(b[:k], off)
	s.done.Add(int64(n))
	w.dl.total.Add(int64(n))
	w.dl.advanced(s)
	if err != nil {
		if !errors.Is(err, errReleasedChanged) {
			w.err = err
		}
		return n, err
	}
	if k < int64(len(b)) {
		return n, errSpanEnd
	}
	return n, nil
}

// writeAt writes b at off, except where the bytes reached clients before
// the download started over: there it checks that they are the same.
func (dl *fileDownload) writeAt(b []byte, off int64) (int, error) {
	if off < dl.keep {
		n := min(int64(len(b)), dl.keep-off)
		if !dl.sameOnDisk(b[:n], off) {
			return 0, errReleasedChanged
		}
		if n == int64(len(b)) {
			return len(b), nil
		}
		m, err := dl.d.writeAt(dl.f, b[n:], off+n)
		return int(n) + m, err
	}
	return dl.d.writeAt(dl.f, b, off)
}

// sameOnDisk reports whether the file holds b at off.
func (dl *fileDownload) sameOnDisk(b []byte, off int64) bool {
	buf := make([]byte, len(b))
	n, _ := dl.f.ReadAt(buf, off)
	return n == len(b) && bytes.Equal(buf, b)
}

// advanced recomputes how many bytes from the start are on disk after a
// write to s (nil: whatever changed), and tells the sink when that grew.
func (dl *fileDownload) advanced(s *span) {
	if dl.t.sink == nil || s != nil && s.start > dl.prefix.Load() {
		return
	}
	dl.mu.Lock()
	var p int64
	for _, s := range dl.spans {
		if s.start != p {
			break
		}
		d := s.done.Load()
		p = s.start + d
		if d < s.limit()-s.start {
			break
		}
	}
	grew := p > dl.prefix.Load()
	if grew {
		dl.prefix.Store(p)
	}
	dl.mu.Unlock()
	if grew {
		dl.t.sink.landed(p)
	}
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
