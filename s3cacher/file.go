package s3cacher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
)

// Read-ahead: the first read at a new position asks for firstWindow bytes
// (or the read's length, if larger), and each read that carries on where
// the last range ended asks for twice as much as that range, up to
// lastWindow; past that, reading has gone on long enough to be a whole
// download and the rest of the object is asked for at once. So a short
// ranged read costs one small GET, a whole small file one GET, and a large
// file a handful of GETs, while what is fetched and not read stays within
// what was read plus firstWindow.
const (
	firstWindow = 64 << 10
	lastWindow  = 8 << 20
	// skipLimit is how far ahead of an open range a read may start and
	// still be served by discarding bytes rather than a new GET.
	skipLimit = 64 << 10
)

// objectFile is what Get returns: an object's metadata and a lazy,
// seekable view of its content.
type objectFile struct {
	ctx     context.Context
	c       *Cacher
	name    string
	key     string
	size    int64
	modTime time.Time
	etag    string // unquoted, as minio-go reports it

	off    int64 // where the next Read starts
	closed bool

	body     io.ReadCloser // the open range, or nil
	bodyPos  int64         // offset of the body's next byte
	bodyEnd  int64         // offset just past the open range
	window   int64         // length of the last range asked for
	watchdog *time.Timer   // cancels the open range when a read stalls
	stalled  *atomic.Bool  // set by the watchdog when it fires
	cancel   context.CancelFunc
}

// ModTime reports the time Put kept with the object, or else when the
// object was stored, as the store says.
func (f *objectFile) ModTime() time.Time { return f.modTime }

// taggedObjectFile is an objectFile whose object has no kept ModTime (it
// was stored by Create, or by another program): the proxy tags it by the
// store's ETag, since the store's Last-Modified is only in whole seconds.
type taggedObjectFile struct{ *objectFile }

// ETag returns the object's entity tag, quoted. The store changes it
// whenever the content changes, so it is a strong validator.
func (f taggedObjectFile) ETag() string { return `"` + f.etag + `"` }

// Size is the object's length in bytes.
func (f *objectFile) Size() int64 { return f.size }

// Seek sets where the next Read starts; it costs no request.
func (f *objectFile) Seek(offset int64, whence int) (int64, error) {
	if f.closed {
		return 0, f.pathErr("seek", fs.ErrClosed)
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.size
	default:
		return 0, f.pathErr("seek", fs.ErrInvalid)
	}
	if offset < 0 {
		return 0, f.pathErr("seek", fmt.Errorf("negative position: %w", fs.ErrInvalid))
	}
	f.off = offset
	return offset, nil
}

// Read reads from the open range when it is at (or a little before) the
// current position, and otherwise opens a new one.
func (f *objectFile) Read(p []byte) (int, error) {
	if f.closed {
		return 0, f.pathErr("read", fs.ErrClosed)
	}
	if f.off >= f.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if f.body != nil && (f.off < f.bodyPos || f.off >= f.bodyEnd || f.off-f.bodyPos > skipLimit) {
		f.closeBody()
	}
	if f.body == nil {
		if err := f.open(int64(len(p))); err != nil {
			return 0, err
		}
	}
	if f.off > f.bodyPos {
		if err := f.readBody(io.Discard, f.off-f.bodyPos); err != nil {
			return 0, err
		}
	}
	p = p[:min(int64(len(p)), f.bodyEnd-f.off)]
	n, err := f.readFull(p)
	f.off += int64(n)
	if err != nil {
		return n, err
	}
	if f.bodyPos == f.bodyEnd {
		f.closeBody() // let the connection go back to the pool
	}
	return n, nil
}

