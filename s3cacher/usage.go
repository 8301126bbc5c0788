package s3cacher

import (
	"bytes"
	"context"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/goproxy-team/goproxy"
)

// useDir is where use marks live, under Prefix: like leases, apart from
// the entries.
const useDir = ".use/"

// maxUseMemo bounds the names whose latest mark a Cacher remembers; past
// it the memory starts over, which costs a few marks written again.
const maxUseMemo = 100_000

// useMarkers bounds the marks written at once by one RecordUses.
const useMarkers = 8

// MarkUsed records in the bucket that name was just used, so that whichever
// replica evicts sees uses made through every replica (an object store
// cannot change an object's time without rewriting it). The mark is an empty
// object under Prefix + ".use/" whose Last-Modified is the time of use.
//
// Each call is a PUT, whether name is stored or not; RecordUses is what the
// proxy calls, and it writes far fewer.
func (c *Cacher) MarkUsed(ctx context.Context, name string) error {
	if err := c.check("mark used", name); err != nil {
		return err
	}
	opts := c.putOptions()
	opts.DisableMultipart = true
	if _, err := c.client.PutObject(ctx, c.Bucket, c.prefix+useDir+name, bytes.NewReader(nil), 0, opts); err != nil {
		return c.wrap("mark used", name, err)
	}
	c.uses.remember(name, time.Now())
	return nil
}

// RecordUses implements [goproxy.CacheUsageRecorder] with use marks (see
// MarkUsed), shared by every replica, at the precision of UsePrecision: a
// use is marked only when neither the entry's storing nor a mark this
// Cacher wrote is within UsePrecision of it, so an entry in steady use
// costs one PUT per UsePrecision and replica. Names that are not stored
// are skipped (a HEAD finds out). Marks are written several at once.
//
// A mark's time is when it is written, not the use's (a listing shows no
// other time), which the proxy does within a minute or so of the use.
func (c *Cacher) RecordUses(ctx context.Context, uses []goproxy.CacheUse) error {
	if err := c.Init(); err != nil {
		return err
	}
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	slots := make(chan struct{}, useMarkers)
	for _, u := range uses {
		if checkName(u.Name) != nil || !c.uses.due(u.Name, u.Time, c.usePrecision) {
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-slots }()
			err := c.recordUse(ctx, u)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstErr
}

// recordUse marks one use unless the entry is missing or was stored
// within UsePrecision of it.
func (c *Cacher) recordUse(ctx context.Context, u goproxy.CacheUse) error {
	info, err := c.client.StatObject(ctx, c.Bucket, c.key(u.Name), minio.StatObjectOptions{})
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return c.wrap("record use", u.Name, err)
	}
	if info.LastModified.After(u.Time.Add(-c.usePrecision)) {
		// Its time of storing, which counts as a use, is close enough.
		c.uses.remember(u.Name, info.LastModified)
		return nil
	}
	if err := c.MarkUsed(ctx, u.Name); err != nil {
		return err
	}
	// The mark stands for this use, which may be reported late.
	c.uses.remember(u.Name, u.Time)
	return nil
}

// useMemo remembers when this Cacher last marked (or found no need to
// mark) each name.
type useMemo struct {
	mu     sync.Mutex
	marked map[string]time.Time
}

// due reports whether a use at t needs marking: nothing remembered is
// within precision of it.
func (m *useMemo) due(name string, t time.Time, precision time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	last, ok := m.marked[name]
	return !ok || last.Before(t.Add(-precision))
}

func (m *useMemo) remember(name string, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.marked == nil || len(m.marked) >= maxUseMemo {
		m.marked = make(map[string]time.Time)
	}
	if t.After(m.marked[name]) {
		m.marked[name] = t
	}
}

// forget drops what is remembered of name, once its entry is removed.
func (m *useMemo) forget(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.marked, name)
}

// WalkInfo implements [goproxy.CacheInfoWalker]: Walk with each entry's
// size, ETag, time of storing and last use, all from listings of the bucket
// (no request per entry): one of the entries and one of the use marks,
// merged as they come, since both are in key order, so memory does not
// grow with the number of entries.
func (c *Cacher) WalkInfo(ctx context.Context, prefix string, fn func(goproxy.CacheEntryInfo) error) error {
	if err := c.Init(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nextMark, stop := iter.Pull(c.list(ctx, c.prefix+useDir, prefix))
	defer stop()
	mark, hasMark := nextMark()
	for entry := range c.listEntries(ctx, prefix) {
		if entry.Err != nil {
			return c.wrap("walk", prefix, entry.Err)
		}
		name := strings.TrimPrefix(entry.Key, c.prefix)
		if checkName(name) != nil {
			continue
		}
		info := goproxy.CacheEntryInfo{Name: name, Size: entry.Size, ModTime: entry.LastModified, LastUse: entry.LastModified, ETag: entry.ETag}
		for ; hasMark; mark, hasMark = nextMark() {
			if mark.Err != nil {
				return c.wrap("walk", prefix, mark.Err)
			}
			markName := strings.TrimPrefix(mark.Key, c.prefix+useDir)
			if markName > name {
				break
			}
			if markName == name && mark.LastModified.After(info.LastUse) {
				info.LastUse = mark.LastModified
			}
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// list lists the keys under base + prefix, in key order.
func (c *Cacher) list(ctx context.Context, base, prefix string) iter.Seq[minio.ObjectInfo] {
	return c.client.ListObjectsIter(ctx, c.Bucket, minio.ListObjectsOptions{Prefix: base + prefix, Recursive: true})
}

// listEntries lists the entries' keys under Prefix + prefix, in key order.
// A listing of the whole Prefix starts past the Cacher's own objects
// (".index/", ".lease/", ".use/"): a dot sorts before "/", and "/" before
// the first character of any entry name.
func (c *Cacher) listEntries(ctx context.Context, prefix string) iter.Seq[minio.ObjectInfo] {
	opts := minio.ListObjectsOptions{Prefix: c.prefix + prefix, Recursive: true}
	if prefix == "" {
		opts.StartAfter = c.prefix + "/"
	}
	return c.client.ListObjectsIter(ctx, c.Bucket, opts)
}
