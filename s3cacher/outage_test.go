package s3cacher

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/s3cacher/internal/miniotest"
)

// outageTimeout is the Cacher's Timeout in these tests, and outageBound
// how long any one operation may take while the store is gone: a timeout
// for each of the three tries, the pauses between them (under a second
// each), and room for a machine busy with other work.
const (
	outageTimeout = 2 * time.Second
	outageBound   = 3*outageTimeout + 2*time.Second + 7*time.Second
)

func outageCacher(t *testing.T) (*miniotest.Server, *Cacher) {
	s := miniotest.Start(t)
	c := cacherFor(t, s, s.NewBucket(t), "", func(c *Cacher) { c.Timeout = outageTimeout })
	return s, c
}

// load runs workers that Put and Get entries until stop is closed, each
// operation bounded by outageBound, and counts what succeeded and failed.
type load struct {
	ok, failed atomic.Int64
	slowest    atomic.Int64 // nanoseconds
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(t *testing.T, c *Cacher, workers int) *load {
	l := &load{stop: make(chan struct{})}
	content := patternBytes(200 << 10)
	for w := range workers {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				name := fmt.Sprintf("example.com/m%d/@v/v1.0.%d.zip", w, i%5)
				start := time.Now()
				err := c.Put(t.Context(), name, bytes.NewReader(content))
				if err == nil {
					var f io.ReadCloser
					if f, err = c.Get(t.Context(), name); err == nil {
						var got []byte
						got, err = io.ReadAll(f)
						f.Close()
						if err == nil && !bytes.Equal(got, content) {
							t.Errorf("%s: read back %d bytes that differ from the %d stored", name, len(got), len(content))
						}
					}
				}
				d := time.Since(start)
				for {
					old := l.slowest.Load()
					if int64(d) <= old || l.slowest.CompareAndSwap(old, int64(d)) {
						break
					}
				}
				if err != nil {
					if errors.Is(err, fs.ErrNotExist) {
						t.Errorf("%s: a store that is gone answered not-exist: %v", name, err)
					}
					l.failed.Add(1)
					time.Sleep(50 * time.Millisecond) // as a proxy would not spin on a dead store
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

// waitFor waits until cond holds, failing t after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStoreStoppedUnderLoadGivesErrorsThenRecovers(t *testing.T) {
	t.Parallel() // a server of its own, mostly waiting
	s, c := outageCacher(t)
	ctx := t.Context()
	if err := c.Put(ctx, "example.com/kept/@v/list", bytes.NewReader([]byte("v1.0.0\n"))); err != nil {
		t.Fatal(err)
	}
	// A file opened before the outage, read partway.
	big := patternBytes(4 << 20)
	if err := c.Put(ctx, "example.com/kept/@v/v1.0.0.zip", bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	open, err := c.Get(ctx, "example.com/kept/@v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	io.ReadFull(open, make([]byte, firstWindow))

	l := startLoad(t, c, 4)
	waitFor(t, 30*time.Second, "working before the outage", func() bool { return l.ok.Load() >= 8 })

	s.Stop()
	okBefore := l.ok.Load()
	waitFor(t, 2*outageBound, "failing during the outage", func() bool { return l.failed.Load() >= 8 })
	start := time.Now()
	if _, err := io.ReadAll(open); err == nil {
		t.Error("reading on from a file opened before the outage succeeded")
	} else if d := time.Since(start); d > outageBound {
		t.Errorf("reading on from a file opened before the outage took %v to fail", d)
	}
	for _, op := range []struct {
		name string
		f    func() error
	}{
		{"Get", func() error { _, err := c.Get(ctx, "example.com/kept/@v/list"); return err }},
		{"Stat", func() error { _, err := c.Stat(ctx, "example.com/kept/@v/list"); return err }},
		{"Put", func() error { return c.Put(ctx, "example.com/kept/@v/list", bytes.NewReader([]byte("x"))) }},
		{"Delete", func() error { return c.Delete(ctx, "example.com/other/@v/list") }},
		{"Walk", func() error { return c.Walk(ctx, "", func(string) error { return nil }) }},
		{"AcquireLease", func() error { _, err := c.AcquireLease(ctx, "eviction", "r", time.Minute); return err }},
	} {
		start := time.Now()
		err := op.f()
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s with the store stopped: %v, want an error that is not a miss", op.name, err)
		}
		if d := time.Since(start); d > outageBound {
			t.Errorf("%s with the store stopped took %v to fail", op.name, d)
		}
	}
	if ok := l.ok.Load() - okBefore; ok > 4 {
		t.Errorf("%d operations succeeded with the store stopped (at most the 4 under way may have)", ok)
	}

	s.Start(t)
	okAfter := l.ok.Load()
	waitFor(t, 2*outageBound, "working again after a restart", func() bool { return l.ok.Load() >= okAfter+8 })
	close(l.stop)
	l.wg.Wait()
	t.Logf("%d operations succeeded, %d failed; the slowest took %v", l.ok.Load(), l.failed.Load(), time.Duration(l.slowest.Load()).Round(time.Millisecond))
	if d := time.Duration(l.slowest.Load()); d > outageBound {
		t.Errorf("an operation took %v, over the bound of %v", d, outageBound)
	}
	f, err := c.Get(ctx, "example.com/kept/@v/list")
	if err != nil {
		t.Fatalf("what was stored before the outage: %v", err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if string(got) != "v1.0.0\n" {
		t.Errorf("after the outage, the entry holds %q", got)
	}
}

func TestAFrozenStoreTimesOutInsteadOfHanging(t *testing.T) {
	t.Parallel() // a server of its own, mostly waiting
	s, c := outageCacher(t)
	ctx := t.Context()
	big := patternBytes(8 << 20)
	if err := c.Put(ctx, "example.com/m/@v/v1.0.0.zip", bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	f, err := c.Get(ctx, "example.com/m/@v/v1.0.0.zip")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	io.ReadFull(f, make([]byte, firstWindow))

	s.Freeze(t)
	defer s.Thaw(t)
	start := time.Now()
	_, err = io.ReadAll(f)
	d := time.Since(start)
	t.Logf("reading from the frozen store failed after %v: %v", d.Round(time.Millisecond), err)
	if err == nil || d > outageBound {
		t.Errorf("reading from a frozen store: %v after %v, want an error within %v", err, d, outageBound)
	}
	start = time.Now()
	_, err = c.Stat(ctx, "example.com/m/@v/v1.0.0.zip")
	d = time.Since(start)
	t.Logf("Stat on the frozen store failed after %v: %v", d.Round(time.Millisecond), err)
	if err == nil || d > outageBound {
		t.Errorf("Stat on a frozen store: %v after %v, want an error within %v", err, d, outageBound)
	}
	// One PUT of more than the sockets buffer: sending the body stalls.
	start = time.Now()
	err = c.Create(ctx, "example.com/m/@v/v1.1.0.zip", bytes.NewReader(patternBytes(64<<20)))
	d = time.Since(start)
	t.Logf("a 64 MiB PUT to the frozen store failed after %v: %v", d.Round(time.Millisecond), err)
	if err == nil || d > outageBound {
		t.Errorf("a PUT to a frozen store: %v after %v, want an error within %v", err, d, outageBound)
	}
	s.Thaw(t)
	waitFor(t, outageBound, "answering after the thaw", func() bool {
		_, err := c.Stat(ctx, "example.com/m/@v/v1.0.0.zip")
		return err == nil
	})
}
