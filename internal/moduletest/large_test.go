package moduletest_test

import (
	"archive/zip"
	"crypto/sha256"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/goproxy-team/goproxy/internal/moduletest"
)

func fileHash(t *testing.T, name string) [32]byte {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// Not parallel: the allocation measurement must not see other tests.
func TestLargeVersion(t *testing.T) {
	const size = 20 << 20
	dir := t.TempDir()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	v, err := moduletest.LargeVersion(dir, "example.com/large", "v1.2.3", size)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	// Holding the zip (or even one 16 MB entry) in memory would show up
	// here; streaming needs a couple of MB of buffers.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d KB", alloc>>10)
	if alloc > 8<<20 {
		t.Errorf("LargeVersion allocated %d MB for a %d MB zip; it must stream", alloc>>20, size>>20)
	}

	if v.Zip != nil || v.ZipFile == "" || v.Time.IsZero() || string(v.Mod) != "module example.com/large\n\ngo 1.21\n" {
		t.Fatalf("unexpected Version %+v", v)
	}
	fi, err := os.Stat(v.ZipFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("zip file is %d bytes for size %d", fi.Size(), size)
	if d := fi.Size() - size; d < -4096 || d > 4096 {
		t.Errorf("zip is %d bytes, want about %d", fi.Size(), size)
	}
	checkZip(t, v)

	// Read every entry so CRCs and declared sizes are verified too, and
	// check the storage choices that make the zip incompressible.
	zr, err := zip.OpenReader(v.ZipFile)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var total int64
	for _, f := range zr.File {
		if f.Method != zip.Store {
			t.Errorf("%s: method %d, want Store", f.Name, f.Method)
		}
		if f.UncompressedSize64 > 16<<20 {
			t.Errorf("%s: %d bytes, want at most 16 MB", f.Name, f.UncompressedSize64)
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		total += n
	}
	if total < size-64<<10 {
		t.Errorf("content totals %d bytes, want about %d", total, size)
	}

	// Deterministic: a second generation is byte-identical.
	v2, err := moduletest.LargeVersion(t.TempDir(), "example.com/large", "v1.2.3", size)
	if err != nil {
		t.Fatal(err)
	}
	if fileHash(t, v.ZipFile) != fileHash(t, v2.ZipFile) {
		t.Error("LargeVersion is not deterministic")
	}
}

func TestLargeVersionVariants(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	inc, err := moduletest.LargeVersion(dir, "example.com/Big", "v3.0.0+incompatible", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	checkZip(t, inc)
	if string(inc.Mod) != "module example.com/Big\n" {
		t.Errorf("+incompatible .mod = %q", inc.Mod)
	}
	zr, err := zip.OpenReader(inc.ZipFile)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/go.mod") {
			t.Errorf("+incompatible zip contains %s", f.Name)
		}
	}

	tiny, err := moduletest.LargeVersion(dir, "example.com/tiny", "v1.0.0", 10)
	if err != nil {
		t.Fatal(err)
	}
	checkZip(t, tiny)

	if _, err := moduletest.LargeVersion(dir, "example.com/bad/v2", "v1.0.0", 1<<10); err == nil {
		t.Error("LargeVersion accepted a version not matching the /v2 path")
	}
}

func TestRealisticGraph(t *testing.T) {
	const n = 60
	sizes := moduletest.RealisticZipSizes(n)
	sorted := slices.Clone(sizes)
	slices.Sort(sorted)
	median := (sorted[n/2-1] + sorted[n/2]) / 2
	above := func(limit int64) (k int) {
		for _, s := range sizes {
			if s > limit {
				k++
			}
		}
		return k
	}
	t.Logf("sizes from %d to %d, median %d, %d above 2 MB, %d above 512 KiB", sorted[0], sorted[n-1], median, above(2e6), above(512<<10))
	if sorted[0] < 900 || sorted[0] > 1100 || sorted[n-1] < 39e6 || sorted[n-1] > 40e6 || median < 50e3 || median > 70e3 ||
		above(2e6) < n/10-1 || above(2e6) > n/10+1 || above(512<<10) < 10 {
		t.Errorf("sizes %v are not spread as a real graph's", sorted)
	}
	if slices.IsSorted(sizes) {
		t.Error("sizes are not shuffled")
	}

	vs, err := moduletest.RealisticGraph(t.TempDir(), 12)
	if err != nil {
		t.Fatal(err)
	}
	want := moduletest.RealisticZipSizes(12)
	for i := range 12 {
		for _, v := range vs {
			if v.Path != moduletest.GraphPath(i) || v.ZipFile == "" {
				continue
			}
			fi, err := os.Stat(v.ZipFile)
			if err != nil || fi.Size() < want[i]*9/10-400 || fi.Size() > want[i]*11/10+400 {
				t.Errorf("%s@%s: zip of %v bytes (%v), want about %d", v.Path, v.Version, fi.Size(), err, want[i])
			}
			if _, err := modzip.CheckZip(module.Version{Path: v.Path, Version: v.Version}, v.ZipFile); err != nil {
				t.Errorf("%s@%s: %v", v.Path, v.Version, err)
			}
		}
	}
}
