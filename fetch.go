package goproxy

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"

	"github.com/goproxy-team/goproxy/internal/netrc"
)

// Size caps on what upstreams send. A .mod file is capped where the go
// command caps go.mod files; a zip where module zips are capped.
const (
	maxListSize = 16 << 20
	maxInfoSize = 1 << 20
	maxModSize  = modzip.MaxGoMod
	maxZipSize  = modzip.MaxZipFile
)

// Upstream is one source of modules: a module proxy, "direct" (the
// modules' origin repositories, fetched by the go command) or "off" (a
// refusal).
type Upstream struct {
	// URL is a module proxy's base URL, "direct" or "off". A URL may carry
	// basic-auth credentials in its user information, as in GOPROXY.
	URL string

	// Priority orders the upstreams of a list: higher is tried first.
	// Upstreams of equal priority share the load, each request starting
	// with the next one in turn and falling through to the others when
	// it fails.
	Priority int

	// FallBackOnError lets the walk continue to lower priorities after any
	// error, as '|' does in GOPROXY; otherwise it continues only when the
	// upstream has no such file (404 or 410), as after ','.
	FallBackOnError bool

	// Credentials sent to this upstream and nowhere else (not across a
	// redirect to another host): basic auth, a bearer token, or headers
	// such as an API key. Without them, a .netrc entry for the host is
	// used, as the go command does.
	Username, Password string
	Token              string
	Header             http.Header
}

// Route sends the modules matching Pattern to upstreams of their own. The
// first matching route wins; modules matching none use GOPROXY.
type Route struct {
	// Pattern lists module path patterns, comma-separated, in GOPRIVATE
	// syntax (golang.org/x/mod/module.MatchPrefixPatterns).
	Pattern string

	// Upstreams are the route's sources, tried by priority. ParseUpstreams
	// builds them from a GOPROXY-syntax list.
	Upstreams []Upstream

	// Private keeps the matching modules away from checksum databases, as
	// GONOSUMDB does: their paths are never sent to one, and they are not
	// verified.
	Private bool
}

// ParseUpstreams turns a list in GOPROXY syntax into Upstreams of
// decreasing priority, the way the go command reads GOPROXY: entries
// separated by ',' or '|', "direct" and "off" ending the list, and host
// names without a scheme taken as https.
func ParseUpstreams(list string) ([]Upstream, error) {
	var ups []Upstream
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
			ups = append(ups, Upstream{URL: entry})
			break
		}
		if strings.ContainsAny(entry, ".:/") && !strings.Contains(entry, ":/") && !filepath.IsAbs(entry) {
			entry = "https://" + entry
		}
		if err := checkUpstreamURL(entry); err != nil {
			return nil, err
		}
		ups = append(ups, Upstream{URL: entry, FallBackOnError: fallBack})
	}
	if len(ups) == 0 {
		return nil, errors.New("the upstream list is empty")
	}
	for i := range ups {
		ups[i].Priority = len(ups) - i
	}
	return ups, nil
}

func checkUpstreamURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// Not err itself: url.Parse's errors quote the URL, password and all.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("invalid upstream %q: %v", redactURL(raw), err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("invalid upstream %q: scheme must be http or https", redactURL(raw))
	}
	return nil
}

// settings are the go command's environment variables as the proxy reads them.
type settings struct {
	upstreams []Upstream
	noProxy   string // GONOPROXY, defaulting to GOPRIVATE
	noSumDB   string // GONOSUMDB, defaulting to GOPRIVATE
	private   string // GOPRIVATE
	sumDB     string
	insecure  string
	netrc     []netrc.Line
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
		private:  get("GOPRIVATE"),
		sumDB:    get("GOSUMDB"),
		insecure: get("GOINSECURE"),
	}
	if s.noProxy == "" {
		s.noProxy = s.private
	}
	if s.noSumDB == "" {
		s.noSumDB = s.private
	}
	goproxy := get("GOPROXY")
	if goproxy == "" {
		goproxy = "https://proxy.golang.org,direct"
	}
	var err error
	if s.upstreams, err = ParseUpstreams(goproxy); err != nil {
		return nil, fmt.Errorf("GOPROXY: %w", err)
	}
	if path := netrc.Path(get); path != "" {
		if data, err := os.ReadFile(path); err == nil {
			s.netrc = netrc.Parse(string(data))
		}
	}
	return s, nil
}

