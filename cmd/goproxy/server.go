package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy"
)

// server is the running server: its logs, and the state it serves
// requests with, which a reload replaces whole.
type server struct {
	opts    *options
	env     []string
	logs    *logs
	cert    *certificate // nil without TLS
	started time.Time

	// directBase holds the go command's directories for direct fetches;
	// removeDirectBase is set when the server made it and removes it at
	// exit.
	directBase       string
	removeDirectBase bool

	// live follows the Proxies that serve or finish requests, for their
	// live views: the downloads in flight (the progress display and the
	// status page) and the recent failures (the status page).
	live      *liveViews
	downloads downloadSource
	failures  failureSource

	// metrics receives what the Proxies measure, for /metrics and the
	// status page; metricsHTTP serves it.
	metrics     *serverMetrics
	metricsHTTP http.Handler

	// What the status page shows, each behind a small interface.
	stats   requestStatsSource
	caches  cacheStatsSource
	scanner *cacheScanner
	walks   storeWalkSource
	errors  errorSource
	forms   *formGuard

	// admissions counts each repository's admission decisions.
	admissions *admissionCounters

	// readiness is the last /readyz answer, reused for a second: the
	// endpoint is anonymous, and each check writes a file in every
	// store and may ask every upstream.
	readiness struct {
		sync.Mutex
		at    time.Time
		state *serverState
		ok    bool
		body  string
	}

	state atomic.Pointer[serverState]

	reloadMu sync.Mutex // serializes reloads; guards what follows
	gen      int
	auths    map[string]*atomic.Pointer[goproxy.StaticAuth] // by repository name
	retiring sync.WaitGroup
	stopping chan struct{}
}

// serverState is what requests are served with: a plan and what was
// made of it.
type serverState struct {
	plan  *plan
	repos []*repository
	mux   *http.ServeMux
}

// repository is a repository being served.
type repository struct {
	*repoPlan
	inst *proxyInstance
}

// proxyInstance is one goproxy.Proxy made for a repository, kept across
// reloads while the repository's spec is unchanged.
type proxyInstance struct {
	proxy     *goproxy.Proxy
	admission *admission // nil without an admission policy
	spec      proxySpec
	directDir string
	inflight  atomic.Int64
	// retired is set once a reload has switched to a state without this
	// instance: a request that loaded the older state and comes to it
	// after that must not count on it (it may be closed already) and is
	// served by the current state instead (see enter).
	retired atomic.Bool
}

