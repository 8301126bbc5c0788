package goproxy

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/tlog"
	modzip "golang.org/x/mod/zip"
)

// BundleImport is what ImportBundle stored.
type BundleImport struct {
	// Manifest is the bundle's manifest.
	Manifest *BundleManifest
	// Verified counts the module versions checked against the checksum
	// database; Exempt those checked with CheckZip only (exempt, or the
	// database off).
	Verified, Exempt int
	// Files and Bytes count what was stored, tiles and lookup records
	// included.
	Files int
	Bytes int64
	// Refused lists the module versions BundleOptions.Admit refused,
	// which were not stored.
	Refused []FillFailure
}

// ErrBundleRefused is wrapped by the error of ImportBundle when it stored
// nothing because the bundle failed a check; the error lists every
// problem, each naming its file or module version.
var ErrBundleRefused = errors.New("bundle refused, nothing stored")

// maxBundleManifest caps the manifest: a few hundred bytes per module
// version.
const maxBundleManifest = 64 << 20

// maxBundleEntries caps the files in a bundle, each unpacked into a file
// of its own: three per module version and some tiles, for far more
// versions than any build needs.
const maxBundleEntries = 1 << 20

// ImportBundle reads a bundle made by ExportBundle from r, checks all of
// it and only then stores its files in dst: the module files under their
// names, the tiles, and for every verified module version a lookup record
// ("sumdb/<name>/lookup/<module>@<version>") carrying the bundle's signed
// tree, so that the go command verifies through a proxy serving dst as it
// would through the database. It refuses the whole bundle (wrapping
// ErrBundleRefused) if the tree note is not signed by opts.SumDB's key, a
// tile does not hash to the tree, a record is not in the tree, a .mod or
// .zip does not match its record, a zip fails CheckZip, a module not
// exempt has no record, or the archive holds anything unexpected: a name
// outside the GOPROXY layout ("../x", "/x"), a link, a file the manifest
// does not list, a file cut short. The bundle is unpacked into a temporary
// directory under opts.TempDir first, so memory stays bounded whatever
// its size.
func ImportBundle(ctx context.Context, r io.Reader, dst Cacher, opts *BundleOptions) (*BundleImport, error) {
	db, err := opts.sumDB()
	if err != nil {
		return nil, err
	}
	var tempDir string
	maxBytes := int64(DefaultBundleMaxBytes)
	if opts != nil {
		tempDir = opts.TempDir
		if opts.MaxBytes > 0 {
			maxBytes = opts.MaxBytes
		}
	}
	dir, err := os.MkdirTemp(tempDir, "goproxy-bundle-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	u := &unpackedBundle{dir: dir, files: map[string]*unpackedFile{}, db: db}
	if err := u.unpack(ctx, r, maxBytes); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBundleRefused, err)
	}
	report, err := u.verify(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBundleRefused, err)
	}
	if opts != nil && opts.Admit != nil {
		u.refused = map[int]bool{}
		for i, bm := range u.m.Modules {
			if err := opts.Admit(ctx, bm.Path, bm.Version); err != nil {
				u.refused[i] = true
				report.Refused = append(report.Refused, FillFailure{Item: FillItem{Path: bm.Path, Version: bm.Version, Files: bm.files()}, Err: err})
			}
		}
	}
	if err := u.store(ctx, dst, report); err != nil {
		return report, err
	}
	return report, nil
}

type unpackedBundle struct {
	dir      string
	files    map[string]*unpackedFile // by name in the archive
	manifest []byte
	db       *bundleDB

	m        *BundleManifest
	treeNote []byte
	tiles    map[tlog.Tile]*unpackedFile
	verified map[int]bool // indexes in m.Modules checked against the database
	refused  map[int]bool // indexes in m.Modules not to store (BundleOptions.Admit)
}

// files says which files of a module version a bundle holds.
func (bm BundleModule) files() FillFiles {
	var files FillFiles
	for _, bf := range bm.Files {
		for _, e := range moduleFileExts {
			if strings.HasSuffix(bf.Name, e.ext) {
				files |= e.files
			}
		}
	}
	return files
}

type unpackedFile struct {
	path   string // in the temporary directory
	size   int64
	sha256 string
	listed bool // named by the manifest
	used   bool // a tile the proofs read
}

