package goproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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
	return &dirFile{File: f, modTime: fi.ModTime(), size: fi.Size(), info: fi}, nil
}

// Put implements [Cacher].
func (d DirCacher) Put(ctx context.Context, name string, content io.ReadSeeker) error {
	return d.write(ctx, name, content, func(root *os.Root, tmp string) error {
		return root.Rename(tmp, name)
	})
}

// Create implements [CacheCreator]: the file is written aside, as by Put,
// then hard-linked into place, which fails when the name is taken, whoever
// took it (another process sharing the directory included).
func (d DirCacher) Create(ctx context.Context, name string, content io.ReadSeeker) error {
	return d.write(ctx, name, content, func(root *os.Root, tmp string) error {
		err := root.Link(tmp, name)
		root.Remove(tmp)
		if errors.Is(err, fs.ErrExist) {
			return &fs.PathError{Op: "create", Path: name, Err: fs.ErrExist}
		}
		return err
	})
}

// write writes content to a temporary file beside name, synced and with
// content's ModTime, then lets place put it where it belongs.
func (d DirCacher) write(ctx context.Context, name string, content io.ReadSeeker, place func(root *os.Root, tmp string) error) (err error) {
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
	if err := copyContent(ctx, f, content); err != nil {
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
	return place(root, tmp)
}

// copyContent writes content to f from its start. Content that is a whole
// file on disk, as a downloaded zip the proxy stores is, is copied file to
// file, which Linux does in the kernel (copy_file_range): through user
// space, each byte of a large zip costs two more copies, on the cores its
// clients may still be using.
func copyContent(ctx context.Context, f *os.File, content io.ReadSeeker) error {
	if fb, ok := content.(interface{ backingFile() (*os.File, int64) }); ok {
		src, size := fb.backingFile()
		if done, err := copyFile(ctx, f, src, size); done || err != nil {
			return err
		}
	}
	if _, err := content.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := io.Copy(f, contextReader{ctx, content})
	return err
}

// copyFileChunk is how much copyFile copies between looks at its context.
const copyFileChunk = 16 << 20

// copyFile copies the first size bytes of src to f, reporting false if it
// could not start. It reads src through a descriptor of its own, whose
// offset it may move (the kernel's copy reads at the descriptor's offset),
// opened by name: only if that is still src's file.
func copyFile(ctx context.Context, f, src *os.File, size int64) (bool, error) {
	own, err := os.Open(src.Name())
	if err != nil {
		return false, nil
	}
	defer own.Close()
	fi, err1 := own.Stat()
	srcInfo, err2 := src.Stat()
	if err1 != nil || err2 != nil || !os.SameFile(fi, srcInfo) || fi.Size() < size {
		return false, nil
	}
	for done := int64(0); done < size; {
		if err := ctx.Err(); err != nil {
			return true, err
		}
		n, err := io.CopyN(f, own, min(size-done, copyFileChunk))
		done += n
		if err != nil {
			return true, err
		}
	}
	return true, nil
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
	return d.walk(ctx, prefix, func(name string, _ fs.DirEntry) error { return fn(name) })
}

// WalkInfo implements [CacheInfoWalker], in the order of a sorted listing
// of each directory. It costs no more than Walk: reading a directory
// through os.Root describes every file already.
func (d DirCacher) WalkInfo(ctx context.Context, prefix string, fn func(CacheEntryInfo) error) error {
	return d.walk(ctx, prefix, func(name string, de fs.DirEntry) error {
		fi, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed since the directory was read
		}
		if err != nil {
			return err
		}
		return fn(dirEntryInfo(name, fi))
	})
}

// dirEntryInfo describes a file. Its access time is its last use: reads
// set it (under the usual relatime mounts, once a day at most) and
// RecordUses sets it explicitly; a new file's is when it was stored.
func dirEntryInfo(name string, fi fs.FileInfo) CacheEntryInfo {
	info := CacheEntryInfo{Name: name, Size: fi.Size(), ModTime: fi.ModTime(), LastUse: accessTime(fi)}
	if info.LastUse.Before(info.ModTime) {
		info.LastUse = info.ModTime
	}
	return info
}

