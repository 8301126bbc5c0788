package goproxy

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// centralDirOffset returns where a zip's central directory starts, as its
// end record (with no comment) says.
func centralDirOffset(t *testing.T, z []byte) int64 {
	t.Helper()
	end := len(z) - 22
	if end < 0 || binary.LittleEndian.Uint32(z[end:]) != sigDirEnd {
		t.Fatal("no end record at the end of the zip")
	}
	return int64(binary.LittleEndian.Uint32(z[end+16:]))
}

// streamClient is a client reading a GET's body as it arrives.
type streamClient struct {
	got    atomic.Int64 // bytes read so far
	status int
	body   []byte
	err    error // of reading the body
	done   chan struct{}
}

func startClient(t *testing.T, url string) *streamClient {
	c := &streamClient{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		resp, err := http.Get(url)
		if err != nil {
			c.err = err
			return
		}
		defer resp.Body.Close()
		c.status = resp.StatusCode
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			c.body = append(c.body, buf[:n]...)
			c.got.Add(int64(n))
			if err == io.EOF {
				return
			}
			if err != nil {
				c.err = err
				return
			}
		}
	}()
	return c
}

func (c *streamClient) wait(t *testing.T) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(testwait.DefaultTimeout):
		t.Fatalf("the client still waits after %v", testwait.DefaultTimeout)
	}
}

// streamOf returns the stream of the zip name that p's clients read while
// it arrives, or nil.
func streamOf(p *Proxy, name string) *zipStream {
	p.flights.mu.Lock()
	defer p.flights.mu.Unlock()
	if fl := p.flights.flights[name]; fl != nil && fl.res != nil {
		return fl.res.stream
	}
	return nil
}

func (s *zipStream) state() (filled, released, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filled, s.released, s.size
}

func TestWaitingClientsReadTheZipWhileItArrives(t *testing.T) {
	v, want := largeFixture(t)
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	faults := &moduletest.Faults{BytesPerSecond: 4 << 20} // about 1.5 s for the 6 MB
	upSrv := httptest.NewServer(faults.Wrap(up.Handler()))
	defer closeNow(upSrv)
	db := newTestSumDB(t, []*moduletest.Version{v})
	p := newVerifyingProxy(t, upSrv.URL, db)
	srv := httptest.NewServer(p)
	defer closeNow(srv)

	var clients []*streamClient
	var upstreamSentWhenFirstBytesCame []int64
	var mu sync.Mutex
	for range 3 {
		c := startClient(t, srv.URL+largeZipPath)
		clients = append(clients, c)
		go func() {
			// What the upstream had sent when this client had its
			// first bytes.
			testwait.For(t, func() bool { return c.got.Load() > 0 || isDone(c.done) })
			mu.Lock()
			upstreamSentWhenFirstBytesCame = append(upstreamSentWhenFirstBytesCame, faults.BodyBytes())
			mu.Unlock()
		}()
	}
	for _, c := range clients {
		c.wait(t)
		if c.err != nil || c.status != 200 || !bytes.Equal(c.body, want) {
			t.Fatalf("client: %d, %d bytes, %v; want the zip", c.status, len(c.body), c.err)
		}
	}
	testwait.For(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(upstreamSentWhenFirstBytesCame) == 3 })
	for _, sent := range upstreamSentWhenFirstBytesCame {
		if sent >= int64(len(want)) {
			t.Errorf("a client had its first bytes only after the upstream had sent all %d (%d)", len(want), sent)
		}
	}
	// One download for the three, which more connections may share.
	if sent := faults.BodyBytes(); sent > int64(len(want))+1<<20 {
		t.Errorf("the upstream sent %d bytes for a %d-byte zip", sent, len(want))
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestTheZipsEndWaitsForTheChecksumDatabase(t *testing.T) {
	v, want := largeFixture(t)
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	faults := &moduletest.Faults{BytesPerSecond: 8 << 20}
	upSrv := httptest.NewServer(faults.Wrap(up.Handler()))
	defer closeNow(upSrv)
	db := newTestSumDB(t, []*moduletest.Version{v})
	// The database holds its answers until the test lets them go.
	gate := make(chan struct{})
	inner := *db.handler.Load()
	var gated http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/lookup/") {
			<-gate
		}
		inner.ServeHTTP(w, r)
	})
	db.handler.Store(&gated)
	p := newVerifyingProxy(t, upSrv.URL, db)
	srv := httptest.NewServer(p)
	defer closeNow(srv)

	c := startClient(t, srv.URL+largeZipPath)
	name := strings.TrimPrefix(largeZipPath, "/")
	cd := centralDirOffset(t, want)
	// The whole zip is on the proxy's disk, the database has not
	// answered: the client has every entry, and not a byte of the
	// central directory.
	testwait.For(t, func() bool {
		s := streamOf(p, name)
		if s == nil {
			return false
		}
		filled, _, size := s.state()
		return size > 0 && filled == size && c.got.Load() == cd
	})
	if _, released, _ := streamOf(p, name).state(); released != cd {
		t.Errorf("released %d bytes before the verdict; the central directory starts at %d", released, cd)
	}
	close(gate)
	c.wait(t)
	if c.err != nil || !bytes.Equal(c.body, want) {
		t.Errorf("after the verdict: %d bytes, %v; want the zip", len(c.body), c.err)
	}
}

