package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

// planOf makes the plan of a config file with content yaml, in dir.
func planOf(t *testing.T, dir, yaml string) *plan {
	t.Helper()
	file := writeFile(t, filepath.Join(dir, "goproxy.yaml"), yaml)
	o, _ := parseFlags([]string{"-config", file}, io.Discard)
	cfg, src, err := loadConfig(o, lookupIn(nil))
	if err != nil {
		t.Fatal(err)
	}
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
