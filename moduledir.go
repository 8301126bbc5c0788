package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
	"golang.org/x/sync/errgroup"
)

// ModuleDirVersion is a module version found in a directory by
// WalkModuleDir, with the names of its files relative to the directory
// walked (slash-separated); a name is empty when the file is absent.
type ModuleDirVersion struct {
	Path, Version  string
	Info, Mod, Zip string
}

// files says which files the version has.
func (v ModuleDirVersion) files() FillFiles {
	var f FillFiles
	if v.Info != "" {
		f |= FillInfo
	}
	if v.Mod != "" {
		f |= FillMod
	}
	if v.Zip != "" {
		f |= FillZip
	}
	return f
}

// WalkModuleDir calls fn for every module version in dir, a directory in
// the GOPROXY layout ("<module>/@v/<version>.<ext>"): any such tree, or a
// module cache's cache/download directory; given a module cache itself
// (GOMODCACHE), it walks its cache/download. Module paths and versions are
// decoded and checked with golang.org/x/mod/module; the go command's own
// working files (.lock, .ziphash, .partial, .tmp, list) and the checksum
// database cache (sumdb/) are passed over in silence, and anything else
// that is no module file is returned as skipped, with why. Everything is
// read through an os.Root, so no name and no symbolic link leads out of
// dir; links are not followed into directories, and a link to a file is
// taken only if it stays inside dir. The walk stops at the first error fn
// returns, returning it.
func WalkModuleDir(ctx context.Context, dir string, fn func(ModuleDirVersion) error) (skipped []FillSkip, err error) {
	root, err := openModuleDir(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	err = fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			if name == "." {
				return err
			}
			skipped = append(skipped, FillSkip{Entry: name, Reason: err.Error()})
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.IsDir() {
			switch {
			case d.Type()&fs.ModeSymlink != 0:
				skipped = append(skipped, FillSkip{Entry: name, Reason: "a symbolic link outside an @v directory: not followed"})
			case !strings.HasSuffix(name, "/@latest"):
				skipped = append(skipped, FillSkip{Entry: name, Reason: "not in a module's @v directory"})
			}
			return nil
		}
		base := path.Base(name)
		switch {
		case name == ".":
		case name == "sumdb":
			return fs.SkipDir // the go command's checksum database cache
		case base == "@v":
			vs, sk := readVersionDir(root, name)
			skipped = append(skipped, sk...)
			for _, v := range vs {
				if err := fn(v); err != nil {
					return err
				}
			}
			return fs.SkipDir
		case strings.Contains(base, "@") || strings.HasPrefix(base, "."):
			// An extracted module (path@version), or hidden: no module
			// path element looks like that.
			return fs.SkipDir
		}
		return nil
	})
	return skipped, err
}

// openModuleDir opens dir, or its cache/download if it is a module cache.
func openModuleDir(dir string) (*os.Root, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	if fi, err := root.Lstat("cache/download"); err == nil && fi.IsDir() {
		sub, err := root.OpenRoot("cache/download")
		root.Close()
		return sub, err
	}
	return root, nil
}

