package s3cacher

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

func TestWalkInfoReportsSizesAndTheLastUseByAnyReplica(t *testing.T) {
	c := newCacher(t)
	// another replica on the same bucket and prefix
	other := &Cacher{Endpoint: c.Endpoint, Bucket: c.Bucket, Prefix: c.Prefix, Region: c.Region, AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey}
	ctx := t.Context()
	names := []string{"example.com/a/@v/v1.0.0.zip", "example.com/a/@v/v1.0.0.info", "example.com/b/@v/list"}
	for i, name := range names {
		if err := c.Put(ctx, name, strings.NewReader(strings.Repeat("x", 10*(i+1)))); err != nil {
			t.Fatal(err)
		}
	}
	stored := time.Now()
	// The store keeps times in whole seconds: let one go by, so that a use
	// now is visibly later than the storing.
	for time.Now().Truncate(time.Second).Before(stored.Truncate(time.Second).Add(time.Second)) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := other.MarkUsed(ctx, "example.com/a/@v/v1.0.0.zip"); err != nil {
		t.Fatal(err)
	}
	if err := other.MarkUsed(ctx, "example.com/gone/@v/list"); err != nil { // a mark without an entry
		t.Fatal(err)
	}
	var got []goproxy.CacheEntryInfo
	if err := c.WalkInfo(ctx, "", func(e goproxy.CacheEntryInfo) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b goproxy.CacheEntryInfo) int { return strings.Compare(a.Name, b.Name) })
	if len(got) != 3 {
		t.Fatalf("WalkInfo = %+v, want the 3 entries", got)
	}
	sizes := map[string]int64{names[0]: 10, names[1]: 20, names[2]: 30}
	for _, e := range got {
		if e.Size != sizes[e.Name] || e.ModTime.IsZero() {
			t.Errorf("%s: size %d, modtime %v; want size %d", e.Name, e.Size, e.ModTime, sizes[e.Name])
		}
		used := e.Name == "example.com/a/@v/v1.0.0.zip"
		if later := e.LastUse.After(e.ModTime); later != used {
			t.Errorf("%s: last use %v, stored %v; marked used: %v", e.Name, e.LastUse, e.ModTime, used)
		}
	}
	var some []string
	c.WalkInfo(ctx, "example.com/a/", func(e goproxy.CacheEntryInfo) error { some = append(some, e.Name); return nil })
	if len(some) != 2 {
		t.Errorf("WalkInfo(example.com/a/) = %q", some)
	}

	if err := c.Delete(ctx, "example.com/a/@v/v1.0.0.zip"); err != nil {
		t.Fatal(err)
	}
	_, err := c.client.StatObject(ctx, c.Bucket, c.prefix+useDir+"example.com/a/@v/v1.0.0.zip", minio.StatObjectOptions{})
	if !isNotFound(err) {
		t.Errorf("the use mark of a deleted entry: %v, want it gone", err)
	}
}

func TestKeepAliveHoldsALeasePastItsTTL(t *testing.T) {
	t.Parallel() // mostly waiting for time to pass
	c := newCacher(t)
	const ttl = time.Second
	l, err := c.AcquireLease(t.Context(), "example.com/m/@v/v1.0.0.zip", "holder", ttl)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	lost := l.KeepAlive(ctx)
	start := time.Now()
	for time.Since(start) < 3*ttl+2*clockSlack {
		if _, err := c.AcquireLease(t.Context(), "example.com/m/@v/v1.0.0.zip", "other", ttl); !errors.Is(err, ErrLeaseHeld) {
			t.Fatalf("after %v, with KeepAlive running: %v, want ErrLeaseHeld", time.Since(start), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	select {
	case <-lost:
		t.Fatal("KeepAlive reported the lease lost")
	default:
	}
	// Once nobody renews it, it expires and another takes it.
	testwait.Within(t, 10*time.Second, func() bool {
		_, err := c.AcquireLease(t.Context(), "example.com/m/@v/v1.0.0.zip", "other", ttl)
		return err == nil
	}, "the lease to expire after KeepAlive stopped")
}

func TestKeepAliveReportsATakeover(t *testing.T) {
	c := newCacher(t)
	l, err := c.AcquireLease(t.Context(), "example.com/m/@v/v1.0.0.zip", "holder", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lost := l.KeepAlive(t.Context())
	// Someone overwrites the lease, as a takeover after a pause too long
	// for the holder to notice would.
	record := newLeaseRecord("usurper", time.Minute, false)
	if _, err := c.client.PutObject(t.Context(), c.Bucket, l.key, strings.NewReader(string(record)), int64(len(record)), c.putOptions()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("KeepAlive did not report the takeover")
	}
}
