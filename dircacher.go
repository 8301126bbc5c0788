package goproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"
)

// DirCacher is a [Cacher] that keeps each entry as a file in the directory it
// names, created on first Put. Names are resolved with [os.Root], so no name
// (nor a symbolic link planted in the directory) reaches a file outside it.
//
// Put writes a temporary file beside the target, syncs it and renames it into
// place, so readers see whole files only, a killed process leaves at most a
// temporary file that is never served (its name starts with a dot, which no
// entry name does), and several processes may share one directory.
type DirCacher string

// Get implements [Cacher].
func (d DirCacher) Get(ctx context.Context, name string) (CachedFile, error) {
	root, err := d.openRoot(name)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &fs.PathError{Op: "get", Path: name, Err: fs.ErrNotExist}
	}
	return &dirFile{File: f, modTime: fi.ModTime(), size: fi.Size()}, nil
}

// Put implements [Cacher].
func (d DirCacher) Put(ctx context.Context, name string, content io.ReadSeeker) (err error) {
	if err := checkCacheName(name); err != nil {
		return err
	}
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(string(d))
	if err != nil {
		return err
	}
	defer root.Close()
	dir, base := path.Split(name)
	if dir != "" {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	var suffix [8]byte
	rand.Read(suffix[:])
	// The name must fit where base fits: file systems cap an element.
	tmp := dir + "." + base[:min(len(base), 200)] + ".tmp-" + hex.EncodeToString(suffix[:])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			root.Remove(tmp)
		}
	}()
	if _, err := content.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(f, contextReader{ctx, content}); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if t, ok := content.(interface{ ModTime() time.Time }); ok && !t.ModTime().IsZero() {
		if err := root.Chtimes(tmp, time.Time{}, t.ModTime()); err != nil {
			return err
		}
	}
	return root.Rename(tmp, name)
}

// Stat implements [CacheStater].
func (d DirCacher) Stat(ctx context.Context, name string) (fs.FileInfo, error) {
	root, err := d.openRoot(name)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	fi, err := root.Stat(name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	return fi, nil
}

// Delete implements [CacheDeleter].
func (d DirCacher) Delete(ctx context.Context, name string) error {
	root, err := d.openRoot(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Walk implements [CacheWalker]. Temporary files of unfinished writes are not
// entries and are skipped.
func (d DirCacher) Walk(ctx context.Context, prefix string, fn func(name string) error) error {
	root, err := os.OpenRoot(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	start := "."
	if i := strings.LastIndexByte(prefix, '/'); i > 0 {
		start = prefix[:i]
	}
	err = fs.WalkDir(root.FS(), start, func(name string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(de.Name(), ".") && name != "." {
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if de.Type().IsRegular() && strings.HasPrefix(name, prefix) {
			return fn(name)
		}
		return nil
	})
	return err
}

// openRoot opens the directory for an operation on name, once name is
// known to be one a Cacher may be asked for.
func (d DirCacher) openRoot(name string) (*os.Root, error) {
	if err := checkCacheName(name); err != nil {
		return nil, err
	}
	return os.OpenRoot(string(d))
}

// dirFile is a cached file on disk.
type dirFile struct {
	*os.File
	modTime time.Time
	size    int64
}

func (f *dirFile) ModTime() time.Time { return f.modTime }

// ETag derives a tag from size and modification time, as static file servers
// do: every Put sets the modification time anew.
func (f *dirFile) ETag() string {
	return storedETag(f.modTime, f.size)
}

// checkCacheName rejects names a Cacher must never be asked for, so that even
// a Cacher used outside the proxy cannot be led out of its root.
func checkCacheName(name string) error {
	if !fs.ValidPath(name) || name == "." || strings.ContainsAny(name, "\\\x00") {
		return &fs.PathError{Op: "cache", Path: name, Err: fs.ErrInvalid}
	}
	for elem := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(elem, ".") {
			return &fs.PathError{Op: "cache", Path: name, Err: fs.ErrInvalid}
		}
	}
	return nil
}