// goWorkingFile reports whether a name in an @v directory is one of the
// go command's (or a GOPROXY tree's) files that are not module files.
func goWorkingFile(name string) bool {
	if name == "list" || strings.HasPrefix(name, ".") {
		return true
	}
	for _, suffix := range []string{".lock", ".ziphash", ".partial", ".tmp"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

// readVersionDir reads one <module>/@v directory.
func readVersionDir(root *os.Root, dir string) ([]ModuleDirVersion, []FillSkip) {
	var skipped []FillSkip
	skip := func(name, reason string) { skipped = append(skipped, FillSkip{Entry: name, Reason: reason}) }
	modPath, err := module.UnescapePath(strings.TrimSuffix(dir, "/@v"))
	if err == nil {
		err = module.CheckPath(modPath)
	}
	if err != nil {
		skip(dir, "not a module path: "+err.Error())
		return nil, skipped
	}
	entries, err := fs.ReadDir(root.FS(), dir)
	if err != nil {
		skip(dir, err.Error())
		return nil, skipped
	}
	byVersion := map[string]*ModuleDirVersion{}
	for _, e := range entries {
		name := dir + "/" + e.Name()
		if goWorkingFile(e.Name()) {
			continue
		}
		if e.Type()&fs.ModeSymlink != 0 {
			// Followed through the root: a link leading out of it fails.
			fi, err := root.Stat(name)
			if err != nil {
				skip(name, "a symbolic link that does not stay inside the directory")
				continue
			}
			if !fi.Mode().IsRegular() {
				skip(name, "not a regular file")
				continue
			}
		} else if !e.Type().IsRegular() {
			skip(name, "not a regular file")
			continue
		}
		p, version, ext, err := parseModuleFileName(name)
		if err != nil {
			skip(name, err.Error())
			continue
		}
		if p != modPath {
			skip(name, "not a file of "+modPath) // cannot happen; checked for safety
			continue
		}
		v := byVersion[version]
		if v == nil {
			v = &ModuleDirVersion{Path: modPath, Version: version}
			byVersion[version] = v
		}
		switch ext {
		case ".info":
			v.Info = name
		case ".mod":
			v.Mod = name
		case ".zip":
			v.Zip = name
		}
	}
	var vs []ModuleDirVersion
	for _, v := range byVersion {
		vs = append(vs, *v)
	}
	slices.SortFunc(vs, func(a, b ModuleDirVersion) int {
		return strings.Compare(a.Version, b.Version)
	})
	return vs, skipped
}

// ModuleDirImport configures ImportModuleDir. The zero value (or nil)
// checks every module with golang.org/x/mod/zip's CheckZip only, as with
// GOSUMDB=off.
type ModuleDirImport struct {
	// Lookup returns the go.sum lines a checksum database records for a
	// module version, as golang.org/x/mod/sumdb.Client.Lookup does: the
	// version ends in "/go.mod" for the go.mod's line. Nil: no database.
	Lookup func(ctx context.Context, modulePath, version string) ([]string, error)
	// NoSumDB lists the modules exempt from the database, in GONOSUMDB
	// syntax: checked with CheckZip only, never looked up. Go toolchains
	// (golang.org/toolchain) are never exempt: without Lookup, they are
	// refused.
	NoSumDB string
	// TempDir is where each zip is copied while it is checked, so that
	// what is checked is what is stored; empty means os.TempDir().
	TempDir string
	// Concurrency is how many versions are checked at once; zero means 4.
	Concurrency int
	// Admit, if set, decides whether each module version may be stored,
	// before its files are checked: a version for which it returns an
	// error is refused with that error (an admission policy's refusal).
	// Nil admits every version.
	Admit func(ctx context.Context, path, version string) error
}

// ModuleDirReport is what ImportModuleDir did.
type ModuleDirReport struct {
	// Imported lists the versions stored, and which of their files.
	Imported []FillItem
	// Cached lists the versions whose files dst already had.
	Cached []FillItem
	// Refused lists the versions not stored, each with why: a checksum
	// mismatch, a zip failing CheckZip, a failed lookup. None of a refused
	// version's files is stored.
	Refused []FillFailure
	// Skipped lists what in the directory is no module file.
	Skipped []FillSkip
}

// ImportModuleDir stores in dst the module versions WalkModuleDir finds in
// dir (a module cache, its cache/download, or a GOPROXY-layout tree), each
// only after all its files pass: .info decoded, .mod parsed, the zip
// checked with CheckZip and each entry's CRC-32, and, unless the module is
// exempt or opts has no Lookup, the .mod and .zip hashes found in the
// checksum database. A version failing any check is refused whole and
// reported; the others are imported. Only a failure to walk dir or to
// store in dst ends the import early with an error.
func ImportModuleDir(ctx context.Context, dir string, dst Cacher, opts *ModuleDirImport) (*ModuleDirReport, error) {
	if opts == nil {
		opts = &ModuleDirImport{}
	}
	limit := opts.Concurrency
	if limit <= 0 {
		limit = 4
	}
	root, err := openModuleDir(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()

	report := &ModuleDirReport{}
	var mu sync.Mutex
	add := func(fn func()) {
		mu.Lock()
		defer mu.Unlock()
		fn()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	skipped, walkErr := WalkModuleDir(gctx, dir, func(v ModuleDirVersion) error {
		g.Go(func() error {
			it := FillItem{Path: v.Path, Version: v.Version, Files: v.files()}
			cached, err := importModuleVersion(gctx, root, v, dst, opts)
			var storeErr *storeError
			switch {
			case errors.As(err, &storeErr) || err != nil && gctx.Err() != nil:
				return err
			case err != nil:
				add(func() { report.Refused = append(report.Refused, FillFailure{Item: it, Err: err}) })
			case cached:
				add(func() { report.Cached = append(report.Cached, it) })
			default:
				add(func() { report.Imported = append(report.Imported, it) })
			}
			return nil
		})
		return nil
	})
	err = g.Wait()
	report.Skipped = skipped
	if err == nil {
		err = walkErr
	}
	byItem := func(a, b FillItem) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return semver.Compare(a.Version, b.Version)
	}
	slices.SortFunc(report.Imported, byItem)
	slices.SortFunc(report.Cached, byItem)
	slices.SortFunc(report.Refused, func(a, b FillFailure) int { return byItem(a.Item, b.Item) })
	return report, err
}

// storeError is a failure of the destination, which ends an import.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// importModuleVersion checks one version's files and stores them,
// reporting whether dst had them all already.
func importModuleVersion(ctx context.Context, root *os.Root, v ModuleDirVersion, dst Cacher, opts *ModuleDirImport) (cached bool, err error) {
	m := module.Version{Path: v.Path, Version: v.Version}
	names := map[string]string{} // cache name -> name in the directory
	for _, f := range []struct{ ext, name string }{{".info", v.Info}, {".mod", v.Mod}, {".zip", v.Zip}} {
		if f.name != "" {
			cacheName, err := moduleFileName(v.Path, v.Version, f.ext)
			if err != nil {
				return false, err
			}
			names[cacheName] = f.name
		}
	}
	if opts.Admit != nil {
		if err := opts.Admit(ctx, v.Path, v.Version); err != nil {
			return false, err
		}
	}
	if st, ok := dst.(CacheStater); ok {
		have := 0
		for cacheName := range names {
			if _, err := st.Stat(ctx, cacheName); err == nil {
				have++
			}
		}
		if have == len(names) {
			return true, nil
		}
	}
	// A Go toolchain is verified whatever NoSumDB says, as the go command
	// and the Proxy have it (see sumDBExempt).
	verify := opts.Lookup != nil && (isToolchain(v.Path) || !module.MatchPrefixPatterns(opts.NoSumDB, v.Path))
	if isToolchain(v.Path) && opts.Lookup == nil {
		return false, fmt.Errorf("%s: Go toolchains are always verified against a checksum database, and there is none to ask (Lookup)", m)
	}

	var info, mod []byte
	if v.Info != "" {
		if info, err = readRootFile(root, v.Info, maxModuleInfoSize); err == nil {
			err = checkInfoFile(m, info)
		}
		if err != nil {
			return false, err
		}
	}
	if v.Mod != "" {
		var h string
		if mod, err = readRootFile(root, v.Mod, modzip.MaxGoMod); err == nil {
			h, err = checkModFile(m, mod)
		}
		if err == nil && verify {
			var lines []string
			if lines, err = opts.Lookup(ctx, v.Path, v.Version+"/go.mod"); err == nil {
				err = checkSumLines(m, lines, "/go.mod", h)
			}
		}
		if err != nil {
			return false, err
		}
	}
	var zipFile *os.File
	if v.Zip != "" {
		// Checked and stored from a private copy: what is checked is
		// what is stored, whatever happens to the directory meanwhile.
		zipFile, err = copyRootFile(ctx, root, v.Zip, modzip.MaxZipFile, opts.TempDir)
		if err != nil {
			return false, err
		}
		defer func() {
			zipFile.Close()
			os.Remove(zipFile.Name())
		}()
		h, err := checkZipFile(m, zipFile.Name())
		if err == nil && verify {
			var lines []string
			if lines, err = opts.Lookup(ctx, v.Path, v.Version); err == nil {
				err = checkSumLines(m, lines, "", h)
			}
		}
		if err != nil {
			return false, err
		}
	}

	put := func(ext string, r io.ReadSeeker) error {
		cacheName, _ := moduleFileName(v.Path, v.Version, ext)
		if held, err := holdsAlready(ctx, dst, cacheName); err != nil {
			return &storeError{err}
		} else if held {
			return nil
		}
		if err := dst.Put(ctx, cacheName, r); err != nil {
			return &storeError{fmt.Errorf("storing %s: %w", cacheName, err)}
		}
		return nil
	}
	if info != nil {
		if err := put(".info", bytes.NewReader(info)); err != nil {
			return false, err
		}
	}
	if mod != nil {
		if err := put(".mod", bytes.NewReader(mod)); err != nil {
			return false, err
		}
	}
	if zipFile != nil {
		if _, err := zipFile.Seek(0, io.SeekStart); err != nil {
			return false, err
		}
		if err := put(".zip", zipFile); err != nil {
			return false, err
		}
	}
	return false, nil
}

// readRootFile reads a file of at most limit bytes through root.
func readRootFile(root *os.Root, name string, limit int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return data, nil
}

// copyRootFile copies a file of at most limit bytes, read through root,
// into a new temporary file, returned open.
func copyRootFile(ctx context.Context, root *os.Root, name string, limit int64, tempDir string) (*os.File, error) {
	src, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst, err := os.CreateTemp(tempDir, "goproxy-import-*.zip")
	if err != nil {
		return nil, &storeError{err}
	}
	n, err := io.Copy(dst, contextReader{ctx, io.LimitReader(src, limit+1)})
	if err == nil && n > limit {
		err = fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	if err != nil {
		dst.Close()
		os.Remove(dst.Name())
		return nil, err
	}
	return dst, nil
}
