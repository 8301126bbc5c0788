package moduletest

import (
	"archive/zip"
	"bufio"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/module"
)

// largeChunk caps each data file in a large zip, keeping every file well
// below the limits tools apply to single entries.
const largeChunk = 16 << 20

// LargeVersion writes a module zip of about size bytes to a file in dir
// and returns a Version referring to it, for tests of how a proxy copes
// with big downloads (streaming, memory, limits).
//
// The content is deterministic pseudo-random data stored without
// compression, so the zip is as large on the wire as on disk and no
// transport compression can shrink it. The zip is produced as a stream
// and memory use stays at a few MB whatever size is.
// Sizes up to zip.MaxZipFile (500 MiB) yield valid module zips; larger
// ones are deliberately over the go command's limit.
func LargeVersion(dir, path, version string, size int64) (*Version, error) {
	if err := module.Check(path, version); err != nil {
		return nil, err
	}
	escPath, err := module.EscapePath(path)
	if err != nil {
		return nil, err
	}
	escVersion, err := module.EscapeVersion(version)
	if err != nil {
		return nil, err
	}
	// A +incompatible version predates modules, so its zip must not
	// contain a go.mod; the go command synthesizes one instead.
	incompatible := strings.HasSuffix(version, "+incompatible")
	mod := []byte("module " + path + "\n")
	if !incompatible {
		mod = []byte(fmt.Sprintf("module %s\n\ngo 1.21\n", path))
	}
	name, err := writeSizedZip(dir, path, version, escPath+"@"+escVersion, mod, !incompatible, size)
	if err != nil {
		return nil, err
	}
	return &Version{
		Path:    path,
		Version: version,
		Time:    time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC),
		Mod:     mod,
		ZipFile: name,
	}, nil
}

// writeSizedZip writes a module zip of about size bytes to dir, holding a
// Go file, mod as its go.mod if withGoMod, and pseudo-random data stored
// without compression, and returns its file name.
func writeSizedZip(dir, path, version, key string, mod []byte, withGoMod bool, size int64) (string, error) {
	small := []memFile{{"large.go", []byte("// Package large is generated test content.\npackage large\n")}}
	if withGoMod {
		small = append(small, memFile{"go.mod", mod})
	}
	return writeZipOfSize(dir, path, version, key, small, size)
}

// writeZipOfSize writes to dir a module zip of about size bytes holding
// small and pseudo-random data stored without compression, and returns
// its file name.
func writeZipOfSize(dir, path, version, key string, small []memFile, size int64) (string, error) {
	name := filepath.Join(dir, url.PathEscape(key)+".zip")
	prefix := path + "@" + version + "/"

	// Budget the data so that the zip file itself comes out at about size
	// bytes: stored entries cost a local header, a data descriptor and a
	// central directory record besides their content.
	entryOverhead := func(name string) int64 { return 30 + 16 + 46 + 2*int64(len(prefix)+len(name)) }
	budget := size - 22 // end of central directory record
	for _, f := range small {
		budget -= entryOverhead(f.name) + int64(len(f.data))
	}
	const blobName = "data/blob0000.bin"
	var blobs []int64
	for budget > entryOverhead(blobName) {
		n := min(budget-entryOverhead(blobName), largeChunk)
		blobs = append(blobs, n)
		budget -= entryOverhead(blobName) + n
	}

	f, err := os.Create(name)
	if err != nil {
		return "", err
	}
	err = writeLargeZip(f, path+"@"+version, prefix, small, blobs)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("writing a zip for %s@%s: %w", path, version, err)
	}
	return name, nil
}

func writeLargeZip(f *os.File, seed, prefix string, small []memFile, blobs []int64) error {
	bw := bufio.NewWriterSize(f, 1<<20)
	zw := zip.NewWriter(bw)
	for _, s := range small {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: prefix + s.name, Method: zip.Store})
		if err != nil {
			return err
		}
		if _, err := w.Write(s.data); err != nil {
			return err
		}
	}
	rng := rand.NewChaCha8(sha256.Sum256([]byte(seed)))
	buf := make([]byte, 1<<20)
	for i, n := range blobs {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("%sdata/blob%04d.bin", prefix, i), Method: zip.Store})
		if err != nil {
			return err
		}
		for n > 0 {
			b := buf[:min(n, int64(len(buf)))]
			rng.Read(b)
			if _, err := w.Write(b); err != nil {
				return err
			}
			n -= int64(len(b))
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}
