package goproxy

import (
	"strings"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/tlog"
)

// kind is the kind of file a request asks for.
type kind int

const (
	kindList kind = iota
	kindLatest
	kindInfo
	kindMod
	kindZip
	kindSumDB // a checksum database file: latest, lookup or tile
)

// request is a validated module proxy request.
type request struct {
	modPath   string // decoded module path
	version   string // decoded version or query; empty for list and @latest
	kind      kind
	canonical bool   // version is a canonical semantic version
	name      string // escaped name: the cache name and the upstream path

	// For checksum database requests:
	db        *sumDB // the database asked
	dbPath    string // the path below /sumdb/<name>/
	immutable bool   // a full tile or a lookup, which never change
	supported bool   // the /sumdb/<name>/supported probe
}

// maxPathLen bounds request paths; module paths are far shorter in practice.
const maxPathLen = 1024

// maxElemLen bounds each element of a request's path, as stored: most file
// systems hold no longer name, so no go command's module cache (nor a
// DirCacher) could store the file. Longer ones are refused up front, the
// same way whatever the Cacher.
const maxElemLen = 255

// checkElemLen refuses a name with an element longer than maxElemLen.
func checkElemLen(name string) error {
	for elem := range strings.SplitSeq(name, "/") {
		if len(elem) > maxElemLen {
			return failed(failBadRequest, "a path element of %d bytes: file systems hold at most %d, so no module cache could store it", len(elem), maxElemLen)
		}
	}
	return nil
}

// parseRequest decodes and validates a module proxy path (without a leading
// slash) with golang.org/x/mod/module, so nothing unchecked reaches a cacher
// or an upstream.
func (p *Proxy) parseRequest(urlPath string) (*request, error) {
	path := strings.TrimPrefix(urlPath, "/")
	if len(path) > maxPathLen {
		return nil, failed(failPathTooLong, "request path is longer than %d bytes", maxPathLen)
	}
	if err := checkElemLen(path); err != nil {
		return nil, err
	}
	if rest, ok := strings.CutPrefix(path, "sumdb/"); ok {
		return p.parseSumDBRequest(rest)
	}
	req := &request{}
	var escPath, file string
	if esc, ok := strings.CutSuffix(path, "/@latest"); ok {
		escPath, req.kind = esc, kindLatest
	} else if i := strings.LastIndex(path, "/@v/"); i >= 0 {
		escPath, file = path[:i], path[i+len("/@v/"):]
		switch {
		case file == "list":
			req.kind = kindList
		case strings.HasSuffix(file, ".info"):
			req.kind = kindInfo
		case strings.HasSuffix(file, ".mod"):
			req.kind = kindMod
		case strings.HasSuffix(file, ".zip"):
			req.kind = kindZip
		default:
			return nil, failed(failNotFound, "unknown file %q: a module proxy serves list, .info, .mod and .zip", file)
		}
	} else {
		return nil, failed(failNotFound, "not a module proxy path: %q", path)
	}
	var err error
	if req.modPath, err = module.UnescapePath(escPath); err != nil {
		return nil, failed(failBadRequest, "%w", err)
	}
	if req.kind == kindList || req.kind == kindLatest {
		req.name = path
		return req.checkName()
	}
	escVersion := file[:strings.LastIndexByte(file, '.')]
	if req.version, err = module.UnescapeVersion(escVersion); err != nil {
		return nil, failed(failBadRequest, "%w", err)
	}
	req.canonical = module.CanonicalVersion(req.version) == req.version
	if req.canonical || req.kind != kindInfo {
		if err := module.Check(req.modPath, req.version); err != nil {
			return nil, failed(failBadRequest, "%w", err)
		}
		if !req.canonical {
			return nil, failed(failBadRequest, "%s@%s: version is not canonical (want %s)", req.modPath, req.version, module.CanonicalVersion(req.version))
		}
	}
	req.name = path
	return req.checkName()
}

