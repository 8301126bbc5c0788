package moduletest

import (
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/module"
)

// WriteDir lays vs out under dir in the module proxy protocol layout, so
// the go command (GOPROXY=file:///dir) and proxies reading file:// or
// directory upstreams can consume the same fixture as Server.
//
// Besides @v/list and the per-version files it writes <path>/@latest,
// which the go command only consults when @v/list is empty (a module with
// only pseudo-versions). Large zips are hard-linked from ZipFile when
// possible and copied otherwise, never read into memory.
func WriteDir(dir string, vs []*Version) error {
	for path, mvs := range group(vs) {
		escPath, err := module.EscapePath(path)
		if err != nil {
			return err
		}
		vdir := filepath.Join(dir, filepath.FromSlash(escPath), "@v")
		if err := os.MkdirAll(vdir, 0o777); err != nil {
			return err
		}
		var list strings.Builder
		for _, v := range listVersions(mvs) {
			list.WriteString(v + "\n")
		}
		if err := os.WriteFile(filepath.Join(vdir, "list"), []byte(list.String()), 0o666); err != nil {
			return err
		}
		if latest := newest(mvs); latest != nil {
			if err := os.WriteFile(filepath.Join(vdir, "..", "@latest"), latest.Info(), 0o666); err != nil {
				return err
			}
		}
		for _, v := range mvs {
			escVersion, err := module.EscapeVersion(v.Version)
			if err != nil {
				return err
			}
			base := filepath.Join(vdir, escVersion)
			if err := os.WriteFile(base+".info", v.Info(), 0o666); err != nil {
				return err
			}
			if v.Mod != nil {
				if err := os.WriteFile(base+".mod", v.Mod, 0o666); err != nil {
					return err
				}
			}
			if err := writeZip(base+".zip", v); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeZip(dst string, v *Version) error {
	if !v.hasZip() {
		return nil
	}
	if v.ZipFile == "" {
		return os.WriteFile(dst, v.Zip, 0o666)
	}
	os.Remove(dst) // a stale file would make Link fail
	if os.Link(v.ZipFile, dst) == nil {
		return nil
	}
	src, err := os.Open(v.ZipFile)
	if err != nil {
		return err
	}
	defer src.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, src)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
