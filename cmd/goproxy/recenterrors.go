package main

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// loggedError is an error-level log record kept for the status page.
type loggedError struct {
	Time      time.Time
	Message   string
	Repo      string // the repository attribute, if any
	Module    string // the module attribute, or the module of the file attribute
	RequestID string
	Attrs     []loggedAttr // the others, in order
}

type loggedAttr struct{ Key, Value string }

// errorSource gives the status page the latest errors, newest first.
// The library's live view (its recent failures) can join today's
// errorRing behind it.
type errorSource interface {
	recentErrors() []loggedError
}

// errorRing keeps the latest error-level records of the server's log,
// a bounded number of them.
type errorRing struct {
	mu    sync.Mutex
	ring  []loggedError
	next  int
	count int
}

// maxRecentErrors bounds what an errorRing keeps, and maxAttrValue each
// value kept.
const (
	maxRecentErrors = 50
	maxAttrValue    = 500
)

func newErrorRing() *errorRing { return &errorRing{ring: make([]loggedError, maxRecentErrors)} }

func (e *errorRing) add(le loggedError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ring[e.next] = le
	e.next = (e.next + 1) % len(e.ring)
	e.count = min(e.count+1, len(e.ring))
}

func (e *errorRing) recentErrors() []loggedError {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]loggedError, 0, e.count)
	for i := 1; i <= e.count; i++ {
		out = append(out, e.ring[(e.next-i+len(e.ring))%len(e.ring)])
	}
	return out
}

// errorRingHandler passes records on to its handler and keeps the
// error-level ones in a ring, with the attributes added by With.
type errorRingHandler struct {
	slog.Handler
	ring   *errorRing
	attrs  []slog.Attr // from WithAttrs, their keys with the prefix of their groups
	prefix string      // of the groups opened by WithGroup
}

func (h *errorRingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		le := loggedError{Time: r.Time, Message: truncate(r.Message), RequestID: requestIDFrom(ctx)}
		for _, a := range h.attrs {
			h.keep(&le, "", a)
		}
		r.Attrs(func(a slog.Attr) bool {
			h.keep(&le, h.prefix, a)
			return true
		})
		h.ring.add(le)
	}
	return h.Handler.Handle(ctx, r)
}

// keep adds a to le, flattening groups.
func (h *errorRingHandler) keep(le *loggedError, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, g := range v.Group() {
			h.keep(le, prefix, g)
		}
		return
	}
	key, value := prefix+a.Key, truncate(v.String())
	switch key {
	case "repository":
		le.Repo = value
	case "module":
		le.Module, _, _ = strings.Cut(value, "@")
	case "file":
		if le.Module == "" {
			le.Module, _ = moduleOf("/" + value)
		}
		le.Attrs = append(le.Attrs, loggedAttr{key, value})
	default:
		le.Attrs = append(le.Attrs, loggedAttr{key, value})
	}
}

func (h *errorRingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.Handler = h.Handler.WithAttrs(attrs)
	h2.attrs = slices.Clip(h.attrs)
	for _, a := range attrs {
		a.Key = h.prefix + a.Key
		h2.attrs = append(h2.attrs, a)
	}
	return &h2
}

func (h *errorRingHandler) WithGroup(name string) slog.Handler {
	h2 := *h
	h2.Handler = h.Handler.WithGroup(name)
	h2.prefix += name + "."
	return &h2
}

func truncate(s string) string {
	if len(s) <= maxAttrValue {
		return s
	}
	return strings.ToValidUTF8(s[:maxAttrValue], "") + "…"
}