func TestChecksumMismatchAbortsEveryStreamingClient(t *testing.T) {
	v, want := largeFixture(t)
	other, err := otherLargeModule() // the same version, other content
	if err != nil {
		t.Fatal(err)
	}
	up := moduletest.NewServer([]*moduletest.Version{v})
	defer up.Close()
	faults := &moduletest.Faults{BytesPerSecond: 8 << 20}
	upSrv := httptest.NewServer(faults.Wrap(up.Handler()))
	defer closeNow(upSrv)
	db := newTestSumDB(t, []*moduletest.Version{other})
	p := newVerifyingProxy(t, upSrv.URL, db)
	srv := httptest.NewServer(p)
	defer closeNow(srv)

	checkStreamsCutBeforeTheirEnd(t, p, srv.URL+largeZipPath, want)
}

func TestRestartAfterBytesReachedClients(t *testing.T) {
	a, b := sameSizeZips(t, 2<<20)
	for _, tt := range []struct {
		name  string
		again []byte // what the upstream has after the first answer
		whole bool   // the client gets a whole zip, else its connection is cut
	}{
		{"the same bytes again: the download goes on", a, true},
		{"other bytes: the clients are cut off", b, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clientHasBytes := make(chan struct{})
			var served atomic.Int32
			upstream := httptest.NewServer(cutAnswers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, etag := a, `"a"`
				if served.Add(1) > 1 {
					// Republished, under another tag, once the client
					// has bytes of the first.
					<-clientHasBytes
					body, etag = tt.again, `"again"`
					r.Header.Del("If-Range")
				}
				w.Header().Set("ETag", etag)
				http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
			}), 1<<20, firstOnly()))
			defer closeNow(upstream)
			p := newTestProxy(t, upstream.URL)
			srv := httptest.NewServer(p)
			defer closeNow(srv)
			c := startClient(t, srv.URL+largeZipPath)
			testwait.For(t, func() bool { return c.got.Load() > 0 })
			close(clientHasBytes)
			c.wait(t)
			if tt.whole {
				if c.err != nil || !bytes.Equal(c.body, a) {
					t.Errorf("%d bytes, %v; want the zip", len(c.body), c.err)
				}
				return
			}
			if c.err == nil {
				t.Errorf("the client read %d bytes to the end; want its connection cut", len(c.body))
			}
			if !bytes.Equal(c.body, a[:len(c.body)]) {
				t.Error("the client got bytes of the second file after those of the first")
			}
			testwait.For(t, p.flights.idle)
			if names := cachedNames(p.Cacher); len(names) != 0 {
				t.Errorf("cached %v", names)
			}
		})
	}
}

