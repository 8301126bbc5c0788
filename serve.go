package goproxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
)

// writeMessage answers with a plain-text message, which the go command
// shows its user.
func writeMessage(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(msg)+1))
	h.Set("X-Content-Type-Options", "nosniff")
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-store")
	}
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// gzipMinSize is the smallest text response worth compressing.
const gzipMinSize = 1 << 10

// serverBuffered is below the size of net/http's buffer of an answer's
// first bytes (2 KiB): a handler that writes a shorter body and returns
// gets a Content-Length from the server, not chunks.
const serverBuffered = 2000

// serve writes c to the client with the headers of req's kind, and
// returns the status it answered: the one place where a file is served.
//
// Every answer goes through http.ServeContent, which answers conditional
// and Range requests (304, 412, 206, 416) for the content as stored,
// whichever source had it. A text file the client takes gzip-compressed is
// compressed whole in memory (they are size-capped), so that the answer
// still has a Content-Length: ServeContent decides the status, and a full
// 200 carries the compressed body, tagged with the weak form of the
// content's tag; ranges are of the uncompressed content. A hot file asked
// without conditions is answered with its prepared headers, as
// ServeContent would answer it.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, req *request, c *content) int {
	if p.noteServed(req, c) {
		defer p.serving.done(req.name)
	}
	// Header keys are written in canonical form: this is the path of
	// every answer.
	h := w.Header()
	var gz, lazy []byte // compressed now, or to compress on a 200
	if hf := c.hot; hf != nil {
		hh := &hf.header
		h["Content-Type"] = hh.contentType
		h["Cache-Control"] = hh.cacheControl
		if mayCompress(req, hf.data) {
			addVary(h)
			if acceptsGzip(r) {
				gz = hf.gz
			}
		}
		h["Etag"] = hh.etag
		if !conditional(r) {
			return writeHot(w, r, hf, gz)
		}
	} else {
		h["Content-Type"] = []string{req.contentType()}
		h["Cache-Control"] = []string{p.cacheControl(req, c)}
		if c.from == fromStale {
			h["Warning"] = []string{`110 - "Response is Stale"`}
		}
		if mayCompress(req, c.data) {
			addVary(h)
			if acceptsGzip(r) {
				lazy = c.data
			}
		}
		if c.etag != "" {
			h["Etag"] = []string{c.etag}
		}
	}
	if c.stream != nil && r.Method == http.MethodGet && !conditional(r) {
		// A zip still arriving: as http.ServeContent would answer,
		// its bytes as they are released.
		h["Last-Modified"] = []string{c.modTime.UTC().Format(http.TimeFormat)}
		h["Accept-Ranges"] = acceptRangesBytes
		h["Content-Length"] = []string{strconv.FormatInt(c.stream.length(), 10)}
		c.stream.serve(w, r)
		return http.StatusOK
	}
	body := c.reader()
	if _, isFile := body.(*os.File); !isFile {
		body = abortOnError{body}
	}
	if gz == nil && lazy == nil {
		// A file goes out with sendfile, the status writer passing
		// http.ServeContent's copy to the connection's ReadFrom. A
		// read error from a file leaves the answer short of its
		// Content-Length, which makes the server close the
		// connection: the client sees the failure.
		sw := &statusWriter{ResponseWriter: w}
		http.ServeContent(sw, r, "", c.modTime, body)
		return sw.status
	}
	gw := &gzipOnFull{ResponseWriter: w, gz: gz, data: lazy, head: r.Method == http.MethodHead}
	http.ServeContent(gw, r, "", c.modTime, body)
	return gw.status
}

// mayCompress reports whether an answer with data may be compressed, so
// that it depends on Accept-Encoding: a text file held in memory, large
// enough to be worth it. Any other answer is the same for every client and
// says nothing of Accept-Encoding. (Hot or not, a file gets the same
// answer.)
func mayCompress(req *request, data []byte) bool {
	return req.compressible() && len(data) >= gzipMinSize
}

// addVary says that the answer depends on Accept-Encoding, keeping what
// Vary said already.
func addVary(h http.Header) {
	if v := h["Vary"]; v != nil {
		h["Vary"] = append(v, "Accept-Encoding")
	} else {
		h["Vary"] = varyEncoding
	}
}

// conditional reports whether r has a precondition or a range, which
// http.ServeContent is left to answer. Header keys as net/http parses
// them are canonical.
func conditional(r *http.Request) bool {
	h := r.Header
	return len(h["Range"]) > 0 || len(h["If-Match"]) > 0 || len(h["If-None-Match"]) > 0 ||
		len(h["If-Modified-Since"]) > 0 || len(h["If-Unmodified-Since"]) > 0
}