// apply makes a state of pl and switches to it. Proxies whose spec did
// not change are kept; the others are made anew, and the old ones retire
// when their requests are done. On error nothing changes.
func (s *server) apply(pl *plan) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.state.Load()
	current := map[string]*proxyInstance{}
	if old != nil {
		for _, r := range old.repos {
			current[r.Name] = r.inst
		}
	}
	gen := s.gen + 1
	st := &serverState{plan: pl, mux: http.NewServeMux()}
	kept := map[*proxyInstance]bool{}
	var made []*goproxy.Proxy
	var started []*admission
	defer func() {
		for _, p := range made { // nil once switched to
			p.Close()
		}
	}()
	holders := map[string]*atomic.Pointer[goproxy.StaticAuth]{}
	for _, rp := range pl.repos {
		holder := s.auths[rp.Name]
		if holder == nil {
			holder = new(atomic.Pointer[goproxy.StaticAuth])
			holder.Store(rp.auth)
		}
		holders[rp.Name] = holder
		inst := current[rp.Name]
		if inst != nil && reflect.DeepEqual(inst.spec, rp.spec) {
			kept[inst] = true
		} else {
			dir := filepath.Join(s.directBase, rp.Name)
			if gen > 1 {
				dir += "." + strconv.Itoa(gen)
			}
			authorize := func(r *http.Request, op goproxy.Operation, modulePath string) error {
				return holder.Load().Authorize(r, op, modulePath)
			}
			logger := s.logs.main.With("repository", rp.Name)
			name := rp.Name
			metrics := s.metrics.hooks(name, func() { s.scanner.rescan(name) })
			// Counted for /metrics and for the status page.
			counted, forPage := metrics.Admission, s.admissions.hook(name)
			metrics.Admission = func(m goproxy.AdmissionMetric) {
				counted(m)
				forPage(m)
			}
			anonymous := func(modulePath string) bool {
				return module.MatchPrefixPatterns(holder.Load().AnonymousRead, modulePath)
			}
			proxy, adm, err := newProxy(&rp.spec, dir, logger, authorize, metrics, anonymous)
			if err != nil {
				return fmt.Errorf("%s: %w", cmpKeyOr(rp.key), err)
			}
			made = append(made, proxy)
			inst = &proxyInstance{proxy: proxy, admission: adm, spec: rp.spec, directDir: dir}
			started = append(started, adm)
		}
		st.repos = append(st.repos, &repository{repoPlan: rp, inst: inst})
	}
	// Everything is made: switch. Access rules and credentials apply to
	// the next request, in kept Proxies too.
	made = nil
	s.gen = gen
	for _, r := range st.repos {
		holders[r.Name].Store(r.auth)
	}
	s.auths = holders
	s.routes(st)
	served := map[string]bool{}
	for _, r := range st.repos {
		s.live.add(r.inst.proxy, r.Name)
		served[r.Name] = true
	}
	s.state.Store(st)
	for _, a := range started {
		a.start()
	}
	s.metrics.forget(served)
	if old != nil {
		for _, r := range old.repos {
			if !kept[r.inst] {
				s.retire(r.inst)
			}
		}
	}
	return nil
}

// retire closes a Proxy no longer served and removes its direct-fetch
// directory, once its requests are done.
func (s *server) retire(inst *proxyInstance) {
	// Set before inflight is read: a request counted after this sees it
	// and goes elsewhere; one counted before is waited for.
	inst.retired.Store(true)
	s.retiring.Add(1)
	go func() {
		defer s.retiring.Done()
		defer s.live.remove(inst.proxy)
		defer inst.proxy.Close()
		defer inst.admission.close()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for inst.inflight.Load() > 0 {
			select {
			case <-t.C:
			case <-s.stopping:
				return // removed with the base at exit, or kept for the next start
			}
		}
		inst.proxy.Close() // before its directory goes
		os.RemoveAll(inst.directDir)
	}()
}

// routes sets up the state's mux: the server's own endpoints, the
// status page, and each repository under its prefix.
func (s *server) routes(st *serverState) {
	st.mux.HandleFunc("/healthz", s.serveHealthz)
	st.mux.HandleFunc("/readyz", s.serveReadyz)
	st.mux.HandleFunc("/-/reload", s.serveReload)
	if m := st.plan.cfg.Metrics; m.Enabled && m.Addr == "" {
		st.mux.HandleFunc(m.Path, func(w http.ResponseWriter, r *http.Request) { s.serveMetrics(w, r, st) })
	}
	root := false
	for _, r := range st.repos {
		h := s.repositoryHandler(r)
		if r.Prefix == "/" {
			root = true
			st.mux.Handle("/", h)
			continue
		}
		st.mux.Handle(r.Prefix+"/", http.StripPrefix(r.Prefix, h))
	}
	switch {
	case !st.plan.cfg.Status.Disabled:
		// Its paths are no module's: / is none, and no module path
		// element starts with "-". So it is there even when a
		// repository is served at /.
		s.statusRoutes(st.mux)
	case !root:
		st.mux.HandleFunc("/{$}", s.serveIndex)
	}
}

