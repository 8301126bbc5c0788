package goproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// Streaming delivery. The clients waiting for a zip's download read its
// bytes in order as they land, all of them from the one download, while
// the proxy withholds the zip's end until validation and the checksum
// database agree; if they do not, the connections are aborted. A zip
// without its end is no zip: every reader (archive/zip, the go command,
// unzip) starts from the end of central directory record, which comes
// last, and finds the central directory through it. So what is released
// before the verdict is what the scan (zipscan.go) has followed as local
// headers and entry data, never the central directory, and never a byte
// sequence that a reader could take for an end record: the scan's bytes
// may hold the signature by chance or, in a zip crafted so that a prefix
// of it is a zip of its own, on purpose, so none is released within
// endRecordWindow of the release's end. A client that keeps the bytes of
// an aborted response (the go command does not) holds local entries, no
// directory and no end: nothing a zip reader opens.

// endRecordWindow is how far before the end of a file zip readers look
// for the end of central directory record: 22 bytes and a comment of up
// to 64 KiB; 1 MiB leaves room for readers that look further.
const endRecordWindow = 1 << 20

// errRestarted ends the scan of a download that started over.
var errRestarted = errors.New("the download started over")

// zipStream follows the download of a zip (it is its downloadSink) and
// serves it to clients while it lands.
type zipStream struct {
	// publish hands the fetch's result to the clients waiting for it;
	// nil when there is nobody to hand it to.
	publish func(*fetched)

	mu sync.Mutex
	// wake is closed, and replaced, whenever what follows changes.
	wake chan struct{}
	f    *os.File
	size int64 // once begun
	// filled is how many bytes from the start are on disk, of this
	// generation (a restart starts one); released is how many clients
	// may read, which never goes down.
	filled, released int64
	final            bool  // everything is released: the zip passed
	err              error // the fetch failed: readers fail
	gen              int
	res              *fetched // what clients get, once begun
	published        bool
	// scan and scanDone are the current generation's scan: its result,
	// and closed when it is set.
	scan     *zipScan
	scanDone chan struct{}
}

func newZipStream() *zipStream {
	return &zipStream{wake: make(chan struct{}), size: -1}
}

// changedLocked wakes whoever waits for a change; s.mu is held.
func (s *zipStream) changedLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *zipStream) begin(f *os.File, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released > 0 && size != s.size {
		// Clients were told the old size.
		return errReleasedChanged
	}
	s.f, s.size = f, size
	if !s.published {
		s.res = &fetched{file: f, size: size, modTime: time.Now(), stream: s}
	}
	done := make(chan struct{})
	s.scan, s.scanDone = nil, done
	go s.runScan(s.gen, f, size, done)
	return nil
}

func (s *zipStream) landed(n int64) {
	s.mu.Lock()
	if n > s.filled {
		s.filled = n
		s.changedLocked()
	}
	s.mu.Unlock()
}

func (s *zipStream) restart() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	s.filled = 0
	// The last generation's scan says nothing of the new file: an
	// answer of unknown length, which skips begin, must not find it.
	s.scan, s.scanDone = nil, nil
	s.changedLocked()
	return s.released
}

// runScan scans generation gen of the file as it fills, releasing what
// it follows, and once the file is whole cross-checks the scan with the
// central directory.
func (s *zipStream) runScan(gen int, f *os.File, size int64, done chan struct{}) {
	src := &scanSource{s: s, gen: gen}
	scan := scanZip(src, s.scanProgress(gen, src))
	if scan.err == nil {
		if err := s.waitFilled(gen, size); err != nil {
			scan.err = err
		} else {
			scan.err = scan.crossCheck(io.NewSectionReader(f, 0, size), size)
		}
	}
	s.mu.Lock()
	if s.gen == gen {
		s.scan = scan
	}
	s.mu.Unlock()
	close(done)
}

// scanProgress returns what the scan of generation gen, reading src,
// reports its progress to.
func (s *zipStream) scanProgress(gen int, src *scanSource) func(pos int64) {
	return func(pos int64) {
		released := s.progress(gen, pos, src.sigs)
		// What is released never goes down: a run of signatures that
		// ends further back than the window from there no longer
		// matters.
		src.forget(released - endRecordWindow)
	}
}