// checkName refuses a request whose name a Cacher may not be asked for
// (such as a version query starting with a dot, which git never names a
// branch): it could be neither cached nor told apart from a temporary file.
func (req *request) checkName() (*request, error) {
	if err := checkCacheName(req.name); err != nil {
		return nil, failed(failBadRequest, "%q cannot be stored: an element starts with a dot, or holds a backslash or NUL", req.name)
	}
	return req, nil
}

// parseSumDBRequest validates a checksum database path, below /sumdb/:
// only the databases the proxy is configured for are answered, so it is
// never an open relay.
func (p *Proxy) parseSumDBRequest(path string) (*request, error) {
	if err := checkElemLen(path); err != nil {
		return nil, err
	}
	name, rest, _ := strings.Cut(path, "/")
	db := p.sumdbs[name]
	if db == nil {
		return nil, failed(failNotFound, "checksum database %q is not served by this proxy", name)
	}
	req := &request{kind: kindSumDB, db: db, dbPath: rest, name: "sumdb/" + name + "/" + rest}
	switch {
	case rest == "supported":
		req.supported = true
	case rest == "latest":
	case strings.HasPrefix(rest, "lookup/"):
		escPath, escVersion, ok := strings.Cut(strings.TrimPrefix(rest, "lookup/"), "@")
		if !ok {
			return nil, failed(failBadRequest, "checksum database lookup %q is not module@version", rest)
		}
		var err error
		if req.modPath, err = module.UnescapePath(escPath); err != nil {
			return nil, failed(failBadRequest, "%w", err)
		}
		if req.version, err = module.UnescapeVersion(escVersion); err != nil {
			return nil, failed(failBadRequest, "%w", err)
		}
		if err := module.Check(req.modPath, req.version); err != nil {
			return nil, failed(failBadRequest, "%w", err)
		}
		if module.CanonicalVersion(req.version) != req.version {
			return nil, failed(failBadRequest, "%s@%s: version is not canonical", req.modPath, req.version)
		}
		if p.sumDBExempt(req.modPath) {
			// A private module's path must not reach a public database,
			// even when a client that was not told so asks.
			return nil, failed(failNotFound, "%s is private (GONOSUMDB): it is not looked up in checksum databases", req.modPath)
		}
		req.immutable = true
	case strings.HasPrefix(rest, "tile/"):
		tile, err := tlog.ParseTilePath(rest)
		if err != nil {
			return nil, failed(failBadRequest, "invalid tile path %q", rest)
		}
		// A full tile never changes; a partial one is replaced by a
		// wider one as the log grows.
		req.immutable = tile.W == 1<<tile.H
	default:
		return nil, failed(failNotFound, "unknown checksum database path %q", rest)
	}
	return req.checkName()
}

// mutable reports whether the answer to req may change over time.
func (req *request) mutable() bool {
	if req.kind == kindSumDB {
		return !req.immutable
	}
	return req.kind == kindList || req.kind == kindLatest || !req.canonical
}

// compressible reports whether gzip may pay off: text, not zips or tiles.
func (req *request) compressible() bool {
	return req.kind != kindZip && (req.kind != kindSumDB || !strings.HasPrefix(req.dbPath, "tile/"))
}

func (req *request) maxSize() int64 {
	switch req.kind {
	case kindList:
		return maxListSize
	case kindMod:
		return maxModSize
	case kindZip:
		return maxZipSize
	case kindSumDB:
		return maxSumDBSize
	}
	return maxInfoSize
}

func (req *request) contentType() string {
	switch req.kind {
	case kindLatest, kindInfo:
		return "application/json"
	case kindZip:
		return "application/zip"
	case kindSumDB:
		if strings.HasPrefix(req.dbPath, "tile/") {
			return "application/octet-stream"
		}
	}
	return "text/plain; charset=utf-8"
}

// String names the requested file for messages, as module@version.ext.
func (req *request) String() string {
	switch req.kind {
	case kindList:
		return req.modPath + " version list"
	case kindLatest:
		return req.modPath + "@latest"
	case kindSumDB:
		return "checksum database " + req.db.name + " file " + req.dbPath
	}
	ext := map[kind]string{kindInfo: ".info", kindMod: ".mod", kindZip: ".zip"}[req.kind]
	return req.modPath + "@" + req.version + ext
}
