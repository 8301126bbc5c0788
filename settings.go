package goproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/goproxy-team/goproxy/internal/netrc"
)

// goEnv holds the go command's environment variables as the proxy reads
// them.
type goEnv struct {
	upstreams []Upstream
	noProxy   string // GONOPROXY, defaulting to GOPRIVATE
	noSumDB   string // GONOSUMDB, defaulting to GOPRIVATE
	private   string // GOPRIVATE
	sumDB     string
	insecure  string
	netrc     []netrc.Line
}

// readGoEnv reads the go command's variables from env, applying the same
// defaults and fallbacks as the go command.
func readGoEnv(env []string) (*goEnv, error) {
	get := func(key string) string {
		// The last definition wins, as with os/exec.
		for i := len(env) - 1; i >= 0; i-- {
			if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
				return v
			}
		}
		return ""
	}
	s := &goEnv{
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

// config is the Proxy's own copy of its configuration, taken by Init from
// the exported fields with every default applied. Requests read it, never
// the fields: a field changed after Init has no effect.
type config struct {
	// proxyEnv is Env as given, nil for the process environment; env is
	// the environment in effect.
	proxyEnv, env []string
	goEnv         *goEnv

	cacher, hosted Cacher
	transport      http.RoundTripper // nil: built from dialer
	// dialer has the Dialer's settings, its Env defaulting to Env.
	dialer    *Dialer
	routes    []Route
	sumDBs    []string
	authorize func(r *http.Request, op Operation, modulePath string) error
	egress    EgressPolicy
	logger    *slog.Logger

	// TTLs: zero means never fresh (mutable entries) or not remembered
	// (not-found answers).
	mutableTTL, notFoundTTL, sumDBTTL time.Duration
	hotCacheBytes                     int64 // zero disables the hot cache
	allowUnverified                   bool
	tempDir                           string
	download                          DownloadOptions
	prefetch                          PrefetchOptions
	direct                            DirectOptions
	redirect                          DownloadRedirect
	eviction                          Eviction
	metrics                           *Metrics // never nil
	offline                           bool
	staleGrace                        time.Duration // zero: no stale-while-revalidate
	scrub                             ScrubOptions  // defaults applied
	admission                         func(context.Context, AdmissionCandidate) AdmissionDecision
	// writeTemp, if set, writes a publish's upload to its temporary
	// file instead of (*os.File).Write: tests make a disk full with it.
	writeTemp func(f *os.File, b []byte) (int, error)
}

// configure copies the exported fields into a config, applying the
// defaults their documentation gives: the one place they are applied.
func (p *Proxy) configure() (*config, error) {
	c := &config{
		proxyEnv:        slices.Clone(p.Env),
		cacher:          p.Cacher,
		hosted:          p.Hosted,
		transport:       p.Transport,
		sumDBs:          slices.Clone(p.SumDBs),
		authorize:       p.Authorize,
		egress:          p.Egress,
		logger:          p.Logger,
		mutableTTL:      ttlOrDefault(p.MutableTTL, time.Minute),
		notFoundTTL:     ttlOrDefault(p.NotFoundTTL, time.Minute),
		sumDBTTL:        ttlOrDefault(p.SumDBTTL, 30*time.Second),
		hotCacheBytes:   p.HotCacheBytes,
		allowUnverified: p.AllowUnverified,
		tempDir:         p.TempDir,
		redirect:        p.Redirect.withDefaults(),
		eviction:        p.Eviction,
		metrics:         new(p.Metrics),
		offline:         p.Offline,
		staleGrace:      max(p.StaleWhileRevalidate, 0),
		scrub:           p.Scrub.withDefaults(),
		admission:       p.Admission,
	}
	c.env = c.proxyEnv
	if c.env == nil {
		c.env = os.Environ()
	}
	var err error
	if c.goEnv, err = readGoEnv(c.env); err != nil {
		return nil, err
	}
	if c.cacher == nil {
		dir, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("no Cacher set and no user cache directory: %w", err)
		}
		c.cacher = DirCacher(filepath.Join(dir, "goproxy"))
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	c.egress.Allow = slices.Clone(c.egress.Allow)
	c.dialer = &Dialer{}
	if p.Dialer != nil {
		c.dialer = p.Dialer.withPolicy(nil)
	}
	if c.dialer.Env == nil {
		// Env covers the egress proxy variables too: with Env set, the
		// process's HTTP_PROXY and the like are not read.
		c.dialer.Env = c.proxyEnv
	}
	for _, rt := range p.Routes {
		rt.Upstreams = slices.Clone(rt.Upstreams)
		for i := range rt.Upstreams {
			rt.Upstreams[i].Header = rt.Upstreams[i].Header.Clone()
		}
		c.routes = append(c.routes, rt)
	}
	switch {
	case c.hotCacheBytes == 0:
		c.hotCacheBytes = 64 << 20
	case c.hotCacheBytes < 0:
		c.hotCacheBytes = 0
	}
	if c.tempDir == "" {
		c.tempDir = os.TempDir()
	}
	c.download = p.Download.withDefaults(c.tempDir)
	c.prefetch = p.Prefetch.withDefaults()
	c.metrics = new(p.Metrics)
	if c.direct, err = p.Direct.withDefaults(c.tempDir); err != nil {
		return nil, err
	}
	return c, nil
}

// ttlOrDefault applies the rule of the Proxy's TTL fields: zero means def,
// a negative value none.
func ttlOrDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return max(d, 0)
}

// logger returns the configured logger; it is valid once Init has run.
func (p *Proxy) logger() *slog.Logger {
	if p.conf == nil || p.conf.logger == nil {
		return slog.Default()
	}
	return p.conf.logger
}

// withDefaults returns o with every zero field set to its default.
func (o DownloadOptions) withDefaults(tempDir string) DownloadOptions {
	if o.Connections <= 0 {
		o.Connections = 12
	}
	if o.RangeThreshold <= 0 {
		o.RangeThreshold = 512 << 10
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 16
	}
	if o.Attempts <= 0 {
		o.Attempts = 30
	}
	if o.RetryBudget == 0 {
		o.RetryBudget = 2
	}
	if o.DownAfter == 0 {
		o.DownAfter = 10 * time.Second
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = 5 * time.Millisecond
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 10 * time.Second
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = 30 * time.Second
	}
	if o.BodyIdleTimeout <= 0 {
		o.BodyIdleTimeout = 30 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.PartialDir == "" {
		o.PartialDir = filepath.Join(tempDir, "goproxy-partial")
	}
	if o.PartialBytes == 0 {
		o.PartialBytes = 1 << 30
	}
	return o
}

// withDefaults returns o with every zero field set to its default, Dir
// made absolute.
func (o DirectOptions) withDefaults(tempDir string) (DirectOptions, error) {
	if o.GoBin == "" {
		o.GoBin = "go"
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(tempDir, "goproxy-direct")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("direct: DirectOptions.Dir: %w", err)
	}
	o.Dir = dir
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 4
	}
	if o.MaxCacheBytes == 0 {
		o.MaxCacheBytes = 1 << 30
	}
	return o, nil
}
