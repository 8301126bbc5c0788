// Package lru is a map bounded by the total size of its values, evicting
// the least recently used entries, shared by the proxy's memory caches.
package lru

import (
	"container/list"
	"sync"
)

// Cache maps keys to values of a known size, holding at most Max bytes.
// It is safe for concurrent use.
type Cache[V any] struct {
	max  int64
	size func(V) int64

	mu      sync.Mutex
	entries map[string]*list.Element // of *entry[V]
	order   list.List                // front is most recently used
	total   int64
}

type entry[V any] struct {
	key  string
	val  V
	size int64
}

// New returns a Cache holding at most max bytes, as size measures values.
func New[V any](max int64, size func(V) int64) *Cache[V] {
	return &Cache[V]{max: max, size: size, entries: make(map[string]*list.Element)}
}

// Get returns the value for key and marks it recently used.
func (c *Cache[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*entry[V]).val, true
}

// Put stores val under key, evicting others to make room. It reports false,
// storing nothing, when val alone is larger than the cache.
func (c *Cache[V]) Put(key string, val V) bool {
	size := c.size(val)
	if size > c.max {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(key)
	for c.total+size > c.max {
		c.removeLocked(c.order.Back().Value.(*entry[V]).key)
	}
	c.entries[key] = c.order.PushFront(&entry[V]{key: key, val: val, size: size})
	c.total += size
	return true
}

// Peek returns the value for key without marking it used, for callers that
// list entries rather than use them.
func (c *Cache[V]) Peek(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	return el.Value.(*entry[V]).val, true
}

// DeleteIf removes key if its value satisfies match, checked under the
// lock so that a concurrent Put of a new value is never removed. It reports
// whether it removed it.
func (c *Cache[V]) DeleteIf(key string, match func(V) bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok || !match(el.Value.(*entry[V]).val) {
		return false
	}
	c.removeLocked(key)
	return true
}

// Delete removes key.
func (c *Cache[V]) Delete(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(key)
}

// Keys returns the keys present, in no particular order.
func (c *Cache[V]) Keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.entries))
	for k := range c.entries {
		keys = append(keys, k)
	}
	return keys
}

// Size returns the bytes held.
func (c *Cache[V]) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

func (c *Cache[V]) removeLocked(key string) {
	if el, ok := c.entries[key]; ok {
		c.total -= el.Value.(*entry[V]).size
		c.order.Remove(el)
		delete(c.entries, key)
	}
}
