package goproxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

// Module files as fills, bundles and imports handle them, outside a
// request: their names in the GOPROXY layout, and the checks a file must
// pass before it is stored.

// The module proxy files of one version a fill, export or import handles.
var moduleFileExts = []struct {
	files FillFiles
	ext   string
}{{FillInfo, ".info"}, {FillMod, ".mod"}, {FillZip, ".zip"}}

// maxModuleInfoSize caps a .info file, as the proxy caps one fetched.
const maxModuleInfoSize = 1 << 20

// moduleFileName is the cache name (and GOPROXY-layout path) of a module
// version's file with extension ext (".info", ".mod" or ".zip").
func moduleFileName(path, version, ext string) (string, error) {
	escPath, err := module.EscapePath(path)
	if err != nil {
		return "", err
	}
	escVersion, err := module.EscapeVersion(version)
	if err != nil {
		return "", err
	}
	return escPath + "/@v/" + escVersion + ext, nil
}

// parseModuleFileName is the inverse of moduleFileName: it accepts only
// names of .info, .mod and .zip files of valid, canonical module versions.
func parseModuleFileName(name string) (path, version, ext string, err error) {
	escPath, file, ok := strings.Cut(name, "/@v/")
	if !ok || strings.Contains(file, "/") {
		return "", "", "", fmt.Errorf("%q is not a module file name (<module>/@v/<version>.<ext>)", name)
	}
	for _, e := range moduleFileExts {
		if strings.HasSuffix(file, e.ext) {
			ext = e.ext
		}
	}
	if ext == "" {
		return "", "", "", fmt.Errorf("%q is not a .info, .mod or .zip file", name)
	}
	if path, err = module.UnescapePath(escPath); err != nil {
		return "", "", "", fmt.Errorf("%q: %w", name, err)
	}
	if version, err = module.UnescapeVersion(strings.TrimSuffix(file, ext)); err != nil {
		return "", "", "", fmt.Errorf("%q: %w", name, err)
	}
	if err := checkFillVersion(path, version); err != nil {
		return "", "", "", err
	}
	return path, version, ext, nil
}

// checkInfoFile checks a .info file as the proxy checks one it fetched.
func checkInfoFile(m module.Version, data []byte) error {
	var info struct {
		Version string
		Time    time.Time
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return fmt.Errorf("%s@%s.info: not a version info JSON object: %w", m.Path, m.Version, err)
	}
	if info.Version != m.Version {
		return fmt.Errorf("%s@%s.info: info is for version %q", m.Path, m.Version, info.Version)
	}
	return nil
}

// checkModFile parses a .mod file as the go command does, returning its
// go.sum hash.
func checkModFile(m module.Version, data []byte) (string, error) {
	if len(data) > modzip.MaxGoMod {
		return "", fmt.Errorf("%s@%s.mod: larger than %d bytes", m.Path, m.Version, modzip.MaxGoMod)
	}
	if _, err := modfile.ParseLax(m.Path+"@"+m.Version+".mod", data, nil); err != nil {
		return "", err
	}
	return dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}

// checkZipFile checks a module zip on disk as the proxy checks one it
// fetched (names, sizes, and each entry's CRC-32, which
// golang.org/x/mod/zip.CheckZip does not read), returning its go.sum hash.
func checkZipFile(m module.Version, name string) (string, error) {
	cf, err := modzip.CheckZip(m, name)
	if err != nil {
		return "", fmt.Errorf("%s@%s.zip: %w", m.Path, m.Version, err)
	}
	if err := cf.Err(); err != nil {
		return "", fmt.Errorf("%s@%s.zip: %w", m.Path, m.Version, err)
	}
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if err := checkZipContents(f, fi.Size()); err != nil {
		return "", fmt.Errorf("%s@%s.zip: %w", m.Path, m.Version, err)
	}
	h, err := dirhash.HashZip(name, dirhash.Hash1)
	if err != nil {
		return "", fmt.Errorf("%s@%s.zip: %w", m.Path, m.Version, err)
	}
	return h, nil
}

// checkSumLines checks a hash against the go.sum lines a checksum
// database recorded for a module version: the line for the zip (suffix
// "") or for the go.mod (suffix "/go.mod").
func checkSumLines(m module.Version, lines []string, suffix, got string) error {
	prefix := m.Path + " " + m.Version + suffix + " "
	var want []string
	for _, line := range lines {
		if h, ok := strings.CutPrefix(line, prefix); ok {
			if h == got {
				return nil
			}
			want = append(want, h)
		}
	}
	if len(want) == 0 {
		return fmt.Errorf("%s@%s%s: the checksum database has no hash for it", m.Path, m.Version, suffix)
	}
	return fmt.Errorf("%s@%s%s: checksum mismatch: the file hashes to %s, the checksum database recorded %s",
		m.Path, m.Version, suffix, got, strings.Join(want, ", "))
}
