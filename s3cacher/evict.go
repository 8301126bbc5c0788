package s3cacher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/goproxy-team/goproxy"
)

// DeleteUnchanged implements [goproxy.CacheUnchangedDeleter]: a HEAD
// checks that the object still has the size and ETag (or, without one,
// the time to the second) that the listing gave, then a DELETE with
// If-Match on that ETag removes it, and its use mark after it.
//
// Stores that honour If-Match on DELETE (AWS S3 and Ceph do) thus never
// remove an object stored since the HEAD. Others ignore the header
// (MinIO does; it deletes whatever is there): for them an object stored
// again in the milliseconds between the HEAD and the DELETE is removed,
// which costs the next request for it a fetch, never a wrong answer; and
// since eviction runs under a lease, only one proxy removes at a time.
// Neither versioning nor a conditional overwrite helps there: S3 has no
// conditional copy that could replace an object by a tombstone only if
// unchanged that the DELETE of the tombstone would not race the same way,
// and deleting a version by its ID lets an older version of a mutable
// entry come back.
//
// In a versioned bucket the removal leaves a delete marker, and the
// space is freed by the bucket's lifecycle rule for noncurrent versions.
// A proxy reading the object when it goes (a slow client of another
// replica) fails the rest of that response; eviction removes only what
// nobody used for a while.
func (c *Cacher) DeleteUnchanged(ctx context.Context, e goproxy.CacheEntryInfo) (bool, error) {
	if err := c.check("delete", e.Name); err != nil {
		return false, err
	}
	info, err := c.client.StatObject(ctx, c.Bucket, c.key(e.Name), minio.StatObjectOptions{})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, c.wrap("delete", e.Name, err)
	}
	if info.Size != e.Size || (e.ETag != "" && trimETag(info.ETag) != trimETag(e.ETag)) ||
		(e.ETag == "" && !info.LastModified.Truncate(time.Second).Equal(e.ModTime.Truncate(time.Second))) {
		return false, nil
	}
	removed, err := c.deleteIfMatch(ctx, c.key(e.Name), trimETag(info.ETag))
	if err != nil || !removed {
		return false, err
	}
	// The mark goes after the entry: a mark without an entry is
	// harmless, an entry without its mark only looks older than it is.
	if err := c.client.RemoveObject(ctx, c.Bucket, c.prefix+useDir+e.Name, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return true, c.wrap("delete", e.Name, err)
	}
	c.uses.forget(e.Name)
	return true, nil
}

// deleteIfMatch sends DELETE key with If-Match: etag, which minio-go has no
// option for: the request is presigned for the header and sent with the
// Cacher's transport. It reports whether the object was removed: false
// when it was gone or (where the store checks) changed.
func (c *Cacher) deleteIfMatch(ctx context.Context, key, etag string) (bool, error) {
	h := http.Header{"If-Match": {`"` + etag + `"`}}
	u, err := c.client.PresignHeader(ctx, http.MethodDelete, c.Bucket, key, time.Minute, nil, h)
	if err != nil {
		return false, fmt.Errorf("s3 delete %s: %w", key, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u.String(), nil)
	if err != nil {
		return false, fmt.Errorf("s3 delete %s: %w", key, err)
	}
	req.Header = h
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL carries a signature: keep it out of the message.
		return false, fmt.Errorf("s3 delete %s: %w", key, unwrapURLError(err))
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent:
		return true, nil
	case http.StatusPreconditionFailed, http.StatusNotFound, http.StatusConflict:
		// Changed, gone, or changing under another request.
		return false, nil
	}
	return false, fmt.Errorf("s3 delete %s: the store answered %s", key, resp.Status)
}

// trimETag drops the quotes around an ETag, as minio-go reports them
// in some places and not others.
func trimETag(etag string) string {
	if len(etag) >= 2 && etag[0] == '"' && etag[len(etag)-1] == '"' {
		return etag[1 : len(etag)-1]
	}
	return etag
}

// unwrapURLError drops the method and URL that net/http puts in front of
// a request's error: a presigned URL's query is a credential.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
