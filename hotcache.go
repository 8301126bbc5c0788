package goproxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/goproxy-team/goproxy/internal/lru"
)

// hotFileMax is the largest file the hot cache takes: .info and .mod files
// and checksum database records and tiles are a few kilobytes.
const hotFileMax = 64 << 10

// hotFile is a small immutable file held in memory, its headers and
// compressed form worked out once, so that the most frequent requests are
// answered without the Cacher (a disk or an object store) or
// http.ServeContent.
type hotFile struct {
	data         []byte
	gz           []byte // gzip-compressed data, nil when not worth it
	etag         string
	modTime      time.Time
	lastModified string
	length       string
	gzLength     string
}

func newHotFile(req *request, data []byte, modTime time.Time, etag string) *hotFile {
	if etag == "" {
		etag = fmt.Sprintf(`"%x-%x"`, modTime.UnixNano(), len(data))
	}
	h := &hotFile{
		data: data, etag: etag, modTime: modTime,
		lastModified: modTime.UTC().Format(http.TimeFormat),
		length:       strconv.Itoa(len(data)),
	}
	if req.compressible() && len(data) >= gzipMinSize {
		if gz, err := gzipBytes(bytes.NewReader(data)); err == nil && len(gz) < len(data) {
			h.gz, h.gzLength = gz, strconv.Itoa(len(gz))
		}
	}
	return h
}

// initHotCache sizes the hot cache from HotCacheBytes.
func (p *Proxy) initHotCache() {
	if p.conf.hotCacheBytes == 0 {
		return
	}
	p.hot = lru.New(p.conf.hotCacheBytes, func(h *hotFile) int64 { return int64(len(h.data) + len(h.gz) + 128) })
}

// hotEligible reports whether req's file may live in the hot cache:
// immutable, and not a zip.
func hotEligible(req *request) bool {
	return !req.mutable() && req.kind != kindZip
}

// hotGen returns the hot cache's generation, which publishing advances:
// a file read from upstream under an older generation is not kept.
func (p *Proxy) hotGen() uint64 {
	p.hotMu.Lock()
	defer p.hotMu.Unlock()
	return p.hotGeneration
}

// hotForget drops names from the hot cache and advances the generation,
// so that reads already under way cannot put them back.
func (p *Proxy) hotForget(names ...string) {
	p.hotMu.Lock()
	defer p.hotMu.Unlock()
	p.hotGeneration++
	if p.hot != nil {
		for _, name := range names {
			p.hot.Delete(name)
		}
	}
}

func (p *Proxy) hotGet(req *request) (*hotFile, bool) {
	if p.hot == nil || !hotEligible(req) {
		return nil, false
	}
	return p.hot.Get(req.name)
}

// hotPut keeps a small immutable file in memory, reading it from r, unless
// the generation moved on since gen.
func (p *Proxy) hotPut(req *request, r io.ReadSeeker, modTime time.Time, etag string, gen uint64) (*hotFile, bool) {
	if p.hot == nil || !hotEligible(req) {
		return nil, false
	}
	size, err := r.Seek(0, io.SeekEnd)
	if err != nil || size > hotFileMax {
		r.Seek(0, io.SeekStart)
		return nil, false
	}
	data := make([]byte, size)
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, false
	}
	if _, err := io.ReadFull(r, data); err != nil {
		r.Seek(0, io.SeekStart)
		return nil, false
	}
	h := newHotFile(req, data, modTime, etag)
	p.hotMu.Lock()
	defer p.hotMu.Unlock()
	if p.hotGeneration != gen {
		return h, true // serve it, but do not keep it
	}
	p.hot.Put(req.name, h)
	return h, true
}

// content returns a hot file as servable content.
func (h *hotFile) content() *content {
	return &content{ReadSeeker: bytes.NewReader(h.data), modTime: h.modTime, etag: h.etag, hot: h, close: func() {}}
}

// serveHot writes a hot file with its prepared headers, unless the request
// has conditions or ranges, which http.ServeContent is left to answer.
func serveHot(w http.ResponseWriter, r *http.Request, req *request, h *hotFile, cacheControl string) bool {
	hdr := r.Header
	if hdr.Get("Range") != "" || hdr.Get("If-None-Match") != "" || hdr.Get("If-Modified-Since") != "" ||
		hdr.Get("If-Match") != "" || hdr.Get("If-Unmodified-Since") != "" {
		return false
	}
	out := w.Header()
	out["Content-Type"] = []string{req.contentType()}
	out["Cache-Control"] = []string{cacheControl}
	out["Last-Modified"] = []string{h.lastModified}
	body, length := h.data, h.length
	if req.compressible() {
		out["Vary"] = []string{"Accept-Encoding"}
		if h.gz != nil && acceptsGzip(r) {
			body, length = h.gz, h.gzLength
			out["Content-Encoding"] = []string{"gzip"}
		} else {
			out["Etag"] = []string{h.etag}
		}
	} else {
		out["Etag"] = []string{h.etag}
	}
	out["Content-Length"] = []string{length}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
	return true
}
