package main

import (
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/dnsquic"
	"github.com/goproxy-team/goproxy/internal/netrc"
)

// plan is a configuration checked and resolved: secrets read, upstreams
// parsed, every repository described by what makes its Proxy. The server
// runs on a plan; a reload makes a new one and switches to it only if it
// is complete.
type plan struct {
	cfg        *Config
	src        *configSources
	identities *identities
	repos      []*repoPlan
}

// repoPlan is one repository, resolved.
type repoPlan struct {
	Repository
	key  string // the config key of the repository, "" for the only one
	spec proxySpec
	auth *goproxy.StaticAuth
}

// proxySpec is everything a repository's goproxy.Proxy is made of,
// secrets included. Two equal specs make equivalent Proxies, so a reload
// keeps the Proxy (its memory, its downloads in flight) when the spec of
// its repository did not change.
type proxySpec struct {
	Cache, Hosted, TempDir string
	CacheS3, HostedS3      *s3Spec // instead of Cache, Hosted
	Env                    []string
	Netrc                  string // the content of the .netrc the Proxy reads
	Routes                 []goproxy.Route
	SumDBs                 []string
	SumDBTTL               time.Duration
	MutableTTL             time.Duration
	NotFoundTTL            time.Duration
	AllowUnverified        bool
	HotCacheBytes          int64
	Offline                bool
	StaleWhileRevalidate   time.Duration
	Scrub                  scrubSpec
	Direct                 goproxy.DirectOptions
	Download               goproxy.DownloadOptions
	Prefetch               goproxy.PrefetchOptions
	Dialer                 dialerSpec
	Admission              AdmissionConfig
	Eviction               goproxy.Eviction
}

// scrubSpec is goproxy.ScrubOptions, its quarantine a directory.
type scrubSpec struct {
	Interval       time.Duration
	BytesPerSecond int64
	Quarantine     string
}

// dialerSpec is a goproxy.Dialer and its Resolver, comparable.
type dialerSpec struct {
	Proxy                 string
	Servers, Bootstrap    []string
	DNSTimeout            time.Duration
	CAPEM                 []byte
	DialTimeout           time.Duration
	TLSHandshakeTimeout   time.Duration
	ResponseHeaderTimeout time.Duration
	IdleConnTimeout       time.Duration
}

