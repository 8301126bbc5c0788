package goproxy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/note"
)

// A bundle carries module versions across an air gap, with what a proxy on
// the other side needs to verify them against the checksum database
// without reaching it: a gzip-compressed tar archive holding
//
//   - the module files (.info, .mod, .zip), each under its name in the
//     GOPROXY layout ("golang.org/x/mod/@v/v0.42.0.zip"), which is also
//     its cache name;
//   - the checksum database tiles that prove every module version's record
//     in one signed tree, under their cache names
//     ("sumdb/sum.golang.org/tile/8/0/x123/456.p/7");
//   - last, manifest.json (BundleManifest): the format version, when it
//     was made, the database's name and key, the signed tree note, and per
//     module version its record (id and go.sum lines) and its files with
//     their sizes and SHA-256 hashes.
//
// Only regular files; no directories, links or other names. Importing
// (ImportBundle) checks the tree note's signature against the database key
// the importer is configured with (never the manifest's), every tile
// against the tree, every record against the tiles and every .mod and .zip
// against its record, before anything is stored: a bundle failing any
// check is refused whole.

// bundleFormat is BundleManifest.Format for bundles made by this package.
const bundleFormat = 1

// bundleManifestName is the manifest's name in the archive.
const bundleManifestName = "manifest.json"

// BundleManifest describes a bundle's content.
type BundleManifest struct {
	// Format is 1.
	Format int `json:"format"`
	// Created is when the bundle was made.
	Created time.Time `json:"created"`
	// SumDB is nil when the bundle was made without a checksum database.
	SumDB *BundleSumDB `json:"sumdb,omitempty"`
	// Modules lists the module versions, sorted by path and version.
	Modules []BundleModule `json:"modules"`
	// Tiles lists the checksum database tiles.
	Tiles []BundleFile `json:"tiles,omitempty"`
}

// BundleSumDB names the checksum database a bundle proves its records in.
type BundleSumDB struct {
	// Name is the database's name, such as "sum.golang.org".
	Name string `json:"name"`
	// Key is the verifier key of the database the bundle was made with;
	// an importer verifies with its own configured key, not this one.
	Key string `json:"key"`
	// Tree is the signed tree note (as served at /latest) every record is
	// proved in.
	Tree string `json:"tree"`
}

// BundleModule is one module version in a bundle.
type BundleModule struct {
	Path    string `json:"path"`
	Version string `json:"version"`
	// Files are the version's files in the bundle: some of .info, .mod and
	// .zip.
	Files []BundleFile `json:"files"`
	// Record is the version's checksum database record; nil for a module
	// exempt from the database (GONOSUMDB) or a bundle without one.
	Record *BundleRecord `json:"record,omitempty"`
}

// BundleRecord is a checksum database record, as a lookup returns it.
type BundleRecord struct {
	// ID is the record's number in the database's log.
	ID int64 `json:"id"`
	// Text is the record: the version's go.sum lines.
	Text string `json:"text"`
}

// BundleFile is a file in a bundle.
type BundleFile struct {
	// Name is the file's name in the archive and in the cache.
	Name string `json:"name"`
	// Size is its length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of its content, which catches damage in
	// transit before the checksum database's hashes are even computed.
	SHA256 string `json:"sha256"`
}

// BundleOptions configure ExportBundle and ImportBundle. The zero value
// (or nil) proves records in sum.golang.org and exempts nothing.
type BundleOptions struct {
	// SumDB is the checksum database, in GOSUMDB syntax: empty means
	// sum.golang.org, "off" none (then modules are checked with
	// golang.org/x/mod/zip's CheckZip only), otherwise "name+hash+key"
	// (a URL after it is ignored: bundles never reach the database).
	SumDB string
	// NoSumDB lists the modules exempt from the database, in GONOSUMDB
	// syntax (comma-separated path prefix patterns): exported without a
	// record, imported after CheckZip only.
	NoSumDB string
	// TempDir is where ImportBundle unpacks a bundle while it checks it;
	// empty means os.TempDir(). It needs room for the whole bundle.
	TempDir string
	// MaxBytes caps the bytes ImportBundle unpacks; zero means 64 GiB.
	MaxBytes int64
	// Created is the time ExportBundle records; zero means now.
	Created time.Time
	// Admit, if set, decides whether ImportBundle may store each module
	// version once the bundle has passed its checks: a version for which
	// it returns an error is not stored, and is listed in
	// BundleImport.Refused with that error (an admission policy's
	// refusal). Nil stores everything.
	Admit func(ctx context.Context, path, version string) error
}

// DefaultBundleMaxBytes is BundleOptions.MaxBytes's zero value.
const DefaultBundleMaxBytes = 64 << 30

// bundleDB is the checksum database of a BundleOptions.
type bundleDB struct {
	name     string
	key      string
	verifier note.Verifiers
	noSumDB  string
}

// sumDB returns the database opts name, or nil for "off".
func (opts *BundleOptions) sumDB() (*bundleDB, error) {
	var gosumdb, noSumDB string
	if opts != nil {
		gosumdb, noSumDB = opts.SumDB, opts.NoSumDB
	}
	db, err := parseGOSUMDB(gosumdb)
	if err != nil || db == nil {
		return nil, err
	}
	v, err := note.NewVerifier(db.key)
	if err != nil {
		return nil, fmt.Errorf("checksum database key %q: %w", db.key, err)
	}
	return &bundleDB{name: db.name, key: db.key, verifier: note.VerifierList(v), noSumDB: noSumDB}, nil
}

// exempt reports whether a module is left out of the database.
func (db *bundleDB) exempt(path string) bool {
	return db == nil || module.MatchPrefixPatterns(db.noSumDB, path)
}

// openTree checks a signed tree note's signature.
func (db *bundleDB) openTree(msg []byte) (*note.Note, error) {
	n, err := note.Open(msg, db.verifier)
	if err != nil {
		return nil, fmt.Errorf("checksum database %s: tree note: %w", db.name, err)
	}
	return n, nil
}

// tilePrefix is where the database's tiles and records are cached.
func (db *bundleDB) prefix() string { return "sumdb/" + db.name + "/" }

// recordLines splits a record's text into its go.sum lines.
func recordLines(text string) []string {
	return strings.Split(strings.TrimSuffix(text, "\n"), "\n")
}
