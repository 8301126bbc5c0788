package goproxy

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/tlog"
)

// BundleSource is where ExportBundle reads the files it packs, by cache
// name: module files ("<module>/@v/<version>.zip") and checksum database
// files ("sumdb/<name>/lookup/<module>@<version>", "sumdb/<name>/tile/...",
// "sumdb/<name>/latest"). Any Cacher is one, exporting what it holds; a
// Proxy-backed source may fetch what is missing. A missing file is an
// error for which errors.Is(err, fs.ErrNotExist) is true.
type BundleSource interface {
	Get(ctx context.Context, name string) (CachedFile, error)
}

// maxSumDBFile caps a lookup, tile or tree note read from a source.
const maxSumDBFile = 1 << 20

// recordBatch is how many records are proved at once, which bounds the
// tiles held in memory.
const recordBatch = 256

// ExportBundle writes a bundle (see BundleManifest) of the items' files,
// read from src, to w, and returns its manifest. Files are streamed: a zip
// is never held in memory. Unless the database is off, every item not
// exempt needs its lookup record in src; ExportBundle checks each record's
// signed tree note against opts.SumDB's key, picks the largest tree among
// them and src's "latest" note, and packs the tiles that prove every
// record in it, checking them as it goes, so that it never writes a bundle
// an importer with the same key would refuse for its tiles. The module
// files themselves are not re-hashed: ImportBundle does that.
//
// An error leaves w with a partial bundle, which ImportBundle refuses.
func ExportBundle(ctx context.Context, w io.Writer, src BundleSource, items []FillItem, opts *BundleOptions) (*BundleManifest, error) {
	db, err := opts.sumDB()
	if err != nil {
		return nil, err
	}
	created := time.Now().UTC()
	if opts != nil && !opts.Created.IsZero() {
		created = opts.Created.UTC()
	}
	var b planBuilder
	for _, it := range items {
		if err := checkFillVersion(it.Path, it.Version); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		b.add(it.Path, it.Version, it.Files)
	}
	items = b.plan().Items

	zw := gzip.NewWriter(w)
	e := &exporter{ctx: ctx, src: src, db: db, created: created, tw: tar.NewWriter(zw), tiles: map[tlog.Tile]bool{}}
	m := &BundleManifest{Format: bundleFormat, Created: created}
	for _, it := range items {
		m.Modules = append(m.Modules, BundleModule{Path: it.Path, Version: it.Version})
	}
	if db != nil {
		if err := e.records(m); err != nil {
			return nil, err
		}
	}
	for i, it := range items {
		for _, f := range moduleFileExts {
			if it.Files&f.files == 0 {
				continue
			}
			name, err := moduleFileName(it.Path, it.Version, f.ext)
			if err != nil {
				return nil, err
			}
			bf, err := e.copyFile(name)
			if err != nil {
				return nil, fmt.Errorf("export %s@%s: %w", it.Path, it.Version, err)
			}
			m.Modules[i].Files = append(m.Modules[i].Files, bf)
		}
	}
	m.Tiles = e.tileFiles
	manifest, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return nil, err
	}
	if err := e.writeEntry(bundleManifestName, int64(len(manifest)), strings.NewReader(string(manifest)), nil); err != nil {
		return nil, err
	}
	if err := e.tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return m, nil
}

type exporter struct {
	ctx       context.Context
	src       BundleSource
	db        *bundleDB
	created   time.Time
	tw        *tar.Writer
	tiles     map[tlog.Tile]bool // written
	tileFiles []BundleFile
}

// readSmall reads a checksum database file from the source.
func (e *exporter) readSmall(name string) ([]byte, error) {
	f, err := e.src.Get(e.ctx, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSumDBFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSumDBFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxSumDBFile)
	}
	return data, nil
}