// escapeURLPath escapes a cache name for a URL: names hold decoded query
// versions, which may contain '%', '#' or spaces that must reach the
// upstream as the go command sent them, never decoded a second time.
func escapeURLPath(name string) string {
	return (&url.URL{Path: name}).EscapedPath()
}

// redactURL hides the credentials of a URL for logs and error messages:
// the password, or the user name when it stands alone, since that is
// usually a token. It works on the text, so that a URL too malformed to
// parse is redacted too.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if ok {
		scheme += "://"
	} else {
		scheme, rest = "", raw
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return raw
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	if hasPassword {
		user += ":xxxxx"
	} else {
		user = "xxxxx"
	}
	return scheme + user + rest[at:]
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
	busy       bool          // a 408 or 429: the host works, but asks for patience
	noStore    bool          // an answer that neither NotFoundTTL nor shared caches may keep
}

func (e *fetchError) Error() string { return e.msg }
func (e *fetchError) Unwrap() error { return e.err }

// Is makes not-found answers match fs.ErrNotExist, which is what decides
// whether the walk falls through after ','.
func (e *fetchError) Is(target error) bool {
	return target == fs.ErrNotExist && (e.status == http.StatusNotFound || e.status == http.StatusGone)
}

// route is a Route prepared for walking: upstreams grouped by priority.
type route struct {
	patterns string // "" matches everything (the GOPROXY route)
	private  bool
	groups   []*upstreamGroup
}

// upstreamGroup holds upstreams of equal priority, which share the load.
type upstreamGroup struct {
	members []Upstream
	next    atomic.Uint32 // where the next request starts
}

func newRoute(patterns string, ups []Upstream, private bool) (*route, error) {
	if len(ups) == 0 {
		return nil, fmt.Errorf("route %q has no upstreams", patterns)
	}
	for _, up := range ups {
		if up.URL != "direct" && up.URL != "off" {
			if err := checkUpstreamURL(up.URL); err != nil {
				return nil, err
			}
		}
	}
	sorted := slices.Clone(ups)
	slices.SortStableFunc(sorted, func(a, b Upstream) int { return b.Priority - a.Priority })
	r := &route{patterns: patterns, private: private}
	for i, up := range sorted {
		up.URL = strings.TrimSuffix(up.URL, "/")
		if i == 0 || up.Priority != sorted[i-1].Priority {
			r.groups = append(r.groups, &upstreamGroup{})
		}
		g := r.groups[len(r.groups)-1]
		g.members = append(g.members, up)
	}
	return r, nil
}

// initRoutes prepares the routes: the configured ones in order, then
// GONOPROXY's modules to "direct", then GOPROXY for the rest.
func (p *Proxy) initRoutes() error {
	p.routes = nil
	for _, rt := range p.Routes {
		r, err := newRoute(rt.Pattern, rt.Upstreams, rt.Private)
		if err != nil {
			return err
		}
		if rt.Pattern == "" {
			return errors.New("a route has an empty Pattern")
		}
		p.routes = append(p.routes, r)
	}
	if p.settings.noProxy != "" {
		r, _ := newRoute(p.settings.noProxy, []Upstream{{URL: "direct"}}, false)
		p.routes = append(p.routes, r)
	}
	r, err := newRoute("", p.settings.upstreams, false)
	if err != nil {
		return err
	}
	p.routes = append(p.routes, r)
	return nil
}

// routeFor returns the route a module path takes.
func (p *Proxy) routeFor(modPath string) *route {
	for _, r := range p.routes {
		if r.patterns == "" || module.MatchPrefixPatterns(r.patterns, modPath) {
			return r
		}
	}
	return p.routes[len(p.routes)-1]
}

