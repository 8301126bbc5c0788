package goproxy

import (
	"errors"
	"strings"
	"sync"
	"time"
)

// notFoundMemo remembers not-found answers for a while.
type notFoundMemo struct {
	ttl     time.Duration
	mu      sync.Mutex
	entries map[string]notFoundEntry
}

type notFoundEntry struct {
	err     error
	expires time.Time
}

// maxNotFound bounds the memo; past it, expired entries go first, then any.
const maxNotFound = 10000

// rememberedError is a failure the memo answered with, no upstream asked.
type rememberedError struct{ error }

func (e rememberedError) Unwrap() error { return e.error }

// get returns the failure remembered for name, if any, as a
// rememberedError.
func (m *notFoundMemo) get(name string) error {
	if m.ttl <= 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[name]
	if !ok {
		return nil
	}
	if time.Now().After(e.expires) {
		delete(m.entries, name)
		return nil
	}
	return rememberedError{e.err}
}

// forget drops the memory of names starting with prefix.
func (m *notFoundMemo) forget(prefix string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.entries {
		if strings.HasPrefix(k, prefix) {
			delete(m.entries, k)
		}
	}
}

func (m *notFoundMemo) put(name string, err error) {
	if m.ttl <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil {
		m.entries = make(map[string]notFoundEntry)
	}
	now := time.Now()
	makeRoom(m.entries, maxNotFound, func(e notFoundEntry) bool { return now.After(e.expires) })
	m.entries[name] = notFoundEntry{err: err, expires: now.Add(m.ttl)}
}

// failedOutcome names, for logs and metrics, how a read failed: answered
// from the not-found memo ("remembered"), or otherwise ("failed").
func failedOutcome(err error) string {
	var re rememberedError
	if errors.As(err, &re) {
		return "remembered"
	}
	return "failed"
}