// polyglotZip returns a zip whose first entry's data is a whole zip of its
// own, end record included, so that a prefix of the outer zip is a zip
// too, followed by an entry of n random bytes.
func polyglotZip(t *testing.T, n int) []byte {
	const m = "example.com/large@v1.0.0/"
	inner := buildZip(t, zipEntry{name: m + "evil.go", body: []byte("package evil\n"), method: zip.Store, raw: true})
	random := make([]byte, n)
	for i := range random {
		random[i] = byte(i*31) ^ byte(i>>9)
	}
	return buildZip(t,
		zipEntry{name: m + "go.mod", body: []byte("module example.com/large\n"), method: zip.Store, raw: true},
		zipEntry{name: m + "inner.zip", body: inner, method: zip.Store, raw: true},
		zipEntry{name: m + "data.bin", body: random, method: zip.Store})
}

func TestNoReleasedPrefixHoldsAnEndRecord(t *testing.T) {
	z := polyglotZip(t, 3<<20)
	var sigs []sigRun
	n := 0
	for i := 0; ; {
		j := bytes.Index(z[i:], endRecordSig)
		if j < 0 {
			break
		}
		sigs = noteSig(sigs, int64(i+j))
		n++
		i += j + 1
	}
	if n < 2 {
		t.Fatal("the zip holds no end record but its own")
	}
	for r := int64(0); r <= int64(len(z)); r += 4099 {
		got := safeRelease(r, sigs)
		prefix := z[:got]
		if tail := prefix[max(0, len(prefix)-endRecordWindow):]; bytes.Contains(tail, endRecordSig) {
			t.Fatalf("releasing %d of %d bytes leaves an end record within the last %d", got, r, endRecordWindow)
		}
		if _, err := zip.NewReader(bytes.NewReader(prefix), int64(len(prefix))); err == nil {
			t.Fatalf("the first %d bytes open as a zip", got)
		}
	}
}

func TestAbortedClientsHoldNoZipTheyCouldOpen(t *testing.T) {
	z := polyglotZip(t, 3<<20)
	up := newUpstream(t, map[string][]byte{largeZipPath: z})
	faults := &moduletest.Faults{BytesPerSecond: 4 << 20}
	upSrv := httptest.NewServer(faults.Wrap(up.Handler()))
	defer closeNow(upSrv)
	db := newTestSumDB(t, nil) // knows nothing: the verdict is no
	p := newVerifyingProxy(t, upSrv.URL, db)
	srv := httptest.NewServer(p)
	defer closeNow(srv)
	c := startClient(t, srv.URL+largeZipPath)
	c.wait(t)
	if c.err == nil {
		t.Fatalf("%d, %d bytes to the end; want the connection cut", c.status, len(c.body))
	}
	if c.got.Load() == 0 {
		t.Fatal("nothing was streamed: the test proves nothing")
	}
	if _, err := zip.NewReader(bytes.NewReader(c.body), int64(len(c.body))); err == nil {
		t.Errorf("the %d bytes the client got open as a zip", len(c.body))
	}
}

