package main

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy"
)

// The status page: server-rendered HTML at /, and its pages under
// /-/status/. It shows each viewer what its credentials (HTTP basic auth,
// which browsers send on every request once given) may read, by each
// repository's own access rules; its admin actions are forms that POST
// to the server, which passes them to the repository's Proxy as the
// DELETE requests of its admin API, so that the audit log records them.

//go:embed status.html
var statusHTML string

var statusTemplates = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes":    formatBytes,
	"duration": formatDuration,
	"ratio": func(r float64) string {
		if r < 0 {
			return "—"
		}
		return strconv.FormatFloat(r*100, 'f', 1, 64) + " %"
	},
	"rate": formatRate,
	"eta": func(t transfer) string {
		if eta := t.ETA(); eta >= 0 {
			return formatDuration(eta)
		}
		return "—"
	},
	"ago":   func(t time.Time) string { return formatDuration(time.Since(t)) + " ago" },
	"since": func(t time.Time) string { return formatDuration(time.Since(t)) },
}).Parse(statusHTML))

// statusCSP is the page's Content-Security-Policy: no script, no
// external anything, its one inline style sheet by its digest.
var statusCSP = func() string {
	_, css, _ := strings.Cut(statusHTML, "<style>")
	css, _, _ = strings.Cut(css, "</style>")
	sum := sha256.Sum256([]byte(css))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}()

// formatDuration writes a duration for people, to the second.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + " ms"
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd %dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
}

// viewer is who looks at the page.
type viewer struct {
	Name     string
	SignedIn bool
}

// repoStatus is a repository as the page shows it.
type repoStatus struct {
	Name, Prefix, Type string
	Link               string
	Stats              requestStats
	Cache              cacheStats
	Eviction           goproxy.Eviction
	Snapshot           *cacheSnapshot   // nil before the first walk
	Admission          *admissionStatus // nil without an admission policy
}

// statusPage is what the templates are given.
type statusPage struct {
	Title   string
	Refresh int // seconds; 0 for none
	Viewer  viewer
	Now     time.Time

	// The overview.
	Uptime    time.Duration
	Started   time.Time
	Repos     []repoStatus
	Downloads []transfer
	Failures  []failedDownload
	Errors    []loggedError

	// A repository's modules.
	Repo               *repoStatus
	Modules            []moduleSummary
	Query              string
	Page, Pages        int
	PrevPage, NextPage int
	Matching           int

	// A module's versions.
	Module        string
	Versions      []versionFiles
	OtherBytes    int64
	CanAdminister bool
	Token         string

	// The result of an action.
	Message string
	Failed  bool
	Back    string
}

// statusRoutes registers the status page's handlers on mux.
func (s *server) statusRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.serveStatus)
	mux.HandleFunc("GET /-/status/repositories/{repo}", s.serveRepositoryStatus)
	mux.HandleFunc("GET /-/status/repositories/{repo}/module", s.serveModuleStatus)
	mux.HandleFunc("POST /-/status/{action}", s.serveStatusAction)
}

func (s *server) viewerOf(r *http.Request) viewer {
	info := infoFrom(r.Context())
	signedIn := info.auth == "password" || info.auth == "token"
	return viewer{Name: info.who, SignedIn: signedIn}
}

func (s *server) newPage(r *http.Request, title string) *statusPage {
	return &statusPage{Title: title, Viewer: s.viewerOf(r), Now: time.Now()}
}

