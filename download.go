package goproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
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

	// Attempts is how many times one request, or one part of a file, is
	// tried before the download fails. Connection errors, cut bodies, 5xx
	// and 429 answers are retried; other answers are not. Zero means 5.
	Attempts int

	// BaseDelay and MaxDelay shape the backoff between attempts: retry n
	// waits a random time up to min(MaxDelay, BaseDelay·2ⁿ). A Retry-After
	// answer is honoured up to MaxDelay. Zero means 100 ms and 10 s.
	BaseDelay, MaxDelay time.Duration

	// Timeout bounds one fetch from the upstreams, every attempt included,
	// whoever waits for it. Zero means 10 minutes.
	Timeout time.Duration

	// PartialDir keeps interrupted downloads of large files, with what is
	// needed to check them, so that the next request for the file, also
	// after a restart, fetches only what is missing. Empty means
	// "goproxy-partial" in the Proxy's TempDir.
	PartialDir string

	// Progress, if set, is called while a file downloads, at most every
	// quarter second and once at the end, with the bytes received so far and
	// the total (-1 while unknown). It must not block.
	Progress func(module, version string, done, total int64)
}

// withDefaults returns o with every zero field set to its default.
func (o DownloadOptions) withDefaults(tempDir string) DownloadOptions {
	if o.Connections <= 0 {
		o.Connections = 4
	}
	if o.RangeThreshold <= 0 {
		o.RangeThreshold = 512 << 10
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 16
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = 100 * time.Millisecond
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 10 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.PartialDir == "" {
		if tempDir == "" {
			tempDir = os.TempDir()
		}
		o.PartialDir = filepath.Join(tempDir, "goproxy-partial")
	}
	return o
}

// maxErrorBody caps how much of an upstream's error answer is read and passed on.
const maxErrorBody = 4 << 10

// progressInterval is the least time between two Progress calls for a file.
const progressInterval = 250 * time.Millisecond

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
}

func newDownloader(opts DownloadOptions, client *http.Client, logger *slog.Logger, via string) *downloader {
	return &downloader{opts: opts, client: client, sem: semaphore.NewWeighted(int64(opts.MaxConcurrent)), logger: logger, via: via}
}

// target describes what a download is for.
type target struct {
	module, version string
	toFile          bool  // zips go to a file, the rest to memory
	limit           int64 // most bytes accepted
}

// get downloads rawURL: a zip into a file, anything else into memory.
func (d *downloader) get(ctx context.Context, rawURL string, t target) (*fetched, error) {
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
		resp, err := d.send(ctx, rawURL, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return upstreamAnswered(rawURL, resp.Status, "a part of a file, for a request of the whole")
		}
		if resp.ContentLength > t.limit {
			return tooLarge(rawURL, t.limit)
		}
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

// send makes one GET request and sorts the answer: 200 and 206 are
// returned; everything else becomes an error that says whether it is worth
// another attempt.
func (d *downloader) send(ctx context.Context, rawURL string, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, &fetchError{status: http.StatusBadGateway, msg: "invalid upstream URL " + redactURL(rawURL), err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "goproxy")
	req.Header.Set("Via", d.via)
	resp, err := d.client.Do(req)
	if err != nil {
		// net/http strips passwords from the URLs in its errors.
		fe := &fetchError{status: http.StatusBadGateway, msg: err.Error(), err: err}
		if egressRefusal(err) != nil {
			fe.status = http.StatusForbidden // and final: the policy will not change its mind
			return nil, fe
		}
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, fe // a name that does not exist will not exist in a second either
		}
		return nil, retryable(fe)
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent:
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	msg := strings.TrimSpace(string(body))
	switch code := resp.StatusCode; {
	case code == http.StatusNotFound || code == http.StatusGone:
		if msg == "" {
			msg = "not found: " + redactURL(rawURL)
		}
		return nil, &fetchError{status: code, msg: msg}
	case code == http.StatusTooManyRequests || code >= 500:
		fe := retryable(upstreamAnswered(rawURL, resp.Status, msg))
		fe.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
		return nil, fe
	}
	return nil, upstreamAnswered(rawURL, resp.Status, msg)
}

func upstreamAnswered(rawURL, status, msg string) *fetchError {
	if msg != "" {
		msg = ": " + msg
	}
	return &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream %s answered %s%s", redactURL(rawURL), status, msg)}
}

func tooLarge(rawURL string, limit int64) *fetchError {
	return &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream %s sent more than the limit of %d bytes", redactURL(rawURL), limit)}
}

func readFailed(rawURL string, err error) *fetchError {
	return &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("reading %s: %v", redactURL(rawURL), err), err: err}
}

