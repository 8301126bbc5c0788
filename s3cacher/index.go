package s3cacher

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/goproxy-team/goproxy"
)

// The index feed (goproxy.CacheIndexLog) in a bucket, which cannot append
// to an object: a head object holds the feed's latest entries, and
// immutable page objects hold the rest, in order.
//
//   - Prefix + ".index/head" is JSON: the feed's ID, how many pages it has,
//     the last timestamp, and the entries after the last page. Every
//     change of it is a conditional PUT (If-Match on the ETag it was read
//     with), so appends by several proxies are applied one after another,
//     each knowing the last timestamp, and timestamps strictly increase.
//   - Prefix + ".index/<feed>/<page>" are JSON lines. Once the head holds
//     indexPageSize entries, the next append first moves them into the
//     next page (a conditional create: whoever does it writes the same
//     entries, since committed entries never change) and the head keeps
//     the rest.
//
// A feed is created with its pages under a new random ID, then the head
// is created only if none exists (If-None-Match: *): of several proxies
// creating it, one wins, and the others' pages are removed. Reading a page
// since a time is a binary search over the pages' first entries (one small
// ranged GET each, remembered) and a GET of the pages from there.
const (
	indexDir  = ".index/"
	indexHead = indexDir + "head"
	// indexPageSize is the number of entries the head moves into a page:
	// an append rewrites the head, so it stays small (tens of KiB).
	indexPageSize = 512
	// indexCreatePage is the number of entries per page of a feed being
	// created from a walk of the cache.
	indexCreatePage = 8192
	// maxIndexHead bounds what is read of the head. It holds under
	// indexPageSize entries but for a large batch appended at once.
	maxIndexHead = 256 << 20
)

// indexHeadRecord is the content of the head object.
type indexHeadRecord struct {
	Feed    string               `json:"feed"`
	Pages   int                  `json:"pages"`
	Last    time.Time            `json:"last"`
	Entries []goproxy.IndexEntry `json:"entries"`
}

// indexCache remembers the first timestamp of pages, which never change.
type indexCache struct {
	mu     sync.Mutex
	firsts map[string]time.Time // by page key
}

func (x *indexCache) first(key string) (time.Time, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	t, ok := x.firsts[key]
	return t, ok
}

func (x *indexCache) setFirst(key string, t time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.firsts == nil || len(x.firsts) > 1<<16 {
		x.firsts = make(map[string]time.Time)
	}
	x.firsts[key] = t
}

func (c *Cacher) indexPageKey(feed string, page int) string {
	return fmt.Sprintf("%s%s%s/%08d", c.prefix, indexDir, feed, page)
}

// readIndexHead returns the head and its ETag; a feed never created is
// fs.ErrNotExist.
func (c *Cacher) readIndexHead(ctx context.Context) (*indexHeadRecord, string, error) {
	body, info, _, err := c.core.GetObject(ctx, c.Bucket, c.prefix+indexHead, minio.GetObjectOptions{})
	if isNotFound(err) {
		return nil, "", fmt.Errorf("s3 index feed: %w", fs.ErrNotExist)
	}
	if err != nil {
		return nil, "", fmt.Errorf("s3 index feed: %w", err)
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, maxIndexHead))
	if err != nil {
		return nil, "", fmt.Errorf("s3 index feed: reading the head: %w", err)
	}
	var h indexHeadRecord
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, "", fmt.Errorf("s3 index feed: the head is damaged: %w", err)
	}
	return &h, info.ETag, nil
}

// spreadIndex makes entries' timestamps strictly increase past last, and
// UTC, returning the last.
func spreadIndex(entries []goproxy.IndexEntry, last time.Time) time.Time {
	for i := range entries {
		t := entries[i].Timestamp.UTC()
		if !t.After(last) {
			t = last.Add(time.Nanosecond)
		}
		entries[i].Timestamp, last = t, t
	}
	return last
}

func indexLines(entries []goproxy.IndexEntry) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, e := range entries {
		enc.Encode(e)
	}
	return b.Bytes()
}

// AppendIndex implements [goproxy.CacheIndexLog]: one conditional rewrite
// of the head (and, once it is full, a page written first), tried again
// after a random pause, growing to half a second, whenever another proxy
// changed the head first, until ctx ends.
func (c *Cacher) AppendIndex(ctx context.Context, entries []goproxy.IndexEntry) error {
	if err := c.Init(); err != nil {
		return err
	}
	for try := 0; ; try++ {
		h, etag, err := c.readIndexHead(ctx)
		if err != nil || len(entries) == 0 {
			return err
		}
		for len(h.Entries) >= indexPageSize {
			page := indexLines(h.Entries[:indexPageSize])
			_, err := c.putIf(ctx, c.indexPageKey(h.Feed, h.Pages), bytes.NewReader(page), int64(len(page)), "", true)
			if err != nil && !errors.Is(err, fs.ErrExist) {
				// Another proxy wrote this page from the same entries
				// if it exists.
				return fmt.Errorf("s3 index feed: writing page %d: %w", h.Pages, err)
			}
			h.Pages++
			h.Entries = h.Entries[indexPageSize:]
		}
		added := slices.Clone(entries)
		h.Last = spreadIndex(added, h.Last)
		h.Entries = append(h.Entries, added...)
		data, _ := json.Marshal(h)
		_, err = c.putIf(ctx, c.prefix+indexHead, bytes.NewReader(data), int64(len(data)), etag, false)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errChanged) {
			return fmt.Errorf("s3 index feed: %w", err)
		}
		pause := time.Duration(mrand.Int64N(int64(min(10*time.Millisecond<<min(try, 6), 500*time.Millisecond))))
		select {
		case <-ctx.Done():
			return fmt.Errorf("s3 index feed: the head kept changing while appending: %w", ctx.Err())
		case <-time.After(pause):
		}
	}
}

