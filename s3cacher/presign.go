package s3cacher

import (
	"context"
	"fmt"
	"io/fs"
	"net/url"
	"time"
)

// PresignGet returns a URL that lets whoever holds it download name's
// object with a plain GET (Range requests included) for the next expiry,
// so a proxy can redirect a client to the store instead of relaying the
// bytes. The URL is signed with the Cacher's credentials and names the
// Endpoint's host, which clients must be able to reach; it grants nothing
// but reading that one object until it expires, and cannot be revoked
// sooner: keep expiry short (a minute is plenty for a client that follows
// the redirect at once). expiry must be between a second and a week.
//
// No request is sent when Region is set (otherwise the bucket's region is
// asked for once); the object is not checked for existence.
func (c *Cacher) PresignGet(ctx context.Context, name string, expiry time.Duration) (*url.URL, error) {
	if err := c.check("presign", name); err != nil {
		return nil, err
	}
	if expiry < time.Second || expiry > 7*24*time.Hour {
		return nil, &fs.PathError{Op: "presign", Path: name, Err: fmt.Errorf("expiry %v is not between a second and a week: %w", expiry, fs.ErrInvalid)}
	}
	u, err := c.client.PresignedGetObject(ctx, c.Bucket, c.key(name), expiry, nil)
	if err != nil {
		return nil, c.wrap("presign", name, err)
	}
	return u, nil
}
