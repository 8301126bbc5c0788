package moduletest_test

import (
	"archive/zip"
	"crypto/sha256"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

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