// unpack spools every entry of the archive into the temporary directory,
// refusing anything that is not a regular file with a name a bundle may
// hold.
func (u *unpackedBundle) unpack(ctx context.Context, r io.Reader, maxBytes int64) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("not a gzip stream: %w", err)
	}
	tr := tar.NewReader(zr)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		name := hdr.Name
		if u.manifest != nil {
			return fmt.Errorf("%q follows the manifest, which must be last", name)
		}
		if hdr.Typeflag != tar.TypeReg {
			what := "not a regular file"
			switch hdr.Typeflag {
			case tar.TypeSymlink, tar.TypeLink:
				what = "a link to " + strconv.Quote(hdr.Linkname)
			case tar.TypeDir:
				what = "a directory"
			}
			return fmt.Errorf("%q is %s: a bundle holds regular files only", name, what)
		}
		limit, err := u.sizeLimit(name)
		if err != nil {
			return err
		}
		if hdr.Size < 0 || hdr.Size > limit {
			return fmt.Errorf("%s: %d bytes, more than the %d such a file may have", name, hdr.Size, limit)
		}
		if total += hdr.Size; total > maxBytes {
			return fmt.Errorf("the bundle unpacks to more than %d bytes", maxBytes)
		}
		if len(u.files) >= maxBundleEntries {
			return fmt.Errorf("more than %d files in the bundle", maxBundleEntries)
		}
		if _, dup := u.files[name]; dup || name == bundleManifestName && u.manifest != nil {
			return fmt.Errorf("%s: twice in the archive", name)
		}
		if name == bundleManifestName {
			if u.manifest, err = io.ReadAll(io.LimitReader(tr, hdr.Size)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if int64(len(u.manifest)) != hdr.Size {
				return fmt.Errorf("%s: cut short", name)
			}
			continue
		}
		f, err := u.spool(ctx, tr, hdr.Size)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		u.files[name] = f
	}
	// The tar reader stops at the end-of-archive marker; reading on
	// checks the gzip trailer, so a damaged or cut stream is caught.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return fmt.Errorf("reading the archive: %w", err)
	}
	if u.manifest == nil {
		return fmt.Errorf("no %s in the archive", bundleManifestName)
	}
	return nil
}

// sizeLimit checks an entry's name and says how large it may be: a module
// file as the proxy caps them, a tile of height 8, the manifest.
func (u *unpackedBundle) sizeLimit(name string) (int64, error) {
	if name == bundleManifestName {
		return maxBundleManifest, nil
	}
	if err := checkCacheName(name); err != nil {
		return 0, fmt.Errorf("%q is not a name a bundle may hold", name)
	}
	if rest, ok := strings.CutPrefix(name, "sumdb/"); ok {
		_, tilePath, _ := strings.Cut(rest, "/")
		t, err := tlog.ParseTilePath(tilePath)
		if err != nil || t.H != 8 || t.L < 0 {
			return 0, fmt.Errorf("%q is not a checksum database tile", name)
		}
		return int64(t.W * tlog.HashSize), nil
	}
	_, _, ext, err := parseModuleFileName(name)
	if err != nil {
		return 0, fmt.Errorf("unexpected file in the bundle: %w", err)
	}
	switch ext {
	case ".zip":
		return modzip.MaxZipFile, nil
	case ".mod":
		return modzip.MaxGoMod, nil
	}
	return maxModuleInfoSize, nil
}

// spool copies one entry into a file of its own, named by number so that
// no name from the archive reaches the file system.
func (u *unpackedBundle) spool(ctx context.Context, r io.Reader, size int64) (*unpackedFile, error) {
	path := filepath.Join(u.dir, strconv.Itoa(len(u.files)))
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), contextReader{ctx, io.LimitReader(r, size)})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	return &unpackedFile{path: path, size: size, sha256: hex.EncodeToString(h.Sum(nil))}, nil
}

// listed matches a manifest entry with the archive's file.
func (u *unpackedBundle) listed(bf BundleFile) (*unpackedFile, error) {
	f := u.files[bf.Name]
	switch {
	case f == nil:
		return nil, fmt.Errorf("%s: listed in the manifest but not in the archive", bf.Name)
	case f.listed:
		return nil, fmt.Errorf("%s: listed twice in the manifest", bf.Name)
	case f.size != bf.Size || f.sha256 != bf.SHA256:
		return nil, fmt.Errorf("%s: %d bytes with SHA-256 %s, the manifest says %d bytes with %s", bf.Name, f.size, f.sha256, bf.Size, bf.SHA256)
	}
	f.listed = true
	return f, nil
}