// render writes a page with the status page's headers.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, name string, page *statusPage) {
	var buf bytes.Buffer
	if err := statusTemplates.ExecuteTemplate(&buf, name, page); err != nil {
		s.logs.main.ErrorContext(r.Context(), "rendering the status page", "page", name, "error", err)
		http.Error(w, "rendering the status page failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// What a page shows depends on the viewer's credentials.
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", statusCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
}

// mayRead reports whether the viewer may read modulePath in repo, by
// the repository's access rules.
func mayRead(r *http.Request, repo *repository, modulePath string) bool {
	return repo.auth.Authorize(r, goproxy.OpRead, modulePath) == nil
}

// administersAny reports whether the viewer administers the server or a
// repository: such a viewer sees errors that name no module.
func (s *server) administersAny(r *http.Request, st *serverState) bool {
	if _, _, admin := st.plan.identities.identify(r); admin {
		return true
	}
	for _, repo := range st.repos {
		if repo.auth.Authorize(r, goproxy.OpAdminister, "") == nil {
			return true
		}
	}
	return false
}

func repositoryLink(name string) string { return "/-/status/repositories/" + name }

func (s *server) repoStatus(repo *repository) repoStatus {
	return repoStatus{Name: repo.Name, Prefix: repo.Prefix, Type: repo.Type, Link: repositoryLink(repo.Name),
		Stats: s.stats.requestStats(repo.Name), Cache: s.caches.cacheStats(repo.Name), Eviction: repo.spec.Eviction,
		Snapshot: s.walks.cacheSnapshot(repo.Name), Admission: repo.inst.admission.status(s.admissions.of(repo.Name))}
}

// serveStatus serves the overview at /, and signing in at /?signin.
func (s *server) serveStatus(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("signin") {
		s.serveSignIn(w, r)
		return
	}
	st := s.state.Load()
	page := s.newPage(r, "status")
	page.Started, page.Uptime = s.started, time.Since(s.started)
	repos := map[string]*repository{}
	for _, repo := range st.repos {
		repos[repo.Name] = repo
		rs := s.repoStatus(repo)
		if rs.Snapshot != nil {
			// The module count is of what the viewer may read.
			snap := *rs.Snapshot
			snap.Modules = readableModules(r, repo, snap.Modules, "")
			rs.Snapshot = &snap
		}
		page.Repos = append(page.Repos, rs)
	}
	for _, t := range s.downloads.downloads() {
		if repo := repos[t.Repo]; repo != nil && mayRead(r, repo, t.Module) {
			page.Downloads = append(page.Downloads, t)
		}
	}
	admin := s.administersAny(r, st)
	for _, f := range s.failures.recentFailures() {
		if f.Module == "" && admin || f.Module != "" && mayReadIn(r, st, repos, f.Repo, f.Module) {
			page.Failures = append(page.Failures, f)
		}
	}
	for _, e := range s.errors.recentErrors() {
		if e.Module == "" && admin || e.Module != "" && mayReadIn(r, st, repos, e.Repo, e.Module) {
			page.Errors = append(page.Errors, e)
		}
	}
	page.Refresh = 30
	if len(page.Downloads) > 0 {
		page.Refresh = 3
	}
	s.render(w, r, http.StatusOK, "overview", page)
}

// mayReadIn reports whether the viewer may read modulePath in the
// repository named repoName or, when that is empty, in any repository.
func mayReadIn(r *http.Request, st *serverState, repos map[string]*repository, repoName, modulePath string) bool {
	if repoName != "" {
		repo := repos[repoName]
		return repo != nil && mayRead(r, repo, modulePath)
	}
	for _, repo := range st.repos {
		if mayRead(r, repo, modulePath) {
			return true
		}
	}
	return false
}

// serveSignIn asks the browser for credentials until it sends valid
// ones, then goes back to the overview. At /, so that the browser sends
// them for every page of the server.
func (s *server) serveSignIn(w http.ResponseWriter, r *http.Request) {
	if !s.viewerOf(r).SignedIn {
		w.Header().Set("WWW-Authenticate", `Basic realm="goproxy", charset="UTF-8"`)
		page := s.newPage(r, "sign in")
		page.Message, page.Failed, page.Back = "Signing in needs a user name and password of this server.", true, "/"
		s.render(w, r, http.StatusUnauthorized, "result", page)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// readableModules returns the modules the viewer may read in repo whose
// path contains query.
func readableModules(r *http.Request, repo *repository, mods []moduleSummary, query string) []moduleSummary {
	var out []moduleSummary
	for _, m := range mods {
		if strings.Contains(m.Path, query) && mayRead(r, repo, m.Path) {
			out = append(out, m)
		}
	}
	return out
}

// repositoryOf finds the repository a status request names.
func (s *server) repositoryOf(name string) *repository {
	for _, repo := range s.state.Load().repos {
		if repo.Name == name {
			return repo
		}
	}
	return nil
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request, msg string) {
	page := s.newPage(r, "not found")
	page.Message, page.Failed, page.Back = msg, true, "/"
	s.render(w, r, http.StatusNotFound, "result", page)
}

// serveRepositoryStatus lists a repository's modules that the viewer
// may read, a page at a time.
func (s *server) serveRepositoryStatus(w http.ResponseWriter, r *http.Request) {
	repo := s.repositoryOf(r.PathValue("repo"))
	if repo == nil {
		s.notFound(w, r, "There is no such repository.")
		return
	}
	rs := s.repoStatus(repo)
	page := s.newPage(r, repo.Name)
	page.Repo = &rs
	page.Query = r.URL.Query().Get("q")
	// What fails may name files of the server's: for its administrators.
	page.CanAdminister = repo.auth.Authorize(r, goproxy.OpAdminister, "") == nil
	if rs.Snapshot != nil {
		mods := readableModules(r, repo, rs.Snapshot.Modules, page.Query)
		size := s.state.Load().plan.cfg.Status.PageSize
		page.Matching = len(mods)
		page.Pages = max(1, (len(mods)+size-1)/size)
		page.Page, _ = strconv.Atoi(r.URL.Query().Get("page"))
		page.Page = min(max(page.Page, 1), page.Pages)
		page.Modules = mods[(page.Page-1)*size : min(page.Page*size, len(mods))]
		if page.Page > 1 {
			page.PrevPage = page.Page - 1
		}
		if page.Page < page.Pages {
			page.NextPage = page.Page + 1
		}
	}
	s.render(w, r, http.StatusOK, "repository", page)
}

// serveModuleStatus lists a module's versions in a repository, with the
// admin actions for viewers who administer it.
func (s *server) serveModuleStatus(w http.ResponseWriter, r *http.Request) {
	repo := s.repositoryOf(r.PathValue("repo"))
	modPath := r.URL.Query().Get("path")
	// A module the viewer may not read is answered as one that is not
	// there: its existence is not for the viewer to learn.
	if repo == nil || module.CheckPath(modPath) != nil || !mayRead(r, repo, modPath) {
		s.notFound(w, r, "There is no such module here, or you may not read it.")
		return
	}
	rs := s.repoStatus(repo)
	page := s.newPage(r, modPath)
	page.Repo, page.Module = &rs, modPath
	var err error
	page.Versions, page.OtherBytes, err = moduleVersions(r.Context(), repo.inst.proxy, modPath)
	if err != nil {
		s.logs.main.ErrorContext(r.Context(), "listing a module's versions", "repository", repo.Name, "module", modPath, "error", err)
		page.Message, page.Failed = err.Error(), true
		s.render(w, r, http.StatusInternalServerError, "result", page)
		return
	}
	if repo.auth.Authorize(r, goproxy.OpAdminister, modPath) == nil {
		page.CanAdminister, page.Token = true, s.forms.token(r)
	}
	s.render(w, r, http.StatusOK, "module", page)
}

// maxForm bounds the body of a status page form.
const maxForm = 16 << 10

// serveStatusAction performs an admin action of the status page: refresh
// a module's lists (DELETE of its list), or delete a cached version
// (DELETE of its .info, which removes its three files). Both go through
// the repository's Proxy with the viewer's credentials, which decides
// and logs as for any DELETE.
func (s *server) serveStatusAction(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if action != "refresh" && action != "delete" {
		s.notFound(w, r, "There is no such action.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		s.actionResult(w, r, http.StatusBadRequest, "The form could not be read: "+err.Error(), "/")
		return
	}
	repo := s.repositoryOf(r.PostFormValue("repository"))
	modPath, version := r.PostFormValue("module"), r.PostFormValue("version")
	back := "/"
	if repo != nil && module.CheckPath(modPath) == nil {
		back = repositoryLink(repo.Name) + "/module?path=" + url.QueryEscape(modPath)
	}
	if err := s.forms.check(r); err != nil {
		status := http.StatusForbidden
		// What the audit line names comes from the refused form: only
		// what is valid.
		repoName, auditMod, auditVersion := "", "", ""
		if repo != nil {
			repoName = repo.Name
		}
		if module.CheckPath(modPath) == nil {
			auditMod = modPath
			if module.Check(modPath, version) == nil {
				auditVersion = version
			}
		}
		s.audit(r.Context(), "delete", repoName, auditMod, auditVersion, status, err.Error())
		s.logs.main.WarnContext(r.Context(), "status page action refused", "action", action, "error", err)
		s.actionResult(w, r, status, "Refused: "+err.Error(), back)
		return
	}
	if repo == nil {
		s.actionResult(w, r, http.StatusNotFound, "There is no such repository.", "/")
		return
	}
	escPath, err := module.EscapePath(modPath)
	if err != nil {
		s.actionResult(w, r, http.StatusBadRequest, "Not a module path: "+err.Error(), "/")
		return
	}
	target := "/" + escPath + "/@v/list"
	if action == "delete" {
		if err := module.Check(modPath, version); err != nil || module.CanonicalVersion(version) != version {
			s.actionResult(w, r, http.StatusBadRequest, fmt.Sprintf("Not a version of %s: %q", modPath, version), back)
			return
		}
		escVersion, _ := module.EscapeVersion(version)
		target = "/" + escPath + "/@v/" + escVersion + ".info"
	}
	del := r.Clone(r.Context())
	del.Method = http.MethodDelete
	del.URL = &url.URL{Path: target}
	del.RequestURI = ""
	del.Body, del.ContentLength = http.NoBody, 0
	del.Form, del.PostForm = nil, nil
	del.Header.Del("Content-Type")
	resp := &capturedResponse{header: http.Header{}}
	s.repositoryHandler(repo).ServeHTTP(resp, del)
	s.scanner.rescan(repo.Name)
	msg := strings.TrimSpace(resp.body.String())
	if msg == "" {
		msg = http.StatusText(resp.code())
	}
	s.actionResult(w, r, resp.code(), msg, back)
}

func (s *server) actionResult(w http.ResponseWriter, r *http.Request, status int, msg, back string) {
	page := s.newPage(r, "result")
	page.Message, page.Failed, page.Back = msg, status >= 400, back
	s.render(w, r, status, "result", page)
}

// capturedResponse keeps the answer of a request the server makes of a
// repository's handler on behalf of a status page form. It keeps the
// start of the body: admin answers are short messages.
type capturedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *capturedResponse) Header() http.Header { return c.header }

func (c *capturedResponse) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}

func (c *capturedResponse) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.body.Write(b[:min(len(b), max(0, 4096-c.body.Len()))])
	return len(b), nil
}

func (c *capturedResponse) code() int {
	if c.status == 0 {
		return http.StatusOK
	}
	return c.status
}
