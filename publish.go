package goproxy

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

// Publish stores a module version given its zip, as PUT
// $module/@v/$version.zip does. The zip is checked with
// golang.org/x/mod/zip (paths under the module@version prefix, sizes,
// file names), its go.mod must declare modulePath (without one, a go.mod
// naming the path is synthesized, as for modules that predate modules), and
// the version must be canonical and agree with the path's major version.
// The .mod is taken from the zip, the .info records the publishing time.
//
// Publishing the same content again succeeds and changes nothing; other
// content for a published version fails with ErrVersionConflict. The zip is
// streamed to a temporary file, never held in memory.
func (p *Proxy) Publish(ctx context.Context, modulePath, version string, zipContent io.Reader) error {
	if err := p.Init(); err != nil {
		return err
	}
	if p.closed.Load() {
		return errClosed
	}
	p.start()
	if p.conf.hosted == nil {
		return ErrPublishingDisabled
	}
	if err := checkPublishable(modulePath, version); err != nil {
		return err
	}
	m := module.Version{Path: modulePath, Version: version}
	tmp, err := os.CreateTemp(p.conf.tempDir, "goproxy-publish-*.zip")
	if err != nil {
		return failed(failInternal, "publishing %s: %w", m, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	upload := &uploadReader{r: io.LimitReader(contextReader{ctx, zipContent}, maxZipSize+1)}
	n, err := io.Copy(tmp, upload)
	switch {
	case upload.err != nil:
		// The client's, as a cut or oversized body is.
		return failed(failBadRequest, "publishing %s: reading the upload: %w", m, upload.err)
	case err != nil:
		return failed(failInternal, "publishing %s: writing the upload to a temporary file: %w", m, err)
	}
	if n > maxZipSize {
		return fmt.Errorf("publishing %s: %w: the zip is larger than the %d-byte limit for module zips", m, ErrInvalidModule, maxZipSize)
	}
	cf, err := modzip.CheckZip(m, tmp.Name())
	if err == nil {
		err = cf.Err()
	}
	if err == nil {
		err = checkZipContents(tmp, n)
	}
	if err != nil {
		return fmt.Errorf("publishing %s: %w: %w", m, ErrInvalidModule, err)
	}
	mod, err := goModOfZip(tmp, n, m)
	if err != nil {
		return fmt.Errorf("publishing %s: %w: %w", m, ErrInvalidModule, err)
	}

	escPath, _ := module.EscapePath(modulePath)
	escVersion, _ := module.EscapeVersion(version)
	base := escPath + "/@v/" + escVersion
	unlock, err := p.publishing.lock(ctx, escPath)
	if err != nil {
		return fmt.Errorf("publishing %s: %w", m, err)
	}
	defer unlock()
	same, err := p.samePublished(ctx, base+".zip", tmp)
	if errors.Is(err, ErrVersionConflict) {
		return fmt.Errorf("publishing %s: %w", m, err)
	}
	if err != nil {
		return failed(failInternal, "publishing %s: %w", m, err)
	}
	if same && p.isPublished(ctx, base) {
		return nil // published before: nothing to do
	}
	// Otherwise new, or an earlier publish stopped before the end: finish it.
	info, _ := json.Marshal(struct {
		Version string
		Time    time.Time
	}{version, time.Now().UTC().Truncate(time.Second)})
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return failed(failInternal, "publishing %s: %w", m, err)
	}
	// The .info goes last: its presence is what makes the version listed.
	for _, f := range []struct {
		name string
		r    io.ReadSeeker
	}{{base + ".zip", tmp}, {base + ".mod", bytes.NewReader(mod)}, {base + ".info", bytes.NewReader(info)}} {
		err := p.putPublished(ctx, f.name, f.r)
		if errors.Is(err, fs.ErrExist) && f.name == base+".zip" {
			// Another proxy sharing the store published the version
			// since we looked: the same bytes, or a conflict.
			if _, err = p.samePublished(ctx, f.name, tmp); errors.Is(err, ErrVersionConflict) {
				return fmt.Errorf("publishing %s: %w", m, err)
			}
		} else if errors.Is(err, fs.ErrExist) {
			// Derived from the same zip: the .mod is the same, and the
			// first publishing time stands.
			err = nil
		}
		if err != nil {
			p.conf.metrics.storeError(StoreErrorMetric{Role: StoreHosted, Op: StorePut})
			return failed(failInternal, "publishing %s: storing %s: %w", m, f.name, err)
		}
	}
	// An upstream copy of the same version may be in memory.
	p.hotForget(base+".info", base+".mod")
	p.feed.add(ctx, modulePath, version, time.Now())
	p.logger().Info("published", "module", modulePath, "version", version, "bytes", n)
	return nil
}

func checkPublishable(modulePath, version string) error {
	if err := module.CheckPath(modulePath); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidModule, err)
	}
	if err := module.Check(modulePath, version); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidModule, err)
	}
	if module.CanonicalVersion(version) != version {
		return fmt.Errorf("%w: %s@%s: version is not canonical", ErrInvalidModule, modulePath, version)
	}
	return nil
}