// repositoryHandler serves a repository: its Proxy, with the audit log
// for the actions it records.
func (s *server) repositoryHandler(r *repository) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		inst := s.enter(r)
		if inst == nil {
			http.Error(w, "repository "+r.Name+" is no longer served: a reload removed it", http.StatusNotFound)
			return
		}
		defer inst.inflight.Add(-1)
		info := infoFrom(req.Context())
		info.repo = r.Name
		action := auditAction(req)
		if action == "" {
			inst.proxy.ServeHTTP(w, req)
			return
		}
		rec, ok := w.(*responseRecorder)
		if !ok {
			rec = &responseRecorder{ResponseWriter: w}
		}
		mod, version := moduleOf(req.URL.Path)
		if err := s.forms.origin.Check(req); err != nil {
			// A browser's request from another site would carry the
			// HTTP credentials the browser holds for this server: the
			// POST operations (fill, import, scrub) are not for other
			// sites to trigger. The go command and curl send neither
			// Origin nor Sec-Fetch-Site.
			http.Error(w, errCrossOrigin.Error(), http.StatusForbidden)
			s.audit(req.Context(), action, r.Name, mod, version, http.StatusForbidden, errCrossOrigin.Error())
			return
		}
		defer func() {
			if v := recover(); v != nil {
				// Cut after it started (an export whose source failed):
				// not done, whatever status was sent.
				s.audit(req.Context(), action, r.Name, mod, version, 0, "the answer was cut after it started")
				panic(v)
			}
			s.audit(req.Context(), action, r.Name, mod, version, rec.status, rec.reasonText())
		}()
		inst.proxy.ServeHTTP(rec, req)
	})
}

// enter counts a request in the Proxy that serves repository r, and
// returns it; the caller decrements its inflight when done. A request
// may have loaded the server's state just before a reload replaced r's
// Proxy, which retires once nothing is counted in it: then the request
// goes to the Proxy of the same repository in the current state. nil
// means the repository is no longer served.
func (s *server) enter(r *repository) *proxyInstance {
	for {
		inst := r.inst
		inst.inflight.Add(1)
		if !inst.retired.Load() {
			return inst
		}
		inst.inflight.Add(-1)
		if r = s.repositoryOf(r.Name); r == nil {
			return nil
		}
	}
}

// serveIndex answers / when no repository is there: which are.
func (s *server) serveIndex(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	b.WriteString("goproxy: Go module proxy repositories (GOPROXY=<this server><prefix>):\n")
	for _, repo := range s.state.Load().repos {
		fmt.Fprintf(&b, "%s\t%s\t%s\n", repo.Prefix, repo.Name, repo.Type)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(b.String()))
}

// serveReload answers POST /-/reload, for identities with admin: the
// configuration is read again and applied, or refused with its errors.
func (s *server) serveReload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "reload is a POST", http.StatusMethodNotAllowed)
		return
	}
	st := s.state.Load()
	_, auth, admin := st.plan.identities.identify(r)
	status, msg := http.StatusOK, "configuration reloaded\n"
	switch {
	case s.forms.origin.Check(r) != nil:
		// The browser's word that another site sends it, with the
		// credentials the browser holds for this server.
		status, msg = http.StatusForbidden, errCrossOrigin.Error()+"\n"
	case auth == "none" || auth == "invalid":
		w.Header().Set("WWW-Authenticate", `Basic realm="goproxy"`)
		status, msg = http.StatusUnauthorized, "authentication required to reload the configuration\n"
	case !admin:
		status, msg = http.StatusForbidden, "not allowed to reload the configuration: the identity is not an admin\n"
	default:
		if err := s.reload(r.Context(), "admin endpoint"); err != nil {
			status, msg = http.StatusBadRequest, "configuration refused, the previous one stays in force:\n"+err.Error()+"\n"
		}
	}
	s.audit(r.Context(), "reload", "", "", "", status, strings.TrimSpace(msg))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(msg))
}

