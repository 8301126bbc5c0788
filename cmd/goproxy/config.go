package main

import (
	"fmt"
	"strings"
	"time"
)

// Config is the whole configuration of the server, as the config file
// spells it (YAML or JSON, keys in snake_case). Defaults, the file, the
// environment and the flags are merged into one Config by loadConfig, in
// that order of precedence.
//
// The fields of Repository, inline at the top level, describe the one
// repository a server has when Repositories is empty: a one-repository
// config stays one line ("cache: /var/cache/goproxy"). With Repositories,
// only Cache may be set at the top level, where it is the directory under
// which each repository without a cache of its own gets one, named after it.
type Config struct {
	// Addr is the listen address (flag -addr, GOPROXY_ADDR).
	Addr string `yaml:"addr" json:"addr"`
	// TempDir holds downloads while they are validated, and the go
	// command's work directories for direct fetches. Empty means the
	// system's temporary directory.
	TempDir string `yaml:"temp_dir" json:"temp_dir"`
	// DirectDir holds the go command's module caches for direct fetches,
	// one directory per repository. It belongs to this server process alone.
	// Empty means a new directory in TempDir, removed at exit.
	DirectDir string `yaml:"direct_dir" json:"direct_dir"`

	TLS       TLSConfig       `yaml:"tls" json:"tls"`
	HTTP      HTTPConfig      `yaml:"http" json:"http"`
	Log       LogConfig       `yaml:"log" json:"log"`
	AccessLog AccessLogConfig `yaml:"access_log" json:"access_log"`
	AuditLog  AuditLogConfig  `yaml:"audit_log" json:"audit_log"`
	Readyz    ReadyzConfig    `yaml:"readyz" json:"readyz"`
	Progress  ProgressConfig  `yaml:"progress" json:"progress"`
	Status    StatusConfig    `yaml:"status_page" json:"status_page"`
	Dialer    DialerConfig    `yaml:"dialer" json:"dialer"`
	Metrics   MetricsConfig   `yaml:"metrics" json:"metrics"`

	// Users are the basic-auth identities, by name.
	Users map[string]UserConfig `yaml:"users,omitempty" json:"users,omitempty"`
	// Tokens are the bearer-token identities, by name. Names are shared
	// with Users: one name is one identity.
	Tokens map[string]TokenConfig `yaml:"tokens,omitempty" json:"tokens,omitempty"`

	// Repository is the server's only repository when Repositories is
	// empty, served at Prefix (default "/").
	Repository `yaml:",inline" json:",inline"`
	// Repositories are served each under its own path prefix.
	Repositories []Repository `yaml:"repositories,omitempty" json:"repositories,omitempty"`
}

// TLSConfig turns on HTTPS. The files are read again whenever they
// change, so a renewed certificate is presented to new connections
// without a restart.
type TLSConfig struct {
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
}

// HTTPConfig bounds what clients may hold. Zero disables a limit.
type HTTPConfig struct {
	// ReadHeaderTimeout is how long a client has to send its request
	// header: without it, connections that never finish their headers
	// hold file descriptors until the server can accept no more.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout" json:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, upload included.
	ReadTimeout Duration `yaml:"read_timeout" json:"read_timeout"`
	// WriteTimeout bounds writing a response: large zips to slow clients
	// take long, so it is off by default.
	WriteTimeout Duration `yaml:"write_timeout" json:"write_timeout"`
	// IdleTimeout closes keep-alive connections left idle.
	IdleTimeout Duration `yaml:"idle_timeout" json:"idle_timeout"`
	// MaxHeaderBytes bounds a request header.
	MaxHeaderBytes ByteSize `yaml:"max_header_bytes" json:"max_header_bytes"`
	// ShutdownTimeout is how long requests in flight may go on after
	// SIGINT or SIGTERM before their connections are cut.
	ShutdownTimeout Duration `yaml:"shutdown_timeout" json:"shutdown_timeout"`
}

// LogConfig is the server's own log: start, stop, reloads, and what the
// library logs (fetches, errors), each line of a request with its ID.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level" json:"level"`
	// Format is text or json.
	Format string `yaml:"format" json:"format"`
	// File receives the log, opened for appending and opened again on
	// reload (for log rotation). Empty means standard error.
	File string `yaml:"file" json:"file"`
}