// CreateIndex implements [goproxy.CacheIndexLog].
func (c *Cacher) CreateIndex(ctx context.Context, entries []goproxy.IndexEntry) error {
	if err := c.Init(); err != nil {
		return err
	}
	if _, _, err := c.readIndexHead(ctx); err == nil {
		return fmt.Errorf("s3 index feed: %w", fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b goproxy.IndexEntry) int { return a.Timestamp.Compare(b.Timestamp) })
	var id [8]byte
	rand.Read(id[:])
	h := &indexHeadRecord{Feed: hex.EncodeToString(id[:]), Last: spreadIndex(sorted, time.Time{})}
	var keys []string
	for chunk := range slices.Chunk(sorted, indexCreatePage) {
		keys = append(keys, c.indexPageKey(h.Feed, h.Pages))
		page := indexLines(chunk)
		if _, err := c.client.PutObject(ctx, c.Bucket, keys[len(keys)-1], bytes.NewReader(page), int64(len(page)), c.putOptions()); err != nil {
			c.removeKeys(keys)
			return fmt.Errorf("s3 index feed: writing page %d: %w", h.Pages, err)
		}
		h.Pages++
	}
	data, _ := json.Marshal(h)
	if _, err := c.putIf(ctx, c.prefix+indexHead, bytes.NewReader(data), int64(len(data)), "", true); err != nil {
		c.removeKeys(keys)
		return fmt.Errorf("s3 index feed: %w", err)
	}
	return nil
}

// removeKeys removes objects that lost a race, as well as it can.
func (c *Cacher) removeKeys(keys []string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	for _, key := range keys {
		c.client.RemoveObject(ctx, c.Bucket, key, minio.RemoveObjectOptions{})
	}
}

// ReadIndex implements [goproxy.CacheIndexLog].
func (c *Cacher) ReadIndex(ctx context.Context, since time.Time, limit int) ([]goproxy.IndexEntry, error) {
	if err := c.Init(); err != nil {
		return nil, err
	}
	h, _, err := c.readIndexHead(ctx)
	if err != nil || limit <= 0 {
		return nil, err
	}
	var out []goproxy.IndexEntry
	take := func(entries []goproxy.IndexEntry) {
		i, _ := slices.BinarySearchFunc(entries, since, func(e goproxy.IndexEntry, t time.Time) int { return e.Timestamp.Compare(t) })
		out = append(out, entries[i:min(len(entries), i+limit-len(out))]...)
	}
	if h.Pages > 0 && (len(h.Entries) == 0 || since.Before(h.Entries[0].Timestamp)) {
		page, err := c.findIndexPage(ctx, h, since)
		if err != nil {
			return nil, err
		}
		for ; page < h.Pages && len(out) < limit; page++ {
			entries, err := c.readIndexPage(ctx, c.indexPageKey(h.Feed, page), -1)
			if err != nil {
				return nil, err
			}
			take(entries)
		}
	}
	if len(out) < limit {
		take(h.Entries)
	}
	return out, nil
}

// findIndexPage returns the last page whose first entry is at or before
// since (the first page if none is).
func (c *Cacher) findIndexPage(ctx context.Context, h *indexHeadRecord, since time.Time) (int, error) {
	lo, hi := 0, h.Pages // the answer is in [lo, hi)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		key := c.indexPageKey(h.Feed, mid)
		first, ok := c.index.first(key)
		if !ok {
			entries, err := c.readIndexPage(ctx, key, 1)
			if err != nil {
				return 0, err
			}
			if len(entries) == 0 {
				return 0, fmt.Errorf("s3 index feed: page %d is empty", mid)
			}
			first = entries[0].Timestamp
			c.index.setFirst(key, first)
		}
		if first.After(since) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return lo, nil
}

// readIndexPage reads a page's entries, only the first n when n is not
// negative: a ranged GET then reads only the start of the page.
func (c *Cacher) readIndexPage(ctx context.Context, key string, n int) ([]goproxy.IndexEntry, error) {
	var opts minio.GetObjectOptions
	if n >= 0 {
		opts.SetRange(0, int64(n)*4<<10) // a line is far below 4 KiB
	}
	body, _, _, err := c.core.GetObject(ctx, c.Bucket, key, opts)
	if err != nil {
		return nil, fmt.Errorf("s3 index feed: reading %s: %w", key, err)
	}
	defer body.Close()
	var entries []goproxy.IndexEntry
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 64<<10)
	for sc.Scan() && (n < 0 || len(entries) < n) {
		var e goproxy.IndexEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("s3 index feed: %s is damaged: %w", key, err)
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("s3 index feed: reading %s: %w", key, err)
	}
	return entries, nil
}