// restartOnly lists the settings a reload cannot change, by key, with
// how to read them from a Config.
var restartOnly = []struct {
	key string
	get func(*Config) any
}{
	{"addr", func(c *Config) any { return c.Addr }},
	{"tls (on or off)", func(c *Config) any { return c.TLS.CertFile != "" }},
	{"http", func(c *Config) any { return c.HTTP }},
	{"log.format", func(c *Config) any { return c.Log.Format }},
	{"log.file", func(c *Config) any { return c.Log.File }},
	{"access_log", func(c *Config) any { return c.AccessLog }},
	{"audit_log", func(c *Config) any { return c.AuditLog }},
	{"direct_dir", func(c *Config) any { return c.DirectDir }},
	{"progress", func(c *Config) any { return c.Progress }},
	{"metrics.addr", func(c *Config) any { return c.Metrics.Addr }},
}

// reload reads the configuration again and applies it. A configuration
// with errors is refused whole, and the running one stays.
func (s *server) reload(ctx context.Context, why string) error {
	logger := s.logs.main
	err := func() error {
		cfg, src, err := loadConfig(s.opts, lookupIn(s.env))
		if err != nil {
			return err
		}
		pl, err := newPlan(cfg, src, s.env)
		if err != nil {
			return err
		}
		old := s.state.Load().plan.cfg
		if s.cert != nil && cfg.TLS.CertFile != "" && (cfg.TLS != old.TLS) {
			if err := s.cert.setFiles(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
				return fmt.Errorf("tls: %w", err)
			}
		}
		if err := s.apply(pl); err != nil {
			return err
		}
		for _, r := range restartOnly {
			if !reflect.DeepEqual(r.get(old), r.get(cfg)) {
				logger.WarnContext(ctx, "a changed setting takes effect at the next restart", "key", r.key)
			}
		}
		lvl, _ := parseLevel(cfg.Log.Level)
		s.logs.level.Set(lvl)
		if err := s.logs.reopen(); err != nil {
			logger.ErrorContext(ctx, "reopening the log files", "error", err)
		}
		return nil
	}()
	s.metrics.reloaded(err)
	if err != nil {
		logger.ErrorContext(ctx, "configuration refused, the previous one stays in force", "trigger", why, "error", err)
		return err
	}
	logger.InfoContext(ctx, "configuration reloaded", "trigger", why)
	return nil
}

// errNotReady is what a failed readiness check wraps.
var errNotReady = errors.New("not ready")

func (s *server) serveHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte("ok\n"))
}

// serveReadyz checks that every repository can store what it fetches
// and is given (its directories are writable) and, with
// readyz.check_upstreams, that its upstream proxies answer.
func (s *server) serveReadyz(w http.ResponseWriter, r *http.Request) {
	rd := &s.readiness
	// One check at a time, its answer shared for a second: a flood of
	// anonymous probes costs the stores and upstreams one check a second.
	rd.Lock()
	// The state is the one current once this probe's turn comes: one
	// loaded before waiting may have been retired by a reload meanwhile
	// (its Proxies closed), and checking it would also displace the
	// current state's shared answer.
	st := s.state.Load()
	if rd.state != st || time.Since(rd.at) >= time.Second {
		rd.ok, rd.body = s.checkReadiness(st)
		rd.state, rd.at = st, time.Now()
	}
	ok, body := rd.ok, rd.body
	rd.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write([]byte(body))
}