// AccessLogConfig is the log of requests: one line each.
type AccessLogConfig struct {
	// File receives the access log. Empty means the server's log.
	File string `yaml:"file" json:"file"`
	// Disabled turns the access log off.
	Disabled bool `yaml:"disabled" json:"disabled"`
}

// AuditLogConfig is the log of publishing, deleting and administering,
// allowed or refused, kept apart so that it can be shipped and retained
// on its own.
type AuditLogConfig struct {
	// File receives the audit log. Empty means the server's log, where
	// audit lines carry log=audit.
	File string `yaml:"file" json:"file"`
}

// ReadyzConfig tunes /readyz.
type ReadyzConfig struct {
	// CheckUpstreams makes /readyz also require that every repository's
	// upstream proxies answer HTTP (any status).
	CheckUpstreams bool `yaml:"check_upstreams" json:"check_upstreams"`
	// Timeout bounds each check.
	Timeout Duration `yaml:"timeout" json:"timeout"`
}

// ProgressConfig is how downloads in flight are shown while the server
// runs.
type ProgressConfig struct {
	// Mode is auto (bars on a terminal, lines elsewhere), bars (even
	// where no terminal is detected), lines or off. Flag -progress,
	// GOPROXY_PROGRESS.
	Mode string `yaml:"mode" json:"mode"`
	// Interval is the least time between two progress lines of one
	// download.
	Interval Duration `yaml:"interval" json:"interval"`
	// MinSize and MinDuration choose the downloads that get progress
	// lines: those of at least MinSize bytes, and those that have lasted
	// MinDuration.
	MinSize     ByteSize `yaml:"min_size" json:"min_size"`
	MinDuration Duration `yaml:"min_duration" json:"min_duration"`
}

// StatusConfig is the status page at the server's root.
type StatusConfig struct {
	// Disabled turns the status page off: / then lists the repositories
	// as text, unless a repository is served there.
	Disabled bool `yaml:"disabled" json:"disabled"`
	// ScanInterval is how often each repository's cache and hosted store
	// are walked for their size and modules. A walk stats every file, so
	// large caches want a longer interval.
	ScanInterval Duration `yaml:"scan_interval" json:"scan_interval"`
	// PageSize is how many modules a page lists.
	PageSize int `yaml:"page_size" json:"page_size"`
}

// MetricsConfig is the Prometheus endpoint: what every repository's
// Proxy measures (requests, upstream fetches, downloads, the cache,
// eviction), with the Go runtime's and the process's figures.
type MetricsConfig struct {
	// Enabled serves the metrics. The status page's figures are kept
	// either way.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Path is where they are served: on the server's addr, or on Addr
	// when it is set.
	Path string `yaml:"path" json:"path"`
	// Access is who may read them: open (anyone who reaches the server),
	// or admin (an identity with admin: true, by basic auth or bearer
	// token, as Prometheus's scrape configuration can send).
	Access string `yaml:"access" json:"access"`
	// Addr, if set, serves the metrics on a listen address of their own
	// (plain HTTP, only there), such as one that only the monitoring
	// network reaches. Empty means the server's addr.
	Addr string `yaml:"addr" json:"addr"`
}

// Metrics access levels (metrics.access).
const (
	metricsOpen  = "open"
	metricsAdmin = "admin"
)

