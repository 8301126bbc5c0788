package goproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
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

// upstream is one entry of a GOPROXY-syntax list.
type upstream struct {
	// url is the base URL without a trailing slash, or "direct" or "off".
	url string
	// fallBackOnError is set when the entry was followed by '|': the next
	// entry is tried after any error, not only after not-found.
	fallBackOnError bool
}

// settings are the go command's environment variables as the proxy reads them.
type settings struct {
	upstreams []upstream
	noProxy   string // GONOPROXY, defaulting to GOPRIVATE
	noSumDB   string // GONOSUMDB, defaulting to GOPRIVATE
	sumDB     string
	insecure  string
}

// readSettings reads the go command's variables from env, applying the same
// defaults and fallbacks as the go command.
func readSettings(env []string) (*settings, error) {
	get := func(key string) string {
		// The last definition wins, as with os/exec.
		for i := len(env) - 1; i >= 0; i-- {
			if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
				return v
			}
		}
		return ""
	}
	s := &settings{
		noProxy:  get("GONOPROXY"),
		noSumDB:  get("GONOSUMDB"),
		sumDB:    get("GOSUMDB"),
		insecure: get("GOINSECURE"),
	}
	private := get("GOPRIVATE")
	if s.noProxy == "" {
		s.noProxy = private
	}
	if s.noSumDB == "" {
		s.noSumDB = private
	}
	if s.sumDB == "" {
		s.sumDB = "sum.golang.org"
	}
	goproxy := get("GOPROXY")
	if goproxy == "" {
		goproxy = "https://proxy.golang.org,direct"
	}
	var err error
	if s.upstreams, err = parseProxyList(goproxy); err != nil {
		return nil, err
	}
	return s, nil
}

// parseProxyList parses a list in GOPROXY syntax the way the go command does:
// entries separated by ',' or '|', "direct" and "off" ending the list, and
// host names without a scheme taken as https.
func parseProxyList(list string) ([]upstream, error) {
	var ups []upstream
	for list != "" {
		entry := list
		fallBack := false
		list = ""
		if i := strings.IndexAny(entry, ",|"); i >= 0 {
			fallBack = entry[i] == '|'
			entry, list = entry[:i], entry[i+1:]
		}
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		if entry == "off" || entry == "direct" {
			// The go command ignores what follows these, reserving it for
			// future use; so do we.
			ups = append(ups, upstream{url: entry})
			break
		}
		if strings.ContainsAny(entry, ".:/") && !strings.Contains(entry, ":/") && !filepath.IsAbs(entry) {
			entry = "https://" + entry
		}
		u, err := url.Parse(entry)
		if err != nil {
			return nil, fmt.Errorf("invalid GOPROXY entry %q: %w", redactURL(entry), err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("invalid GOPROXY entry %q: scheme must be http or https", u.Redacted())
		}
		ups = append(ups, upstream{url: strings.TrimSuffix(entry, "/"), fallBackOnError: fallBack})
	}
	if len(ups) == 0 {
		return nil, errors.New("GOPROXY lists no upstream")
	}
	return ups, nil
}

// redactURL hides the password of a URL for logs and error messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if i := strings.LastIndexByte(s, '@'); i >= 0 {
			return "…" + s[i:]
		}
		return s
	}
	return u.Redacted()
}

// errDirectNotConfigured answers requests that reach "direct", until direct
// fetching exists.
var errDirectNotConfigured = &fetchError{
	status: http.StatusNotFound,
	msg:    "direct fetching from origin repositories is not configured on this proxy",
}

// errProxyOff answers requests that reach "off", in the go command's words.
var errProxyOff = &fetchError{
	status: http.StatusForbidden,
	msg:    "module lookup disabled by GOPROXY=off",
}

// fetchError is a failed fetch as the client will see it.
type fetchError struct {
	status int    // HTTP status for the client
	msg    string // what the client reads
	err    error  // the cause, if any

	retry      bool          // another attempt may succeed
	retryAfter time.Duration // what the upstream asked to wait, if anything
}

func (e *fetchError) Error() string { return e.msg }
func (e *fetchError) Unwrap() error { return e.err }

// Is makes not-found answers match fs.ErrNotExist, which is what decides
// whether the walk falls through after ','.
func (e *fetchError) Is(target error) bool {
	return target == fs.ErrNotExist && (e.status == http.StatusNotFound || e.status == http.StatusGone)
}

// fetchFromUpstreams walks the upstream list for req, following the go
// command's rules: after ',' fall through only when the upstream says the
// file does not exist, after '|' on any error. The error returned is the most
// telling one, ranked as the go command ranks them: a real failure over a
// not-found.
func (p *Proxy) fetchFromUpstreams(ctx context.Context, req *request) (*fetched, error) {
	ups := p.settings.upstreams
	if module.MatchPrefixPatterns(p.settings.noProxy, req.modPath) {
		ups = []upstream{{url: "direct"}}
	}
	var bestErr error
	bestIsNotFound := true
	for _, up := range ups {
		var f *fetched
		var err error
		switch up.url {
		case "off":
			err = errProxyOff
		case "direct":
			err = errDirectNotConfigured
		default:
			f, err = p.fetchFromProxy(ctx, up.url, req)
		}
		if err == nil {
			return f, nil
		}
		notFound := errors.Is(err, fs.ErrNotExist)
		// The go command ranks errors so: direct's error over any proxy's,
		// a proxy's failure over a not-found.
		if up.url == "direct" || bestErr == nil || (bestIsNotFound && !notFound) {
			bestErr, bestIsNotFound = err, notFound
		}
		if !up.fallBackOnError && !notFound {
			break
		}
	}
	return nil, bestErr
}

// fetchFromProxy downloads req's file from one upstream proxy, validates
// it and verifies it against the checksum database.
func (p *Proxy) fetchFromProxy(ctx context.Context, base string, req *request) (*fetched, error) {
	start := time.Now()
	p.prefetchSumDBRecord(ctx, req)
	f, err := p.downloader.get(ctx, base+"/"+req.name, target{
		module: req.modPath, version: req.version, toFile: req.kind == kindZip, limit: req.maxSize(),
	})
	if err == nil {
		if err = req.validate(f); err != nil {
			err = &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("invalid %s from upstream %s: %v", req, redactURL(base), err), err: err}
		} else if err = p.verify(ctx, req, f); errors.Is(err, errUnverified) {
			f.unverified, err = true, nil
		}
		if err != nil {
			f.close()
			f = nil
		}
	}
	outcome := "ok"
	var size int64
	if f != nil {
		size = f.size
	} else {
		outcome = err.Error()
	}
	p.logger().LogAttrs(ctx, levelFor(err), "upstream fetch",
		slog.String("module", req.modPath), slog.String("version", req.version), slog.String("file", req.name),
		slog.String("upstream", redactURL(base)), slog.Int64("bytes", size),
		slog.Duration("duration", time.Since(start)), slog.String("outcome", outcome))
	return f, err
}

// validate checks a fetched file before it may be cached or served.
func (req *request) validate(f *fetched) error {
	switch req.kind {
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
