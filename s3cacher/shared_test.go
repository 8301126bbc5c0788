package s3cacher

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/cachertest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// replicas returns n Cachers on one bucket and prefix, as n proxies
// sharing it would have.
func replicas(t *testing.T, n int, configure ...func(*Cacher)) []*Cacher {
	s, bucket := sharedServer(t)
	prefix := fmt.Sprintf("t%d", prefixes.Add(1))
	var cs []*Cacher
	for i := range n {
		cs = append(cs, cacherFor(t, s, bucket, prefix, append(configure, func(c *Cacher) { c.Holder = fmt.Sprintf("replica-%d", i) })...))
	}
	return cs
}

// keys lists the objects under the Cacher's prefix + under.
func keys(t *testing.T, c *Cacher, under string) []string {
	t.Helper()
	var out []string
	for obj := range c.client.ListObjectsIter(t.Context(), c.Bucket, minio.ListObjectsOptions{Prefix: c.prefix + under, Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		out = append(out, strings.TrimPrefix(obj.Key, c.prefix))
	}
	return out
}

func TestHeldLeaseExcludesOtherReplicasUntilReleasedAndLeavesNothing(t *testing.T) {
	rs := replicas(t, 3, func(c *Cacher) { c.LeaseTTL = 3 * time.Second })
	ctx := t.Context()
	release, err := rs[0].HoldLease(ctx, "eviction")
	if err != nil {
		t.Fatal(err)
	}
	// Past several TTLs, the holder keeps it.
	start := time.Now()
	for time.Since(start) < 4*time.Second {
		for _, r := range rs[1:] {
			_, err := r.HoldLease(ctx, "eviction")
			if !errors.Is(err, goproxy.ErrLeaseHeld) {
				t.Fatalf("after %v, another replica's HoldLease: %v, want goproxy.ErrLeaseHeld", time.Since(start), err)
			}
			var held *LeaseHeldError
			if errors.As(err, &held) && held.Holder != "replica-0" {
				t.Errorf("the lease is said to be held by %q, not replica-0", held.Holder)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	release()
	release() // twice is harmless
	if got := keys(t, rs[0], leaseDir); len(got) != 0 {
		t.Errorf("after release, the bucket holds %q", got)
	}
	release2, err := rs[1].HoldLease(ctx, "eviction")
	if err != nil {
		t.Fatalf("HoldLease after a release: %v", err)
	}
	release2()
}

func TestALeaseWhoseHolderDiedIsTakenOverAfterItsTTL(t *testing.T) {
	t.Parallel() // mostly waiting for the lease to expire
	rs := replicas(t, 2, func(c *Cacher) { c.LeaseTTL = 2 * time.Second })
	ctx := t.Context()
	// A holder that dies: the lease is taken and never renewed nor released.
	if _, err := rs[0].AcquireLease(ctx, "fetch/example.com/m/@v/v1.0.0.zip", "replica-0", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var release func()
	testwait.Within(t, 20*time.Second, func() bool {
		var err error
		release, err = rs[1].HoldLease(ctx, "fetch/example.com/m/@v/v1.0.0.zip")
		if err != nil && !errors.Is(err, goproxy.ErrLeaseHeld) {
			t.Fatal(err)
		}
		return err == nil
	}, "the lease of a dead holder taken over")
	release()
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("taken over after %v, before the TTL of 2s", d)
	}
}

func TestRecordUsesWritesAMarkOncePerPrecisionAndSkipsWhatIsNotStored(t *testing.T) {
	c, ct := countingCacher(t)
	c.UsePrecision = time.Hour
	ctx := t.Context()
	const name = "example.com/m/@v/v1.0.0.zip"
	if err := c.Put(ctx, name, strings.NewReader("zip")); err != nil {
		t.Fatal(err)
	}
	ct.take()
	// A use long after the storing (as the proxy reports it) is marked.
	later := time.Now().Add(2 * time.Hour)
	uses := []goproxy.CacheUse{{Name: name, Time: later}, {Name: "example.com/gone/@v/list", Time: later}}
	if err := c.RecordUses(ctx, uses); err != nil {
		t.Fatal(err)
	}
	reqs, _ := ct.take()
	slices.Sort(reqs)
	if !slices.Equal(reqs, []string{"HEAD", "HEAD", "PUT"}) {
		t.Errorf("recording a use of a stored and a missing entry sent %q, want a HEAD each and one PUT", reqs)
	}
	if got := keys(t, c, useDir); !slices.Equal(got, []string{useDir + name}) {
		t.Errorf("use marks %q, want only the stored entry's", got)
	}
	ct.take()
	// Within the precision: nothing sent.
	if err := c.RecordUses(ctx, []goproxy.CacheUse{{Name: name, Time: later.Add(30 * time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	if reqs, _ := ct.take(); len(reqs) != 0 {
		t.Errorf("a use within UsePrecision of the last mark sent %q", reqs)
	}
	// A use close to the storing needs no mark: the storing counts.
	const fresh = "example.com/m/@v/v1.1.0.zip"
	if err := c.Put(ctx, fresh, strings.NewReader("zip")); err != nil {
		t.Fatal(err)
	}
	ct.take()
	if err := c.RecordUses(ctx, []goproxy.CacheUse{{Name: fresh, Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if reqs, _ := ct.take(); !slices.Equal(reqs, []string{"HEAD"}) {
		t.Errorf("a use just after the storing sent %q, want one HEAD", reqs)
	}
}

func TestRacingReplicasCreateOneIndexFeed(t *testing.T) {
	rs := replicas(t, 4)
	ctx := t.Context()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	won := cachertest.OneWins(t, len(rs), func(i int) error {
		var entries []goproxy.IndexEntry
		for j := range 9000 { // over a page of a feed being created
			entries = append(entries, goproxy.IndexEntry{Path: fmt.Sprintf("example.com/r%d/m%d", i, j), Version: "v1.0.0", Timestamp: t0.Add(time.Duration(j) * time.Second)})
		}
		return rs[i].CreateIndex(ctx, entries)
	})
	all, err := rs[(won+1)%len(rs)].ReadIndex(ctx, time.Time{}, 20000)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 9000 || !strings.HasPrefix(all[8999].Path, fmt.Sprintf("example.com/r%d/", won)) {
		t.Fatalf("the feed has %d entries, the last %v; want the winner's 9000", len(all), all[len(all)-1])
	}
	// The losers' pages are gone: the head and the winner's two pages.
	if got := keys(t, rs[0], indexDir); len(got) != 3 {
		t.Errorf("index objects %q, want the head and two pages", got)
	}
	// And every replica appends to it.
	for i, r := range rs {
		if err := r.AppendIndex(ctx, []goproxy.IndexEntry{{Path: fmt.Sprintf("example.com/late%d", i), Version: "v1.0.0", Timestamp: t0}}); err != nil {
			t.Fatal(err)
		}
	}
	tail, err := rs[0].ReadIndex(ctx, all[8999].Timestamp.Add(1), 10)
	if err != nil || len(tail) != len(rs) {
		t.Errorf("after every replica appended one entry, the tail is %v, %v", tail, err)
	}
}

func TestWalksSkipTheCachersOwnObjects(t *testing.T) {
	c, ct := countingCacher(t)
	ctx := t.Context()
	if err := c.Put(ctx, "example.com/m/@v/list", strings.NewReader("v1.0.0\n")); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := c.AcquireLease(ctx, fmt.Sprintf("fetch/example.com/m%d/@v/v1.0.0.zip", i), "r", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CreateIndex(ctx, nil); err != nil {
		t.Fatal(err)
	}
	ct.take()
	var names []string
	if err := c.Walk(ctx, "", func(name string) error { names = append(names, name); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"example.com/m/@v/list"}) {
		t.Errorf("Walk = %q", names)
	}
	if _, n := ct.take(); n > 4<<10 {
		t.Errorf("the listing read %d bytes: it went through the leases and the index", n)
	}
}
