package goproxy

import (
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/goproxy-team/goproxy/internal/lru"
)

// hotFileMax is the largest file the hot cache takes: .info and .mod files
// and checksum database records and tiles are a few kilobytes.
const hotFileMax = 64 << 10

// hotFile is a small immutable file held in memory, its headers and
// compressed form worked out once, so that the most frequent requests are
// answered without the Cacher (a disk or an object store), and without
// parsing their path again: the request it answers is kept with it.
type hotFile struct {
	req  *request
	data []byte
	gz   []byte // gzip-compressed data, nil when not worth it
	// served is the content of every answer from the hot tier.
	served *content

	// header holds the values of the headers of an answer, shared by all
	// of them (nobody changes a value in place); gzHeader those of a
	// compressed one.
	header, gzHeader hotHeader

	// For prefetching: expanded is set once a go.mod's requirements were
	// queued, infoQueued once its version's .info was, prefetched while
	// a file the prefetcher brought has not been asked for.
	expanded, infoQueued, prefetched atomic.Bool

	// usedAt is the time (the usage recorder's clock, to the second) of
	// the last use of the file recorded for eviction.
	usedAt atomic.Int64
}

// hotHeader holds the header values of an answer from the hot tier.
type hotHeader struct {
	contentType, cacheControl, etag, lastModified, length []string
}

// Header values that never change, shared by every answer.
var (
	acceptRangesBytes = []string{"bytes"}
	contentEncodingGz = []string{"gzip"}
	varyEncoding      = []string{"Accept-Encoding"}
)

func (p *Proxy) newHotFile(req *request, c *content) *hotFile {
	h := &hotFile{req: req, data: c.data}
	if req.compressible() {
		h.gz = gzipped(c.data)
	}
	h.served = &content{data: h.data, modTime: c.modTime, etag: c.etag, from: fromHot, hot: h, close: func() {}}
	h.header = hotHeader{
		contentType:  []string{req.contentType()},
		cacheControl: []string{p.cacheControl(req, h.served)},
		etag:         []string{c.etag},
		lastModified: []string{c.modTime.UTC().Format(http.TimeFormat)},
		length:       []string{strconv.Itoa(len(c.data))},
	}
	h.gzHeader = h.header
	h.gzHeader.etag, h.gzHeader.length = []string{weakETag(c.etag)}, []string{strconv.Itoa(len(h.gz))}
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

// keepHot keeps c in the hot tier if it may live there (a small
// immutable file), unless the generation moved on since gen, and returns
// what to serve: the hot file, or c itself.
func (p *Proxy) keepHot(req *request, c *content, gen uint64) *content {
	if p.hot == nil || !hotEligible(req) || c.data == nil || len(c.data) > hotFileMax {
		return c
	}
	h := p.newHotFile(req, c)
	hc := h.content(c.from)
	c.close()
	p.hotMu.Lock()
	defer p.hotMu.Unlock()
	if p.hotGeneration == gen {
		p.hot.Put(req.name, h)
	}
	return hc
}

// content returns a hot file as servable content from o.
func (h *hotFile) content(o provenance) *content {
	if o == fromHot {
		return h.served
	}
	c := *h.served
	c.from = o
	return &c
}
