package goproxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

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

// serveFile writes content with the headers for req's kind. Zips and
// requests with Range or conditions go through http.ServeContent. Other
// text bodies are gzip-compressed whole in memory (they are size-capped),
// so that the response still has a Content-Length.
func serveFile(w http.ResponseWriter, r *http.Request, req *request, c *content, cacheControl string) {
	if c.hot != nil && serveHot(w, r, req, c.hot, cacheControl) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", req.contentType())
	h.Set("Cache-Control", cacheControl)
	if c.etag != "" {
		h.Set("ETag", c.etag)
	}
	content, modTime := c.ReadSeeker, c.modTime
	if req.compressible() {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) && r.Header.Get("Range") == "" && r.Header.Get("If-None-Match") == "" && r.Header.Get("If-Modified-Since") == "" {
			if size, err := content.Seek(0, io.SeekEnd); err == nil && size >= gzipMinSize {
				if _, err := content.Seek(0, io.SeekStart); err == nil && serveGzip(w, r, content, modTime) {
					return
				}
			}
			content.Seek(0, io.SeekStart)
		}
	}
	http.ServeContent(w, r, "", modTime, abortOnError{content})
}

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

// serveGzip writes content gzip-compressed, reporting false without writing
// anything if compression failed.
func serveGzip(w http.ResponseWriter, r *http.Request, content io.Reader, modTime time.Time) bool {
	gz, err := gzipBytes(content)
	if err != nil {
		return false
	}
	h := w.Header()
	h.Set("Content-Encoding", "gzip")
	h.Set("Content-Length", strconv.Itoa(len(gz)))
	if !modTime.IsZero() {
		h.Set("Last-Modified", modTime.UTC().Format(http.TimeFormat))
	}
	h.Del("ETag") // the tag names the identity encoding
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(gz)
	}
	return true
}

// gzipBytes compresses r into memory; callers pass size-capped content.
func gzipBytes(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&buf)
	if _, err := io.Copy(zw, r); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
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

// etagOf returns the cached file's tag, or one derived from size and time.
func etagOf(cf CachedFile) string {
	if t, ok := cf.(interface{ ETag() string }); ok {
		return t.ETag()
	}
	size, err := cf.Seek(0, io.SeekEnd)
	if err != nil {
		return ""
	}
	cf.Seek(0, io.SeekStart)
	return fmt.Sprintf(`"%x-%x"`, cf.ModTime().UnixNano(), size)
}