// A Go toolchain is verified against the checksum database whatever
// GONOSUMDB or AllowUnverified say, and so its end waits for the
// database when it is streamed: a toolchain the database contradicts
// reaches no client whole.
func TestAToolchainStreamedIsAbortedWhenTheChecksumDatabaseDisagrees(t *testing.T) {
	served, err := moduletest.ToolchainVersion(t.TempDir(), "go1.99.4", "linux", "amd64", toolchainScript("go1.99.4"), 6<<20)
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := moduletest.ToolchainVersion(t.TempDir(), "go1.99.4", "linux", "amd64", []byte("#!/bin/sh\necho genuine\n"), 6<<20)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(served.ZipFile)
	if err != nil {
		t.Fatal(err)
	}
	up := moduletest.NewServer([]*moduletest.Version{served})
	defer up.Close()
	faults := &moduletest.Faults{BytesPerSecond: 8 << 20}
	upSrv := httptest.NewServer(faults.Wrap(up.Handler()))
	defer closeNow(upSrv)
	db := newTestSumDB(t, []*moduletest.Version{recorded})
	p := newVerifyingProxy(t, upSrv.URL, db, "GONOSUMDB=golang.org/toolchain")
	p.AllowUnverified = true
	srv := httptest.NewServer(p)
	defer closeNow(srv)

	checkStreamsCutBeforeTheirEnd(t, p, srv.URL+"/"+moduletest.ToolchainPath+"/@v/"+served.Version+".zip", want)
}

// A body that is nothing but local entries (no central directory, no end
// record) is followed by the scan to its last byte. The last byte must
// still wait for the verdict: released whole, the client would read a
// complete answer to the end, and the failure that follows could no
// longer reach it.
func TestABodyOfLocalEntriesOnlyIsAbortedNotCompleted(t *testing.T) {
	const m = "example.com/large@v1.0.0/"
	random := make([]byte, 3<<20)
	for i := range random {
		random[i] = byte(i*31) ^ byte(i>>9)
	}
	full := buildZip(t,
		zipEntry{name: m + "go.mod", body: []byte("module example.com/large\n"), method: zip.Store, raw: true},
		zipEntry{name: m + "data.bin", body: random, method: zip.Store, raw: true})
	z := full[:centralDirOffset(t, full)]
	up := newUpstream(t, map[string][]byte{largeZipPath: z})
	faults := &moduletest.Faults{BytesPerSecond: 4 << 20}
	upSrv := httptest.NewServer(faults.Wrap(up.Handler()))
	defer closeNow(upSrv)
	db := newTestSumDB(t, nil)
	p := newVerifyingProxy(t, upSrv.URL, db)
	srv := httptest.NewServer(p)
	defer closeNow(srv)
	c := startClient(t, srv.URL+largeZipPath)
	c.wait(t)
	if c.got.Load() == 0 {
		t.Fatal("nothing was streamed: the test proves nothing")
	}
	if c.err == nil {
		t.Fatalf("%d, %d of %d bytes read to the end; want the connection cut", c.status, len(c.body), len(z))
	}
}

// A download that starts over after bytes reached clients may get an
// answer of unknown length (no validators, no Content-Length), which
// cannot be held to the size the clients were told before it is read.
// It must still be held to it after: the clients got a Content-Length,
// and a file of another length is another file, even one that begins with
// the bytes they have.
func TestRestartWithAnAnswerOfUnknownLengthKeepsTheSizeClientsWereTold(t *testing.T) {
	a := largeZip(t, 2<<20, 1)
	for _, tt := range []struct {
		name  string
		again []byte
	}{
		{"longer", largeZip(t, 3<<20, 1)},
		{"shorter", largeZip(t, 3<<19, 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !bytes.Equal(a[:1<<20], tt.again[:1<<20]) {
				t.Fatal("the second zip does not begin with the bytes of the first")
			}
			clientHasBytes := make(chan struct{})
			var served atomic.Int32
			upstream := httptest.NewServer(cutAnswers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if served.Add(1) > 1 {
					// Whole, streamed: no validators, no length.
					<-clientHasBytes
					w.WriteHeader(http.StatusOK)
					for b := tt.again; len(b) > 0; {
						n := min(len(b), 64<<10)
						w.Write(b[:n])
						w.(http.Flusher).Flush()
						b = b[n:]
					}
					return
				}
				w.Header().Set("ETag", `"a"`)
				http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a))
			}), 1<<20, firstOnly()))
			defer closeNow(upstream)
			p := newTestProxy(t, upstream.URL)
			srv := httptest.NewServer(p)
			defer closeNow(srv)
			c := startClient(t, srv.URL+largeZipPath)
			testwait.For(t, func() bool { return c.got.Load() > 0 })
			close(clientHasBytes)
			c.wait(t)
			if c.err == nil {
				t.Errorf("the client read %d bytes to the end (the zip it was told of has %d, the one that came %d); want its connection cut",
					len(c.body), len(a), len(tt.again))
			}
			testwait.For(t, p.flights.idle)
		})
	}
}