// progress releases what the scan of generation gen followed, up to pos,
// but for the bytes near a byte sequence a reader could take for an end
// record (at sigs); the first release hands the stream to the clients.
// It returns how many bytes are released.
func (s *zipStream) progress(gen int, pos int64, sigs []sigRun) int64 {
	s.mu.Lock()
	released := s.released
	if s.gen != gen || s.err != nil || s.final {
		s.mu.Unlock()
		return released
	}
	// The last byte waits for the verdict whatever the scan followed: a
	// body of local entries only (no directory, no end) is scanned to its
	// end, and released whole it would reach its clients complete, with
	// no failure left to abort them.
	r := safeRelease(min(pos, s.filled, s.size-1), sigs)
	if r <= s.released {
		s.mu.Unlock()
		return released
	}
	s.released = r
	s.changedLocked()
	var res *fetched
	if !s.published && s.publish != nil && s.filled < s.size {
		// Only while the download goes on: a zip already whole is
		// verified at once, and a failure then answers with its
		// message rather than a cut connection.
		s.published, res = true, s.res
	}
	s.mu.Unlock()
	if res != nil {
		s.publish(res)
	}
	return r
}

// sigRun is a run of end record signatures, from the one at first to
// the one at last, each less than endRecordWindow-3 bytes after the one
// before: a release that holds one of them complete within the window of
// its end must stop before them all (each stop, at a signature, holding
// the one before within the window), so the run is all that needs noting,
// and a zip crafted of signatures is a single run.
type sigRun struct{ first, last int64 }

// noteSig adds the signature at off, after those of runs, to them.
func noteSig(runs []sigRun, off int64) []sigRun {
	if n := len(runs); n > 0 && off-runs[n-1].last <= endRecordWindow-3 {
		runs[n-1].last = off
		return runs
	}
	return append(runs, sigRun{off, off})
}

// safeRelease returns the longest prefix of the first r bytes with no
// end record signature (in the runs sigs, in order) complete within
// endRecordWindow of its end.
func safeRelease(r int64, sigs []sigRun) int64 {
	// The last run with a signature complete within r: if one of its
	// signatures is within the window of r, the release stops before the
	// run, and the run before ends more than the window before that.
	for i := len(sigs) - 1; i >= 0; i-- {
		run := sigs[i]
		if run.first+4 > r {
			continue
		}
		if run.last+4 > r || run.last >= r-endRecordWindow {
			return run.first + 3 // the signature incomplete
		}
		break
	}
	return r
}

// waitFilled waits until generation gen of the file is on disk whole.
func (s *zipStream) waitFilled(gen int, size int64) error {
	for {
		s.mu.Lock()
		switch {
		case s.gen != gen:
			s.mu.Unlock()
			return errRestarted
		case s.err != nil:
			err := s.err
			s.mu.Unlock()
			return err
		case s.filled >= size:
			s.mu.Unlock()
			return nil
		}
		wake := s.wake
		s.mu.Unlock()
		<-wake
	}
}

// scanned returns the scan of the file, once the download has ended well
// and the scan with it; nil if it did not begin.
func (s *zipStream) scanned(ctx context.Context) *zipScan {
	s.mu.Lock()
	done := s.scanDone
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scan
}

// downloaded takes the download's outcome: the stream's result, which
// clients may hold already, now owning the download's file.
func (s *zipStream) downloaded(f *fetched, err error) (*fetched, error) {
	s.mu.Lock()
	res, published := s.res, s.published
	s.mu.Unlock()
	if err == nil && published && (res.file != f.file || res.size != f.size) {
		// Started over with an answer of unknown length (which begin
		// never saw), and it came with another: the clients were told
		// the old one, and must not get a prefix of this file as if whole,
		// nor wait forever for bytes it does not have.
		return f, errReleasedChanged
	}
	if err != nil || res == nil || res.file != f.file || res.size != f.size {
		// Never begun (an answer of unknown size), or failed: what
		// the download gave, if anything.
		return f, err
	}
	res.owned.Store(true)
	return res, nil
}

// finish ends the stream: with err nil, everything is released; else
// every reader fails with err.
func (s *zipStream) finish(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final || s.err != nil {
		return
	}
	if err == nil {
		s.released, s.final = s.size, true
	} else {
		s.err = err
	}
	s.changedLocked()
}