// verify checks everything, collecting every problem.
func (u *unpackedBundle) verify(ctx context.Context) (*BundleImport, error) {
	m := &BundleManifest{}
	if err := json.Unmarshal(u.manifest, m); err != nil {
		return nil, fmt.Errorf("%s: %w", bundleManifestName, err)
	}
	if m.Format != bundleFormat {
		return nil, fmt.Errorf("%s: format %d, this proxy reads format %d", bundleManifestName, m.Format, bundleFormat)
	}
	u.m = m
	var problems []error
	seen := map[module.Version]bool{}
	for _, bm := range m.Modules {
		mv := module.Version{Path: bm.Path, Version: bm.Version}
		if err := checkFillVersion(bm.Path, bm.Version); err != nil {
			problems = append(problems, err)
			continue
		}
		if seen[mv] {
			problems = append(problems, fmt.Errorf("%s@%s: listed twice in the manifest", bm.Path, bm.Version))
		}
		seen[mv] = true
		for _, bf := range bm.Files {
			if path, version, _, err := parseModuleFileName(bf.Name); err != nil || path != bm.Path || version != bm.Version {
				problems = append(problems, fmt.Errorf("%s@%s: the manifest lists %q among its files", bm.Path, bm.Version, bf.Name))
				continue
			}
			if _, err := u.listed(bf); err != nil {
				problems = append(problems, err)
			}
		}
	}
	u.tiles = map[tlog.Tile]*unpackedFile{}
	for _, bf := range m.Tiles {
		f, err := u.listed(bf)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		if u.db == nil {
			continue // nothing is verified, so tiles are of no use
		}
		if !strings.HasPrefix(bf.Name, u.db.prefix()) {
			problems = append(problems, fmt.Errorf("%s: not a tile of the configured checksum database", bf.Name))
			continue
		}
		t, _ := tlog.ParseTilePath(strings.TrimPrefix(bf.Name, u.db.prefix()))
		u.tiles[t] = f
	}
	for name, f := range u.files {
		if !f.listed {
			problems = append(problems, fmt.Errorf("%s: in the archive but not in the manifest", name))
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}

	if err := u.verifyRecords(); err != nil {
		return nil, err
	}
	report := &BundleImport{Manifest: m, Verified: len(u.verified), Exempt: len(m.Modules) - len(u.verified)}
	for i, bm := range m.Modules {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var lines []string
		if u.verified[i] {
			lines = recordLines(bm.Record.Text)
		}
		if err := u.verifyFiles(bm, lines); err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return report, nil
}

// verifyRecords checks the tree note's signature and proves every record
// in it with the bundle's tiles; every tile must serve a proof.
func (u *unpackedBundle) verifyRecords() error {
	m := u.m
	u.verified = map[int]bool{}
	var problems []error
	var need []int
	for i, bm := range m.Modules {
		if u.db.exempt(bm.Path) {
			continue
		}
		if u.db == nil {
			problems = append(problems, fmt.Errorf("%s@%s: Go toolchains are always verified against a checksum database, and SumDB is off", bm.Path, bm.Version))
			continue
		}
		if bm.Record == nil {
			problems = append(problems, fmt.Errorf("%s@%s: no checksum database record, and %s is not exempt (GONOSUMDB)", bm.Path, bm.Version, bm.Path))
			continue
		}
		if _, err := tlog.FormatRecord(bm.Record.ID, []byte(bm.Record.Text)); err != nil {
			problems = append(problems, fmt.Errorf("%s@%s: record: %w", bm.Path, bm.Version, err))
			continue
		}
		if err := checkRecordText(bm.Path, bm.Version, bm.Record.Text); err != nil {
			problems = append(problems, err)
			continue
		}
		need = append(need, i)
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	if len(need) == 0 {
		if len(u.tiles) > 0 {
			return errors.New("the bundle has tiles but no record to prove with them")
		}
		return nil
	}
	if m.SumDB == nil {
		return fmt.Errorf("the bundle has no checksum database tree, and %d module versions are not exempt", len(need))
	}
	if m.SumDB.Name != u.db.name {
		return fmt.Errorf("the bundle proves its records in checksum database %s, not %s", m.SumDB.Name, u.db.name)
	}
	n, err := u.db.openTree([]byte(m.SumDB.Tree))
	if err != nil {
		return err
	}
	tree, err := tlog.ParseTree([]byte(n.Text))
	if err != nil {
		return fmt.Errorf("checksum database %s: %w", u.db.name, err)
	}
	u.treeNote = []byte(m.SumDB.Tree)

	hr := tlog.TileHashReader(tree, &bundleTileReader{u})
	for start := 0; start < len(need); start += recordBatch {
		batch := need[start:min(start+recordBatch, len(need))]
		indexes := make([]int64, len(batch))
		for j, i := range batch {
			bm := m.Modules[i]
			if bm.Record.ID < 0 || bm.Record.ID >= tree.N {
				return fmt.Errorf("%s@%s: record %d is not in the tree of size %d", bm.Path, bm.Version, bm.Record.ID, tree.N)
			}
			indexes[j] = tlog.StoredHashIndex(0, bm.Record.ID)
		}
		hashes, err := hr.ReadHashes(indexes)
		if err != nil {
			return fmt.Errorf("checksum database %s tiles: %w", u.db.name, err)
		}
		for j, i := range batch {
			bm := m.Modules[i]
			if hashes[j] != tlog.RecordHash([]byte(bm.Record.Text)) {
				problems = append(problems, fmt.Errorf("%s@%s: the record is not the one the checksum database's tree holds", bm.Path, bm.Version))
				continue
			}
			u.verified[i] = true
		}
	}
	for t, f := range u.tiles {
		if !f.used {
			problems = append(problems, fmt.Errorf("tile %s: not needed by any proof", t.Path()))
		}
	}
	return errors.Join(problems...)
}

// bundleTileReader serves the bundle's tiles to tlog, marking those read.
type bundleTileReader struct{ u *unpackedBundle }

func (r *bundleTileReader) Height() int { return 8 }

func (r *bundleTileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(tiles))
	for i, t := range tiles {
		f := r.u.tiles[t]
		if f == nil {
			return nil, fmt.Errorf("the bundle lacks tile %s", t.Path())
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return nil, err
		}
		f.used = true
		data[i] = b
	}
	return data, nil
}

func (r *bundleTileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// verifyFiles checks one module version's files, against its record's
// lines unless lines is nil.
func (u *unpackedBundle) verifyFiles(bm BundleModule, lines []string) error {
	mv := module.Version{Path: bm.Path, Version: bm.Version}
	var problems []error
	for _, bf := range bm.Files {
		f := u.files[bf.Name]
		switch {
		case strings.HasSuffix(bf.Name, ".info"):
			data, err := os.ReadFile(f.path)
			if err == nil {
				err = checkInfoFile(mv, data)
			}
			if err != nil {
				problems = append(problems, err)
			}
		case strings.HasSuffix(bf.Name, ".mod"):
			data, err := os.ReadFile(f.path)
			var h string
			if err == nil {
				h, err = checkModFile(mv, data)
			}
			if err == nil && lines != nil {
				err = checkSumLines(mv, lines, "/go.mod", h)
			}
			if err != nil {
				problems = append(problems, err)
			}
		case strings.HasSuffix(bf.Name, ".zip"):
			h, err := checkZipFile(mv, f.path)
			if err == nil && lines != nil {
				err = checkSumLines(mv, lines, "", h)
			}
			if err != nil {
				problems = append(problems, err)
			}
		}
	}
	return errors.Join(problems...)
}

// store puts everything into dst: tiles, then lookup records, then module
// files, so that what a client is served can be verified with what is
// already there.
func (u *unpackedBundle) store(ctx context.Context, dst Cacher, report *BundleImport) error {
	put := func(name string, r io.ReadSeeker, size int64) error {
		if held, err := holdsAlready(ctx, dst, name); held || err != nil {
			return err
		}
		if err := dst.Put(ctx, name, r); err != nil {
			return fmt.Errorf("storing %s: %w", name, err)
		}
		report.Files++
		report.Bytes += size
		return nil
	}
	putFile := func(name string) error {
		f, err := os.Open(u.files[name].path)
		if err != nil {
			return err
		}
		defer f.Close()
		return put(name, f, u.files[name].size)
	}
	for t := range u.tiles {
		if err := putFile(u.db.prefix() + t.Path()); err != nil {
			return err
		}
	}
	for i, bm := range u.m.Modules {
		if !u.verified[i] || u.refused[i] {
			continue
		}
		rec, err := tlog.FormatRecord(bm.Record.ID, []byte(bm.Record.Text))
		if err != nil {
			return err
		}
		rec = append(rec, u.treeNote...)
		escPath, _ := module.EscapePath(bm.Path)
		escVersion, _ := module.EscapeVersion(bm.Version)
		if err := put(u.db.prefix()+"lookup/"+escPath+"@"+escVersion, bytes.NewReader(rec), int64(len(rec))); err != nil {
			return err
		}
	}
	for i, bm := range u.m.Modules {
		if u.refused[i] {
			continue
		}
		for _, bf := range bm.Files {
			if err := putFile(bf.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// holdsAlready reports whether dst has a file by that name. Imports never
// replace what the cache holds: every name they write is immutable, and
// for a module the checksum database does not cover, CheckZip alone would
// otherwise let an import swap the bytes clients were already served. A
// Cacher without Stat is asked with Get; a store that fails to answer
// fails the import, since taking the file for missing would replace it.
func holdsAlready(ctx context.Context, dst Cacher, name string) (bool, error) {
	var err error
	if st, ok := dst.(CacheStater); ok {
		_, err = st.Stat(ctx, name)
	} else {
		var cf CachedFile
		if cf, err = dst.Get(ctx, name); err == nil {
			cf.Close()
		}
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("checking whether the cache holds %s: %w", name, err)
}