// The scan notes where the bytes hold an end record's signature, to
// withhold what surrounds it; only those within endRecordWindow of what
// may still be released matter. A hostile zip whose data is nothing but
// signatures must not make the notes grow with the zip (8 bytes for every
// 4 of it), nor each release go over all of them.
func TestTheEndRecordSignaturesNotedStayBounded(t *testing.T) {
	const m = "example.com/large@v1.0.0/"
	data := bytes.Repeat(endRecordSig, 4<<20) // 16 MiB
	z := buildZip(t,
		zipEntry{name: m + "go.mod", body: []byte("module example.com/large\n"), method: zip.Store, raw: true},
		zipEntry{name: m + "sigs.bin", body: data, method: zip.Store, raw: true})
	f, err := os.CreateTemp(t.TempDir(), "zip")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(z); err != nil {
		t.Fatal(err)
	}
	s := newZipStream()
	s.f, s.size, s.filled = f, int64(len(z)), int64(len(z))
	src := &scanSource{s: s}
	most := 0
	progress := s.scanProgress(0, src)
	scan := scanZip(src, func(pos int64) {
		progress(pos)
		most = max(most, len(src.sigs))
	})
	if scan.err != nil {
		t.Fatal(scan.err)
	}
	if most > 2 {
		t.Errorf("%d runs of signatures noted at once, for the %d signatures of the zip; want one", most, len(data)/4)
	}
	_, released, _ := s.state()
	if released == 0 || released > centralDirOffset(t, z) {
		t.Errorf("released %d bytes", released)
	}
	if tail := z[max(0, released-endRecordWindow):released]; bytes.Contains(tail, endRecordSig) {
		t.Errorf("the %d bytes released hold an end record within the last %d", released, endRecordWindow)
	}
}

// safeRelease over runs of signatures gives what the rule gives applied
// signature by signature: the release stops just inside each signature
// complete within the window of where it would end, from the last one
// back.
func TestSafeReleaseOverRunsIsTheRuleSignatureBySignature(t *testing.T) {
	rule := func(r int64, sigs []int64) int64 {
		for i := len(sigs) - 1; i >= 0; i-- {
			if sig := sigs[i]; sig+4 <= r && sig >= r-endRecordWindow {
				r = sig + 3
			}
		}
		return r
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var sigs []int64
		var runs []sigRun
		off := int64(rng.IntN(3 * endRecordWindow))
		for range rng.IntN(40) {
			sigs = append(sigs, off)
			runs = noteSig(runs, off)
			switch rng.IntN(4) { // dense, near the window's edge, far
			case 0:
				off += 4 + int64(rng.IntN(64))
			case 1:
				off += endRecordWindow - 8 + int64(rng.IntN(16))
			default:
				off += 4 + int64(rng.IntN(3*endRecordWindow))
			}
		}
		for range 200 {
			r := int64(rng.IntN(int(off + 2*endRecordWindow)))
			if got, want := safeRelease(r, runs), rule(r, sigs); got != want {
				t.Fatalf("round %d: safeRelease(%d) = %d, want %d (signatures %v)", round, r, got, want, sigs)
			}
		}
	}
}