// goModOfZip returns the go.mod in the zip, checked against the module
// path, or the synthesized one when there is none.
func goModOfZip(f *os.File, size int64, m module.Version) ([]byte, error) {
	zr, err := zip.NewReader(f, size)
	if err != nil {
		return nil, err
	}
	name := m.Path + "@" + m.Version + "/go.mod"
	for _, zf := range zr.File {
		if zf.Name != name {
			continue
		}
		if strings.HasSuffix(m.Version, "+incompatible") {
			return nil, errors.New("a +incompatible version must not have a go.mod file")
		}
		rc, err := zf.Open()
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(io.LimitReader(rc, maxModSize+1))
		rc.Close()
		if err != nil {
			return nil, err
		}
		if len(data) > maxModSize {
			return nil, errors.New("go.mod is too large")
		}
		mf, err := modfile.ParseLax("go.mod", data, nil)
		if err != nil {
			return nil, err
		}
		if mf.Module == nil || mf.Module.Mod.Path != m.Path {
			declared := "no module path"
			if mf.Module != nil {
				declared = mf.Module.Mod.Path
			}
			return nil, fmt.Errorf("go.mod declares %s, not %s", declared, m.Path)
		}
		return data, nil
	}
	return []byte("module " + m.Path + "\n"), nil
}

// putPublished stores a published file. With a Hosted store that creates
// conditionally (a [CacheCreator]), nothing stored is ever replaced, and a
// file stored already fails with fs.ErrExist: of several proxies sharing
// the store that publish one version at once, one writes it, and the
// others find the bytes that won.
func (p *Proxy) putPublished(ctx context.Context, name string, r io.ReadSeeker) error {
	if c, ok := p.conf.hosted.(CacheCreator); ok {
		return c.Create(ctx, name, r)
	}
	return p.conf.hosted.Put(ctx, name, r)
}

// samePublished reports whether name is published already with the same
// content as f, failing with ErrVersionConflict if it is published with
// other content.
func (p *Proxy) samePublished(ctx context.Context, name string, f *os.File) (bool, error) {
	cf, err := p.conf.hosted.Get(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer cf.Close()
	old, err := digest(cf)
	if err != nil {
		return false, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	updated, err := digest(f)
	if err != nil {
		return false, err
	}
	if old != updated {
		return false, ErrVersionConflict
	}
	return true, nil
}

func digest(r io.Reader) ([sha256.Size]byte, error) {
	h := sha256.New()
	_, err := io.Copy(h, r)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum, err
}

// servePublish answers PUT $module/@v/$version.zip.
func (p *Proxy) servePublish(w http.ResponseWriter, r *http.Request, req *request) {
	if p.conf.hosted == nil {
		p.writeFailure(w, ErrPublishingDisabled)
		return
	}
	if req.kind != kindZip {
		p.writeFailure(w, &failure{kind: failMethod, allow: "GET, HEAD",
			msg: "only a version's .zip is published; its .mod and .info are derived from it"})
		return
	}
	if r.ContentLength > maxZipSize {
		// Refused before a byte is read, like every other invalid upload.
		p.writeFailure(w, failed(failBadRequest, "%s@%s: the zip is larger than the %d-byte limit for module zips", req.modPath, req.version, maxZipSize))
		return
	}
	if err := p.Publish(r.Context(), req.modPath, req.version, r.Body); err != nil {
		p.writeFailure(w, err)
		return
	}
	writeMessage(w, http.StatusCreated, "published "+req.modPath+"@"+req.version)
}

// uploadReader keeps the error of reading an upload, which is the
// client's, apart from those of storing it, which are the proxy's.
type uploadReader struct {
	r   io.Reader
	err error
}

func (u *uploadReader) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if err != nil && err != io.EOF {
		u.err = err
	}
	return n, err
}