// DialerConfig is how the server reaches upstreams, checksum databases
// and, through the go command, origin repositories.
type DialerConfig struct {
	// Proxy is the egress proxy URL (http://, https://, socks5://,
	// socks5h://), or "direct". Empty means the proxy variables of the
	// environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, ALL_PROXY,
	// SOCKS5_PROXY).
	Proxy string `yaml:"proxy" json:"proxy"`
	// ProxyUsername and ProxyPassword are the egress proxy's credentials,
	// put into Proxy's URL.
	ProxyUsername     string `yaml:"proxy_username" json:"proxy_username"`
	ProxyPasswordEnv  string `yaml:"proxy_password_env" json:"proxy_password_env"`
	ProxyPasswordFile string `yaml:"proxy_password_file" json:"proxy_password_file"`
	// DNSServers are resolvers tried in order (udp://, tcp://, tls://,
	// https://, quic://). Empty means DNS_SERVER (comma-separated) from the
	// environment, else the system resolver.
	DNSServers []string `yaml:"dns_servers,omitempty" json:"dns_servers,omitempty"`
	// DNSBootstrap resolve the names in DNSServers (IP addresses only).
	DNSBootstrap []string `yaml:"dns_bootstrap,omitempty" json:"dns_bootstrap,omitempty"`
	// DNSTimeout bounds one query to one DNS server.
	DNSTimeout Duration `yaml:"dns_timeout" json:"dns_timeout"`
	// CAFile lists in PEM the certificates trusted for upstreams, DNS
	// servers and https:// proxies. Empty means the system's.
	CAFile string `yaml:"ca_file" json:"ca_file"`

	DialTimeout           Duration `yaml:"dial_timeout" json:"dial_timeout"`
	TLSHandshakeTimeout   Duration `yaml:"tls_handshake_timeout" json:"tls_handshake_timeout"`
	ResponseHeaderTimeout Duration `yaml:"response_header_timeout" json:"response_header_timeout"`
	IdleConnTimeout       Duration `yaml:"idle_conn_timeout" json:"idle_conn_timeout"`
}

// UserConfig is a basic-auth identity. Its password comes from an
// environment variable or a file (one of the two), never from the config
// file itself.
type UserConfig struct {
	PasswordEnv  string `yaml:"password_env" json:"password_env"`
	PasswordFile string `yaml:"password_file" json:"password_file"`
	// Admin lets the user administer the server: reload its
	// configuration. What it may do in a repository is that repository's
	// grant.
	Admin bool `yaml:"admin" json:"admin"`
}

// TokenConfig is a bearer-token identity. The token comes from an
// environment variable or a file.
type TokenConfig struct {
	TokenEnv  string `yaml:"token_env" json:"token_env"`
	TokenFile string `yaml:"token_file" json:"token_file"`
	Admin     bool   `yaml:"admin" json:"admin"`
}

// Repository is one module proxy of the server, under its own path
// prefix: "proxy" fetches from upstreams and caches, "hosted" serves only
// what is published to it, "group" does both from one URL, published
// versions winning.
type Repository struct {
	// Name names the repository in logs and in the default cache
	// directory. Empty means the prefix without slashes, or "root".
	Name string `yaml:"name" json:"name"`
	// Prefix is the URL path the repository is served under, such as
	// "/corp": GOPROXY=https://host/corp. Empty means "/" for the only
	// repository.
	Prefix string `yaml:"prefix" json:"prefix"`
	// Type is proxy (the default), hosted or group.
	Type string `yaml:"type" json:"type"`
	// Cache is the directory of cached files (flag -cache, GOPROXY_CACHE).
	Cache string `yaml:"cache" json:"cache"`
	// Hosted is the directory of published versions, for hosted and group
	// repositories. It must keep everything and differ from Cache.
	Hosted string `yaml:"hosted" json:"hosted"`
	// CacheS3 keeps the cache in a bucket of an S3-compatible store
	// instead of the Cache directory: every server (replica) configured
	// with the same bucket and prefix shares it, fetching each file once
	// between them.
	CacheS3 *S3Config `yaml:"cache_s3,omitempty" json:"cache_s3,omitempty"`
	// HostedS3 keeps the published versions in a bucket instead of the
	// Hosted directory.
	HostedS3 *S3Config `yaml:"hosted_s3,omitempty" json:"hosted_s3,omitempty"`

	// The go command's settings, as the go command reads them. Unset, each
	// is taken from the environment of the server, as the go command would.
	GOPROXY    *string `yaml:"goproxy,omitempty" json:"goproxy,omitempty"`
	GONOPROXY  *string `yaml:"gonoproxy,omitempty" json:"gonoproxy,omitempty"`
	GOPRIVATE  *string `yaml:"goprivate,omitempty" json:"goprivate,omitempty"`
	GOSUMDB    *string `yaml:"gosumdb,omitempty" json:"gosumdb,omitempty"`
	GONOSUMDB  *string `yaml:"gonosumdb,omitempty" json:"gonosumdb,omitempty"`
	GOINSECURE *string `yaml:"goinsecure,omitempty" json:"goinsecure,omitempty"`
	NETRC      *string `yaml:"netrc,omitempty" json:"netrc,omitempty"`

	// Routes send modules matching a pattern to upstreams of their own.
	Routes []RouteConfig `yaml:"routes,omitempty" json:"routes,omitempty"`

	SumDBs          []string `yaml:"sumdbs,omitempty" json:"sumdbs,omitempty"`
	SumDBTTL        Duration `yaml:"sumdb_ttl" json:"sumdb_ttl"`
	AllowUnverified bool     `yaml:"allow_unverified" json:"allow_unverified"`
	MutableTTL      Duration `yaml:"mutable_ttl" json:"mutable_ttl"`
	NotFoundTTL     Duration `yaml:"not_found_ttl" json:"not_found_ttl"`
	HotCacheBytes   ByteSize `yaml:"hot_cache_bytes" json:"hot_cache_bytes"`

	// Offline serves only what the cache and the hosted store hold: no
	// upstream and no checksum database is ever contacted, and what is
	// not cached answers 404 saying so. For a repository filled in
	// advance (goproxy fill, goproxy import) where there is no network.
	Offline bool `yaml:"offline" json:"offline"`
	// StaleWhileRevalidate is how long past mutable_ttl a version list,
	// @latest or query answer is still answered at once from the cache
	// while it is refreshed in the background. Zero (the default) waits
	// for the upstreams once the answer is past mutable_ttl.
	StaleWhileRevalidate Duration `yaml:"stale_while_revalidate" json:"stale_while_revalidate"`
	// Scrub re-checks the cached .mod and .zip files on a schedule.
	Scrub ScrubConfig `yaml:"scrub" json:"scrub"`

	Direct   DirectConfig   `yaml:"direct" json:"direct"`
	Download DownloadConfig `yaml:"download" json:"download"`
	Prefetch PrefetchConfig `yaml:"prefetch" json:"prefetch"`
	Access   AccessConfig   `yaml:"access" json:"access"`
	// Admission decides which module versions the repository serves,
	// lists and fetches.
	Admission AdmissionConfig `yaml:"admission" json:"admission"`
	// Eviction bounds the cache (not the hosted store) by age and size.
	Eviction EvictionConfig `yaml:"eviction" json:"eviction"`
}