// errFileChanged is the answer when a file changes upstream while its parts
// are being fetched: stitching parts of two files together would corrupt it.
var errFileChanged = &fetchError{status: http.StatusBadGateway, msg: "the upstream file changed during the download (its ETag or Last-Modified moved); try again"}

// retryable marks a copy of err as worth another attempt.
func retryable(err *fetchError) *fetchError {
	c := *err
	c.retry = true
	return &c
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// retry calls attempt until it succeeds, fails for good, or the attempts
// are used up, waiting between tries with exponential backoff and full
// jitter, or what the upstream's Retry-After asked for, up to MaxDelay.
func (d *downloader) retry(ctx context.Context, rawURL string, attempt func() error) error {
	for n := 0; ; n++ {
		err := attempt()
		var fe *fetchError
		if err == nil || !errors.As(err, &fe) || !fe.retry || ctx.Err() != nil {
			return err
		}
		if n+1 >= d.opts.Attempts {
			c := *fe
			c.msg = fmt.Sprintf("%s (gave up after %d attempts)", fe.msg, d.opts.Attempts)
			return &c
		}
		delay := fe.retryAfter
		if delay == 0 {
			delay = rand.N(min(d.opts.MaxDelay, d.opts.BaseDelay<<min(n, 30)) + 1)
		}
		delay = min(delay, d.opts.MaxDelay)
		d.logger.LogAttrs(ctx, slog.LevelInfo, "upstream retry", slog.String("url", redactURL(rawURL)),
			slog.Int("attempt", n+1), slog.Duration("delay", delay), slog.String("error", fe.msg))
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return err
		case <-timer.C:
		}
	}
}

// partialState is what is kept beside a partial download to resume it: the
// file's identity (size and validators) and how far each part has come.
type partialState struct {
	Size         int64
	ETag         string
	LastModified string
	Parts        []partState
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
}

