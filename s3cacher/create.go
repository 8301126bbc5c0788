package s3cacher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"

	"github.com/minio/minio-go/v7"
)

// Create stores content under name only if nothing is stored there yet,
// with one conditional PUT (If-None-Match: *): of several replicas creating
// one name at once, exactly one succeeds and the others get an error for
// which errors.Is(err, fs.ErrExist) is true, whatever bytes they sent. An
// existing object is never modified.
//
// The content goes up in a single request, streamed, since the condition
// must hold for the object as a whole; S3 takes up to 5 GiB that way. A
// request retried after a lost answer may report fs.ErrExist for an object
// it created itself: compare the content if that matters.
//
// The store must honour If-None-Match on PUT, as AWS S3 (since 2024) and
// MinIO do; one that ignores it overwrites silently.
func (c *Cacher) Create(ctx context.Context, name string, content io.ReadSeeker) error {
	if err := c.check("create", name); err != nil {
		return err
	}
	body, size, err := sizedBody(content)
	if err != nil {
		return &fs.PathError{Op: "create", Path: name, Err: err}
	}
	if _, err := c.putIf(ctx, c.key(name), body, size, "", true); err != nil {
		return c.wrap("create", name, err)
	}
	return nil
}

// errChanged is what putIf returns when the object it was to replace is no
// longer the one it read.
var errChanged = errors.New("the object changed")

// putIf uploads body to key in one request, on a condition: with create,
// only if no object is there (If-None-Match: *); otherwise only if the
// object's ETag is still ifMatch. It returns the new object's ETag. A
// failed condition is an error wrapping fs.ErrExist (create) or errChanged.
func (c *Cacher) putIf(ctx context.Context, key string, body io.Reader, size int64, ifMatch string, create bool) (string, error) {
	opts := c.putOptions()
	opts.DisableMultipart = true
	if create {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(ifMatch)
	}
	info, err := c.client.PutObject(ctx, c.Bucket, key, body, size, opts)
	if err == nil {
		return info.ETag, nil
	}
	r := minio.ToErrorResponse(err)
	switch {
	case r.StatusCode == http.StatusPreconditionFailed && create:
		return "", fmt.Errorf("%w (%w)", fs.ErrExist, err)
	case r.StatusCode == http.StatusPreconditionFailed:
		return "", fmt.Errorf("%w (%w)", errChanged, err)
	case r.StatusCode == http.StatusConflict && r.Code == "ConditionalRequestConflict":
		// AWS's answer when another conditional write to the key is in
		// progress: someone else is creating or changing it.
		if create {
			return "", fmt.Errorf("%w (%w)", fs.ErrExist, err)
		}
		return "", fmt.Errorf("%w (%w)", errChanged, err)
	case isNotFound(err) && !create:
		// If-Match on a deleted object: it changed too.
		return "", fmt.Errorf("%w (%w)", errChanged, err)
	}
	return "", err
}
