package s3cacher

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/cachertest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

func TestLeaseIsExclusiveUntilReleased(t *testing.T) {
	c := newCacher(t)
	ctx := t.Context()
	const name = "example.com/m/@v/v1.0.0.zip"
	a, err := c.AcquireLease(ctx, name, "replica-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(a.Deadline()); d <= 0 || d > time.Minute {
		t.Errorf("deadline in %v, want within the minute of the TTL", d)
	}
	_, err = c.AcquireLease(ctx, name, "replica-b", time.Minute)
	var held *LeaseHeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second AcquireLease: %v, want a LeaseHeldError", err)
	}
	if held.Holder != "replica-a" || held.Remaining <= 0 || held.Remaining > time.Minute+2*time.Second {
		t.Errorf("LeaseHeldError names %q with %v remaining, want replica-a within a minute", held.Holder, held.Remaining)
	}
	// A takeover judged on what was read before a renewal must fail, even
	// though the renewal wrote the same holder and TTL.
	_, before, _, err := c.readLease(ctx, c.prefix+leaseDir+name)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatalf("Renew by the holder: %v", err)
	}
	record := newLeaseRecord("replica-a", time.Minute, false)
	if _, err := c.putIf(ctx, c.prefix+leaseDir+name, bytes.NewReader(record), int64(len(record)), before, false); !errors.Is(err, errChanged) {
		t.Fatalf("a takeover on the ETag from before a renewal: %v, want it refused", err)
	}
	if _, err := c.AcquireLease(ctx, name, "replica-b", time.Minute); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("AcquireLease after a renewal: %v, want ErrLeaseHeld", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := c.AcquireLease(ctx, name, "replica-b", time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease after a release: %v", err)
	}
	if err := a.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Renew of a released and retaken lease: %v, want ErrLeaseLost", err)
	}
	if err := a.Release(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Release of a lost lease: %v, want ErrLeaseLost", err)
	}
	if _, err := c.AcquireLease(ctx, name, "replica-a", time.Minute); !errors.Is(err, ErrLeaseHeld) {
		t.Errorf("the old holder's Release freed the new holder's lease: %v", err)
	}
	b.Release(ctx)

	if _, err := c.AcquireLease(ctx, name, "replica-a", time.Millisecond); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("AcquireLease with a TTL under a second: %v, want fs.ErrInvalid", err)
	}
	if _, err := c.AcquireLease(ctx, "../escape", "replica-a", time.Minute); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("AcquireLease of a bad name: %v, want fs.ErrInvalid", err)
	}
}

func TestRacingAcquiresOfAFreeLeaseHaveOneWinner(t *testing.T) {
	c := newCacher(t)
	for round := range 3 {
		name := fmt.Sprintf("example.com/m/@v/v1.%d.0.zip", round)
		winners := cachertest.Race(t, 8, func(i int) error {
			_, err := c.AcquireLease(t.Context(), name, fmt.Sprintf("replica-%d", i), time.Minute)
			return err
		}, ErrLeaseHeld, fs.ErrExist)
		if len(winners) != 1 {
			t.Fatalf("round %d: %d racing AcquireLeases won (%v), want exactly 1", round, len(winners), winners)
		}
	}
}

func TestAnExpiredLeaseIsTakenOverByExactlyOne(t *testing.T) {
	t.Parallel() // mostly waiting for leases to expire
	c := newCacher(t)
	ctx := t.Context()
	const name = "eviction"
	dead, err := c.AcquireLease(ctx, name, "replica-that-dies", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		// The holder dies without releasing: wait, with a deadline, until
		// the store's clock says the lease has expired.
		var age time.Duration
		testwait.Within(t, 10*time.Second, func() bool {
			current, _, a, err := c.readLease(ctx, c.prefix+leaseDir+name)
			if err != nil {
				t.Fatal(err)
			}
			age = a
			return age >= time.Duration(current.TTL)*time.Millisecond+clockSlack
		}, "the lease to expire, round ", round, testwait.Show(func() string { return fmt.Sprintf(" (age %v)", age) }))
		var mu sync.Mutex
		leases := map[int]*Lease{}
		var heldBy []string
		winners := cachertest.Race(t, 8, func(i int) error {
			l, err := c.AcquireLease(ctx, name, fmt.Sprintf("replica-%d", i), time.Second)
			mu.Lock()
			defer mu.Unlock()
			var held *LeaseHeldError
			if errors.As(err, &held) {
				heldBy = append(heldBy, held.Holder)
			}
			if err == nil {
				leases[i] = l
			}
			return err
		}, ErrLeaseHeld, fs.ErrExist)
		if len(winners) != 1 {
			t.Fatalf("round %d: %d replicas took over the expired lease (%v), want exactly 1", round, len(winners), winners)
		}
		for _, h := range heldBy {
			if h != fmt.Sprintf("replica-%d", winners[0]) {
				t.Errorf("round %d: a loser was told the lease is held by %q, not the winner replica-%d", round, h, winners[0])
			}
		}
		if err := dead.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("round %d: the previous holder's Renew after a takeover: %v, want ErrLeaseLost", round, err)
		}
		dead = leases[winners[0]] // and the winner dies in turn
	}
}

func TestCreateOfALargeObjectIsOneConditionalPUT(t *testing.T) {
	c, ct := countingCacher(t)
	content := patternBytes(24 << 20) // over PartSize, under S3's 5 GiB for one PUT
	if err := c.Create(t.Context(), "example.com/m/@v/v1.0.0.zip", bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if reqs, _ := ct.take(); len(reqs) != 1 || reqs[0] != "PUT" {
		t.Errorf("Create of 24 MiB sent %q, want one PUT", reqs)
	}
	err := c.Create(t.Context(), "example.com/m/@v/v1.0.0.zip", strings.NewReader("other"))
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over an existing object: %v, want fs.ErrExist", err)
	}
	if fi, err := c.Stat(t.Context(), "example.com/m/@v/v1.0.0.zip"); err != nil || fi.Size() != int64(len(content)) {
		t.Errorf("after a refused Create: %v, %v", fi, err)
	}
}

func TestALeaseWriteWhoseAnswerWasLostIsStillTheHolders(t *testing.T) {
	c := newCacher(t)
	ctx := t.Context()
	l, err := c.AcquireLease(ctx, "eviction", "replica-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// A renewal reaches the store, but its answer never comes back (a
	// timeout under load): the holder does not know the lease's new ETag.
	l.mu.Lock()
	record := l.record(false)
	l.mu.Unlock()
	if _, err := c.client.PutObject(ctx, c.Bucket, l.key, bytes.NewReader(record), int64(len(record)), c.putOptions()); err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(ctx); err != nil {
		t.Fatalf("Renew after a renewal whose answer was lost: %v, want the lease still held", err)
	}
	if _, err := c.AcquireLease(ctx, "eviction", "replica-b", time.Minute); !errors.Is(err, ErrLeaseHeld) {
		t.Errorf("another's AcquireLease: %v, want ErrLeaseHeld", err)
	}
	// A write of another holder is not mistaken for one's own.
	other := newLeaseRecord("replica-a", time.Minute, false) // same name, not this Lease's write
	if _, err := c.client.PutObject(ctx, c.Bucket, l.key, bytes.NewReader(other), int64(len(other)), c.putOptions()); err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Renew after another's write: %v, want ErrLeaseLost", err)
	}
}