// getFile downloads a file to disk, in parallel ranges when it is large and
// the upstream allows, resuming a partial download of the same URL left by
// an earlier attempt or process.
func (d *downloader) getFile(ctx context.Context, rawURL string, t target) (*fetched, error) {
	dl, err := d.openPartial(rawURL, t)
	if err != nil {
		return nil, &fetchError{status: http.StatusInternalServerError, msg: "cannot store the download: " + err.Error(), err: err}
	}
	stopProgress := dl.reportProgress(ctx)
	err = dl.run(ctx)
	if errors.Is(err, errFileChanged) && dl.resume {
		// The partial file was of an older version: start afresh.
		dl.reset()
		err = dl.run(ctx)
	}
	stopProgress()
	if err != nil {
		if dl.meta != "" && !errors.Is(err, errFileChanged) && len(dl.state.Parts) > 0 {
			dl.save() // keep what we have for the next attempt
			dl.f.Close()
		} else {
			dl.discard()
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
	sum := sha256.Sum256([]byte(rawURL))
	key := hex.EncodeToString(sum[:16])
	dl := &fileDownload{d: d, url: rawURL, t: t}
	dl.sized.Store(-1)
	f, err := os.OpenFile(filepath.Join(dir, key+".part"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if ok, err := filelock.TryLock(f); err != nil || !ok || !stillNamed(f) {
		// Held by another download, or unlinked by one that finished
		// between our open and our lock: work on a private file.
		f.Close()
		if f, err = os.CreateTemp(dir, key+"-*.tmp"); err != nil {
			return nil, err
		}
		dl.f = f
		return dl, nil
	}
	dl.f = f
	dl.meta = filepath.Join(dir, key+".json")
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

// reset forgets any progress and empties the file.
func (dl *fileDownload) reset() {
	dl.resume = false
	dl.mu.Lock()
	dl.state = partialState{}
	dl.done = nil
	dl.mu.Unlock()
	dl.total.Store(0)
	dl.sized.Store(-1)
	dl.f.Truncate(0)
	dl.f.Seek(0, io.SeekStart) // whole() writes from the file offset
	if dl.meta != "" {
		os.Remove(dl.meta)
	}
}

// discard removes the file and its state.
func (dl *fileDownload) discard() {
	if dl.meta != "" {
		os.Remove(dl.meta)
	}
	os.Remove(dl.f.Name())
	dl.f.Close()
}

// save writes the progress beside the file, after syncing the file, so the
// state never claims bytes the disk does not have.
func (dl *fileDownload) save() {
	if dl.meta == "" {
		return
	}
	// Snapshot under the lock; state.Parts itself is never written after
	// it is set up, so the parts' readers need no lock.
	dl.mu.Lock()
	st := dl.state
	st.Parts = slices.Clone(dl.state.Parts)
	done := dl.done
	dl.mu.Unlock()
	if len(st.Parts) == 0 {
		return
	}
	for i := range st.Parts {
		st.Parts[i].Done = done[i].Load()
	}
	if err := dl.f.Sync(); err != nil {
		return
	}
	b, _ := json.Marshal(&st)
	tmp := dl.meta + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, dl.meta)
	}
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
	if hook := dl.d.opts.Progress; hook != nil {
		hook(dl.t.module, dl.t.version, dl.total.Load(), dl.sized.Load())
	}
}

// run fetches whatever the file still lacks.
func (dl *fileDownload) run(ctx context.Context) error {
	if !dl.resume {
		if err := dl.d.retry(ctx, dl.url, func() error { return dl.first(ctx) }); err != nil {
			return err
		}
	}
	if len(dl.state.Parts) == 0 {
		return nil // the upstream sent the whole file in one answer
	}
	return dl.fetchParts(ctx)
}

// first makes the first request. It asks for the first RangeThreshold bytes
// (or, with one connection, everything) as a range: a small file comes
// whole, a large one reveals its size and validators and whether ranges
// work, with no extra round trip for a HEAD request.
func (dl *fileDownload) first(ctx context.Context) error {
	opts := dl.d.opts
	want := "bytes=0-"
	if opts.Connections > 1 {
		want += strconv.FormatInt(opts.RangeThreshold-1, 10)
	}
	dl.reset()
	resp, err := dl.d.send(ctx, dl.url, http.Header{"Range": {want}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return dl.whole(resp)
	}
	start, end, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
	if !ok || start != 0 || size < 0 {
		return &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream %s sent an unusable Content-Range %q", redactURL(dl.url), resp.Header.Get("Content-Range"))}
	}
	if size > dl.t.limit {
		return tooLarge(dl.url, dl.t.limit)
	}
	dl.sized.Store(size)
	etag := resp.Header.Get("ETag")
	if strings.HasPrefix(etag, "W/") {
		etag = "" // If-Range needs a strong validator
	}
	st := partialState{Size: size, ETag: etag, LastModified: resp.Header.Get("Last-Modified")}
	conns := opts.Connections
	if etag == "" && st.LastModified == "" {
		conns = 1 // nothing ties the parts to one version of the file
	}
	st.Parts = splitParts(end+1, size, conns, opts.RangeThreshold)
	dl.mu.Lock()
	dl.state = st
	dl.done = make([]atomic.Int64, len(st.Parts))
	dl.mu.Unlock()
	// The body fills the first part; if it breaks off, fetchParts resumes it.
	dl.copyPart(0, resp.Body)
	return nil
}

// whole stores a 200 answer: an upstream that ignores ranges sends the
// whole file at once, and it cannot be resumed.
func (dl *fileDownload) whole(resp *http.Response) error {
	if resp.ContentLength > dl.t.limit {
		return tooLarge(dl.url, dl.t.limit)
	}
	dl.sized.Store(resp.ContentLength)
	n, err := io.Copy(dl.f, io.TeeReader(io.LimitReader(resp.Body, dl.t.limit+1), countingWriter{&dl.total}))
	switch {
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
// connections, each part retried on its own from where it stopped.
func (dl *fileDownload) fetchParts(ctx context.Context) error {
	conns := dl.d.opts.Connections
	if dl.state.ETag == "" && dl.state.LastModified == "" {
		conns = 1
	}
	todo := make(chan int, len(dl.state.Parts))
	for i, p := range dl.state.Parts {
		if dl.done[i].Load() < p.End-p.Start {
			todo <- i
		}
	}
	close(todo)
	g, ctx := errgroup.WithContext(ctx)
	for range min(conns, len(todo)) {
		g.Go(func() error {
			for i := range todo {
				if err := dl.d.retry(ctx, dl.url, func() error { return dl.fetchPart(ctx, i) }); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// fetchPart requests what part i lacks, tied by If-Range to the version of
// the file the other parts came from.
func (dl *fileDownload) fetchPart(ctx context.Context, i int) error {
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
	resp, err := dl.d.send(ctx, dl.url, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return errFileChanged // If-Range failed: the file is not the one we have parts of
	}
	start, end, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
	if !ok || start != from || end != p.End-1 || size != dl.state.Size {
		return errFileChanged
	}
	if etag := resp.Header.Get("ETag"); dl.state.ETag != "" && etag != "" && etag != dl.state.ETag {
		return errFileChanged
	}
	if err := dl.copyPart(i, resp.Body); err != nil {
		return err
	}
	return nil
}

// copyPart writes body into part i from where it stands, counting progress
// as bytes land; a short body is a retryable error.
func (dl *fileDownload) copyPart(i int, body io.Reader) error {
	p := dl.state.Parts[i]
	off := p.Start + dl.done[i].Load()
	w := &partWriter{f: dl.f, off: off, done: &dl.done[i], total: &dl.total}
	_, err := io.Copy(w, io.LimitReader(body, p.End-off))
	if err == nil && dl.done[i].Load() < p.End-p.Start {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return retryable(readFailed(dl.url, err))
	}
	return nil
}

// partWriter writes at a moving offset and counts what it wrote.
type partWriter struct {
	f     *os.File
	off   int64
	done  *atomic.Int64
	total *atomic.Int64
}

func (w *partWriter) Write(b []byte) (int, error) {
	n, err := w.f.WriteAt(b, w.off)
	w.off += int64(n)
	w.done.Add(int64(n))
	w.total.Add(int64(n))
	return n, err
}

type countingWriter struct{ n *atomic.Int64 }

func (w countingWriter) Write(b []byte) (int, error) {
	w.n.Add(int64(len(b)))
	return len(b), nil
}

// parseContentRange parses "bytes start-end/size"; size is -1 for "*".
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
	var err1, err2, err3 error
	start, err1 = strconv.ParseInt(s, 10, 64)
	end, err2 = strconv.ParseInt(e, 10, 64)
	size = -1
	if total != "*" {
		size, err3 = strconv.ParseInt(total, 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || (size >= 0 && end >= size) {
		return 0, 0, 0, false
	}
	return start, end, size, true
}

// flightGroup makes concurrent requests for one file share one download.
// Unlike golang.org/x/sync/singleflight it counts the callers still using
// the result, because a zip result is an open file that must stay open until
// the last of them has served it, and it runs the download detached from any
// one caller, so a client that goes away does not fail the others.
type flightGroup struct {
	mu      sync.Mutex
	flights map[string]*flight
}

type flight struct {
	done  chan struct{}
	res   *fetched
	err   error
	users int // callers holding or waiting for res; guarded by flightGroup.mu
	ended bool
}

// do returns the result of fn for key, starting fn unless a call for key is
// already running. fn runs with a context detached from ctx; waiting stops
// when ctx ends. The caller must call release once done with the result.
//
// background, if not nil, runs after a successful fn while callers are
// served, typically to store the result: until it ends, the result stays
// open and new callers for key join the finished call instead of starting
// another.
func (g *flightGroup) do(ctx context.Context, key string, fn func(context.Context) (*fetched, error), background func(context.Context, *fetched)) (*fetched, func(), error) {
	g.mu.Lock()
	if g.flights == nil {
		g.flights = make(map[string]*flight)
	}
	fl, ok := g.flights[key]
	if !ok {
		fl = &flight{done: make(chan struct{})}
		g.flights[key] = fl
		go g.run(context.WithoutCancel(ctx), key, fl, fn, background)
	}
	fl.users++
	g.mu.Unlock()

	release := func() { g.release(fl) }
	select {
	case <-fl.done:
		if fl.err != nil {
			release()
			return nil, func() {}, fl.err
		}
		return fl.res, release, nil
	case <-ctx.Done():
		release()
		return nil, func() {}, ctx.Err()
	}
}

// callRecovering runs fn, turning a panic into an error: fn runs on a
// goroutine of its own, where a panic would end the whole process.
func callRecovering(ctx context.Context, fn func(context.Context) (*fetched, error)) (res *fetched, err error) {
	defer func() {
		if v := recover(); v != nil {
			res, err = nil, &fetchError{status: http.StatusInternalServerError, msg: fmt.Sprintf("internal error: %v", v)}
		}
	}()
	return fn(ctx)
}

// release drops one user of fl, closing the result after the last.
func (g *flightGroup) release(fl *flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	fl.users--
	if fl.users == 0 && fl.ended && fl.res != nil {
		fl.res.close()
	}
}

func (g *flightGroup) run(ctx context.Context, key string, fl *flight, fn func(context.Context) (*fetched, error), background func(context.Context, *fetched)) {
	res, err := callRecovering(ctx, fn)
	g.mu.Lock()
	fl.res, fl.err, fl.ended = res, err, true
	if err == nil && background != nil {
		fl.users++ // held by the background work
		go func() {
			background(ctx, res)
			g.mu.Lock()
			delete(g.flights, key)
			g.mu.Unlock()
			g.release(fl)
		}()
	} else {
		delete(g.flights, key)
		if fl.users == 0 && res != nil {
			res.close()
		}
	}
	g.mu.Unlock()
	close(fl.done)
}

// users reports how many callers share the running flight for key; tests
// use it to wait for callers without sleeping.
func (g *flightGroup) users(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if fl, ok := g.flights[key]; ok {
		return fl.users
	}
	return 0
}

// idle reports whether no call is running, background work included.
func (g *flightGroup) idle() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.flights) == 0
}