// TestAStreamReadsAtOffsetsAsAnObjectStoreUploadingPartsDoes: an object
// store uploading a streamed zip in parts reads them at offsets, several
// at once and ahead of what is released: each read waits for its bytes,
// none moves the reader's offset, and one past the end says io.EOF with
// what it read.
func TestAStreamReadsAtOffsetsAsAnObjectStoreUploadingPartsDoes(t *testing.T) {
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	const part = 64 << 10
	s := newZipStream()
	s.mu.Lock()
	s.f, s.size, s.filled, s.released = f, int64(len(data)), int64(len(data)), part+1000
	s.mu.Unlock()
	r := s.reader(t.Context())
	ra := r.(io.ReaderAt)

	type result struct {
		off int64
		n   int
		err error
		b   []byte
	}
	results := make(chan result, len(data)/part)
	for off := int64(0); off < int64(len(data)); off += part {
		go func() {
			b := make([]byte, part)
			n, err := ra.ReadAt(b, off)
			results <- result{off, n, err, b}
		}()
	}
	// A part within what is released is read at once; the others wait,
	// the second too, of which only some bytes are released.
	if res := <-results; res.off != 0 || res.err != nil || res.n != part || !bytes.Equal(res.b, data[:part]) {
		t.Fatalf("the part at 0: %d bytes at %d, %v", res.n, res.off, res.err)
	}
	select {
	case res := <-results:
		t.Fatalf("the part at %d was read (%d bytes, %v) before its bytes were released", res.off, res.n, res.err)
	case <-time.After(50 * time.Millisecond):
	}
	s.finish(nil)
	for range len(data)/part - 1 {
		res := <-results
		if res.err != nil || res.n != part || !bytes.Equal(res.b, data[res.off:res.off+part]) {
			t.Errorf("the part at %d: %d bytes, %v", res.off, res.n, res.err)
		}
	}
	if off, _ := r.Seek(0, io.SeekCurrent); off != 0 {
		t.Errorf("reads at offsets moved the reader to %d", off)
	}
	b := make([]byte, 100)
	if n, err := ra.ReadAt(b, int64(len(data))-40); n != 40 || err != io.EOF || !bytes.Equal(b[:n], data[len(data)-40:]) {
		t.Errorf("a read across the end: %d bytes, %v; want 40 and io.EOF", n, err)
	}
	if n, err := ra.ReadAt(b, int64(len(data))+10); n != 0 || err != io.EOF {
		t.Errorf("a read past the end: %d bytes, %v; want 0 and io.EOF", n, err)
	}
	if n, err := ra.ReadAt(b, -1); n != 0 || err == nil {
		t.Errorf("a read at a negative offset: %d bytes, %v; want an error", n, err)
	}
}

// checkStreamsCutBeforeTheirEnd starts three clients of url, whose zip
// would be want, and checks that each got a stream cut before the
// central directory, that none holds a zip that opens, and that p cached
// nothing but checksum database files.
func checkStreamsCutBeforeTheirEnd(t *testing.T, p *Proxy, url string, want []byte) {
	t.Helper()
	cd := centralDirOffset(t, want)
	var clients []*streamClient
	for range 3 {
		clients = append(clients, startClient(t, url))
	}
	for i, c := range clients {
		c.wait(t)
		switch {
		case c.status != 200 || c.got.Load() == 0:
			t.Errorf("client %d: %d, %d bytes; want a stream started", i, c.status, c.got.Load())
		case c.err == nil:
			t.Errorf("client %d read %d bytes to the end; want the connection cut", i, len(c.body))
		case int64(len(c.body)) > cd:
			t.Errorf("client %d got %d bytes, past the central directory at %d", i, len(c.body), cd)
		}
		if _, err := zip.NewReader(bytes.NewReader(c.body), int64(len(c.body))); err == nil {
			t.Errorf("client %d holds a zip that opens", i)
		}
	}
	testwait.For(t, p.flights.idle)
	for _, name := range cachedNames(p.Cacher) {
		if !strings.HasPrefix(name, "sumdb/") {
			t.Errorf("cached %s", name)
		}
	}
}
