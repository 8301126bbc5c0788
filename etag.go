package goproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"
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
