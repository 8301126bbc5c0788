package s3cacher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// heapLimit is what a large Put or Get may add to the heap: the content
// must stream, whatever its size.
const heapLimit = 64 << 20

func TestLargeObjectStreamsInBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 300 MB through MinIO")
	}
	c, ct := countingCacher(t)
	ctx := t.Context()
	const size = 300 << 20
	const name = "example.com/large/@v/v1.0.0.zip"
	content := newGenerated(size)
	want := sha256.New()
	io.Copy(want, io.NewSectionReader(content, 0, size))

	peak, elapsed := measureHeap(func() {
		if err := c.Put(ctx, name, content); err != nil {
			t.Fatal(err)
		}
	})
	defer c.Delete(context.Background(), name) // 300 MB of the shared server's disk
	t.Logf("Put of %d MB: heap peak %.1f MiB over the baseline, %v (%.0f MB/s)", size>>20, float64(peak)/(1<<20), elapsed.Round(time.Millisecond), size/1e6/elapsed.Seconds())
	if peak > heapLimit {
		t.Errorf("Put of %d MB raised the heap by %d MiB, over %d MiB", size>>20, peak>>20, heapLimit>>20)
	}
	ct.take()

	f, err := c.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Run("a kilobyte of it costs one small GET", func(t *testing.T) {
		ct.take()
		const off = 150 << 20
		f.Seek(off, io.SeekStart)
		got := make([]byte, 1024)
		if _, err := io.ReadFull(f, got); err != nil {
			t.Fatal(err)
		}
		wantBytes := make([]byte, 1024)
		content.ReadAt(wantBytes, off)
		if !bytes.Equal(got, wantBytes) {
			t.Error("1 KB at 150 MiB differs from what was stored")
		}
		if reqs, n := ct.take(); len(reqs) != 1 || n > firstWindow {
			t.Errorf("reading 1 KB of %d MB sent %q and fetched %d bytes, want one GET of at most %d", size>>20, reqs, n, firstWindow)
		}
	})

	f.Seek(0, io.SeekStart)
	got := sha256.New()
	var n int64
	peak, elapsed = measureHeap(func() {
		n, err = io.Copy(got, f)
	})
	if err != nil || n != size {
		t.Fatalf("reading it back: %d bytes, %v", n, err)
	}
	reqs, _ := ct.take()
	t.Logf("Get of %d MB: heap peak %.1f MiB over the baseline, %v (%.0f MB/s), %d GETs", size>>20, float64(peak)/(1<<20), elapsed.Round(time.Millisecond), size/1e6/elapsed.Seconds(), len(reqs))
	if peak > heapLimit {
		t.Errorf("reading %d MB raised the heap by %d MiB, over %d MiB", size>>20, peak>>20, heapLimit>>20)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Error("what was read back differs from what was stored")
	}
}

// TestPutOfAPlainReadSeekerHoldsOnePart: content that cannot be read at
// offsets is uploaded a part at a time through one buffer of PartSize.
func TestPutOfAPlainReadSeekerHoldsOnePart(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 100 MB through MinIO")
	}
	c := newCacher(t)
	const size = 100 << 20
	content := newGenerated(size)
	plain := struct{ io.ReadSeeker }{io.NewSectionReader(content, 0, size)}
	peak, elapsed := measureHeap(func() {
		if err := c.Put(t.Context(), "example.com/large/@v/v1.0.0.zip", plain); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("Put of %d MB from a plain ReadSeeker: heap peak %.1f MiB over the baseline, %v", size>>20, float64(peak)/(1<<20), elapsed.Round(time.Millisecond))
	if peak > heapLimit {
		t.Errorf("Put raised the heap by %d MiB, over %d MiB", peak>>20, heapLimit>>20)
	}
	defer c.Delete(context.Background(), "example.com/large/@v/v1.0.0.zip")
	fi, err := c.Stat(t.Context(), "example.com/large/@v/v1.0.0.zip")
	if err != nil || fi.Size() != size {
		t.Errorf("Stat after Put: %v, %v", fi, err)
	}
}

// measureHeap runs f while sampling the heap's live objects every
// millisecond, and reports the peak over the level before f (after a
// collection) and how long f took.
func measureHeap(f func()) (peak int64, elapsed time.Duration) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() int64 {
		metrics.Read(sample)
		return int64(sample[0].Value.Uint64())
	}
	runtime.GC()
	base := read()
	stop := make(chan struct{})
	done := make(chan int64)
	go func() {
		high := base
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				high = max(high, read())
			case <-stop:
				done <- max(high, read())
				return
			}
		}
	}()
	start := time.Now()
	f()
	elapsed = time.Since(start)
	close(stop)
	return <-done - base, elapsed
}

// generated is content of any size made on demand from one random block,
// each MiB of it a different rotation of the block, so that no two ranges
// of it are alike and none of it is held in memory.
type generated struct {
	block []byte
	size  int64
	off   int64
}

const generatedBlock = 1 << 20

func newGenerated(size int64) *generated {
	block := make([]byte, generatedBlock)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range block {
		block[i] = byte(r.Uint32())
	}
	return &generated{block: block, size: size}
}

func (g *generated) ReadAt(p []byte, off int64) (int, error) {
	if off >= g.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < g.size {
		chunk, in := off/generatedBlock, off%generatedBlock
		rot := (in + chunk*4099) % generatedBlock
		m := copy(p[n:min(len(p), n+int(min(generatedBlock-in, g.size-off)))], g.block[rot:])
		n += m
		off += int64(m)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (g *generated) Read(p []byte) (int, error) {
	n, err := g.ReadAt(p, g.off)
	g.off += int64(n)
	return n, err
}

func (g *generated) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += g.off
	case io.SeekEnd:
		offset += g.size
	}
	if offset < 0 {
		return 0, fmt.Errorf("negative position")
	}
	g.off = offset
	return offset, nil
}
