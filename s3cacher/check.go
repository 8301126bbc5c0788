package s3cacher

import (
	"context"
	"fmt"
	"strings"

	"github.com/minio/minio-go/v7"
)

// checkDir is where Check writes, under Prefix.
const checkDir = ".check/"

// Check makes sure the store answers and takes writes, for readiness
// probes: it writes a small object under Prefix + ".check/" (named after
// Holder) and removes it.
func (c *Cacher) Check(ctx context.Context) error {
	if err := c.Init(); err != nil {
		return err
	}
	key := c.prefix + checkDir + strings.ReplaceAll(c.holder, "/", "-")
	opts := c.putOptions()
	opts.DisableMultipart = true
	if _, err := c.client.PutObject(ctx, c.Bucket, key, strings.NewReader("ok\n"), 3, opts); err != nil {
		return fmt.Errorf("s3 check of bucket %s: %w", c.Bucket, err)
	}
	if err := c.client.RemoveObject(ctx, c.Bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("s3 check of bucket %s: %w", c.Bucket, err)
	}
	return nil
}
