package goproxy

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"time"
)

// leftoverAge is how old a temporary file of DirCacher must be before it
// counts as left behind by a process that died: a Put of a large zip over a
// slow disk, or a removal in progress, is never that old.
const leftoverAge = 24 * time.Hour

// leftoverName matches DirCacher's temporary names: a Put's file before its
// rename (".<base>.tmp-<hex>"), a file moved aside by DeleteUnchanged
// (".<base>.evict-<hex>"), and the index journal's (in .goproxy).
var leftoverName = regexp.MustCompile(`^\..*\.(tmp|evict)-[0-9a-f]{16}$`)

// leftoverRemover is a Cacher that can remove what processes that died in
// the middle of a write or a removal left behind.
type leftoverRemover interface {
	removeLeftovers(ctx context.Context, olderThan time.Time) (files int, bytes int64, err error)
}

// removeLeftovers removes the temporary files older than olderThan. They
// are never served (their dot names are no entry's), but nothing else
// removes them: walks skip them, so eviction never counts them either.
func (d DirCacher) removeLeftovers(ctx context.Context, olderThan time.Time) (files int, bytes int64, err error) {
	root, err := os.OpenRoot(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	defer root.Close()
	err = fs.WalkDir(root.FS(), ".", func(name string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !de.Type().IsRegular() || !leftoverName.MatchString(de.Name()) {
			return nil
		}
		fi, err := de.Info()
		if err != nil || !fi.ModTime().Before(olderThan) {
			return nil
		}
		if root.Remove(name) == nil {
			files++
			bytes += fi.Size()
		}
		return nil
	})
	return files, bytes, err
}

// removeLeftovers cleans the cache of what dead processes left, once at
// the Proxy's first use, in the background.
func (p *Proxy) removeLeftovers(ctx context.Context) {
	r, ok := p.conf.cacher.(leftoverRemover)
	if !ok {
		return
	}
	files, bytes, err := r.removeLeftovers(ctx, time.Now().Add(-leftoverAge))
	switch {
	case err != nil && ctx.Err() == nil:
		p.logger().LogAttrs(ctx, slog.LevelWarn, "removing temporary files left in the cache", slog.String("error", err.Error()))
	case files > 0:
		p.logger().LogAttrs(ctx, slog.LevelInfo, "removed temporary files left in the cache by processes that stopped",
			slog.Int("files", files), slog.Int64("bytes", bytes))
	}
}