// S3Config is a bucket of an S3-compatible store (s3cacher.Cacher). Its
// credentials come from environment variables or files (one of the two
// for each), never from the config file; with none given, the store's
// usual search applies: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
// MINIO_ROOT_USER and MINIO_ROOT_PASSWORD, the AWS shared credentials
// file, and the machine's IAM role.
type S3Config struct {
	// Endpoint is the store's URL, https://host[:port] or
	// http://host[:port]. Empty means AWS S3.
	Endpoint string `yaml:"endpoint" json:"endpoint"`
	// Bucket must exist: the server never creates it.
	Bucket string `yaml:"bucket" json:"bucket"`
	// Prefix is put before every key, so that repositories (or other
	// users) can share a bucket.
	Prefix string `yaml:"prefix" json:"prefix"`
	// Region is the bucket's. Empty means asking the store once.
	Region string `yaml:"region" json:"region"`

	AccessKeyIDEnv      string `yaml:"access_key_id_env" json:"access_key_id_env"`
	AccessKeyIDFile     string `yaml:"access_key_id_file" json:"access_key_id_file"`
	SecretAccessKeyEnv  string `yaml:"secret_access_key_env" json:"secret_access_key_env"`
	SecretAccessKeyFile string `yaml:"secret_access_key_file" json:"secret_access_key_file"`
	SessionTokenEnv     string `yaml:"session_token_env" json:"session_token_env"`
	SessionTokenFile    string `yaml:"session_token_file" json:"session_token_file"`

	// Addressing is auto, path (host/bucket/key: MinIO and most
	// self-hosted stores) or virtual_host (bucket.host/key).
	Addressing string `yaml:"addressing" json:"addressing"`
	// CAFile lists in PEM the certificates trusted for the store's. Empty
	// means the system's.
	CAFile string `yaml:"ca_file" json:"ca_file"`
	// Timeout bounds each request's waits for the store.
	Timeout Duration `yaml:"timeout" json:"timeout"`

	// RedirectDownloads answers requests for cached zips of modules
	// anyone may read (access.anonymous_read) with a redirect to the
	// bucket, so that the bytes come from the store. For cache_s3 only;
	// the clients must reach the endpoint.
	RedirectDownloads bool `yaml:"redirect_downloads" json:"redirect_downloads"`
	// RedirectExpiry is how long a redirect's URL works.
	RedirectExpiry Duration `yaml:"redirect_expiry" json:"redirect_expiry"`
}

