package s3cacher

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/goproxy-team/goproxy"
)

// leaseDir is where leases live, under Prefix. Its leading dot keeps them
// apart from entries, whose names never have an element starting with one.
const leaseDir = ".lease/"

// clockSlack is added to a lease's TTL before anyone else takes it over:
// the store's clock, which alone judges expiry, is read in whole seconds
// (Last-Modified and Date headers).
const clockSlack = time.Second

// maxLeaseRecord bounds what is read of a lease object.
const maxLeaseRecord = 4 << 10

var (
	// ErrLeaseHeld is reported (as a *LeaseHeldError) by AcquireLease when
	// another holder's lease has not expired.
	ErrLeaseHeld = errors.New("lease held by another")
	// ErrLeaseLost is reported by Renew and Release when the lease was
	// taken over, having expired, by another holder.
	ErrLeaseLost = errors.New("lease lost")
)

// LeaseHeldError is AcquireLease's answer when another holder has the lease.
// errors.Is(err, ErrLeaseHeld) is true for it.
type LeaseHeldError struct {
	// Name is the lease's name.
	Name string
	// Holder is the current holder, as it named itself.
	Holder string
	// Remaining is how long the lease lasts unless renewed or released,
	// judged by the store's clock and rounded up.
	Remaining time.Duration
}

// Error says who holds the lease and for how long.
func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("s3cacher: lease %s is held by %q for %v more", e.Name, e.Holder, e.Remaining)
}

// Is makes errors.Is(err, ErrLeaseHeld) and errors.Is(err,
// goproxy.ErrLeaseHeld) true.
func (e *LeaseHeldError) Is(target error) bool {
	return target == ErrLeaseHeld || target == goproxy.ErrLeaseHeld
}

// Lease is a claim on a name that several proxies sharing the bucket
// honour: for one fetching a file while the others wait for it, or one
// evicting at a time. It lives in the bucket as a small object and lasts TTL
// after it was last written, so a holder that dies loses it without anyone's
// help, and another can take it over.
//
// Expiry is judged by the store's clock alone (the lease object's
// Last-Modified against the Date of the store's answer), so the proxies'
// clocks need not agree. A takeover is a conditional write on the ETag of
// the expired lease, and every write's content is unique, so of several
// proxies taking over one lease at once exactly one succeeds.
//
// A Lease's methods may be called concurrently.
type Lease struct {
	// Name is what the lease is for, as given to AcquireLease.
	Name string
	// Holder is who holds it, as given to AcquireLease.
	Holder string
	// TTL is how long the lease lasts after each write.
	TTL time.Duration

	c   *Cacher
	key string

	mu       sync.Mutex
	etag     string
	deadline time.Time
	// written are the nonces of this holder's latest writes, answered or
	// not: a write whose answer was lost (a timeout, a retry that the
	// condition refused) is recognized as its own when read back.
	written []string
}

// leaseRecord is the content of a lease object.
type leaseRecord struct {
	Holder   string `json:"holder"`
	TTL      int64  `json:"ttl_ms"`
	Released bool   `json:"released,omitempty"`
	// Nonce makes every write's content, and so its ETag, unique: an
	// If-Match on the ETag of an older write with the same holder and TTL
	// must not succeed.
	Nonce string `json:"nonce"`
}

func newLeaseRecord(holder string, ttl time.Duration, released bool) []byte {
	b, _ := leaseRecordWithNonce(holder, ttl, released)
	return b
}

// leaseRecordWithNonce returns a new lease record and its nonce.
func leaseRecordWithNonce(holder string, ttl time.Duration, released bool) ([]byte, string) {
	var n [12]byte
	rand.Read(n[:])
	nonce := hex.EncodeToString(n[:])
	b, _ := json.Marshal(leaseRecord{Holder: holder, TTL: ttl.Milliseconds(), Released: released, Nonce: nonce})
	return b, nonce
}

// record returns a new record for l, remembering its nonce; l.mu is held.
func (l *Lease) record(released bool) []byte {
	b, nonce := leaseRecordWithNonce(l.Holder, l.TTL, released)
	l.written = append(l.written, nonce)
	if len(l.written) > 8 {
		l.written = l.written[1:]
	}
	return b
}