// checkReadiness checks every store and, if configured, upstream of st.
// (Not under a request's context: its answer is shared.)
func (s *server) checkReadiness(st *serverState) (ok bool, body string) {
	cfg := st.plan.cfg
	ctx, cancel := context.WithTimeout(context.Background(), max(time.Duration(cfg.Readyz.Timeout), time.Second))
	defer cancel()
	var b strings.Builder
	ok = true
	report := func(repo, what string, err error) {
		if err != nil {
			ok = false
			fmt.Fprintf(&b, "%s: %s: %v\n", repo, what, err)
			s.logs.main.WarnContext(ctx, "not ready", "repository", repo, "check", what, "error", err)
			return
		}
		fmt.Fprintf(&b, "%s: %s: ok\n", repo, what)
	}
	for _, repo := range st.repos {
		if c := repo.spec.CacheS3; c != nil {
			// A failing bucket in the cache role is bypassed (the
			// upstreams answer): degraded, not unready. Every replica
			// shares it, so sending clients elsewhere would not help.
			if err := checkStore(ctx, repo.inst.proxy.Cacher, ""); err != nil {
				fmt.Fprintf(&b, "%s: cache %s: bypassed, the upstreams answer: %v\n", repo.Name, c, err)
				s.logs.main.WarnContext(ctx, "cache store failing", "repository", repo.Name, "error", err)
			} else {
				report(repo.Name, "cache "+c.String(), nil)
			}
		} else {
			report(repo.Name, "cache "+repo.Cache, checkWritable(repo.Cache))
		}
		switch {
		case repo.spec.HostedS3 != nil:
			report(repo.Name, "hosted "+repo.spec.HostedS3.String(), checkStore(ctx, repo.inst.proxy.Hosted, ""))
		case repo.Hosted != "":
			report(repo.Name, "hosted "+repo.Hosted, checkWritable(repo.Hosted))
		}
		if cfg.Readyz.CheckUpstreams {
			for _, u := range upstreamURLs(&repo.spec) {
				report(repo.Name, "upstream "+redactURL(u), checkReachable(ctx, &repo.spec, u))
			}
		}
	}
	return ok, b.String()
}

// checkWritable creates and removes a file in dir (creating dir).
func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".readyz-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, err = f.Write([]byte("ok"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	os.Remove(name)
	return err
}

// upstreamURLs lists the upstream proxies of a spec: GOPROXY's and the
// routes', not direct or off.
func upstreamURLs(spec *proxySpec) []string {
	var urls []string
	seen := map[string]bool{}
	add := func(ups []goproxy.Upstream) {
		for _, u := range ups {
			if u.URL != "direct" && u.URL != "off" && !seen[u.URL] {
				seen[u.URL] = true
				urls = append(urls, u.URL)
			}
		}
	}
	list := lookupIn(spec.Env)("GOPROXY")
	if list == "" {
		list = "https://proxy.golang.org,direct"
	}
	ups, _ := goproxy.ParseUpstreams(list)
	add(ups)
	for _, rt := range spec.Routes {
		add(rt.Upstreams)
	}
	return urls
}

// checkReachable asks an upstream for its root through the repository's
// dialer: any HTTP answer shows it is reachable.
func checkReachable(ctx context.Context, spec *proxySpec, u string) error {
	d, err := spec.Dialer.dialer(spec.Env)
	if err != nil {
		return err
	}
	t, err := d.Transport()
	if err != nil {
		return err
	}
	defer t.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, strings.TrimSuffix(u, "/")+"/", nil)
	if err != nil {
		return err
	}
	resp, err := t.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("%w: %v", errNotReady, redactError(err, u))
	}
	resp.Body.Close()
	return nil
}

// redactURL hides the secrets of the URLs in a text, for messages, as
// the library does: a password, or a user name standing alone, which is
// usually a token ("https://user:xxxxx@host", "https://xxxxx@host").
func redactURL(u string) string {
	return userinfo.ReplaceAllStringFunc(u, func(m string) string {
		info := strings.TrimSuffix(strings.TrimPrefix(m, "://"), "@")
		if user, _, ok := strings.Cut(info, ":"); ok {
			return "://" + user + ":xxxxx@"
		}
		return "://xxxxx@"
	})
}

func redactError(err error, u string) string {
	return strings.ReplaceAll(err.Error(), u, redactURL(u))
}

// userinfo matches the user information of URLs in text.
var userinfo = regexp.MustCompile(`://[^/?#@\s]*@`)