// RouteConfig is a goproxy.Route.
type RouteConfig struct {
	Pattern string `yaml:"pattern" json:"pattern"`
	Private bool   `yaml:"private" json:"private"`
	// GOPROXY lists the route's upstreams in GOPROXY syntax; Upstreams
	// lists them one by one, with priorities and credentials. One of the
	// two.
	GOPROXY   string           `yaml:"goproxy" json:"goproxy"`
	Upstreams []UpstreamConfig `yaml:"upstreams,omitempty" json:"upstreams,omitempty"`
}

// UpstreamConfig is a goproxy.Upstream, its secrets from the environment
// or files.
// Of its secrets, each comes from an environment variable (_env) or a
// file (_file).
type UpstreamConfig struct {
	URL             string `yaml:"url" json:"url"`
	Priority        int    `yaml:"priority" json:"priority"`
	FallBackOnError bool   `yaml:"fall_back_on_error" json:"fall_back_on_error"`
	Username        string `yaml:"username" json:"username"`
	PasswordEnv     string `yaml:"password_env" json:"password_env"`
	PasswordFile    string `yaml:"password_file" json:"password_file"`
	TokenEnv        string `yaml:"token_env" json:"token_env"`
	TokenFile       string `yaml:"token_file" json:"token_file"`
	// Headers are sent to this upstream only. Their values are secrets,
	// each from an environment variable or a file.
	Headers map[string]SecretRef `yaml:"headers,omitempty" json:"headers,omitempty"`
}

// DirectConfig is goproxy.DirectOptions, less the directory, which the
// server manages (see Config.DirectDir).
type DirectConfig struct {
	GoBin         string   `yaml:"go_bin" json:"go_bin"`
	Timeout       Duration `yaml:"timeout" json:"timeout"`
	MaxConcurrent int      `yaml:"max_concurrent" json:"max_concurrent"`
	MaxCacheBytes ByteSize `yaml:"max_cache_bytes" json:"max_cache_bytes"`
}

// DownloadConfig is goproxy.DownloadOptions, less its Progress hook.
// Zero values are the library's defaults; for retry_budget, down_after
// and partial_bytes a negative value turns the feature off, as there.
type DownloadConfig struct {
	Connections     int      `yaml:"connections" json:"connections"`
	RangeThreshold  ByteSize `yaml:"range_threshold" json:"range_threshold"`
	MaxConcurrent   int      `yaml:"max_concurrent" json:"max_concurrent"`
	Attempts        int      `yaml:"attempts" json:"attempts"`
	RetryBudget     float64  `yaml:"retry_budget" json:"retry_budget"`
	DownAfter       Duration `yaml:"down_after" json:"down_after"`
	BaseDelay       Duration `yaml:"base_delay" json:"base_delay"`
	MaxDelay        Duration `yaml:"max_delay" json:"max_delay"`
	HeaderTimeout   Duration `yaml:"header_timeout" json:"header_timeout"`
	BodyIdleTimeout Duration `yaml:"body_idle_timeout" json:"body_idle_timeout"`
	Timeout         Duration `yaml:"timeout" json:"timeout"`
	PartialDir      string   `yaml:"partial_dir" json:"partial_dir"`
	PartialBytes    ByteSize `yaml:"partial_bytes" json:"partial_bytes"`
}

// PrefetchConfig is goproxy.PrefetchOptions.
type PrefetchConfig struct {
	Off         bool `yaml:"off" json:"off"`
	NoInfo      bool `yaml:"no_info" json:"no_info"`
	Info        bool `yaml:"info" json:"info"`
	Depth       int  `yaml:"depth" json:"depth"`
	Concurrency int  `yaml:"concurrency" json:"concurrency"`
}