// ownsLocked reports whether the lease object, as read, is one of l's own
// writes, and if so takes its ETag and the deadline its age gives; l.mu is
// held.
func (l *Lease) ownsLocked(current leaseRecord, etag string, age time.Duration) bool {
	if current.Holder != l.Holder || !slices.Contains(l.written, current.Nonce) {
		return false
	}
	l.etag = etag
	l.deadline = time.Now().Add(l.TTL - age - clockSlack)
	if current.Released {
		l.deadline = time.Now()
	}
	return true
}

// AcquireLease takes the lease called name for holder (any string that
// identifies the caller in messages, such as a host name), lasting ttl
// unless renewed. It succeeds if nobody holds the lease, if its holder let
// it expire or released it; otherwise it returns a *LeaseHeldError. Names
// follow the rule of entry names, and live apart from the entries: a lease
// may be named after the entry it guards.
//
// ttl is rounded down to whole milliseconds and must be at least a second,
// since the store's clock is read in seconds.
func (c *Cacher) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (*Lease, error) {
	if err := c.check("lease", name); err != nil {
		return nil, err
	}
	if ttl < time.Second {
		return nil, &fs.PathError{Op: "lease", Path: name, Err: fmt.Errorf("TTL %v is under a second: %w", ttl, fs.ErrInvalid)}
	}
	l := &Lease{Name: name, Holder: holder, TTL: ttl, c: c, key: c.prefix + leaseDir + name}
	// Each round either succeeds, finds the lease held, or lost a race
	// that changed the lease and so looks again; three rounds are plenty.
	for range 3 {
		sent := time.Now()
		record := l.record(false)
		etag, err := c.putIf(ctx, l.key, bytes.NewReader(record), int64(len(record)), "", true)
		if err == nil {
			l.set(etag, sent)
			return l, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, c.wrap("lease", name, err)
		}
		current, etag, age, err := c.readLease(ctx, l.key)
		if isNotFound(err) {
			continue // deleted meanwhile: create again
		}
		if err != nil {
			return nil, c.wrap("lease", name, err)
		}
		if !current.Released && l.ownsLocked(current, etag, age) {
			// Our own create, whose answer was lost and retried.
			return l, nil
		}
		if limit := time.Duration(current.TTL)*time.Millisecond + clockSlack; !current.Released && age < limit {
			return nil, &LeaseHeldError{Name: name, Holder: current.Holder, Remaining: (limit - age).Round(time.Second)}
		}
		sent = time.Now()
		record = l.record(false)
		newETag, err := c.putIf(ctx, l.key, bytes.NewReader(record), int64(len(record)), etag, false)
		if err == nil {
			l.set(newETag, sent)
			return l, nil
		}
		if !errors.Is(err, errChanged) {
			return nil, c.wrap("lease", name, err)
		}
		// Another took it over (or its holder renewed it) first.
	}
	return nil, c.wrap("lease", name, errors.New("the lease kept changing while being acquired"))
}

// readLease reads a lease object, returning its record, its ETag and its
// age by the store's clock.
func (c *Cacher) readLease(ctx context.Context, key string) (leaseRecord, string, time.Duration, error) {
	body, info, header, err := c.core.GetObject(ctx, c.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return leaseRecord{}, "", 0, err
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, maxLeaseRecord))
	if err != nil {
		return leaseRecord{}, "", 0, err
	}
	now := time.Now()
	if d, err := http.ParseTime(header.Get("Date")); err == nil {
		now = d
	}
	var r leaseRecord
	if json.Unmarshal(b, &r) != nil {
		// Not a lease this package wrote: as good as expired, and taking
		// it over is still conditional on its ETag.
		r = leaseRecord{Released: true}
	}
	return r, info.ETag, now.Sub(info.LastModified), nil
}

func (l *Lease) set(etag string, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.etag = etag
	// Counted from before the write was sent, by this process's clock:
	// the store's judgment of expiry can only come later.
	l.deadline = sent.Add(l.TTL)
}

