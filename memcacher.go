package goproxy

import (
	"bytes"
	"container/list"
	"context"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"time"
)

// MemCacher is a [Cacher] that keeps entries in memory, up to MaxBytes of
// content in total, evicting the least recently used entries to make room.
// It suits tests, single-process deployments with a small working set, or a
// fast tier in front of a slower Cacher. The zero value is ready to use.
type MemCacher struct {
	// MaxBytes bounds the total size of the stored content. Zero means 256 MiB.
	// An entry larger than MaxBytes is refused by Put with an error.
	MaxBytes int64

	mu      sync.Mutex
	entries map[string]*list.Element // of *memEntry
	lru     list.List                // front is most recently used
	size    int64
}

type memEntry struct {
	name    string
	data    []byte
	modTime time.Time
}

func (c *MemCacher) maxBytes() int64 {
	if c.MaxBytes > 0 {
		return c.MaxBytes
	}
	return 256 << 20
}

// Get implements [Cacher].
func (c *MemCacher) Get(ctx context.Context, name string) (CachedFile, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[name]
	if !ok {
		return nil, &fs.PathError{Op: "get", Path: name, Err: fs.ErrNotExist}
	}
	c.lru.MoveToFront(el)
	e := el.Value.(*memEntry)
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
	if size > c.maxBytes() {
		return fmt.Errorf("goproxy: %s is %d bytes, more than MemCacher.MaxBytes (%d)", name, size, c.maxBytes())
	}
	if _, err := content.Seek(0, io.SeekStart); err != nil {
		return err
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(contextReader{ctx, content}, data); err != nil {
		return err
	}
	e := &memEntry{name: name, data: data, modTime: time.Now()}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[string]*list.Element)
	}
	c.removeLocked(name)
	for c.size+size > c.maxBytes() {
		c.removeLocked(c.lru.Back().Value.(*memEntry).name)
	}
	c.entries[name] = c.lru.PushFront(e)
	c.size += size
	return nil
}

// Delete implements [CacheDeleter].
func (c *MemCacher) Delete(ctx context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(name)
	return nil
}

// Walk implements [CacheWalker]. It lists the names first and calls fn
// without holding the lock, so fn may use the cacher.
func (c *MemCacher) Walk(ctx context.Context, prefix string, fn func(name string) error) error {
	c.mu.Lock()
	var names []string
	for name := range c.entries {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	c.mu.Unlock()
	for _, name := range names {
		if err := fn(name); err != nil {
			return err
		}
	}
	return nil
}

func (c *MemCacher) removeLocked(name string) {
	if el, ok := c.entries[name]; ok {
		c.size -= int64(len(el.Value.(*memEntry).data))
		c.lru.Remove(el)
		delete(c.entries, name)
	}
}

// memFile is a cached entry in memory. Each Get has its own reader over the
// shared, never-modified bytes.
type memFile struct {
	*bytes.Reader
	modTime time.Time
}

func (f *memFile) ModTime() time.Time { return f.modTime }
func (f *memFile) Close() error       { return nil }
