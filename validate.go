package goproxy

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
)

// Size caps on what upstreams send. A .mod file is capped where the go
// command caps go.mod files; a zip where module zips are capped.
const (
	maxListSize = 16 << 20
	maxInfoSize = 1 << 20
	maxModSize  = modzip.MaxGoMod
	maxZipSize  = modzip.MaxZipFile
)

// validate checks a fetched file before it may be cached or served. A
// version list is rewritten as its valid versions only.
func (req *request) validate(f *fetched) error {
	switch req.kind {
	case kindList:
		list, err := normalizeVersionList(req.modPath, f.data)
		if err != nil {
			return err
		}
		f.data, f.size = list, int64(len(list))
	case kindInfo, kindLatest:
		var info struct {
			Version string
			Time    time.Time
		}
		if err := json.Unmarshal(f.data, &info); err != nil {
			return fmt.Errorf("not a version info JSON object: %w", err)
		}
		if req.kind == kindInfo && req.canonical {
			if info.Version != req.version {
				return fmt.Errorf("info is for version %q, not %q", info.Version, req.version)
			}
			return nil
		}
		if err := module.Check(req.modPath, info.Version); err != nil {
			return err
		}
		if module.CanonicalVersion(info.Version) != info.Version {
			return fmt.Errorf("version %q is not canonical", info.Version)
		}
	case kindMod:
		if _, err := modfile.ParseLax(req.name, f.data, nil); err != nil {
			return err
		}
	case kindZip:
		cf, err := modzip.CheckZip(module.Version{Path: req.modPath, Version: req.version}, f.file.Name())
		if err != nil {
			return err
		}
		if err := cf.Err(); err != nil {
			return err
		}
	}
	return nil
}

// normalizeVersionList keeps the lines of a version list that name a valid
// canonical version of modPath, as the go command reads them: the first
// field of each line, with the second kept when it is the RFC 3339 time
// the go command also reads. Duplicates go, the order stays; every line
// ends in a newline. A list with text but no valid version is an error,
// while an empty one is a module without tagged versions.
func normalizeVersionList(modPath string, data []byte) ([]byte, error) {
	var out bytes.Buffer
	seen := map[string]bool{}
	text := false
	// +incompatible marks a major version (v2 and up) without its path
	// suffix, so a path with one has none, nor does v0 or v1 (the go
	// command refuses them too; module.Check does not).
	_, pathMajor, _ := module.SplitPathVersion(modPath)
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		text = true
		v := f[0]
		if seen[v] || module.CanonicalVersion(v) != v || module.Check(modPath, v) != nil ||
			semver.Build(v) == "+incompatible" && (pathMajor != "" || semver.Major(v) == "v0" || semver.Major(v) == "v1") {
			continue
		}
		seen[v] = true
		out.WriteString(v)
		if len(f) > 1 {
			// In UTC a time may leave the years RFC 3339 can write
			// (9999-12-31T23:59:59-23:59), and the go command could not
			// read it back.
			if t, err := time.Parse(time.RFC3339, f[1]); err == nil && t.UTC().Year() >= 0 && t.UTC().Year() <= 9999 {
				out.WriteString(" " + t.UTC().Format(time.RFC3339))
			}
		}
		out.WriteByte('\n')
	}
	if text && out.Len() == 0 {
		return nil, errors.New("the version list names no valid version of the module")
	}
	return out.Bytes(), nil
}

// checkZipEntries checks the CRC-32 of every entry of a fetched zip: the
// scan did as it arrived, if it could follow the zip; else the file is
// read.
func checkZipEntries(ctx context.Context, f *fetched) error {
	if f.verifiedScan(ctx) != nil {
		return nil
	}
	return checkZipContents(f.file, f.size)
}

// verifiedScan returns the scan a streamed zip had as it arrived, if the
// scan could follow it to its end (CRC-32s and hashes checked), else nil:
// the file must be read.
func (f *fetched) verifiedScan(ctx context.Context) *zipScan {
	if f.stream == nil {
		return nil
	}
	if scan := f.stream.scanned(ctx); scan != nil && scan.verified {
		return scan
	}
	return nil
}

// checkZipContents reads every entry of a zip, which makes archive/zip
// check each one's CRC-32: golang.org/x/mod/zip.CheckZip looks at names and
// sizes only, so damaged content would otherwise pass.
func checkZipContents(f *os.File, size int64) error {
	zr, err := zip.NewReader(f, size)
	if err != nil {
		return err
	}
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			return fmt.Errorf("%s: %w", zf.Name, err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", zf.Name, err)
		}
	}
	return nil
}