// fetchFromUpstreams walks req's route, following the go command's rules
// for GOPROXY: after ',' fall through only when the upstream says the file
// does not exist, after '|' on any error. Within a group of equal
// priority, each request starts with the next upstream in turn and falls
// through to the others on any failure. The error returned is the most
// telling one, ranked as the go command ranks them: direct's over a
// proxy's, a real failure over a not-found.
func (p *Proxy) fetchFromUpstreams(ctx context.Context, req *request) (*fetched, error) {
	var bestErr error
	bestIsNotFound := true
	passing := false // an upstream failed in a way that may soon pass
	for _, g := range p.routeFor(req.modPath).groups {
		n := uint32(len(g.members))
		first := g.next.Add(1) - 1
		fallThrough := true
		for k := range n {
			up := g.members[(first+k)%n]
			f, err := p.fetchFrom(ctx, up, req)
			if err == nil {
				return f, nil
			}
			if ctx.Err() != nil {
				return nil, err
			}
			passing = passing || !remembered(err)
			notFound := errors.Is(err, fs.ErrNotExist)
			if up.URL == "direct" || bestErr == nil || (bestIsNotFound && !notFound) {
				bestErr, bestIsNotFound = err, notFound
			}
			if !notFound && !up.FallBackOnError {
				fallThrough = false
			}
		}
		if !fallThrough {
			break
		}
	}
	var fe *fetchError
	if passing && remembered(bestErr) && errors.As(bestErr, &fe) {
		// The answer chosen holds, but the walk's outcome also rests on
		// a failure that may pass: the next request must walk again.
		c := *fe
		c.noStore = true
		return nil, &c
	}
	return nil, bestErr
}

// fetchFrom gets req's file from one upstream, validates it and verifies
// it against the checksum database.
func (p *Proxy) fetchFrom(ctx context.Context, up Upstream, req *request) (*fetched, error) {
	if up.URL == "off" {
		return nil, errProxyOff
	}
	start := time.Now()
	p.prefetchSumDBRecord(ctx, req)
	var f *fetched
	var err error
	if up.URL == "direct" {
		f, err = p.fetchDirect(ctx, req)
	} else {
		f, err = p.downloader.get(ctx, up.URL+"/"+escapeURLPath(req.name), target{
			module: req.modPath, version: req.version, toFile: req.kind == kindZip, limit: req.maxSize(),
		})
	}
	if err == nil {
		meterFrom(ctx).step() // validating takes time, bringing no bytes
		err = req.validate(f)
		if err == nil && req.kind == kindZip && !p.verifies(req) {
			// Hashing for the checksum database reads every entry, which
			// checks their CRCs; without it, read them here.
			err = checkZipContents(f.file, f.size)
		}
		if err != nil {
			err = &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("invalid %s from upstream %s: %v", req, redactURL(up.URL), err), err: err}
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
		slog.String("upstream", redactURL(up.URL)), slog.Int64("bytes", size),
		slog.Duration("duration", time.Since(start)), slog.String("outcome", outcome))
	return f, err
}

// credentialsTransport adds each upstream's credentials to the requests for
// that upstream only: matched by scheme, host and path prefix on every
// request, including each hop of a redirect, so they never follow a
// redirect to another host. Hosts with a .netrc entry get its basic auth.
type credentialsTransport struct {
	base      http.RoundTripper
	upstreams []Upstream // with credentials, longest URL first
	netrc     []netrc.Line
}

func newCredentialsTransport(base http.RoundTripper, routes []*route, lines []netrc.Line) http.RoundTripper {
	t := &credentialsTransport{base: base, netrc: lines}
	for _, r := range routes {
		for _, g := range r.groups {
			for _, up := range g.members {
				if up.Username != "" || up.Token != "" || len(up.Header) > 0 {
					t.upstreams = append(t.upstreams, up)
				}
			}
		}
	}
	slices.SortFunc(t.upstreams, func(a, b Upstream) int { return len(b.URL) - len(a.URL) })
	return t
}

func (t *credentialsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") != "" {
		return t.base.RoundTrip(r) // from the URL's user information
	}
	target := r.URL.Scheme + "://" + r.URL.Host + r.URL.Path
	for _, up := range t.upstreams {
		u, err := url.Parse(up.URL)
		if err != nil || u.Scheme != r.URL.Scheme || u.Host != r.URL.Host || !strings.HasPrefix(target, strings.TrimSuffix(up.URL, "/")+"/") {
			continue
		}
		r = r.Clone(r.Context())
		switch {
		case up.Token != "":
			r.Header.Set("Authorization", "Bearer "+up.Token)
		case up.Username != "":
			r.SetBasicAuth(up.Username, up.Password)
		}
		for k, vs := range up.Header {
			r.Header[http.CanonicalHeaderKey(k)] = vs
		}
		return t.base.RoundTrip(r)
	}
	// As the go command: .netrc credentials go over https only.
	if line, ok := netrc.Find(t.netrc, r.URL.Hostname()); ok && r.URL.Scheme == "https" {
		r = r.Clone(r.Context())
		r.SetBasicAuth(line.Login, line.Password)
	}
	return t.base.RoundTrip(r)
}

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