var (
	identityName   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]*$`)
	repositoryName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	prefixPattern  = regexp.MustCompile(`^(/[A-Za-z0-9][A-Za-z0-9._~-]*)+$`)
)

// reservedPrefixes are the server's own paths, which no repository may
// shadow. (The metrics' path is checked apart: it is configured.)
var reservedPrefixes = []string{"/-", "/healthz", "/readyz"}

// Validate checks the configuration, every problem at once (errors.Join),
// each naming its key and, for keys from the config file, the file and
// line. It reads the secrets and checks the certificate, as starting
// would.
func (c *Config) Validate(src *configSources, env []string) error {
	_, err := newPlan(c, src, env)
	return err
}

// newPlan checks and resolves cfg. env is the server's environment.
func newPlan(cfg *Config, src *configSources, env []string) (*plan, error) {
	p := &problems{src: src}
	getenv := lookupIn(env)
	pl := &plan{cfg: cfg, src: src}

	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		p.add("addr", "%q is not a listen address (host:port, or :port): %v", cfg.Addr, err)
	}
	checkTLS(cfg.TLS, p)
	for key, d := range map[string]Duration{
		"http.read_header_timeout": cfg.HTTP.ReadHeaderTimeout, "http.read_timeout": cfg.HTTP.ReadTimeout,
		"http.write_timeout": cfg.HTTP.WriteTimeout, "http.idle_timeout": cfg.HTTP.IdleTimeout,
		"http.shutdown_timeout": cfg.HTTP.ShutdownTimeout, "readyz.timeout": cfg.Readyz.Timeout,
	} {
		if d < 0 {
			p.add(key, "must not be negative (0 turns it off)")
		}
	}
	if cfg.HTTP.MaxHeaderBytes < 0 {
		p.add("http.max_header_bytes", "must not be negative")
	}
	if _, err := parseLevel(cfg.Log.Level); err != nil {
		p.add("log.level", "%v", err)
	}
	if cfg.Log.Format != "text" && cfg.Log.Format != "json" {
		p.add("log.format", "%q is not text or json", cfg.Log.Format)
	}
	switch cfg.Progress.Mode {
	case progressAuto, progressBars, progressLines, progressOff:
	default:
		p.add("progress.mode", "%q is not auto, bars, lines or off", cfg.Progress.Mode)
	}
	if cfg.Progress.Interval <= 0 {
		p.add("progress.interval", "must be positive")
	}
	if cfg.Progress.MinSize < 0 || cfg.Progress.MinDuration < 0 {
		p.add("progress", "min_size and min_duration must not be negative")
	}
	if cfg.Status.ScanInterval <= 0 {
		p.add("status_page.scan_interval", "must be positive")
	}
	if cfg.Status.PageSize <= 0 {
		p.add("status_page.page_size", "must be positive")
	}
	pl.identities = resolveIdentities(cfg, getenv, p)
	dialer := resolveDialer(cfg.Dialer, getenv, p)
	checkMetrics(cfg, pl.identities, p)

	if len(cfg.Repositories) > 0 {
		top := cfg.Repository
		top.Cache = ""
		if !isZeroRepository(top) {
			p.add("repositories", "with repositories listed, repository settings (such as goproxy, type or access) go in each repository, not at the top level")
		}
	}
	repos, keys := cfg.repositories()
	names, prefixes := map[string]string{}, map[string]string{}
	for i, r := range repos {
		key := keys[i]
		rp := resolveRepository(cfg, r, key, env, dialer, pl.identities, p)
		if other, ok := names[r.Name]; ok {
			p.add(join(key, "name"), "%q is also the name of %s", r.Name, other)
		}
		names[r.Name] = cmpKey(key)
		if other, ok := prefixes[r.Prefix]; ok {
			p.add(join(key, "prefix"), "%q is also the prefix of %s", r.Prefix, other)
		}
		prefixes[r.Prefix] = cmpKey(key)
		pl.repos = append(pl.repos, rp)
	}
	checkMetricsPath(cfg, pl.repos, p)
	for i, a := range pl.repos {
		for _, b := range pl.repos[i+1:] {
			if a.Prefix != "/" && b.Prefix != "/" && (strings.HasPrefix(a.Prefix, b.Prefix+"/") || strings.HasPrefix(b.Prefix, a.Prefix+"/")) {
				p.add(join(b.key, "prefix"), "%q and %q nest: a module path under one would be taken for the other", a.Prefix, b.Prefix)
			}
			// A directory within another is as shared as the same one:
			// the outer store's walks, eviction and scrubs would take
			// the inner one's files for its own.
			if a.Cache != "" && sameDir(a.Cache, b.Cache) {
				p.add(join(b.key, "cache"), "%s is also the cache of %s: give each repository its own", b.Cache, cmpKey(a.key))
			} else if nestedDirs(a.Cache, b.Cache) {
				p.add(join(b.key, "cache"), "%s and the cache of %s (%s) nest: give each repository a directory of its own, none within another", b.Cache, cmpKey(a.key), a.Cache)
			}
			for _, x := range [][2]string{{a.Hosted, b.Hosted}, {a.Hosted, b.Cache}, {a.Cache, b.Hosted}} {
				if x[0] != "" && nestedDirs(x[0], x[1]) {
					p.add(join(b.key, "hosted"), "%s and %s, used by %s and %s, are the same or nest: published versions would be mixed with other files", x[0], x[1], cmpKey(a.key), cmpKey(b.key))
				}
			}
			for _, x := range [][2]*s3Spec{{a.spec.CacheS3, b.spec.CacheS3}, {a.spec.HostedS3, b.spec.HostedS3}, {a.spec.CacheS3, b.spec.HostedS3}, {a.spec.HostedS3, b.spec.CacheS3}} {
				if x[0].nests(x[1]) {
					p.add(b.key, "the buckets of %s (%s) and %s (%s) overlap: give each store its own prefix, none within another", cmpKey(a.key), x[0], cmpKey(b.key), x[1])
				}
			}
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return pl, nil
}

func cmpKey(key string) string {
	if key == "" {
		return "the repository"
	}
	return key
}

// join makes the key of field in the repository at key.
func join(key, field string) string {
	if key == "" {
		return field
	}
	return key + "." + field
}

func sameDir(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
}

// nestedDirs reports whether a and b are the same directory or one is
// within the other.
func nestedDirs(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	if err1 != nil || err2 != nil {
		return false
	}
	within := func(inner, outer string) bool {
		rel, err := filepath.Rel(outer, inner)
		return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
	}
	return within(aa, bb) || within(bb, aa)
}

func isZeroRepository(r Repository) bool {
	return r.Name == "" && r.Prefix == "" && r.Type == "" && r.Hosted == "" && r.CacheS3 == nil && r.HostedS3 == nil &&
		r.GOPROXY == nil && r.GONOPROXY == nil && r.GOPRIVATE == nil && r.GOSUMDB == nil &&
		r.GONOSUMDB == nil && r.GOINSECURE == nil && r.NETRC == nil && len(r.Routes) == 0 &&
		len(r.SumDBs) == 0 && r.SumDBTTL == 0 && !r.AllowUnverified && r.MutableTTL == 0 &&
		r.NotFoundTTL == 0 && r.HotCacheBytes == 0 && !r.Offline && r.StaleWhileRevalidate == 0 && r.Scrub == (ScrubConfig{}) &&
		r.Direct == (DirectConfig{}) &&
		r.Download == (DownloadConfig{}) && r.Prefetch == (PrefetchConfig{}) && r.Access.AnonymousRead == nil && len(r.Access.Grants) == 0 &&
		r.Admission.isZero() && r.Eviction == (EvictionConfig{})
}

func checkTLS(t TLSConfig, p *problems) {
	switch {
	case t.CertFile == "" && t.KeyFile == "":
	case t.CertFile == "":
		p.add("tls.cert_file", "must be set with tls.key_file")
	case t.KeyFile == "":
		p.add("tls.key_file", "must be set with tls.cert_file")
	default:
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			p.add("tls", "%v", err)
		}
	}
}

// identities are the users and tokens of the server, secrets resolved.
type identities struct {
	users  map[string]identity // by name
	tokens map[string]identity // by token
}

type identity struct {
	name   string
	secret string
	digest [sha256.Size]byte
	admin  bool
}

func resolveIdentities(cfg *Config, getenv func(string) string, p *problems) *identities {
	ids := &identities{users: map[string]identity{}, tokens: map[string]identity{}}
	for _, name := range sortedKeys(cfg.Users) {
		u := cfg.Users[name]
		key := "users." + name
		if !identityName.MatchString(name) {
			p.add(key, "a name is letters, digits and . _ @ -, starting with a letter or digit")
		}
		pw, err := readSecret(getenv, u.PasswordEnv, u.PasswordFile)
		switch {
		case err != nil:
			p.add(key, "password: %v", err)
		case pw == "":
			p.add(key, "password_env or password_file must be set")
		}
		ids.users[name] = identity{name, pw, sha256.Sum256([]byte(pw)), u.Admin}
	}
	for _, name := range sortedKeys(cfg.Tokens) {
		t := cfg.Tokens[name]
		key := "tokens." + name
		if !identityName.MatchString(name) {
			p.add(key, "a name is letters, digits and . _ @ -, starting with a letter or digit")
		}
		if _, ok := cfg.Users[name]; ok {
			p.add(key, "%q is also a user: a name is one identity", name)
		}
		tok, err := readSecret(getenv, t.TokenEnv, t.TokenFile)
		switch {
		case err != nil:
			p.add(key, "token: %v", err)
		case tok == "":
			p.add(key, "token_env or token_file must be set")
		default:
			if other, ok := ids.tokens[tok]; ok {
				p.add(key, "has the same token as tokens.%s", other.name)
			}
			ids.tokens[tok] = identity{name, tok, sha256.Sum256([]byte(tok)), t.Admin}
		}
	}
	return ids
}

// has reports whether name is a user or a token.
func (ids *identities) has(name string) bool {
	if _, ok := ids.users[name]; ok {
		return true
	}
	for _, t := range ids.tokens {
		if t.name == name {
			return true
		}
	}
	return false
}

func resolveDialer(d DialerConfig, getenv func(string) string, p *problems) dialerSpec {
	s := dialerSpec{
		Proxy: d.Proxy, Servers: d.DNSServers, Bootstrap: d.DNSBootstrap, DNSTimeout: time.Duration(d.DNSTimeout),
		DialTimeout: time.Duration(d.DialTimeout), TLSHandshakeTimeout: time.Duration(d.TLSHandshakeTimeout),
		ResponseHeaderTimeout: time.Duration(d.ResponseHeaderTimeout), IdleConnTimeout: time.Duration(d.IdleConnTimeout),
	}
	if len(s.Servers) == 0 {
		if v := getenv("DNS_SERVER"); v != "" {
			s.Servers = strings.Split(v, ",")
		}
	}
	pw, err := readSecret(getenv, d.ProxyPasswordEnv, d.ProxyPasswordFile)
	if err != nil {
		p.add("dialer.proxy_password_env", "%v", err)
	}
	if d.ProxyUsername != "" || pw != "" {
		u, err := url.Parse(d.Proxy)
		if err != nil || d.Proxy == "" || u.Host == "" {
			p.add("dialer.proxy", "must be a URL when proxy_username or a password is set")
		} else {
			u.User = url.UserPassword(d.ProxyUsername, pw)
			s.Proxy = u.String()
		}
	}
	if d.CAFile != "" {
		pem, err := os.ReadFile(d.CAFile)
		if err != nil {
			p.add("dialer.ca_file", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			p.add("dialer.ca_file", "%s has no PEM certificate", d.CAFile)
		}
		s.CAPEM = pem
	}
	for key, v := range map[string]Duration{"dialer.dns_timeout": d.DNSTimeout, "dialer.dial_timeout": d.DialTimeout,
		"dialer.tls_handshake_timeout": d.TLSHandshakeTimeout, "dialer.response_header_timeout": d.ResponseHeaderTimeout,
		"dialer.idle_conn_timeout": d.IdleConnTimeout} {
		if v < 0 {
			p.add(key, "must not be negative")
		}
	}
	return s
}

// goEnvKeys are the go command's variables a repository may set.
var goEnvKeys = []string{"GOPROXY", "GONOPROXY", "GOPRIVATE", "GOSUMDB", "GONOSUMDB", "GOINSECURE", "NETRC"}

func resolveRepository(cfg *Config, r Repository, key string, env []string, dialer dialerSpec, ids *identities, p *problems) *repoPlan {
	rp := &repoPlan{Repository: r, key: key}
	if key != "" && !repositoryName.MatchString(r.Name) {
		p.add(join(key, "name"), "%q: a name is letters, digits and . _ -, starting with a letter or digit", r.Name)
	}
	switch {
	case key == "" && r.Prefix == "/":
	case !prefixPattern.MatchString(r.Prefix):
		p.add(join(key, "prefix"), "%q is not a path prefix such as /corp (no trailing slash)", r.Prefix)
	default:
		for _, res := range reservedPrefixes {
			if r.Prefix == res || strings.HasPrefix(r.Prefix, res+"/") {
				p.add(join(key, "prefix"), "%s is the server's own", res)
			}
		}
	}
	if r.CacheS3 != nil && r.Cache != "" {
		p.add(join(key, "cache_s3"), "cache is set too: give the directory or the bucket")
	}
	if r.HostedS3 != nil && r.Hosted != "" {
		p.add(join(key, "hosted_s3"), "hosted is set too: give the directory or the bucket")
	}
	if r.Cache == "" && r.CacheS3 == nil {
		dir, err := os.UserCacheDir()
		if err != nil {
			p.add(join(key, "cache"), "not set, and there is no user cache directory to default to (%v): set cache or -cache", err)
		} else {
			rp.Cache = filepath.Join(dir, "goproxy")
			if key != "" {
				rp.Cache = filepath.Join(rp.Cache, r.Name)
			}
		}
	}
	vars := map[string]*string{"GOPROXY": r.GOPROXY, "GONOPROXY": r.GONOPROXY, "GOPRIVATE": r.GOPRIVATE,
		"GOSUMDB": r.GOSUMDB, "GONOSUMDB": r.GONOSUMDB, "GOINSECURE": r.GOINSECURE, "NETRC": r.NETRC}
	switch r.Type {
	case typeProxy:
		if r.Hosted != "" || r.HostedS3 != nil {
			p.add(join(key, "hosted"), "a proxy repository has no hosted store: make it type group (published and upstream modules) or hosted")
		}
	case typeHosted:
		if r.Hosted == "" && r.HostedS3 == nil {
			p.add(join(key, "hosted"), "a hosted repository needs the directory of its published versions")
		}
		for _, k := range []string{"GOPROXY", "GONOPROXY"} {
			if vars[k] != nil {
				p.add(join(key, strings.ToLower(k)), "a hosted repository has no upstreams: make it type group to have both")
			}
		}
		if len(r.Routes) > 0 {
			p.add(join(key, "routes"), "a hosted repository has no upstreams: make it type group to have both")
		}
		off := "off"
		vars["GOPROXY"], vars["GONOPROXY"] = &off, new(string)
	case typeGroup:
		if r.Hosted == "" && r.HostedS3 == nil {
			p.add(join(key, "hosted"), "a group repository needs the directory of its published versions")
		}
	default:
		p.add(join(key, "type"), "%q is not proxy, hosted or group", r.Type)
	}

	s := &rp.spec
	s.Cache, s.Hosted, s.TempDir = rp.Cache, r.Hosted, cfg.TempDir
	s.CacheS3 = resolveS3(r.CacheS3, join(key, "cache_s3"), true, lookupIn(env), p)
	s.HostedS3 = resolveS3(r.HostedS3, join(key, "hosted_s3"), false, lookupIn(env), p)
	if s.CacheS3.nests(s.HostedS3) {
		p.add(join(key, "hosted_s3"), "%s and the cache's %s overlap: published versions must be kept apart from cached ones, which may be removed", s.HostedS3, s.CacheS3)
	}
	s.Env = slices.Clone(env)
	for _, k := range goEnvKeys {
		if v := vars[k]; v != nil {
			s.Env = append(s.Env, k+"="+*v)
		}
	}
	getenv := lookupIn(s.Env)
	if v := getenv("GOPROXY"); v != "" {
		if _, err := goproxy.ParseUpstreams(v); err != nil {
			p.add(join(key, "goproxy"), "%v", err)
		}
	}
	if path := netrc.Path(getenv); path != "" {
		if data, err := os.ReadFile(path); err == nil {
			s.Netrc = string(data)
		}
	}
	s.Routes = resolveRoutes(r.Routes, key, lookupIn(env), p)
	s.SumDBs = r.SumDBs
	s.SumDBTTL, s.MutableTTL, s.NotFoundTTL = time.Duration(r.SumDBTTL), time.Duration(r.MutableTTL), time.Duration(r.NotFoundTTL)
	s.AllowUnverified, s.HotCacheBytes = r.AllowUnverified, int64(r.HotCacheBytes)
	s.Offline, s.StaleWhileRevalidate = r.Offline, time.Duration(r.StaleWhileRevalidate)
	s.Scrub = scrubSpec{Interval: time.Duration(r.Scrub.Interval), BytesPerSecond: int64(r.Scrub.Rate), Quarantine: r.Scrub.Quarantine}
	for _, dir := range []string{rp.Cache, r.Hosted} {
		if nestedDirs(r.Scrub.Quarantine, dir) {
			p.add(join(key, "scrub.quarantine"), "%s is, or nests with, the cache or the hosted store: give the quarantine a directory of its own", dir)
		}
	}
	s.Direct = goproxy.DirectOptions{GoBin: r.Direct.GoBin, Timeout: time.Duration(r.Direct.Timeout),
		MaxConcurrent: r.Direct.MaxConcurrent, MaxCacheBytes: int64(r.Direct.MaxCacheBytes)}
	d := r.Download
	s.Download = goproxy.DownloadOptions{Connections: d.Connections, RangeThreshold: int64(d.RangeThreshold),
		MaxConcurrent: d.MaxConcurrent, Attempts: d.Attempts, RetryBudget: d.RetryBudget, DownAfter: time.Duration(d.DownAfter),
		BaseDelay: time.Duration(d.BaseDelay), MaxDelay: time.Duration(d.MaxDelay),
		HeaderTimeout: time.Duration(d.HeaderTimeout), BodyIdleTimeout: time.Duration(d.BodyIdleTimeout),
		Timeout: time.Duration(d.Timeout), PartialDir: d.PartialDir, PartialBytes: int64(d.PartialBytes)}
	s.Prefetch = goproxy.PrefetchOptions{Off: r.Prefetch.Off, NoInfo: r.Prefetch.NoInfo, Info: r.Prefetch.Info, Depth: r.Prefetch.Depth, Concurrency: r.Prefetch.Concurrency}
	s.Dialer = dialer
	for k, v := range map[string]int64{"direct.max_concurrent": int64(r.Direct.MaxConcurrent), "download.connections": int64(d.Connections),
		"prefetch.depth": int64(r.Prefetch.Depth), "prefetch.concurrency": int64(r.Prefetch.Concurrency),
		"download.max_concurrent": int64(d.MaxConcurrent), "download.attempts": int64(d.Attempts), "download.range_threshold": int64(d.RangeThreshold),
		"direct.timeout": int64(r.Direct.Timeout), "download.timeout": int64(d.Timeout), "download.base_delay": int64(d.BaseDelay),
		"download.max_delay": int64(d.MaxDelay), "download.header_timeout": int64(d.HeaderTimeout),
		"download.body_idle_timeout": int64(d.BodyIdleTimeout), "sumdb_ttl": int64(r.SumDBTTL),
		"stale_while_revalidate": int64(r.StaleWhileRevalidate), "scrub.interval": int64(r.Scrub.Interval), "scrub.rate": int64(r.Scrub.Rate)} {
		if v < 0 {
			p.add(join(key, k), "must not be negative")
		}
	}
	s.Eviction = resolveEviction(r.Eviction, key, p)
	rp.auth = resolveAccess(r.Access, key, ids, p)
	s.Admission = r.Admission
	checkAdmission(&s.Admission, key, p)
	if r.Offline && s.Admission.Cooldown.IndexFeed != "" {
		// An offline repository connects nowhere; the feed's reads would
		// be the one exception, and quietly failing them would leave the
		// cooldown refusing every version it has no first-seen record for.
		p.add(join(key, "admission.cooldown.index_feed"), "set on an offline repository, which connects nowhere: versions are dated by their first-seen records instead")
	}

	if nestedDirs(rp.Cache, r.Hosted) {
		p.add(join(key, "hosted"), "%s is, or nests with, the cache: published versions must be kept apart from cached ones, which may be removed", r.Hosted)
		return rp
	}
	// The library has the last word on what it is given. (Init makes
	// nothing on disk and starts nothing: that waits for the first
	// request.)
	// (The admission policy is checked above: its vulnerability database
	// need not be read twice.)
	checked := *s
	checked.Admission = AdmissionConfig{}
	if check, _, err := newProxy(&checked, filepath.Join(os.TempDir(), "goproxy-check"), nil, nil, goproxy.Metrics{}, nil); err != nil {
		p.add(cmpKeyOr(key), "%v", err)
	} else {
		check.Close()
	}
	return rp
}

func cmpKeyOr(key string) string {
	if key == "" {
		return "goproxy"
	}
	return key
}

func resolveRoutes(routes []RouteConfig, key string, getenv func(string) string, p *problems) []goproxy.Route {
	var out []goproxy.Route
	for i, rc := range routes {
		rkey := fmt.Sprintf("%s[%d]", join(key, "routes"), i)
		rt := goproxy.Route{Pattern: rc.Pattern, Private: rc.Private}
		if rc.Pattern == "" {
			p.add(join(rkey, "pattern"), "must list module path patterns (GOPRIVATE syntax)")
		}
		switch {
		case rc.GOPROXY != "" && len(rc.Upstreams) > 0:
			p.add(rkey, "give goproxy or upstreams, not both")
		case rc.GOPROXY != "":
			ups, err := goproxy.ParseUpstreams(rc.GOPROXY)
			if err != nil {
				p.add(join(rkey, "goproxy"), "%v", err)
			}
			rt.Upstreams = ups
		case len(rc.Upstreams) == 0:
			p.add(rkey, "needs goproxy or upstreams")
		}
		for j, uc := range rc.Upstreams {
			ukey := fmt.Sprintf("%s.upstreams[%d]", rkey, j)
			up := goproxy.Upstream{URL: uc.URL, Priority: uc.Priority, FallBackOnError: uc.FallBackOnError, Username: uc.Username}
			if _, err := goproxy.ParseUpstreams(uc.URL); err != nil || uc.URL == "" || strings.ContainsAny(uc.URL, ",|") {
				p.add(join(ukey, "url"), "%q is not one upstream URL, direct or off", uc.URL)
			}
			var err error
			if up.Password, err = readSecret(getenv, uc.PasswordEnv, uc.PasswordFile); err != nil {
				p.add(join(ukey, "password_env"), "%v", err)
			}
			if up.Token, err = readSecret(getenv, uc.TokenEnv, uc.TokenFile); err != nil {
				p.add(join(ukey, "token_env"), "%v", err)
			}
			for _, name := range sortedKeys(uc.Headers) {
				ref := uc.Headers[name]
				v, err := readSecret(getenv, ref.Env, ref.File)
				if err == nil && v == "" {
					err = fmt.Errorf("give env or file")
				}
				if err != nil {
					p.add(join(ukey, "headers."+name), "%v", err)
					continue
				}
				if up.Header == nil {
					up.Header = http.Header{}
				}
				up.Header.Set(name, v)
			}
			rt.Upstreams = append(rt.Upstreams, up)
		}
		out = append(out, rt)
	}
	return out
}

// resolveAccess makes the repository's StaticAuth. Every identity of
// the server is known to it, granted nothing unless the repository
// says, so that credentials valid elsewhere are answered 403 rather than
// asked for again.
func resolveAccess(a AccessConfig, key string, ids *identities, p *problems) *goproxy.StaticAuth {
	auth := &goproxy.StaticAuth{AnonymousRead: "*", Users: map[string]goproxy.User{}, Tokens: map[string]goproxy.Grant{}}
	if a.AnonymousRead != nil {
		auth.AnonymousRead = *a.AnonymousRead
	}
	for _, name := range sortedKeys(a.Grants) {
		if !ids.has(name) {
			p.add(join(key, "access.grants."+name), "%q is neither a user nor a token", name)
		}
	}
	for name, u := range ids.users {
		g := a.Grants[name]
		auth.Users[name] = goproxy.User{Password: u.secret, Grant: goproxy.Grant{Read: g.Read, Publish: g.Publish, Administer: g.Administer}}
	}
	for tok, t := range ids.tokens {
		g := a.Grants[t.name]
		auth.Tokens[tok] = goproxy.Grant{Read: g.Read, Publish: g.Publish, Administer: g.Administer}
	}
	return auth
}

// newProxy makes and initializes a repository's Proxy, and its admission
// policy. metrics are its hooks, admission decisions included. (They are
// not in the spec: funcs do not compare, and a kept Proxy keeps the hooks
// it was made with, which are its repository's.)
//
// anonymous, if not nil, reports whether a module may be read without
// credentials: with cache_s3.redirect_downloads, only such modules' zips
// are redirected to the bucket, since the redirect's URL is readable by
// whoever holds it.
func newProxy(s *proxySpec, directDir string, logger *slog.Logger, authorize func(*http.Request, goproxy.Operation, string) error,
	metrics goproxy.Metrics, anonymous func(modulePath string) bool) (*goproxy.Proxy, *admission, error) {
	dialer, err := s.Dialer.dialer(s.Env)
	if err != nil {
		return nil, nil, err
	}
	cache, hosted, err := s.stores()
	if err != nil {
		return nil, nil, err
	}
	direct := s.Direct
	direct.Dir = directDir
	p := &goproxy.Proxy{
		Cacher:          cache,
		Hosted:          hosted,
		Env:             s.Env,
		Dialer:          dialer,
		TempDir:         s.TempDir,
		Routes:          s.Routes,
		SumDBs:          s.SumDBs,
		SumDBTTL:        s.SumDBTTL,
		MutableTTL:      s.MutableTTL,
		NotFoundTTL:     s.NotFoundTTL,
		AllowUnverified: s.AllowUnverified,
		HotCacheBytes:   s.HotCacheBytes,
		Offline:         s.Offline,
		Direct:          direct,
		Download:        s.Download,
		Eviction:        s.Eviction,
		Metrics:         metrics,
		Prefetch:        s.Prefetch,
		Authorize:       authorize,
		Logger:          logger,

		StaleWhileRevalidate: s.StaleWhileRevalidate,
		Scrub:                goproxy.ScrubOptions{Interval: s.Scrub.Interval, BytesPerSecond: s.Scrub.BytesPerSecond},
	}
	if s.Scrub.Quarantine != "" {
		p.Scrub.Quarantine = goproxy.DirCacher(s.Scrub.Quarantine)
	}
	if c := s.CacheS3; c != nil && c.Redirect {
		p.Redirect = goproxy.DownloadRedirect{Enabled: true, Expiry: c.RedirectExpiry,
			Allow: func(_ *http.Request, modulePath string) bool { return anonymous != nil && anonymous(modulePath) }}
	}
	adm := newAdmission(s.Admission, p, logger)
	if err := p.Init(); err != nil {
		return nil, nil, err
	}
	if err := adm.connect(p); err != nil {
		p.Close()
		return nil, nil, err
	}
	return p, adm, nil
}

// dialer makes the Dialer of the spec. env gives the proxy variables
// when Proxy is empty.
func (d dialerSpec) dialer(env []string) (*goproxy.Dialer, error) {
	out := &goproxy.Dialer{
		Proxy:                 d.Proxy,
		DialTimeout:           d.DialTimeout,
		TLSHandshakeTimeout:   d.TLSHandshakeTimeout,
		ResponseHeaderTimeout: d.ResponseHeaderTimeout,
		IdleConnTimeout:       d.IdleConnTimeout,
		Env:                   env,
	}
	var tlsConfig *tls.Config
	if len(d.CAPEM) > 0 {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(d.CAPEM)
		tlsConfig = &tls.Config{RootCAs: pool}
		out.TLSConfig = tlsConfig
	}
	if len(d.Servers) > 0 {
		out.Resolver = &goproxy.Resolver{
			Servers:   d.Servers,
			Bootstrap: d.Bootstrap,
			Timeout:   d.DNSTimeout,
			TLSConfig: tlsConfig,
			QUIC:      new(dnsquic.Transport),
		}
	}
	// Transport reports a bad proxy URL or resolver now, not at the first
	// fetch.
	if _, err := out.Transport(); err != nil {
		return nil, fmt.Errorf("dialer: %w", err)
	}
	return out, nil
}

// lookupIn returns a getenv for env, in which the last definition wins.
func lookupIn(env []string) func(string) string {
	return func(key string) string {
		for i := len(env) - 1; i >= 0; i-- {
			if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
				return v
			}
		}
		return ""
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp.Compare)
	return keys
}
