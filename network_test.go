package goproxy

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// TestOfflineServesOnlyWhatIsCachedAndConnectsNowhere fills a cache
// through an online proxy, then serves it with an offline one: cached
// files, lists and @latest (however old) are served, a list is made of
// the cached versions where none was cached, and everything else answers
// 404 saying the proxy is offline. The offline proxy's egress policy is
// never asked about a connection, and neither the upstream nor the
// checksum database hears from it.
func TestOfflineServesOnlyWhatIsCachedAndConnectsNowhere(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	env := "GOSUMDB=" + db.vkey + " " + db.URL
	online := newTestProxy(t, up.URL, env)
	dir := t.TempDir()
	online.Cacher = DirCacher(dir)
	for _, path := range []string{
		"/example.com/mod000/@v/v1.1.0.info", "/example.com/mod000/@v/v1.1.0.mod", "/example.com/mod000/@v/v1.1.0.zip",
		"/example.com/mod001/@v/list", "/example.com/mod002/@latest",
	} {
		if w := do(online, "GET", path); w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
	}
	testwait.For(t, online.flights.idle)
	upBefore := up.TotalRequests()
	db.mu.Lock()
	dbBefore := len(db.paths)
	db.mu.Unlock()

	p, egress := newOfflineProxy(t, DirCacher(dir), up.URL, env)
	p.conf.mutableTTL = 0 // every list is past its time (set after Init, which watchEgress ran)
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/example.com/mod000/@v/v1.1.0.zip", http.StatusOK, ""},
		{"/example.com/mod000/@v/v1.1.0.mod", http.StatusOK, "module example.com/mod000"},
		{"/example.com/mod001/@v/list", http.StatusOK, "v1.0.0\nv1.1.0\nv1.2.0\n"},
		{"/example.com/mod002/@latest", http.StatusOK, `"Version":"v1.1.0"`},
		{"/example.com/mod000/@v/list", http.StatusOK, "v1.1.0\n"},
		{"/example.com/mod000/@v/v1.0.0.zip", http.StatusNotFound, "offline"},
		{"/example.com/mod003/@v/list", http.StatusNotFound, "offline"},
		{"/example.com/mod003/@latest", http.StatusNotFound, "offline"},
		{"/example.com/mod003/@v/master.info", http.StatusNotFound, "offline"},
		{"/sumdb/" + db.name + "/supported", http.StatusOK, ""},
		{"/sumdb/" + db.name + "/lookup/example.com/mod000@v1.1.0", http.StatusOK, "example.com/mod000 v1.1.0 h1:"},
		{"/sumdb/" + db.name + "/lookup/example.com/mod003@v1.0.0", http.StatusNotFound, "offline"},
		{"/sumdb/" + db.name + "/latest", http.StatusNotFound, "offline"},
	} {
		w := do(p, "GET", tc.path)
		if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.body) {
			t.Errorf("%s: %d %q; want %d with %q", tc.path, w.Code, w.Body, tc.status, tc.body)
		}
		if w.Code == http.StatusNotFound && w.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s: a 404 of an offline proxy with Cache-Control %q", tc.path, w.Header().Get("Cache-Control"))
		}
	}
	if n := egress.decisions(); n != 0 {
		t.Errorf("the offline proxy was about to connect %d times: allowed %q, refused %q", n, egress.allowed, egress.refused)
	}
	if n := up.TotalRequests() - upBefore; n != 0 {
		t.Errorf("the upstream saw %d requests", n)
	}
	db.mu.Lock()
	if n := len(db.paths) - dbBefore; n != 0 {
		t.Errorf("the checksum database saw %d requests: %q", n, db.paths[dbBefore:])
	}
	db.mu.Unlock()

	// A fill offline fetches nothing either: what is missing fails.
	rep, err := p.Fill(context.Background(), &FillPlan{Items: []FillItem{
		{Path: "example.com/mod000", Version: "v1.1.0", Files: FillModule},
		{Path: "example.com/mod003", Version: "v1.0.0", Files: FillModule},
	}}, nil)
	if err != nil || len(rep.Cached) != 1 || len(rep.Failed) != 1 || !strings.Contains(rep.Failed[0].Err.Error(), "offline") {
		t.Errorf("an offline fill: %s, %v: %v", rep.Summary(), err, rep.Failed)
	}
	if n := egress.decisions(); n != 0 {
		t.Errorf("the offline fill was about to connect %d times", n)
	}
}

// TestStaleWhileRevalidateAnswersWhileTheUpstreamIsBlocked serves a
// cached list past its time but within the window at once, while the
// upstream's handler for it is still blocked, fetching it once in the
// background; once the upstream answers, the refreshed list is served.
func TestStaleWhileRevalidateAnswersWhileTheUpstreamIsBlocked(t *testing.T) {
	const listPath = "/example.com/a/@v/list"
	up := newUpstream(t, map[string][]byte{listPath: []byte("v1.0.0\nv1.1.0\n")})
	asked := make(chan struct{}, 10)
	release := make(chan struct{})
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == listPath {
			asked <- struct{}{}
			<-release
		}
		return false
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	p := newTestProxy(t, up.URL)
	p.MutableTTL = time.Minute
	p.StaleWhileRevalidate = time.Hour
	old := time.Now().Add(-2 * time.Minute)
	if err := p.Cacher.Put(context.Background(), strings.TrimPrefix(listPath, "/"), timedReader{strings.NewReader("v1.0.0\n"), old}); err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		w := do(p, "GET", listPath)
		if w.Code != http.StatusOK || w.Body.String() != "v1.0.0\n" || w.Header().Get("Warning") == "" || w.Header().Get("Cache-Control") != "no-cache" {
			t.Fatalf("request %d: %d %q %v", i, w.Code, w.Body, w.Header())
		}
		if i == 0 {
			<-asked // the refresh reached the upstream, which holds it
		}
	}
	if n := up.Requests(listPath); n != 1 {
		t.Errorf("the upstream was asked %d times while it held the refresh, want once", n)
	}
	close(release)
	testwait.For(t, func() bool {
		return do(p, "GET", listPath).Body.String() == "v1.0.0\nv1.1.0\n"
	})
	if w := do(p, "GET", listPath); w.Header().Get("Warning") != "" || !strings.Contains(w.Header().Get("Cache-Control"), "max-age=60") {
		t.Errorf("the refreshed list: %v", w.Header())
	}

	t.Run("past the window, the client waits for the upstream", func(t *testing.T) {
		older := time.Now().Add(-2 * time.Hour)
		p.Cacher.Put(context.Background(), strings.TrimPrefix(listPath, "/"), timedReader{strings.NewReader("v1.0.0\n"), older})
		if w := do(p, "GET", listPath); w.Body.String() != "v1.0.0\nv1.1.0\n" || w.Header().Get("Warning") != "" {
			t.Errorf("%d %q %v", w.Code, w.Body, w.Header())
		}
	})
}