// open asks for the range that starts at f.off, sized as described at
// firstWindow, with at least want bytes.
func (f *objectFile) open(want int64) error {
	window := int64(firstWindow)
	switch {
	case f.bodyEnd == f.off && f.window >= lastWindow:
		window = f.size // sequential for long enough: the rest
	case f.bodyEnd == f.off && f.window > 0:
		window = 2 * f.window
	}
	window = max(window, want)
	end := min(f.size, f.off+window)
	rctx, cancel := context.WithCancel(f.ctx)
	stalled := new(atomic.Bool)
	watchdog := time.AfterFunc(f.c.timeout, func() { stalled.Store(true); cancel() })
	var opts minio.GetObjectOptions
	opts.SetRange(f.off, end-1)
	// If-Match: a replaced object fails the read rather than mixing its
	// bytes with the old one's.
	opts.SetMatchETag(f.etag)
	body, info, _, err := f.c.core.GetObject(rctx, f.c.Bucket, f.key, opts)
	watchdog.Stop()
	if err != nil {
		cancel()
		return f.readErr(stalled.Load(), err)
	}
	if info.Size != end-f.off {
		body.Close()
		cancel()
		return f.pathErr("read", fmt.Errorf("asked for bytes %d-%d, the store answered with %d bytes", f.off, end-1, info.Size))
	}
	f.body, f.bodyPos, f.bodyEnd, f.window = body, f.off, end, end-f.off
	f.watchdog, f.stalled, f.cancel = watchdog, stalled, cancel
	return nil
}

// readFull fills p from the body; p does not reach past bodyEnd, so a short
// body is an error.
func (f *objectFile) readFull(p []byte) (int, error) {
	f.watchdog.Reset(f.c.timeout)
	n, err := io.ReadFull(f.body, p)
	f.watchdog.Stop()
	f.bodyPos += int64(n)
	if err != nil {
		stalled := f.stalled.Load()
		f.closeBody()
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return n, f.readErr(stalled, err)
	}
	return n, nil
}

// readBody discards n bytes of the body.
func (f *objectFile) readBody(w io.Writer, n int64) error {
	f.watchdog.Reset(f.c.timeout)
	m, err := io.CopyN(w, f.body, n)
	f.watchdog.Stop()
	f.bodyPos += m
	if err != nil {
		stalled := f.stalled.Load()
		f.closeBody()
		return f.readErr(stalled, err)
	}
	return nil
}

// readErr explains a failed range read: a stalled store, an object changed
// or deleted since Get, or whatever the store or network said.
func (f *objectFile) readErr(stalled bool, err error) error {
	switch r := minio.ToErrorResponse(err); {
	case stalled && f.ctx.Err() == nil:
		err = fmt.Errorf("the store sent nothing for %v: %w", f.c.timeout, err)
	case r.StatusCode == http.StatusPreconditionFailed:
		err = fmt.Errorf("the object changed while being read: %w", err)
	case isNotFound(err):
		err = fmt.Errorf("the object was deleted while being read: %w", err)
	}
	return f.pathErr("read", err)
}

// ReadAt reads len(p) bytes at off with one ranged GET of exactly that
// range, independently of Read and Seek; it may be called concurrently.
func (f *objectFile) ReadAt(p []byte, off int64) (int, error) {
	if f.closed {
		return 0, f.pathErr("read", fs.ErrClosed)
	}
	if off < 0 {
		return 0, f.pathErr("read", fmt.Errorf("negative offset: %w", fs.ErrInvalid))
	}
	if off >= f.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), f.size-off)
	if want == 0 {
		return 0, nil
	}
	g := &objectFile{ctx: f.ctx, c: f.c, name: f.name, key: f.key, size: off + want, etag: f.etag, off: off}
	defer g.Close()
	n, err := io.ReadFull(g, p[:want])
	if err == nil && want < int64(len(p)) {
		err = io.EOF
	}
	return n, err
}

// Close ends the open range, if any.
func (f *objectFile) Close() error {
	if f.closed {
		return f.pathErr("close", fs.ErrClosed)
	}
	f.closeBody()
	f.closed = true
	return nil
}

func (f *objectFile) closeBody() {
	if f.body == nil {
		return
	}
	f.body.Close()
	f.cancel()
	f.body, f.cancel = nil, nil
}

func (f *objectFile) pathErr(op string, err error) error {
	return &fs.PathError{Op: "s3 " + op, Path: f.name, Err: err}
}