// ScrubConfig is goproxy.ScrubOptions: scrubs of the cache, which
// re-check every cached .mod and .zip against the checksum database and
// golang.org/x/mod/zip.CheckZip and remove those that no longer pass.
// goproxy scrub and POST <prefix>/-/scrub run one at any time.
type ScrubConfig struct {
	// Interval is how often a scrub starts while the server runs; zero
	// (the default) never starts one on its own.
	Interval Duration `yaml:"interval" json:"interval"`
	// Rate caps how fast a scrub reads the cache, per second. Zero means
	// 32MiB.
	Rate ByteSize `yaml:"rate" json:"rate"`
	// Quarantine is a directory that receives a copy of every file a
	// scrub removes, for inspection. Empty: removed files are gone.
	Quarantine string `yaml:"quarantine" json:"quarantine"`
}

// AccessConfig is who may do what in a repository.
type AccessConfig struct {
	// AnonymousRead lists the modules anyone may read, in GOPRIVATE syntax.
	// Unset means "*" (everything); "" means nothing.
	AnonymousRead *string `yaml:"anonymous_read,omitempty" json:"anonymous_read,omitempty"`
	// Grants say what each identity (a user or token name) may do.
	Grants map[string]GrantConfig `yaml:"grants,omitempty" json:"grants,omitempty"`
}

// GrantConfig is a goproxy.Grant.
type GrantConfig struct {
	Read       string `yaml:"read" json:"read"`
	Publish    string `yaml:"publish" json:"publish"`
	Administer bool   `yaml:"administer" json:"administer"`
}

// EvictionConfig is goproxy.Eviction: it removes from a repository's
// cache what has not been served for MaxAge, and keeps it under MaxBytes
// (least recently served first). Zero values turn each limit off; both
// off, nothing is removed.
type EvictionConfig struct {
	MaxAge   Duration `yaml:"max_age" json:"max_age"`
	MaxBytes ByteSize `yaml:"max_bytes" json:"max_bytes"`
	// Interval is the time between runs (0: an hour); a run also starts
	// when what was stored takes the cache over MaxBytes, at most once a
	// minute.
	Interval Duration `yaml:"interval" json:"interval"`
}

// Repository types.
const (
	typeProxy  = "proxy"
	typeHosted = "hosted"
	typeGroup  = "group"
)

// defaultConfig is the configuration before the file, the environment
// and the flags: what a server with no configuration runs on.
func defaultConfig() *Config {
	return &Config{
		Addr: "localhost:8080",
		HTTP: HTTPConfig{
			ReadHeaderTimeout: Duration(10 * time.Second),
			IdleTimeout:       Duration(2 * time.Minute),
			MaxHeaderBytes:    64 << 10,
			ShutdownTimeout:   Duration(time.Minute),
		},
		Log:    LogConfig{Level: "info", Format: "text"},
		Readyz: ReadyzConfig{Timeout: Duration(5 * time.Second)},
		Progress: ProgressConfig{Mode: progressAuto, Interval: Duration(10 * time.Second),
			MinSize: 16 << 20, MinDuration: Duration(10 * time.Second)},
		Status:  StatusConfig{ScanInterval: Duration(5 * time.Minute), PageSize: 100},
		Metrics: MetricsConfig{Enabled: true, Path: "/metrics", Access: metricsOpen},
	}
}

// repositories returns the repositories the server serves, each with
// its name, prefix, type and cache filled in, and the key under which
// each is configured (for messages).
func (c *Config) repositories() ([]Repository, []string) {
	if len(c.Repositories) == 0 {
		r := c.Repository
		if r.Prefix == "" {
			r.Prefix = "/"
		}
		r.fillDefaults("")
		return []Repository{r}, []string{""}
	}
	var rs []Repository
	var keys []string
	for i, r := range c.Repositories {
		r.fillDefaults(c.Cache)
		rs = append(rs, r)
		keys = append(keys, fmt.Sprintf("repositories[%d]", i))
	}
	return rs, keys
}

// fillDefaults gives r a name, a type and a cache.
func (r *Repository) fillDefaults(cacheBase string) {
	if r.Name == "" {
		r.Name = strings.ReplaceAll(strings.Trim(r.Prefix, "/"), "/", "-")
		if r.Name == "" {
			r.Name = "root"
		}
	}
	if r.Type == "" {
		r.Type = typeProxy
	}
	if r.Cache == "" && r.CacheS3 == nil && cacheBase != "" {
		r.Cache = cacheBase + "/" + r.Name
	}
}
