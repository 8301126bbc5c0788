package goproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/goproxy-team/goproxy/internal/lru"
)

// Entity tags name a file's content, the same whichever source answers
// (the hot tier, the published store, the cache or a fetch just done), so
// that a client revalidating with the tag of one answer gets 304 from any
// later one while the content has not changed.
//
// A file held in memory (every file but a zip: they are size-capped) is
// tagged by a digest of its bytes. A zip, served from a file as it is
// read, is tagged by its store: the CachedFile's ETag method, or its
// modification time and size. What a fetch brings is tagged by its fetch
// time and size, which the cache keeps (see Cacher.Put).

// digestETag tags content held in memory by a digest of its bytes.
func digestETag(data []byte) string {
	sum := sha256.Sum256(data)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// storedETag tags content by when it was stored and its size, as static
// file servers do: storing it again changes the time.
func storedETag(modTime time.Time, size int64) string {
	return fmt.Sprintf(`"%x-%x"`, modTime.UnixNano(), size)
}

// storedETagOf returns the tag of a stored file: its own, or one derived
// from its modification time and size.
func storedETagOf(cf CachedFile) (string, error) {
	if t, ok := cf.(interface{ ETag() string }); ok {
		return t.ETag(), nil
	}
	size, err := cf.Seek(0, io.SeekEnd)
	if err != nil {
		return "", err
	}
	if _, err := cf.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return storedETag(cf.ModTime(), size), nil
}

// weakETag is the tag of another encoding of the content etag names
// (gzip): equivalent, not identical, so a weak tag (RFC 9110, 8.8.1).
func weakETag(etag string) string {
	if etag == "" || len(etag) > 2 && etag[:2] == "W/" {
		return etag
	}
	return "W/" + etag
}

// storedMemo remembers files read from a store, by name, with their
// modification time and size: their digest (digestETag), so that a file
// read again unchanged is not hashed again, and the bytes of the most
// recent within a budget, so that a file whose size the store tells
// before it is read (a DirCacher's) is not even read again. A version list
// answering conditional requests, not in the hot tier (it is mutable),
// then costs a stat. Files are replaced whole, with a new modification
// time, but a time the file system takes from its clock may repeat (Linux
// stamps files from a clock that ticks every few milliseconds): a file
// on disk is known by its identity too (os.SameFile), which every Put
// makes new. A store keeping whole seconds (where a file rewritten within
// the second may keep its size) is not memoised. Its zero value is ready
// for use.
type storedMemo struct {
	once  sync.Once
	files *lru.Cache[*storedFile]
}

// storedFile is a file of a storedMemo.
type storedFile struct {
	modTime, size int64
	ident         fs.FileInfo // of a file on disk, else nil
	etag          string
	data          []byte // never modified; nil when only the digest is kept
}

// storedMemoBytes bounds the bytes a storedMemo holds.
const storedMemoBytes = 8 << 20

func (m *storedMemo) cache() *lru.Cache[*storedFile] {
	m.once.Do(func() {
		m.files = lru.New(storedMemoBytes, func(f *storedFile) int64 { return int64(len(f.data)) + 64 })
	})
	return m.files
}

// lookup returns the file name with that modification time, size and
// identity (nil when not a file on disk), if it is remembered with its
// bytes.
func (m *storedMemo) lookup(name string, modTime time.Time, size int64, ident fs.FileInfo) (*storedFile, bool) {
	if m == nil || modTime.Nanosecond() == 0 {
		return nil, false
	}
	f, ok := m.cache().Get(name)
	if !ok || !f.is(modTime, size, ident) || f.data == nil {
		return nil, false
	}
	return f, true
}

// is reports whether f is the file of that modification time, size and
// identity.
func (f *storedFile) is(modTime time.Time, size int64, ident fs.FileInfo) bool {
	if f.modTime != modTime.UnixNano() || f.size != size || (f.ident == nil) != (ident == nil) {
		return false
	}
	return ident == nil || os.SameFile(f.ident, ident)
}

// etag returns data's digest tag, data being the content of the stored
// file name with that modification time and identity (nil when not a file
// on disk), and remembers it. keep says whether to keep data too.
func (m *storedMemo) etag(name string, modTime time.Time, ident fs.FileInfo, data []byte, keep bool) string {
	if m == nil || modTime.Nanosecond() == 0 {
		return digestETag(data)
	}
	c := m.cache()
	if f, ok := c.Get(name); ok && f.is(modTime, int64(len(data)), ident) {
		return f.etag
	}
	f := &storedFile{modTime: modTime.UnixNano(), size: int64(len(data)), ident: ident, etag: digestETag(data)}
	if keep {
		f.data = data
	}
	c.Put(name, f)
	return f.etag
}