// walk calls fn for every entry starting with prefix, skipping the files
// and directories whose names start with a dot: unfinished writes and the
// bookkeeping under .goproxy.
func (d DirCacher) walk(ctx context.Context, prefix string, fn func(name string, de fs.DirEntry) error) error {
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
			return fn(name, de)
		}
		return nil
	})
	return err
}

// RecordUses implements [CacheUsageRecorder] by setting each file's access
// time, its modification time (when it was stored, which mutable entries
// expire by) untouched. Last uses so live in the inodes: nothing to load at
// start, nothing to lose in a crash beyond the uses not yet recorded, no
// file of their own, and every process sharing the directory sees them. An
// access time already as late is left alone, so a use is never moved back
// by a process that recorded it late.
func (d DirCacher) RecordUses(ctx context.Context, uses []CacheUse) error {
	root, err := os.OpenRoot(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	var firstErr error
	for _, u := range uses {
		if err := ctx.Err(); err != nil {
			return err
		}
		if checkCacheName(u.Name) != nil {
			continue
		}
		fi, err := root.Stat(u.Name)
		if err == nil && fi.Mode().IsRegular() && accessTime(fi).Before(u.Time) {
			err = root.Chtimes(u.Name, u.Time, time.Time{})
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) && firstErr == nil {
			firstErr = fmt.Errorf("recording the use of %s: %w", u.Name, err)
		}
	}
	return firstErr
}

// DeleteUnchanged implements [CacheUnchangedDeleter]. The file is moved
// aside under a dot name before it is removed, and put back if what was
// moved is not the file that was checked (another process stored a new one
// in between); only when yet another has taken the name since then does the
// newer one win. A client reading the file keeps reading it whole: on Unix
// an open file lives on after its name is gone, and elsewhere the removal
// fails and the file is left for a later run.
func (d DirCacher) DeleteUnchanged(ctx context.Context, e CacheEntryInfo) (bool, error) {
	root, err := d.openRoot(e.Name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer root.Close()
	fi, err := root.Lstat(e.Name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != e.Size || !fi.ModTime().Equal(e.ModTime) {
		return false, nil
	}
	dir, base := path.Split(e.Name)
	var suffix [8]byte
	rand.Read(suffix[:])
	// As in Put, the name must fit where base fits.
	aside := dir + "." + base[:min(len(base), 200)] + ".evict-" + hex.EncodeToString(suffix[:])
	if err := root.Rename(e.Name, aside); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	moved, err := root.Lstat(aside)
	if err == nil && !os.SameFile(fi, moved) {
		root.Link(aside, e.Name) // fails if the name was taken again: the newest wins
		root.Remove(aside)
		return false, nil
	}
	if err := root.Remove(aside); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// indexJournal is where DirCacher keeps the index feed: a dot name, which
// no entry has and Walk skips.
const indexJournal = ".goproxy/index"

// AppendIndex implements [CacheIndexLog] with a journal of JSON lines in
// the directory, under a file lock so that processes sharing the
// directory keep its timestamps increasing.
func (d DirCacher) AppendIndex(ctx context.Context, entries []IndexEntry) error {
	root, err := os.OpenRoot(string(d))
	if err != nil {
		return err
	}
	defer root.Close()
	return appendIndexJournal(root, indexJournal, entries)
}

// ReadIndex implements [CacheIndexLog] by a binary search of the journal
// for since, reading only the page from there: memory and time do not grow
// with the size of the feed.
func (d DirCacher) ReadIndex(ctx context.Context, since time.Time, limit int) ([]IndexEntry, error) {
	root, err := os.OpenRoot(string(d))
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return readIndexJournal(root, indexJournal, since, limit)
}

// CreateIndex implements [CacheIndexLog]. The journal is written aside and
// linked into place, so it appears whole or not at all, and only the first
// of several processes creating it at once succeeds.
func (d DirCacher) CreateIndex(ctx context.Context, entries []IndexEntry) error {
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(string(d))
	if err != nil {
		return err
	}
	defer root.Close()
	return createIndexJournal(root, indexJournal, entries)
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
	// info identifies the file (os.SameFile): every Put makes a new one,
	// whose time may be the old one's when the clock is coarse.
	info fs.FileInfo
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