// wait waits for the stream to end: nil once the zip passed.
func (s *zipStream) wait(ctx context.Context) error {
	for {
		s.mu.Lock()
		final, err, wake := s.final, s.err, s.wake
		s.mu.Unlock()
		if final || err != nil {
			return err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// length returns the zip's size.
func (s *zipStream) length() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// available waits until bytes past off are released, and returns how many
// are, or the stream's failure, or ctx's.
func (s *zipStream) available(ctx context.Context, off int64) (int64, error) {
	for {
		s.mu.Lock()
		released, err, wake := s.released, s.err, s.wake
		s.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if released > off {
			return released, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// serve writes the whole zip to w, its bytes as they are released, with
// sendfile from a descriptor of its own (whose offset is this client's),
// and aborts the response when the stream fails.
func (s *zipStream) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	name, size := s.f.Name(), s.size
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
	f, err := os.Open(name)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer f.Close()
	var off int64
	for off < size {
		released, err := s.available(r.Context(), off)
		if r.Context().Err() != nil {
			return // the client went away
		}
		if err != nil {
			panic(http.ErrAbortHandler) // the fetch failed
		}
		n, err := io.Copy(w, &io.LimitedReader{R: f, N: released - off})
		off += n
		if err == nil && n == 0 {
			// The file is shorter than what was released: never so,
			// but looping on it would spin.
			panic(http.ErrAbortHandler)
		}
		if err != nil {
			// The client went away, or the file could not be read: the
			// answer, short of its Content-Length, ends the connection.
			return
		}
	}
	// Everything released: the zip passed.
}

// reader returns a reader of the released bytes, which waits for more
// until the stream ends or ctx does.
func (s *zipStream) reader(ctx context.Context) io.ReadSeeker {
	return &streamReader{s: s, ctx: ctx}
}

type streamReader struct {
	s   *zipStream
	ctx context.Context
	off int64
}

func (r *streamReader) Read(p []byte) (int, error) {
	s := r.s
	for {
		s.mu.Lock()
		released, final, size, err, wake, f := s.released, s.final, s.size, s.err, s.wake, s.f
		s.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if r.off < released {
			n, err := f.ReadAt(p[:min(int64(len(p)), released-r.off)], r.off)
			r.off += int64(n)
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
		if final && r.off >= size {
			return 0, io.EOF
		}
		select {
		case <-wake:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// ReadAt reads at off as Read does, waiting for the bytes to be released,
// without moving r's offset: an object store uploading parts of a large
// file several at once reads this way.
func (r *streamReader) ReadAt(p []byte, off int64) (int, error) {
	at := streamReader{s: r.s, ctx: r.ctx, off: off}
	n := 0
	for n < len(p) {
		m, err := at.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (r *streamReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		r.s.mu.Lock()
		offset += r.s.size
		r.s.mu.Unlock()
	}
	if offset < 0 {
		return 0, errors.New("seek before the start")
	}
	r.off = offset
	return offset, nil
}

// scanSource reads generation gen of the file for the scan, as it fills,
// noting where the bytes hold an end record's signature.
type scanSource struct {
	s    *zipStream
	gen  int
	off  int64
	sigs []sigRun // where the bytes hold "PK\x05\x06", in order
	tail []byte   // the last bytes read, in which a signature may begin
}

var endRecordSig = []byte{'P', 'K', 5, 6}

// forget drops the runs of signatures that end before offset before.
func (r *scanSource) forget(before int64) {
	i := 0
	for i < len(r.sigs) && r.sigs[i].last < before {
		i++
	}
	if i > 0 {
		r.sigs = r.sigs[i:]
	}
}

func (r *scanSource) Read(p []byte) (int, error) {
	n, err := r.s.readFilled(r.gen, p, r.off)
	if n > 0 {
		b := p[:n]
		// A signature across the previous read and this one.
		if len(r.tail) > 0 {
			joined := append(r.tail, b[:min(len(b), len(endRecordSig)-1)]...)
			if i := bytes.Index(joined, endRecordSig); i >= 0 {
				r.sigs = noteSig(r.sigs, r.off-int64(len(r.tail))+int64(i))
			}
		}
		for i := 0; ; {
			j := bytes.Index(b[i:], endRecordSig)
			if j < 0 {
				break
			}
			r.sigs = noteSig(r.sigs, r.off+int64(i+j))
			i += j + 1
		}
		r.tail = append(r.tail[:0], b[max(0, len(b)-(len(endRecordSig)-1)):]...)
		r.off += int64(n)
	}
	return n, err
}

// readFilled reads generation gen of the file at off, waiting for the
// bytes to land.
func (s *zipStream) readFilled(gen int, p []byte, off int64) (int, error) {
	for {
		s.mu.Lock()
		if s.gen != gen {
			s.mu.Unlock()
			return 0, errRestarted
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, err
		}
		filled, size, wake, f := s.filled, s.size, s.wake, s.f
		s.mu.Unlock()
		if off < filled {
			n, err := f.ReadAt(p[:min(int64(len(p)), filled-off)], off)
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
		if off >= size {
			return 0, io.EOF
		}
		<-wake
	}
}