// records looks up every record, picks the tree, and writes the tiles
// proving the records in it.
func (e *exporter) records(m *BundleManifest) error {
	var tree tlog.Tree
	var treeNote []byte
	consider := func(msg []byte, what string) error {
		n, err := e.db.openTree(msg)
		if err != nil {
			return fmt.Errorf("export: %s: %w", what, err)
		}
		t, err := tlog.ParseTree([]byte(n.Text))
		if err != nil {
			return fmt.Errorf("export: %s: checksum database %s: %w", what, e.db.name, err)
		}
		if t.N > tree.N {
			tree, treeNote = t, msg
		}
		return nil
	}
	if msg, err := e.readSmall(e.db.prefix() + "latest"); err == nil {
		if err := consider(msg, "latest tree"); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("export: checksum database %s: %w", e.db.name, err)
	}
	var ids []int64
	var recs []int // index in m.Modules of each id
	for i := range m.Modules {
		bm := &m.Modules[i]
		if e.db.exempt(bm.Path) {
			continue
		}
		escPath, _ := module.EscapePath(bm.Path)
		escVersion, _ := module.EscapeVersion(bm.Version)
		data, err := e.readSmall(e.db.prefix() + "lookup/" + escPath + "@" + escVersion)
		if err != nil {
			return fmt.Errorf("export %s@%s: checksum database %s record: %w", bm.Path, bm.Version, e.db.name, err)
		}
		id, text, msg, err := tlog.ParseRecord(data)
		if err != nil {
			return fmt.Errorf("export %s@%s: checksum database %s record: %w", bm.Path, bm.Version, e.db.name, err)
		}
		if err := checkRecordText(bm.Path, bm.Version, string(text)); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if err := consider(msg, bm.Path+"@"+bm.Version+" record"); err != nil {
			return err
		}
		bm.Record = &BundleRecord{ID: id, Text: string(text)}
		ids = append(ids, id)
		recs = append(recs, i)
	}
	if len(ids) == 0 {
		return nil // everything exempt: nothing to prove
	}
	if treeNote == nil {
		return fmt.Errorf("export: no signed tree of checksum database %s: no record, and no latest tree in the source", e.db.name)
	}
	m.SumDB = &BundleSumDB{Name: e.db.name, Key: e.db.key, Tree: string(treeNote)}

	tr := &exportTileReader{e: e}
	hr := tlog.TileHashReader(tree, tr)
	for start := 0; start < len(ids); start += recordBatch {
		batch := ids[start:min(start+recordBatch, len(ids))]
		indexes := make([]int64, len(batch))
		for i, id := range batch {
			if id >= tree.N {
				bm := m.Modules[recs[start+i]]
				return fmt.Errorf("export %s@%s: record %d is not in the tree of size %d", bm.Path, bm.Version, id, tree.N)
			}
			indexes[i] = tlog.StoredHashIndex(0, id)
		}
		tr.read, tr.data = nil, nil
		hashes, err := hr.ReadHashes(indexes)
		if err != nil {
			return fmt.Errorf("export: checksum database %s tiles: %w", e.db.name, err)
		}
		for i, h := range hashes {
			bm := m.Modules[recs[start+i]]
			if h != tlog.RecordHash([]byte(bm.Record.Text)) {
				return fmt.Errorf("export %s@%s: the record is not the one the checksum database's tree holds", bm.Path, bm.Version)
			}
		}
		// Now the tiles are proved: pack those not packed yet.
		for i, t := range tr.read {
			if e.tiles[t] {
				continue
			}
			e.tiles[t] = true
			data := tr.data[i]
			name := e.db.prefix() + t.Path()
			bf, err := e.writeBytes(name, data)
			if err != nil {
				return err
			}
			e.tileFiles = append(e.tileFiles, bf)
		}
	}
	return nil
}

// checkRecordText checks that a record is about the version looked up.
func checkRecordText(path, version, text string) error {
	for _, line := range recordLines(text) {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != path || (f[1] != version && f[1] != version+"/go.mod") {
			return fmt.Errorf("%s@%s: the checksum database's record holds %q", path, version, line)
		}
	}
	return nil
}

// exportTileReader reads tiles from the source, remembering them; a
// partial tile the source lacks is cut from the full one, as the
// checksum database client does (the first hashes of a tile never
// change).
type exportTileReader struct {
	e    *exporter
	read []tlog.Tile
	data [][]byte
}

func (r *exportTileReader) Height() int { return 8 }

func (r *exportTileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := r.e.readSmall(r.e.db.prefix() + t.Path())
		if errors.Is(err, fs.ErrNotExist) && t.W < 1<<t.H {
			full := t
			full.W = 1 << t.H
			if fdata, ferr := r.e.readSmall(r.e.db.prefix() + full.Path()); ferr == nil && len(fdata) >= t.W*tlog.HashSize {
				data, err = fdata[:t.W*tlog.HashSize], nil
			}
		}
		if err != nil {
			return nil, fmt.Errorf("tile %s: %w", t.Path(), err)
		}
		out[i] = data
	}
	r.read, r.data = append(r.read, tiles...), append(r.data, out...)
	return out, nil
}

func (r *exportTileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// copyFile streams a source file into the archive.
func (e *exporter) copyFile(name string) (BundleFile, error) {
	f, err := e.src.Get(e.ctx, name)
	if err != nil {
		return BundleFile{}, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return BundleFile{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return BundleFile{}, err
	}
	h := sha256.New()
	if err := e.writeEntry(name, size, contextReader{e.ctx, f}, h); err != nil {
		return BundleFile{}, err
	}
	return BundleFile{Name: name, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func (e *exporter) writeBytes(name string, data []byte) (BundleFile, error) {
	h := sha256.New()
	if err := e.writeEntry(name, int64(len(data)), strings.NewReader(string(data)), h); err != nil {
		return BundleFile{}, err
	}
	return BundleFile{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// writeEntry writes one regular file of exactly size bytes from r,
// hashing them into h if not nil.
func (e *exporter) writeEntry(name string, size int64, r io.Reader, h io.Writer) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: e.created}
	if err := e.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	dst := io.Writer(e.tw)
	if h != nil {
		dst = io.MultiWriter(e.tw, h)
	}
	n, err := io.Copy(dst, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("the file shrank from %d to %d bytes while it was read", size, n)
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", name, err)
	}
	return nil
}
