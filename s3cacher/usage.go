package s3cacher

import (
	"bytes"
	"context"
	"iter"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// useDir is where use marks live, under Prefix: like leases, apart from
// the entries.
const useDir = ".use/"

// EntryInfo describes an entry as a listing of the bucket does, for
// eviction across replicas.
type EntryInfo struct {
	// Name is the entry's name.
	Name string
	// Size is its length in bytes.
	Size int64
	// ModTime is when it was stored.
	ModTime time.Time
	// LastUse is when MarkUsed was last called for it by any replica, or
	// ModTime if that is later or it was never marked.
	LastUse time.Time
}

// MarkUsed records in the bucket that name was just used, so that whichever
// replica evicts sees uses made through every replica (an object store
// cannot change an object's time without rewriting it). The mark is an empty
// object under Prefix + ".use/" whose Last-Modified is the time of use.
//
// Each call is a PUT: callers should mark a name at most once per the
// precision eviction needs (an hour, say), not on every request.
func (c *Cacher) MarkUsed(ctx context.Context, name string) error {
	if err := c.check("mark used", name); err != nil {
		return err
	}
	opts := c.putOptions()
	opts.DisableMultipart = true
	if _, err := c.client.PutObject(ctx, c.Bucket, c.prefix+useDir+name, bytes.NewReader(nil), 0, opts); err != nil {
		return c.wrap("mark used", name, err)
	}
	return nil
}

// WalkInfo is Walk with each entry's size, time of storing and last use, all
// from listings of the bucket (no request per entry): one of the entries
// and one of the use marks, merged as they come, since both are in key
// order, so memory does not grow with the number of entries.
func (c *Cacher) WalkInfo(ctx context.Context, prefix string, fn func(EntryInfo) error) error {
	if err := c.Init(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nextMark, stop := iter.Pull(c.list(ctx, c.prefix+useDir, prefix))
	defer stop()
	mark, hasMark := nextMark()
	for entry := range c.list(ctx, c.prefix, prefix) {
		if entry.Err != nil {
			return c.wrap("walk", prefix, entry.Err)
		}
		name := strings.TrimPrefix(entry.Key, c.prefix)
		if checkName(name) != nil {
			continue
		}
		info := EntryInfo{Name: name, Size: entry.Size, ModTime: entry.LastModified, LastUse: entry.LastModified}
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
