package main

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testcert"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// corpZip is the zip of corp.example.com/lib at version.
func corpZip(t *testing.T, version string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	prefix := "corp.example.com/lib@" + version + "/"
	for name, body := range map[string]string{
		"go.mod": "module corp.example.com/lib\n\ngo 1.21\n",
		"lib.go": "// Package lib is private.\npackage lib\n\nconst Version = \"" + version + "\"\n",
	} {
		w, err := zw.Create(prefix + name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// twoRepositories is the configuration of TestServerTwoRepositories:
// a public proxy, and a group of published and upstream modules with
// access control. ANON is replaced by the group's anonymous_read.
const twoRepositories = `# two repositories
addr: 127.0.0.1:0
cache: CACHE
tls:
  cert_file: CERT
  key_file: KEY
log:
  format: json
audit_log:
  file: AUDIT
metrics: {access: admin}
users:
  alice:
    password_env: ALICE_PASSWORD
    admin: true
tokens:
  ci:
    token_file: CI_TOKEN_FILE
  reader:
    token_env: READER_TOKEN
repositories:
  - name: public
    prefix: /public
    goproxy: UPSTREAM
    gosumdb: "off"
  - name: corp
    prefix: /corp
    type: group
    hosted: HOSTED
    goproxy: UPSTREAM
    gosumdb: "off"
    # Published modules are never asked of the upstreams.
    routes:
      - pattern: corp.example.com
        goproxy: "off"
        private: true
    access:
      anonymous_read: "ANON"
      grants:
        alice: {read: "*", publish: corp.example.com, administer: true}
        ci: {publish: corp.example.com}
        reader: {read: corp.example.com}
`

// TestServerTwoRepositories runs the built server with a config file
// and drives it with the go command and curl: a public proxy and a
// group with hosted modules, publishing, a private module readable only
// with a token, /metrics counting the go command's requests (misses,
// then hits) and the upstream fetches, health checks, request IDs and
// the cache outcome in the access log, the audit log, and a reload
// (SIGHUP and the admin endpoint) that changes an access rule.
func TestServerTwoRepositories(t *testing.T) {
	buildServer(t)
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	dir := t.TempDir()
	ca := testcert.New(t)
	certFile, keyFile, _ := serverCert(t, ca, dir)
	caFile := writeFile(t, filepath.Join(dir, "ca.pem"), string(ca.PEM()))
	const ciToken, readerToken = "ci-secret-token", "reader-secret-token"
	audit := filepath.Join(dir, "audit.log")
	config := func(anonymous string) string {
		return strings.NewReplacer("CACHE", filepath.Join(dir, "cache"), "CERT", certFile, "KEY", keyFile,
			"AUDIT", audit, "CI_TOKEN_FILE", writeFile(t, filepath.Join(dir, "ci-token"), ciToken+"\n"),
			"UPSTREAM", up.URL, "HOSTED", filepath.Join(dir, "hosted"), "ANON", anonymous).Replace(twoRepositories)
	}
	configFile := writeFile(t, filepath.Join(dir, "goproxy.yaml"), config("example.com"))
	srv := startServer(t, []string{"-config", configFile},
		serverEnv(t, "ALICE_PASSWORD=alice-pw", "READER_TOKEN="+readerToken))
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Fatalf("serving at %q", srv.URL)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientConfig()}}
	get := func(path string, hdr ...string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, readAll(t, resp.Body), resp.Header
	}

	t.Run("health", func(t *testing.T) {
		if code, body, _ := get("/healthz"); code != 200 {
			t.Errorf("/healthz: %d %s", code, body)
		}
		code, body, _ := get("/readyz")
		if code != 200 || !strings.Contains(body, "corp: hosted") {
			t.Errorf("/readyz: %d %s", code, body)
		}
	})

	gocmd := gocmdtest.New(t)
	gocmd.Set("SSL_CERT_FILE", caFile)
	t.Run("public proxy", func(t *testing.T) {
		gocmd.Set("GOPROXY", srv.URL+"/public")
		gocmd.WriteGoMod(moduletest.RootGoMod(vs))
		gocmd.MustRun(t, "mod", "download")
		if _, err := os.Stat(filepath.Join(dir, "cache", "public", moduletest.GraphPath(1), "@v", "v1.2.0.info")); err != nil {
			t.Errorf("the public repository's cache is not cache/public: %v", err)
		}
	})

	t.Run("metrics count the run", func(t *testing.T) {
		if code, _, _ := get("/metrics"); code != 401 {
			t.Errorf("/metrics without credentials: %d", code)
		}
		if code, _, _ := get("/metrics", "Authorization", "Bearer "+readerToken); code != 403 {
			t.Errorf("/metrics for a token without admin: %d", code)
		}
		alice := []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:alice-pw"))}
		first := countedRun(t, srv, client, alice, "public")
		// A cold cache: the go command's requests for module files were
		// answered from upstream, or by a fetch that one of them started
		// (prefetches aside, every one a miss).
		if first.misses == 0 || first.misses+first.hits != first.moduleFiles {
			t.Errorf("the cold run: %v", first)
		}
		m := first.metrics
		// Every file was asked of the upstream once, and every request
		// the upstream had is a fetch counted, with its bytes, once the
		// fetches the proxy makes on its own (prefetches) are done.
		for _, path := range first.paths {
			if n := up.Requests(strings.TrimPrefix(path, "/public")); n != 1 {
				t.Errorf("%s was asked of the upstream %d times", path, n)
			}
		}
		m = settledMetrics(t, client, srv.URL+"/metrics", alice, func(m scraped) error {
			switch upstreamRequests := up.TotalRequests(); {
			case int(m.sum("goproxy_upstream_fetches_total", "repository", "public", "upstream", up.URL, "outcome", "ok")) != upstreamRequests:
				return fmt.Errorf("%v upstream fetches counted, the upstream had %d requests", m.sum("goproxy_upstream_fetches_total", "repository", "public", "upstream", up.URL, "outcome", "ok"), upstreamRequests)
			case int(m.sum("goproxy_upstream_fetches_total", "repository", "public")) != upstreamRequests:
				return fmt.Errorf("%v upstream fetches in all, the upstream had %d requests", m.sum("goproxy_upstream_fetches_total", "repository", "public"), upstreamRequests)
			case int64(m.sum("goproxy_upstream_fetch_bytes_total", "repository", "public")) != up.BytesSent():
				return fmt.Errorf("%v bytes fetched counted, the upstream sent %d", m.sum("goproxy_upstream_fetch_bytes_total", "repository", "public"), up.BytesSent())
			case m.sum("goproxy_downloads_in_flight", "repository", "public") != 0:
				return fmt.Errorf("%v downloads in flight after the run", m.sum("goproxy_downloads_in_flight", "repository", "public"))
			case int64(m.sum("goproxy_download_bytes_total", "repository", "public")) < up.BytesSent():
				return fmt.Errorf("%v bytes downloaded counted, the upstream sent %d", m.sum("goproxy_download_bytes_total", "repository", "public"), up.BytesSent())
			}
			return nil
		})
		for _, name := range []string{"go_goroutines", "process_open_fds", "go_build_info"} {
			if !m.has(name) {
				t.Errorf("/metrics has no %s", name)
			}
		}

		// The same again with an empty module cache: all hits, nothing
		// asked of the upstream.
		upstreamRequests := up.TotalRequests()
		gocmd.FreshModCache(t)
		gocmd.MustRun(t, "mod", "download")
		second := countedRun(t, srv, client, alice, "public")
		if second.moduleFiles != 2*first.moduleFiles || second.misses != first.misses || second.hits != first.hits+first.moduleFiles {
			t.Errorf("after the warm run: %v; after the cold run: %v", second, first)
		}
		if up.TotalRequests() != upstreamRequests {
			t.Errorf("the warm run asked the upstream %d times", up.TotalRequests()-upstreamRequests)
		}
	})

	zipFile := filepath.Join(dir, "lib.zip")
	os.WriteFile(zipFile, corpZip(t, "v1.0.0"), 0o644)
	publish := func(auth ...string) string {
		t.Helper()
		args := append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", caFile, "-T", zipFile}, auth...)
		out, err := exec.Command("curl", append(args, srv.URL+"/corp/corp.example.com/lib/@v/v1.0.0.zip")...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		return string(out)
	}
	t.Run("publishing", func(t *testing.T) {
		if code := publish(); code != "401" {
			t.Errorf("anonymous publish: %s", code)
		}
		if code := publish("-H", "Authorization: Bearer "+readerToken); code != "403" {
			t.Errorf("publish by a reader: %s", code)
		}
		if code := publish("-H", "Authorization: Bearer "+ciToken); code != "201" {
			t.Errorf("publish by ci: %s", code)
		}
	})

	corpURL := strings.TrimPrefix(srv.URL, "https://") + "/corp"
	t.Run("private module only with a token", func(t *testing.T) {
		gocmd.Set("GOPROXY", srv.URL+"/corp")
		gocmd.Set("GOFLAGS", "-mod=mod -modcacherw")
		gocmd.WriteGoMod([]byte("module example.com/root\n\ngo 1.21\n"))
		if _, stderr, err := gocmd.Run("mod", "download", "corp.example.com/lib@v1.0.0"); err == nil || !strings.Contains(stderr, "401") {
			t.Errorf("without a token: %v %s", err, stderr)
		}
		// GOAUTH runs a command that gives the go command its headers.
		script := writeFile(t, filepath.Join(dir, "goauth.sh"), "#!/bin/sh\nprintf 'https://"+corpURL+"\\n\\nAuthorization: Bearer "+readerToken+"\\n\\n'\n")
		os.Chmod(script, 0o755)
		gocmd.Set("GOAUTH", script)
		gocmd.FreshModCache(t)
		gocmd.MustRun(t, "mod", "download", "corp.example.com/lib@v1.0.0")
		// The token grants only corp.example.com; anonymous_read still
		// lets it read the public modules through the group.
		gocmd.MustRun(t, "mod", "download", moduletest.GraphPath(2)+"@v1.0.0")
	})

	t.Run("a user's credentials do not reduce access", func(t *testing.T) {
		netrc := writeFile(t, filepath.Join(dir, "netrc"), "machine "+strings.TrimPrefix(srv.URL, "https://")+" login alice password alice-pw\n")
		gocmd.Set("GOAUTH", "netrc")
		gocmd.Set("NETRC", netrc)
		gocmd.FreshModCache(t)
		gocmd.MustRun(t, "mod", "download", "corp.example.com/lib@v1.0.0", moduletest.GraphPath(3)+"@v1.0.0")
		if out := gocmd.MustRun(t, "list", "-m", "-versions", moduletest.GraphPath(1)); !strings.Contains(out, "v1.2.0") {
			t.Errorf("versions through the group: %q", out)
		}
	})

	t.Run("request IDs", func(t *testing.T) {
		_, _, hdr := get("/public/"+moduletest.GraphPath(1)+"/@v/list", "X-Request-ID", "test-id-42")
		if hdr.Get("X-Request-ID") != "test-id-42" {
			t.Errorf("X-Request-ID answered: %q", hdr.Get("X-Request-ID"))
		}
		line := srv.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "request" && m["request_id"] == "test-id-42" })
		if line["status"] != float64(200) || line["repository"] != "public" || line["bytes"] == float64(0) || line["cache"] != "miss" {
			t.Errorf("access log line: %v", line)
		}
		// Asked again, the list is in the cache.
		get("/public/"+moduletest.GraphPath(1)+"/@v/list", "X-Request-ID", "test-id-43")
		line = srv.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "request" && m["request_id"] == "test-id-43" })
		if line["cache"] != "hot" && line["cache"] != "hit" {
			t.Errorf("access log line of a cached list: %v", line)
		}
		if line := srv.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "request" && m["path"] == "/healthz" }); line["cache"] != nil {
			t.Errorf("a request that reaches no cache has a cache outcome: %v", line)
		}
		_, _, hdr = get("/healthz")
		if len(hdr.Get("X-Request-ID")) < 16 {
			t.Errorf("generated X-Request-ID: %q", hdr.Get("X-Request-ID"))
		}
	})

	t.Run("audit log", func(t *testing.T) {
		data, _ := os.ReadFile(audit)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		for _, want := range []string{
			`"who":"anonymous","auth":"none","action":"publish","outcome":"refused","status":401,"repository":"corp","module":"corp.example.com/lib@v1.0.0"`,
			`"who":"reader","auth":"token","action":"publish","outcome":"refused","status":403`,
			`"who":"ci","auth":"token","action":"publish","outcome":"done","status":201,"repository":"corp","module":"corp.example.com/lib@v1.0.0"`,
		} {
			found := false
			for _, l := range lines {
				found = found || strings.Contains(l, want)
			}
			if !found {
				t.Errorf("no audit line with %s in:\n%s", want, data)
			}
		}
		if strings.Contains(string(data), ciToken) || strings.Contains(string(data), readerToken) {
			t.Error("a token is in the audit log")
		}
	})

	anonymousList := func() int {
		code, _, _ := get("/corp/corp.example.com/lib/@v/list")
		return code
	}
	t.Run("reload on SIGHUP changes an access rule", func(t *testing.T) {
		if code := anonymousList(); code != 401 {
			t.Fatalf("anonymous read of the private module before the reload: %d", code)
		}
		writeFile(t, configFile, config("example.com,corp.example.com"))
		srv.signal(t, syscall.SIGHUP)
		srv.waitLog(t, 20*time.Second, func(m map[string]any) bool { return m["msg"] == "configuration reloaded" })
		if code := anonymousList(); code != 200 {
			t.Errorf("anonymous read of the private module after the reload: %d", code)
		}
	})

	t.Run("a bad config is refused and the old one stays", func(t *testing.T) {
		writeFile(t, configFile, config("example.com")+"    unknown_key: 1\n")
		srv.signal(t, syscall.SIGHUP)
		refused := srv.waitLog(t, 20*time.Second, func(m map[string]any) bool {
			return m["msg"] == "configuration refused, the previous one stays in force"
		})
		if e, _ := refused["error"].(string); !strings.Contains(e, "goproxy.yaml:43:") || !strings.Contains(e, "unknown_key") {
			t.Errorf("the refusal does not say where: %q", e)
		}
		if code := anonymousList(); code != 200 {
			t.Errorf("the previous access rule is gone: %d", code)
		}

		post := func(user, password string) (int, string) {
			req, _ := http.NewRequest("POST", srv.URL+"/-/reload", nil)
			if user != "" {
				req.SetBasicAuth(user, password)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			return resp.StatusCode, readAll(t, resp.Body)
		}
		if code, body := post("", ""); code != 401 {
			t.Errorf("anonymous reload: %d %s", code, body)
		}
		if code, body := post("alice", "alice-pw"); code != 400 || !strings.Contains(body, "unknown_key") {
			t.Errorf("reload of a bad config: %d %s", code, body)
		}
		writeFile(t, configFile, config("example.com"))
		if code, body := post("alice", "alice-pw"); code != 200 {
			t.Errorf("reload by an admin: %d %s", code, body)
		}
		if code := anonymousList(); code != 401 {
			t.Errorf("anonymous read of the private module after the admin reload: %d", code)
		}
		if n := up.Requests("/corp.example.com/lib/@v/list"); n != 0 {
			t.Errorf("the upstream was asked for the private module's list %d times", n)
		}
		data, _ := os.ReadFile(audit)
		if !strings.Contains(string(data), `"who":"alice","auth":"password","action":"reload","outcome":"done"`) ||
			!strings.Contains(string(data), `"action":"reload","outcome":"failed","status":400`) {
			t.Errorf("reloads are not in the audit log:\n%s", data)
		}
	})

	t.Run("a reload that changes an upstream makes the repository's proxy anew", func(t *testing.T) {
		up2 := moduletest.NewServer(vs)
		defer up2.Close()
		// The first UPSTREAM of the config is the public repository's.
		writeFile(t, configFile, strings.Replace(config("example.com"), up.URL, up2.URL, 1))
		before := len(srv.logLines("configuration reloaded"))
		srv.signal(t, syscall.SIGHUP)
		testwait.Within(t, 20*time.Second, func() bool { return len(srv.logLines("configuration reloaded")) > before }, "the reload")
		if code, body, _ := get("/public/" + moduletest.GraphPath(7) + "/@v/list"); code != 200 || up2.Requests("/"+moduletest.GraphPath(7)+"/@v/list") != 1 {
			t.Errorf("after the reload: %d %q, %d requests to the new upstream", code, body, up2.Requests("/"+moduletest.GraphPath(7)+"/@v/list"))
		}
		// The group kept its proxy and its upstream.
		if code, _, _ := get("/corp/"+moduletest.GraphPath(8)+"/@v/list", "Authorization", "Bearer "+readerToken); code != 200 || up2.Requests("/"+moduletest.GraphPath(8)+"/@v/list") != 0 {
			t.Errorf("the group after the reload: %d", code)
		}
	})
}

