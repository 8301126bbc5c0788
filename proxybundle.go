package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
)

// ExportBundle writes a bundle (see [BundleManifest]) of items to w, as
// the package's [ExportBundle] does, from what the proxy serves: module
// files from the cache or the published store, else fetched (unless the
// proxy is Offline); checksum database records and tiles from the cache,
// else fetched from the database; the tree the proxy verified last. The
// bundle proves its records in the database GOSUMDB names, and leaves
// out of it the modules GONOSUMDB and private routes exempt.
func (p *Proxy) ExportBundle(ctx context.Context, w io.Writer, items []FillItem) (*BundleManifest, error) {
	if err := p.ready(); err != nil {
		return nil, err
	}
	return ExportBundle(ctx, w, proxyBundleSource{p}, items, p.bundleOptions())
}

// ExportDir writes items into dir as a GOPROXY-layout tree (dir is
// created if missing): the module files under their names, and, unless
// the checksum database is off, the records and tiles of a bundle under
// sumdb/<name>/, so that the go command run with GOPROXY=file://<dir> and
// the proxy's GOSUMDB verifies what it downloads from there, and a proxy
// importing the tree with ImportModuleDir has what it needs. What is
// written was checked as a bundle is on import.
func (p *Proxy) ExportDir(ctx context.Context, dir string, items []FillItem) (*BundleManifest, error) {
	if err := p.ready(); err != nil {
		return nil, err
	}
	opts := p.bundleOptions()
	pr, pw := io.Pipe()
	type exported struct {
		m   *BundleManifest
		err error
	}
	done := make(chan exported, 1)
	go func() {
		m, err := ExportBundle(ctx, pw, proxyBundleSource{p}, items, opts)
		pw.CloseWithError(err)
		done <- exported{m, err}
	}()
	_, err := ImportBundle(ctx, pr, DirCacher(dir), opts)
	pr.CloseWithError(errors.New("the import stopped"))
	exp := <-done
	if exp.err != nil {
		return nil, exp.err
	}
	if err != nil {
		return nil, err
	}
	if exp.m.SumDB != nil {
		// The go command asks a GOPROXY whether it serves the database.
		if err := DirCacher(dir).Put(ctx, "sumdb/"+exp.m.SumDB.Name+"/supported", strings.NewReader("")); err != nil {
			return nil, err
		}
	}
	return exp.m, nil
}

// ImportBundle checks a bundle made by ExportBundle and stores it in the
// cache, as the package's [ImportBundle] does, with the proxy's checksum
// database key (GOSUMDB), its exemptions (GONOSUMDB and private routes)
// and TempDir: a bundle that fails any check is refused whole. What the
// proxy remembered as not found of the imported modules is forgotten, and
// the imported versions join the index feed. A proxy serving the cache
// then answers the go command's checksum database requests from the
// imported records and tiles, Offline included.
func (p *Proxy) ImportBundle(ctx context.Context, r io.Reader) (*BundleImport, error) {
	if err := p.ready(); err != nil {
		return nil, err
	}
	return ImportBundle(ctx, r, importStore{p}, p.bundleOptions())
}

// ImportModuleDir imports the module versions of dir (a module cache, its
// cache/download, or any GOPROXY-layout tree) into the cache, as the
// package's [ImportModuleDir] does, verifying every .mod and .zip against
// the proxy's checksum database (through its cache, else fetched, unless
// Offline) or, for the modules GONOSUMDB and private routes exempt, with
// CheckZip only. Versions that fail are refused and reported by name; what
// the proxy remembered as not found of the imported ones is forgotten.
func (p *Proxy) ImportModuleDir(ctx context.Context, dir string) (*ModuleDirReport, error) {
	if err := p.ready(); err != nil {
		return nil, err
	}
	opts := &ModuleDirImport{NoSumDB: p.noSumDB(), TempDir: p.conf.tempDir, Admit: p.admitImport}
	if p.verifier != nil {
		opts.Lookup = p.lookupSums
	}
	return ImportModuleDir(ctx, dir, importStore{p}, opts)
}

// bundleOptions are the BundleOptions of the proxy's configuration.
func (p *Proxy) bundleOptions() *BundleOptions {
	opts := &BundleOptions{SumDB: "off", NoSumDB: p.noSumDB(), TempDir: p.conf.tempDir, Admit: p.admitImport}
	if p.verifier != nil {
		opts.SumDB = p.verifier.key
	}
	return opts
}

// noSumDB lists, in GONOSUMDB syntax, the modules the proxy never checks
// against the checksum database: GONOSUMDB's, and the private routes'.
func (p *Proxy) noSumDB() string {
	patterns := []string{p.conf.goEnv.noSumDB}
	for _, rt := range p.routes {
		if rt.private {
			patterns = append(patterns, rt.patterns)
		}
	}
	return strings.Trim(strings.Join(patterns, ","), ",")
}

