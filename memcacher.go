package goproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goproxy-team/goproxy/internal/lru"
)

// MemCacher is a [Cacher] that keeps entries in memory, up to MaxBytes of
// content in total, evicting the least recently used entries to make room.
// It suits tests, single-process deployments with a small working set, or a
// fast tier in front of a slower Cacher. The zero value is ready to use.
type MemCacher struct {
	// MaxBytes bounds the total size of the stored content. Zero means 256 MiB.
	// An entry larger than MaxBytes is refused by Put with an error.
	// It must not change once the MemCacher is used.
	MaxBytes int64

	once     sync.Once
	entries  *lru.Cache[*memEntry]
	index    memIndexLog
	createMu sync.Mutex // makes Create's check and store one step
}

type memEntry struct {
	data    []byte
	modTime time.Time
	lastUse atomic.Int64 // UnixNano of the latest recorded use
}

func (c *MemCacher) maxBytes() int64 {
	if c.MaxBytes > 0 {
		return c.MaxBytes
	}
	return 256 << 20
}

func (c *MemCacher) cache() *lru.Cache[*memEntry] {
	c.once.Do(func() {
		c.entries = lru.New(c.maxBytes(), func(e *memEntry) int64 { return int64(len(e.data)) })
	})
	return c.entries
}

// Get implements [Cacher].
func (c *MemCacher) Get(ctx context.Context, name string) (CachedFile, error) {
	e, ok := c.cache().Get(name)
	if !ok {
		return nil, &fs.PathError{Op: "get", Path: name, Err: fs.ErrNotExist}
	}
	return &memFile{Reader: bytes.NewReader(e.data), modTime: e.modTime}, nil
}

// Put implements [Cacher].
func (c *MemCacher) Put(ctx context.Context, name string, content io.ReadSeeker) error {
	if err := checkCacheName(name); err != nil {
		return err
	}
	size, err := content.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if _, err := content.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if size > c.maxBytes() {
		// Refused before reading: a large zip must not be read into memory
		// only to be dropped.
		return fmt.Errorf("goproxy: %s is %d bytes, more than MemCacher.MaxBytes (%d)", name, size, c.maxBytes())
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(contextReader{ctx, content}, data); err != nil {
		return err
	}
	now := time.Now()
	e := &memEntry{data: data, modTime: now}
	if t, ok := content.(interface{ ModTime() time.Time }); ok && !t.ModTime().IsZero() {
		e.modTime = t.ModTime()
	}
	e.lastUse.Store(now.UnixNano())
	c.cache().Put(name, e)
	return nil
}

// Create implements [CacheCreator].
func (c *MemCacher) Create(ctx context.Context, name string, content io.ReadSeeker) error {
	c.createMu.Lock()
	defer c.createMu.Unlock()
	if _, ok := c.cache().Peek(name); ok {
		return &fs.PathError{Op: "create", Path: name, Err: fs.ErrExist}
	}
	return c.Put(ctx, name, content)
}

// Stat implements [CacheStater].
func (c *MemCacher) Stat(ctx context.Context, name string) (fs.FileInfo, error) {
	e, ok := c.cache().Get(name)
	if !ok {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	return fileInfo{name: path.Base(name), size: int64(len(e.data)), modTime: e.modTime}, nil
}

// fileInfo describes a file known by its name, size and time: a
// MemCacher entry, or one a Cacher wrapper reports.
type fileInfo struct {
	name    string
	size    int64
	modTime time.Time
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) Mode() fs.FileMode  { return 0o444 }
func (i fileInfo) ModTime() time.Time { return i.modTime }
func (i fileInfo) IsDir() bool        { return false }
func (i fileInfo) Sys() any           { return nil }

// Delete implements [CacheDeleter].
func (c *MemCacher) Delete(ctx context.Context, name string) error {
	c.cache().Delete(name)
	return nil
}

// Walk implements [CacheWalker]. It lists the names first and calls fn
// without holding a lock, so fn may use the cacher.
func (c *MemCacher) Walk(ctx context.Context, prefix string, fn func(name string) error) error {
	for _, name := range c.cache().Keys() {
		if strings.HasPrefix(name, prefix) {
			if err := fn(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// RecordUses implements [CacheUsageRecorder], in memory: a MemCacher
// lasts no longer than its process anyway.
func (c *MemCacher) RecordUses(ctx context.Context, uses []CacheUse) error {
	for _, u := range uses {
		if e, ok := c.cache().Peek(u.Name); ok {
			t := u.Time.UnixNano()
			for old := e.lastUse.Load(); old < t && !e.lastUse.CompareAndSwap(old, t); old = e.lastUse.Load() {
			}
		}
	}
	return nil
}

// WalkInfo implements [CacheInfoWalker], in name order. Listing does not
// count as using: the MemCacher's own order of eviction is left as it is.
func (c *MemCacher) WalkInfo(ctx context.Context, prefix string, fn func(CacheEntryInfo) error) error {
	names := c.cache().Keys()
	slices.Sort(names)
	for _, name := range names {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		e, ok := c.cache().Peek(name)
		if !ok {
			continue
		}
		info := CacheEntryInfo{Name: name, Size: int64(len(e.data)), ModTime: e.modTime, LastUse: time.Unix(0, e.lastUse.Load())}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// DeleteUnchanged implements [CacheUnchangedDeleter]. Readers keep the
// bytes they were given, so removal never breaks them.
func (c *MemCacher) DeleteUnchanged(ctx context.Context, info CacheEntryInfo) (bool, error) {
	return c.cache().DeleteIf(info.Name, func(e *memEntry) bool {
		return e.modTime.Equal(info.ModTime) && int64(len(e.data)) == info.Size
	}), nil
}

// AppendIndex implements [CacheIndexLog], in memory.
func (c *MemCacher) AppendIndex(ctx context.Context, entries []IndexEntry) error {
	return c.index.AppendIndex(ctx, entries)
}

// ReadIndex implements [CacheIndexLog].
func (c *MemCacher) ReadIndex(ctx context.Context, since time.Time, limit int) ([]IndexEntry, error) {
	return c.index.ReadIndex(ctx, since, limit)
}

// CreateIndex implements [CacheIndexLog].
func (c *MemCacher) CreateIndex(ctx context.Context, entries []IndexEntry) error {
	return c.index.CreateIndex(ctx, entries)
}

// memFile is a cached entry in memory. Each Get has its own reader over the
// shared, never-modified bytes.
type memFile struct {
	*bytes.Reader
	modTime time.Time
}

func (f *memFile) ModTime() time.Time { return f.modTime }
func (f *memFile) Close() error       { return nil }