// writeHot answers an unconditional request for a hot file with its
// prepared headers: those http.ServeContent would send for a full answer,
// less two that cost every answer of the most frequent path (each header
// the handler sets is copied, sorted and scanned by net/http): no
// Accept-Ranges (advisory: a Range request is still answered, by
// ServeContent), and no Content-Length for a body net/http buffers whole,
// whose length it works out and writes itself, cheaper.
func writeHot(w http.ResponseWriter, r *http.Request, hf *hotFile, gz []byte) int {
	out := w.Header()
	body, hh := hf.data, &hf.header
	if gz != nil {
		body, hh = gz, &hf.gzHeader
		out["Content-Encoding"] = contentEncodingGz
		out["Etag"] = hh.etag
	}
	out["Last-Modified"] = hh.lastModified
	if len(body) >= serverBuffered || r.Method == http.MethodHead {
		out["Content-Length"] = hh.length
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
	return http.StatusOK
}

// statusWriter notes the status of an answer, and passes copies to the
// connection's ReadFrom, which sends a file with sendfile.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if rf, ok := s.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{s.ResponseWriter}, r)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// gzipOnFull passes http.ServeContent's answer on, except that a full 200
// carries the compressed content in place of the content: ServeContent has
// decided the status as for the content as stored, and its copy of the
// content stops at the first write. The compressed content is gz, or else
// data compressed then, on a 200 only: a 304, 206 or 412 costs no
// compression. A 304 carries the compressed answer's weak tag.
type gzipOnFull struct {
	http.ResponseWriter
	gz      []byte
	data    []byte // compressed on a 200 when gz is nil
	head    bool
	status  int
	swapped bool
}

// errGzipSent stops http.ServeContent's copy of the uncompressed content
// once the compressed one is written.
var errGzipSent = errors.New("the compressed content was sent")

func (g *gzipOnFull) WriteHeader(status int) {
	if g.status != 0 {
		return
	}
	g.status = status
	if status == http.StatusOK && g.gz == nil && g.data != nil {
		g.gz = gzipped(g.data) // nil if not worth it: sent as it is
	}
	if status == http.StatusNotModified && (g.gz != nil || len(g.data) >= gzipMinSize) {
		// It stands for the compressed answer: its tag is that one's
		// (RFC 9110, 15.4.5).
		if h := g.Header(); h.Get("Etag") != "" {
			h.Set("Etag", weakETag(h.Get("Etag")))
		}
	}
	if status != http.StatusOK || g.gz == nil {
		g.ResponseWriter.WriteHeader(status)
		return
	}
	h := g.Header()
	h.Set("Content-Encoding", "gzip")
	h.Set("Content-Length", strconv.Itoa(len(g.gz)))
	h.Del("Accept-Ranges") // ranges are of the uncompressed content
	if etag := h.Get("Etag"); etag != "" {
		h.Set("Etag", weakETag(etag))
	}
	g.ResponseWriter.WriteHeader(status)
	if !g.head {
		g.ResponseWriter.Write(g.gz)
	}
	g.swapped = true
}

func (g *gzipOnFull) Write(b []byte) (int, error) {
	if g.status == 0 {
		g.WriteHeader(http.StatusOK)
	}
	if g.swapped {
		return 0, errGzipSent
	}
	return g.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (g *gzipOnFull) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// abortOnError makes a read error in the middle of a response abort the
// connection, so that the client sees a failure rather than a body that
// ends early yet looks complete to a careless reader.
type abortOnError struct{ io.ReadSeeker }

func (a abortOnError) Read(p []byte) (int, error) {
	n, err := a.ReadSeeker.Read(p)
	if err != nil && err != io.EOF {
		panic(http.ErrAbortHandler)
	}
	return n, err
}

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

// gzipped returns data gzip-compressed, or nil when that does not pay: data
// too short, or no shorter compressed.
func gzipped(data []byte) []byte {
	if len(data) < gzipMinSize {
		return nil
	}
	var buf bytes.Buffer
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&buf)
	if _, err := zw.Write(data); err != nil {
		return nil
	}
	if err := zw.Close(); err != nil || buf.Len() >= len(data) {
		return nil
	}
	return buf.Bytes()
}

func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for coding := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(coding, ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
				continue
			}
			q := 1.0
			for param := range strings.SplitSeq(params, ";") {
				if k, v, _ := strings.Cut(strings.TrimSpace(param), "="); k == "q" {
					q, _ = strconv.ParseFloat(v, 64)
				}
			}
			return q > 0
		}
	}
	return false
}
