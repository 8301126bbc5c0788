package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goproxy-team/goproxy"
)

// loadFile loads the config file named, its variables looked up in env.
func loadFile(t *testing.T, file string, env []string) (*Config, *configSources) {
	t.Helper()
	o, _ := parseFlags([]string{"-config", file}, io.Discard)
	cfg, src, err := loadConfig(o, lookupIn(env))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, src
}

// planOf makes the plan of a config file with content yaml, in dir.
func planOf(t *testing.T, dir, yaml string) *plan {
	t.Helper()
	cfg, src := loadFile(t, writeFile(t, filepath.Join(dir, "goproxy.yaml"), yaml), nil)
	pl, err := newPlan(cfg, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

// inProcessServer is a server with what apply and ServeHTTP need, its
// Proxies closed at the end of the test.
func inProcessServer(t *testing.T) *server {
	logs, err := newLogs(defaultConfig(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{logs: logs, metrics: newServerMetrics(), live: newLiveViews(), scanner: newCacheScanner(logs.main),
		directBase: t.TempDir(), stopping: make(chan struct{}), forms: newFormGuard(), admissions: newAdmissionCounters()}
	s.stats, s.caches, s.walks, s.downloads, s.failures, s.errors = s.metrics, s.metrics, s.scanner, s.live, s.live, logs.errors
	t.Cleanup(func() {
		close(s.stopping)
		s.retiring.Wait()
		if st := s.state.Load(); st != nil {
			for _, r := range st.repos {
				r.inst.proxy.Close()
			}
		}
	})
	return s
}

// TestARequestThatLoadedTheStateBeforeAReloadIsNotAnsweredByAClosedProxy
// plays a request that loaded the server's state just before a reload
// replaced its repository's Proxy, and reaches the repository only once
// the old Proxy has retired (nothing was counted in it): it is served by
// the new Proxy, not answered 503 by the closed one.
func TestARequestThatLoadedTheStateBeforeAReloadIsNotAnsweredByAClosedProxy(t *testing.T) {
	dir := t.TempDir()
	s := inProcessServer(t)
	if err := s.apply(planOf(t, dir, "cache: "+dir+"/cache\ngoproxy: \"off\"\nmutable_ttl: 1m\n")); err != nil {
		t.Fatal(err)
	}
	before := s.state.Load()
	oldProxy := before.repos[0].inst.proxy
	if err := s.apply(planOf(t, dir, "cache: "+dir+"/cache\ngoproxy: \"off\"\nmutable_ttl: 2m\n")); err != nil {
		t.Fatal(err)
	}
	s.retiring.Wait() // the old Proxy is closed
	if s.state.Load().repos[0].inst.proxy == oldProxy {
		t.Fatal("the reload kept the Proxy: the test needs a new one")
	}
	rec := httptest.NewRecorder()
	oldProxy.ServeHTTP(rec, httptest.NewRequest("GET", "/example.com/m/@v/list", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("the retired Proxy answers %d, not 503: it is not closed", rec.Code)
	}

	rec = httptest.NewRecorder()
	before.mux.ServeHTTP(rec, httptest.NewRequest("GET", "/example.com/m/@v/list", nil))
	if rec.Code == http.StatusServiceUnavailable {
		t.Errorf("a request that loaded the state before the reload got %d: %s", rec.Code, rec.Body)
	}
}

// TestARequestForARepositoryAReloadRemovedIsAnswered404 plays a request
// that loaded the state before a reload removed its repository: it is
// answered 404, not by the closed Proxy.
func TestARequestForARepositoryAReloadRemovedIsAnswered404(t *testing.T) {
	dir := t.TempDir()
	s := inProcessServer(t)
	if err := s.apply(planOf(t, dir, "cache: "+dir+"/cache\ngoproxy: \"off\"\n")); err != nil {
		t.Fatal(err)
	}
	before := s.state.Load()
	if err := s.apply(planOf(t, dir, "cache: "+dir+"/caches\nrepositories:\n- {name: other, prefix: /other, goproxy: \"off\"}\n")); err != nil {
		t.Fatal(err)
	}
	s.retiring.Wait()
	rec := httptest.NewRecorder()
	before.mux.ServeHTTP(rec, httptest.NewRequest("GET", "/example.com/m/@v/list", nil))
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "no longer served") {
		t.Errorf("a request for a removed repository: %d %s", rec.Code, rec.Body)
	}
}

// TestAnAuditedActionCutAfterItStartedIsAuditedAsAborted: an audited
// action whose answer is cut after its status was sent (panic with
// http.ErrAbortHandler, as an export whose source fails midway) is
// audited as aborted, not done, and the panic goes on to net/http.
func TestAnAuditedActionCutAfterItStartedIsAuditedAsAborted(t *testing.T) {
	var logged strings.Builder
	cfg := defaultConfig()
	cfg.Log.Format = "json"
	logs, err := newLogs(cfg, &logged)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{logs: logs, stopping: make(chan struct{}), forms: newFormGuard()}
	p := &goproxy.Proxy{Cacher: goproxy.DirCacher(t.TempDir()), Env: []string{"GOPROXY=off"},
		Authorize: func(*http.Request, goproxy.Operation, string) error { panic(http.ErrAbortHandler) }}
	defer p.Close()
	repo := &repository{repoPlan: &repoPlan{Repository: Repository{Name: "corp"}}, inst: &proxyInstance{proxy: p}}
	// The answer has started: its status is sent.
	rec := &responseRecorder{ResponseWriter: httptest.NewRecorder()}
	rec.WriteHeader(http.StatusOK)
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Errorf("the handler ended with %v, want the abort to go on", v)
			}
		}()
		s.repositoryHandler(repo).ServeHTTP(rec, httptest.NewRequest("PUT", "/example.com/m/@v/v1.0.0.zip", nil))
	}()
	var line map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(logged.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["log"] == "audit" {
			line = m
		}
	}
	if line == nil || line["outcome"] != "aborted" || line["action"] != "publish" {
		t.Errorf("audit line %v, want the publish audited as aborted; log:\n%s", line, logged.String())
	}
}

// TestCrossSiteRequestsAreRefused: a browser's POST from another site
// (which would carry the HTTP credentials it holds for the server) to
// a repository's operations or to /-/reload is refused before it reaches
// them; the same requests without the browser's headers, as the go
// command and curl send them, go through.
func TestCrossSiteRequestsAreRefused(t *testing.T) {
	dir := t.TempDir()
	s := inProcessServer(t)
	if err := s.apply(planOf(t, dir, "cache: "+dir+"/cache\ngoproxy: \"off\"\n")); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/-/scrub", "/-/import", "/-/fill", "/-/reload"} {
		r := httptest.NewRequest("POST", "http://proxy.example.com"+path, strings.NewReader("x"))
		r.Header.Set("Sec-Fetch-Site", "cross-site")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "another site") {
			t.Errorf("cross-site POST %s: %d %s", path, rec.Code, rec.Body)
		}
		r = httptest.NewRequest("POST", "http://proxy.example.com"+path, strings.NewReader("x"))
		r.Header.Set("Origin", "https://evil.example")
		rec = httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "another site") {
			t.Errorf("POST %s from another origin: %d %s", path, rec.Code, rec.Body)
		}
	}
	// Without the browser's headers, the operation decides (anonymous:
	// not allowed to administer).
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("POST", "http://proxy.example.com/-/scrub", nil))
	if rec.Code == http.StatusForbidden && strings.Contains(rec.Body.String(), "another site") {
		t.Errorf("a POST without browser headers was taken for a cross-site one: %d %s", rec.Code, rec.Body)
	}
}