// lookupSums returns the go.sum lines the checksum database records for
// path@version (a version ending in "/go.mod" for the go.mod's), read and
// proved through the proxy's cache.
func (p *Proxy) lookupSums(ctx context.Context, path, version string) ([]string, error) {
	db := p.verifier
	if report := db.broken.Load(); report != nil {
		return nil, fmt.Errorf("checksum database %s served inconsistent data earlier: nothing is verified against it: %s", db.name, *report)
	}
	lines, err := db.lookup(path, version)
	if err != nil {
		return nil, fmt.Errorf("checksum database %s: %w", db.name, err)
	}
	return lines, nil
}

// proxyBundleSource gives ExportBundle what the proxy serves.
type proxyBundleSource struct{ p *Proxy }

func (s proxyBundleSource) Get(ctx context.Context, name string) (CachedFile, error) {
	p := s.p
	if rest, ok := strings.CutPrefix(name, "sumdb/"); ok {
		dbName, path, _ := strings.Cut(rest, "/")
		db := p.sumdbs[dbName]
		if db == nil {
			return nil, &fs.PathError{Op: "get", Path: name, Err: fs.ErrNotExist}
		}
		if path == "latest" {
			return p.verifiedTree(ctx, db, name)
		}
		data, err := p.sumDBFile(ctx, db, path)
		if err != nil {
			return nil, err
		}
		return &memFile{Reader: bytes.NewReader(data)}, nil
	}
	req, err := p.parseRequest(name)
	if err != nil {
		return nil, err
	}
	c, err := p.open(ctx, req, true)
	if err != nil {
		return nil, err
	}
	if c.stream != nil {
		// A zip still arriving: a bundle takes it once it passed.
		if err := c.stream.wait(ctx); err != nil {
			c.close()
			return nil, err
		}
	}
	return contentFile{c, c.reader()}, nil
}

// verifiedTree returns the newest tree of db the proxy verified: the one
// the tiles it cached prove records in.
func (p *Proxy) verifiedTree(ctx context.Context, db *sumDB, name string) (CachedFile, error) {
	db.mu.Lock()
	latest := db.latest
	db.mu.Unlock()
	if latest == nil {
		cf, err := p.conf.cacher.Get(ctx, (&sumDBOps{p: p, db: db}).latestName())
		if err != nil {
			return nil, err
		}
		defer cf.Close()
		if latest, err = io.ReadAll(io.LimitReader(cf, maxSumDBSize)); err != nil {
			return nil, err
		}
	}
	return &memFile{Reader: bytes.NewReader(latest)}, nil
}

// contentFile is content as a CachedFile.
type contentFile struct {
	c    *content
	body io.ReadSeeker // c's reader
}

func (f contentFile) Read(b []byte) (int, error)                { return f.body.Read(b) }
func (f contentFile) Seek(off int64, whence int) (int64, error) { return f.body.Seek(off, whence) }
func (f contentFile) ModTime() time.Time                        { return f.c.modTime }
func (f contentFile) Close() error                              { f.c.close(); return nil }

// importStore is the cache as imports write it: each file stored is
// counted for eviction, a version's .info joins the index feed, and what
// the not-found memo holds of its module is forgotten.
type importStore struct{ p *Proxy }

func (s importStore) Get(ctx context.Context, name string) (CachedFile, error) {
	return s.p.conf.cacher.Get(ctx, name)
}

// Stat lets imports skip what is cached, whatever the Cacher.
func (s importStore) Stat(ctx context.Context, name string) (fs.FileInfo, error) {
	if st, ok := s.p.conf.cacher.(CacheStater); ok {
		return st.Stat(ctx, name)
	}
	cf, err := s.p.conf.cacher.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer cf.Close()
	size, err := cf.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	return fileInfo{name: name, size: size, modTime: cf.ModTime()}, nil
}

func (s importStore) Put(ctx context.Context, name string, content io.ReadSeeker) error {
	p := s.p
	size, err := content.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = content.Seek(0, io.SeekStart)
	}
	if err != nil {
		return err
	}
	if err := p.conf.cacher.Put(ctx, name, content); err != nil {
		return err
	}
	p.evictor.noteStored(size)
	if escPath, _, ok := strings.Cut(name, "/@v/"); ok {
		p.notFound.forget(escPath + "/")
		if path, version, ok := versionInfoName(name); ok {
			p.feed.add(ctx, path, version, time.Now())
		}
	}
	return nil
}