// Deadline is when the holder must stop counting on the lease unless it
// renews it first: TTL after the last successful write was sent, by the
// local clock. Renewing at a third of the TTL leaves room for a slow store.
func (l *Lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// Renew writes the lease again, so that it lasts TTL from now. It fails with
// ErrLeaseLost if the lease is no longer this holder's.
func (l *Lease) Renew(ctx context.Context) error {
	return l.rewrite(ctx, "renew", false)
}

// Release gives the lease up, so that another can take it at once. The
// lease object stays in the bucket, marked released (a lifecycle rule on
// Prefix + ".lease/" may expire old ones); deleting it could delete a lease
// someone else has just taken over, since stores ignore If-Match on DELETE.
// Releasing a lease that was lost reports ErrLeaseLost and changes nothing.
func (l *Lease) Release(ctx context.Context) error {
	return l.rewrite(ctx, "release", true)
}

// KeepAlive renews the lease every third of its TTL until ctx ends, for a
// holder whose work may outlast one TTL (a large download). The returned
// channel is closed when the lease is lost: taken over, or not renewed
// before its Deadline because the store failed; the holder should then stop
// counting on it. KeepAlive neither releases the lease when ctx ends nor
// closes the channel then.
func (l *Lease) KeepAlive(ctx context.Context) <-chan struct{} {
	lost := make(chan struct{})
	go func() {
		tick := time.NewTicker(l.TTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// Each renewal may take until the deadline, and no longer:
			// past it, the lease may be someone else's already.
			rctx, cancel := context.WithDeadline(ctx, l.Deadline())
			err := l.Renew(rctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil && (errors.Is(err, ErrLeaseLost) || !time.Now().Before(l.Deadline())) {
				close(lost)
				return
			}
		}
	}()
	return lost
}

func (l *Lease) rewrite(ctx context.Context, op string, released bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	sent := time.Now()
	record := l.record(released)
	etag, err := l.c.putIf(ctx, l.key, bytes.NewReader(record), int64(len(record)), l.etag, false)
	if errors.Is(err, errChanged) {
		// Changed by another, or by a write of ours whose answer was
		// lost: then it is still ours, and written once more.
		current, curETag, age, rerr := l.c.readLease(ctx, l.key)
		if rerr == nil && l.ownsLocked(current, curETag, age) {
			sent = time.Now()
			record = l.record(released)
			etag, err = l.c.putIf(ctx, l.key, bytes.NewReader(record), int64(len(record)), l.etag, false)
		}
	}
	if errors.Is(err, errChanged) {
		return &fs.PathError{Op: "s3 " + op + " lease", Path: l.Name, Err: fmt.Errorf("%w (%w)", ErrLeaseLost, err)}
	}
	if err != nil {
		return &fs.PathError{Op: "s3 " + op + " lease", Path: l.Name, Err: err}
	}
	l.etag = etag
	l.deadline = sent.Add(l.TTL)
	if released {
		l.deadline = sent
	}
	return nil
}

// HoldLease implements [goproxy.CacheLeaser]: it acquires the lease for
// Holder with LeaseTTL and renews it every third of LeaseTTL until release,
// which removes the lease object, so that the bucket does not keep one per
// file ever fetched. The removal is a DELETE with If-Match on the lease's
// last write: where the store ignores the condition (MinIO), a lease taken
// over after this one expired unrenewed could be removed with it, which
// for the proxy costs at most a second fetch of one file or an eviction
// run beside another, never a wrong answer. A lease lost to a takeover is
// left alone.
func (c *Cacher) HoldLease(ctx context.Context, name string) (release func(), err error) {
	if err := c.Init(); err != nil {
		return nil, err
	}
	l, err := c.AcquireLease(ctx, name, c.holder, c.leaseTTL)
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	done := make(chan bool, 1) // whether the lease was taken over
	go func() { done <- l.keep(stop) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			if <-done {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			defer cancel()
			l.mu.Lock()
			etag := l.etag
			l.mu.Unlock()
			c.deleteIfMatch(ctx, l.key, trimETag(etag))
		})
	}, nil
}

// keep renews l every third of its TTL until stop is closed, and reports
// whether another holder took l over. A renewal under way when stop
// closes is finished first, so that the lease's last write is known. A
// renewal that fails otherwise (a slow store) is tried again at the next
// tick: if nobody took the lease meanwhile, it is still this holder's, to
// renew or to remove.
func (l *Lease) keep(stop <-chan struct{}) bool {
	tick := time.NewTicker(l.TTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return false
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.TTL)
		err := l.Renew(ctx)
		cancel()
		if errors.Is(err, ErrLeaseLost) {
			<-stop
			return true
		}
	}
}