// runCounts is what /metrics and the access log say of a repository's
// requests so far (since the server started).
type runCounts struct {
	metrics     scraped
	paths       []string // of the requests for module files, by the access log
	moduleFiles int      // requests for module files (lists, @latest, .info, .mod, .zip)
	misses      int      // of those, answered from upstream
	hits        int      // answered from the proxy's memory or the cache
}

func (c runCounts) String() string {
	return fmt.Sprintf("%d requests for module files: %d misses, %d hits", c.moduleFiles, c.misses, c.hits)
}

// countedRun scrapes the metrics once they count every request the
// access log has for repo, and checks that both agree, kind by kind and
// cache outcome by cache outcome.
func countedRun(t *testing.T, srv *proc, client *http.Client, auth []string, repo string) runCounts {
	t.Helper()
	lines := func() []map[string]any {
		var out []map[string]any
		for _, l := range srv.logLines("request") {
			if l["repository"] == repo {
				out = append(out, l)
			}
		}
		return out
	}
	// The client has every answer, but the server's handlers may still
	// be at their last step: the Request metric is reported before the
	// access log line is written, so once the two counts agree, both
	// have every request.
	var m scraped
	var logged []map[string]any
	testwait.Within(t, 10*time.Second, func() bool {
		m = scrape(t, client, srv.URL+"/metrics", auth...)
		logged = lines()
		return int(m.sum("goproxy_requests_total", "repository", repo)) == len(logged)
	}, "the counts of ", repo, " in /metrics and the access log to agree: ", testwait.Show(func() string {
		return fmt.Sprintf("%v and %d", m.sum("goproxy_requests_total", "repository", repo), len(logged))
	}))
	c := runCounts{metrics: m}
	byOutcome := map[[3]string]int{}
	for _, l := range logged {
		path, _ := l["path"].(string)
		cache, _ := l["cache"].(string)
		kind := kindOfPath(path)
		if cache == "" {
			cache = "none"
		}
		byOutcome[[3]string{kind, cache, fmt.Sprintf("%dxx", int(l["status"].(float64))/100)}]++
		switch kind {
		case "list", "latest", "info", "mod", "zip":
			c.moduleFiles++
			c.paths = append(c.paths, path)
			switch cache {
			case "miss":
				c.misses++
			case "hit", "hot":
				c.hits++
			default:
				t.Errorf("%s: cache %q", path, cache)
			}
		}
	}
	for k, n := range byOutcome {
		if got := m.sum("goproxy_requests_total", "repository", repo, "kind", k[0], "cache", k[1], "code", k[2]); int(got) != n {
			t.Errorf("/metrics counts %v requests of kind %s, cache %s, status %s; the access log %d", got, k[0], k[1], k[2], n)
		}
	}
	return c
}

// settledMetrics scrapes the metrics until check finds nothing wrong
// with them, failing with what it found at the deadline: what the proxy
// does in the background after the client has its answers (a prefetch,
// storing a file) settles in a moment.
func settledMetrics(t *testing.T, client *http.Client, url string, auth []string, check func(scraped) error) scraped {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		m := scrape(t, client, url, auth...)
		err := check(m)
		if err == nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
}

// kindOfPath is the metrics' kind of a request for path, in a
// repository under a prefix.
func kindOfPath(path string) string {
	switch {
	case strings.Contains(path, "/sumdb/"):
		return "sumdb"
	case strings.HasSuffix(path, "/@v/list"):
		return "list"
	case strings.HasSuffix(path, "/@latest"):
		return "latest"
	case strings.HasSuffix(path, ".info"):
		return "info"
	case strings.HasSuffix(path, ".mod"):
		return "mod"
	case strings.HasSuffix(path, ".zip"):
		return "zip"
	}
	return "other"
}
