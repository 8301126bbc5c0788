package main

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// requireChromium returns the browser to test with, skipping the test
// when there is none, unless GOPROXY_TEST_REQUIRE_CHROMIUM=1 (as in CI)
// makes that a failure.
func requireChromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("GOPROXY_TEST_REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("chromium is required (GOPROXY_TEST_REQUIRE_CHROMIUM=1): %v", err)
		}
		t.Skipf("no chromium at %s (apt-get install chromium): the status page is not tested in a browser", chromiumPath)
	}
	return chromiumPath
}

// artifactDir is where a test keeps what a person may want to look at
// afterwards: under $GOPROXY_TEST_ARTIFACTS if set, kept; else the
// test's artifact directory (kept with go test -artifacts, else removed).
func artifactDir(t *testing.T) string {
	if base := os.Getenv("GOPROXY_TEST_ARTIFACTS"); base != "" {
		dir := filepath.Join(base, t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.ArtifactDir()
}

// browser is a headless chromium tab with a fresh profile. Its HTTP
// credentials are answered with those set by signIn, as a person would
// type them into the browser's prompt.
type browser struct {
	t    *testing.T
	ctx  context.Context
	user atomic.Pointer[[2]string]
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	exec := requireChromium(t)
	ctx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exec),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		// Without these, chromium reaches for Google's services, and this
		// machine's network refuses its connections.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	t.Cleanup(cancel)
	ctx, cancelTab := chromedp.NewContext(ctx)
	t.Cleanup(cancelTab)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelTimeout)
	b := &browser{t: t, ctx: ctx}

	paused := chromedp.Events(ctx, fetch.RequestPaused)
	challenges := chromedp.Events(ctx, fetch.AuthRequired)
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{HandleAuthRequests: new(true)}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	go func() {
		for ev, err := range paused {
			if err != nil {
				return
			}
			chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
		}
	}()
	go func() {
		for ev, err := range challenges {
			if err != nil {
				return
			}
			answer := &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseCancelAuth}
			if u := b.user.Load(); u != nil {
				answer = &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseProvideCredentials,
					Username: u[0], Password: u[1]}
			}
			chromedp.Call(ctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID, AuthChallengeResponse: answer})
		}
	}()
	return b
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatal(err)
	}
}

// text is the text the page shows.
func (b *browser) text() string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

// open navigates to url and returns the text the page shows.
func (b *browser) open(url string) string {
	b.t.Helper()
	b.do(chromedp.Navigate(url))
	return b.text()
}

// openUntil opens url again until its text matches every one of res.
func (b *browser) openUntil(url string, res ...*regexp.Regexp) string {
	b.t.Helper()
	var text string
	missing := -1
	testwait.Within(b.t, 30*time.Second, func() bool {
		text = b.open(url)
		missing = slices.IndexFunc(res, func(re *regexp.Regexp) bool { return !re.MatchString(text) })
		return missing < 0
	}, url, " to show every pattern; missing ", testwait.Show(func() string { return fmt.Sprintf("%v:\n%s", res[missing], text) }))
	return text
}

// screenshot saves the page as a PNG among the test's artifacts.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)) // 100: a PNG
	if err != nil {
		b.t.Fatal(err)
	}
	file := filepath.Join(artifactDir(b.t), name)
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", file)
}

// statusConfig is the server of TestStatusPageInABrowser: a public
// proxy and a hosted repository readable only with credentials.
const statusConfig = `addr: 127.0.0.1:0
cache: DIR/cache
log: {format: json}
audit_log: {file: DIR/audit.log}
progress: {mode: "off"}
status_page: {scan_interval: 1s}
users:
  alice: {password_env: ALICE_PASSWORD, admin: true}
  bob: {password_env: BOB_PASSWORD}
repositories:
  - name: public
    prefix: /public
    goproxy: UPSTREAM
    gosumdb: "off"
    download: {connections: 1}
    prefetch: {off: true}      # the cache holds what the test asked for, no more
    access:
      grants:
        alice: {read: "*", administer: true}
  - name: corp
    prefix: /corp
    type: hosted
    hosted: DIR/hosted
    access:
      anonymous_read: ""
      grants:
        alice: {read: "*", publish: corp.example.com, administer: true}
        bob: {read: corp.example.com/lib}
`

// TestStatusPageInABrowser drives the status page in headless chromium:
// it renders the repositories and a download in flight; a signed-in
// administrator browses a cached module and deletes a version with the
// page's form (which the audit log records); the same form without its
// token, or posted from another site, is refused.
func TestStatusPageInABrowser(t *testing.T) {
	buildServer(t)
	b := newBrowser(t)
	const large, largeVersion = "example.com/large", "v1.0.0"
	upstream := slowUpstream(t, large, largeVersion, 16<<20, 256<<10)
	dir := t.TempDir()
	config := writeFile(t, filepath.Join(dir, "goproxy.yaml"),
		strings.NewReplacer("DIR", dir, "UPSTREAM", upstream).Replace(statusConfig))
	srv := startServer(t, []string{"-config", config}, serverEnv(t, "ALICE_PASSWORD=alice-pw", "BOB_PASSWORD=bob-pw"))
	get := func(path, user string) int {
		t.Helper()
		code, _ := srv.getAs(t, path, user)
		return code
	}
	mod := moduletest.GraphPath(0)
	for _, f := range []string{"v1.0.0.info", "v1.0.0.mod", "v1.0.0.zip", "v1.1.0.info", "v1.0.0.info"} {
		if code := get("/public/"+mod+"/@v/"+f, ""); code != 200 {
			t.Fatalf("%s: %d", f, code)
		}
	}
	req, _ := http.NewRequest("PUT", srv.URL+"/corp/corp.example.com/lib/@v/v1.0.0.zip", bytes.NewReader(corpZip(t, "v1.0.0")))
	req.SetBasicAuth("alice", "alice-pw")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 201 {
		t.Fatalf("publishing: %v %v", resp.Status, err)
	}
	download := getInBackground(srv.URL + "/public/" + large + "/@v/" + largeVersion + ".zip")
	t.Cleanup(func() { srv.cmd.Process.Kill(); <-download })

	t.Run("anonymous overview", func(t *testing.T) {
		b.t = t
		// The download in flight, from the library's live view: its
		// upstream and the client waiting for it; and the public
		// repository's cache walked since it was filled: 4 files of one
		// module.
		inFlight := regexp.MustCompile(regexp.QuoteMeta(large+"@"+largeVersion) + `\s+from ` + regexp.QuoteMeta(upstream) +
			` · for \S+\s+1 client waiting\s+\d+ %\s+[\d.]+ [KM]iB of 16\.0 MiB\s+[\d.]+ [KM]iB/s`)
		text := b.openUntil(srv.URL+"/", inFlight,
			regexp.MustCompile(`public\s+/public\s+proxy\s+\d+\s+\S+ %\s+[\d.]+ K?i?B\s+4\s+—\s+1\s`))
		for _, want := range []string{"public", "/public", "corp", "/corp", "hosted", "anonymous", "sign in"} {
			if !strings.Contains(text, want) {
				t.Errorf("the overview does not show %q:\n%s", want, text)
			}
		}
		// Four files fetched, one served from the cache.
		if !regexp.MustCompile(`public\s+/public\s+proxy\s+5\s+20\.0 %`).MatchString(text) {
			t.Errorf("the public repository's requests and hit ratio are not 5 and 20.0 %%:\n%s", text)
		}
		if n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll('#downloads progress').length`)); err != nil || n != 1 {
			t.Errorf("%d progress bars (%v)", n, err)
		}
		b.screenshot("status-overview.png")
		if text := b.openUntil(srv.URL+"/-/status/repositories/corp", regexp.MustCompile(`No module`)); strings.Contains(text, "corp.example.com/lib") {
			t.Errorf("an anonymous viewer sees a module it may not read:\n%s", text)
		}
	})

	t.Run("signed-in administrator", func(t *testing.T) {
		b.t = t
		b.user.Store(&[2]string{"alice", "alice-pw"})
		if text := b.open(srv.URL + "/?signin"); !strings.Contains(text, "signed in as alice") {
			t.Fatalf("after signing in:\n%s", text)
		}
		b.openUntil(srv.URL+"/-/status/repositories/corp", regexp.MustCompile(`corp\.example\.com/lib\s+0\s+1\s`))
		b.openUntil(srv.URL+"/-/status/repositories/public", regexp.MustCompile(regexp.QuoteMeta(mod)+`\s+2\s+0\s`))
		b.do(chromedp.Click(chromedp.CSS(`#modules a`)))
		b.do(chromedp.WaitVisible(chromedp.CSS(`#versions`)))
		text := b.text()
		if !strings.Contains(text, "v1.1.0") || !strings.Contains(text, ".info .mod .zip") {
			t.Errorf("the module page:\n%s", text)
		}
		b.screenshot("status-module.png")

		b.do(chromedp.Click(chromedp.CSS(`form[action="/-/status/delete"]:has(input[value="v1.0.0"]) button`)))
		b.do(chromedp.WaitVisible(chromedp.CSS(`#result`)))
		if text := b.text(); !strings.Contains(text, "removed 3 cached files") {
			t.Errorf("deleting v1.0.0:\n%s", text)
		}
		for _, ext := range []string{".info", ".mod", ".zip"} {
			if _, err := os.Stat(filepath.Join(dir, "cache", "public", mod, "@v", "v1.0.0"+ext)); err == nil {
				t.Errorf("v1.0.0%s is still cached", ext)
			}
		}
		waitAudit(t, filepath.Join(dir, "audit.log"), `"who":"alice"`, `"action":"delete"`, `"module":"`+mod+`@v1.0.0"`, `"outcome":"done"`)

		b.do(chromedp.Navigate(srv.URL + "/-/status/repositories/public/module?path=" + mod))
		b.do(chromedp.Click(chromedp.CSS(`button[name=refresh]`)))
		b.do(chromedp.WaitVisible(chromedp.CSS(`#result`)))
		if text := b.text(); !strings.Contains(text, "removed 2 cached files of "+mod+" version list") {
			t.Errorf("refreshing the lists:\n%s", text)
		}
		waitAudit(t, filepath.Join(dir, "audit.log"), `"who":"alice"`, `"action":"delete"`, `"module":"`+mod+`"`, `"outcome":"done"`)
	})

	t.Run("form without its token", func(t *testing.T) {
		b.t = t
		b.open(srv.URL + "/-/status/repositories/public/module?path=" + mod)
		b.do(chromedp.Evaluate[chromedp.Void](`document.querySelectorAll('input[name=token]').forEach(e => e.remove())`))
		b.do(chromedp.Click(chromedp.CSS(`form[action="/-/status/delete"] button`)))
		b.do(chromedp.WaitVisible(chromedp.CSS(`#result`)))
		if text := b.text(); !strings.Contains(text, "Refused: the form's token is missing") {
			t.Errorf("deleting without the token:\n%s", text)
		}
		if _, err := os.Stat(filepath.Join(dir, "cache", "public", mod, "@v", "v1.1.0.info")); err != nil {
			t.Errorf("v1.1.0 was removed: %v", err)
		}
		waitAudit(t, filepath.Join(dir, "audit.log"), `"who":"alice"`, `"action":"delete"`, `"outcome":"refused"`, `token`)
	})

	t.Run("form posted from another site", func(t *testing.T) {
		b.t = t
		// The token is right this time: what refuses the request is the
		// browser's word that it comes from another site.
		b.open(srv.URL + "/-/status/repositories/public/module?path=" + mod)
		token, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector('input[name=token]').value`))
		if err != nil || token == "" {
			t.Fatalf("no token on the page: %v", err)
		}
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `<!doctype html><form method="post" action="%s/-/status/delete">
<input name="token" value="%s"><input name="repository" value="public">
<input name="module" value="%s"><input name="version" value="v1.1.0"></form>
<script>document.forms[0].submit()</script>`, srv.URL, token, mod)
		}))
		defer evil.Close()
		// localhost is another site than 127.0.0.1.
		b.do(chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)))
		b.do(chromedp.WaitVisible(chromedp.CSS(`#result`)))
		if text := b.text(); !strings.Contains(text, "Refused: a request from another site is refused") {
			t.Errorf("a cross-site post:\n%s", text)
		}
		if _, err := os.Stat(filepath.Join(dir, "cache", "public", mod, "@v", "v1.1.0.info")); err != nil {
			t.Errorf("v1.1.0 was removed: %v", err)
		}
	})
}

// TestStatusPageShowsWhatTheViewerMayRead asks the status page for a
// hosted repository's modules as different viewers: each sees what the
// repository's access rules let it read, and only administrators get
// the admin forms.
func TestStatusPageShowsWhatTheViewerMayRead(t *testing.T) {
	buildServer(t)
	dir := t.TempDir()
	config := writeFile(t, filepath.Join(dir, "goproxy.yaml"),
		strings.NewReplacer("DIR", dir, "UPSTREAM", "off").Replace(statusConfig))
	srv := startServer(t, []string{"-config", config}, serverEnv(t, "ALICE_PASSWORD=alice-pw", "BOB_PASSWORD=bob-pw"))
	for _, lib := range []string{"corp.example.com/lib", "corp.example.com/other"} {
		req, _ := http.NewRequest("PUT", srv.URL+"/corp/"+lib+"/@v/v1.0.0.zip", bytes.NewReader(moduleZip(t, lib, "v1.0.0")))
		req.SetBasicAuth("alice", "alice-pw")
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 201 {
			t.Fatalf("publishing %s: %v %v", lib, resp.Status, err)
		}
	}
	get := func(path, user, password string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, readAll(t, resp.Body)
	}
	// Wait for a walk that found both.
	testwait.Within(t, 30*time.Second, func() bool {
		_, body := get("/-/status/repositories/corp", "alice", "alice-pw")
		return strings.Contains(body, "corp.example.com/other")
	}, "the published modules to be listed")
	for _, tc := range []struct {
		name, user, password string
		lists                []string
		admin                bool
	}{
		{"anonymous", "", "", nil, false},
		{"wrong password", "alice", "guess", nil, false},
		{"reader of one module", "bob", "bob-pw", []string{"corp.example.com/lib"}, false},
		{"administrator", "alice", "alice-pw", []string{"corp.example.com/lib", "corp.example.com/other"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, list := get("/-/status/repositories/corp", tc.user, tc.password)
			for _, lib := range []string{"corp.example.com/lib", "corp.example.com/other"} {
				if want := slices.Contains(tc.lists, lib); strings.Contains(list, lib) != want {
					t.Errorf("lists %s: %v, want %v", lib, !want, want)
				}
				code, page := get("/-/status/repositories/corp/module?path="+lib, tc.user, tc.password)
				if want := slices.Contains(tc.lists, lib); (code == 200) != want {
					t.Errorf("the page of %s: %d", lib, code)
				}
				if code == 200 && strings.Contains(page, `name="token"`) != tc.admin {
					t.Errorf("the page of %s has admin forms: %v, want %v", lib, !tc.admin, tc.admin)
				}
			}
		})
	}
}

// TestStatusPageShowsErrorsToThoseWhoMayReadTheirModule breaks a
// repository's cache (a file where its directory should be), so that
// serving a module logs errors: the overview shows them to a viewer who
// may read that module, not to others.
func TestStatusPageShowsErrorsToThoseWhoMayReadTheirModule(t *testing.T) {
	buildServer(t)
	dir := t.TempDir()
	upstream := slowUpstream(t, "example.com/large", "v1.0.0", 1<<20, 1<<20)
	broken := writeFile(t, filepath.Join(dir, "broken"), "not a directory\n")
	config := writeFile(t, filepath.Join(dir, "goproxy.yaml"), `addr: 127.0.0.1:0
log: {format: json}
progress: {mode: "off"}
users:
  alice: {password_env: ALICE_PASSWORD}
  bob: {password_env: BOB_PASSWORD}
repositories:
  - name: private
    prefix: /private
    cache: `+broken+`
    goproxy: `+upstream+`
    gosumdb: "off"
    access:
      anonymous_read: ""
      grants:
        alice: {read: "*"}
        bob: {read: example.com/mod001}
`)
	srv := startServer(t, []string{"-config", config}, serverEnv(t, "ALICE_PASSWORD=alice-pw", "BOB_PASSWORD=bob-pw"))
	get := func(path, user string) (int, string) {
		t.Helper()
		return srv.getAs(t, path, user)
	}
	mod := moduletest.GraphPath(0)
	// Served all the same: a broken cache costs caching, not serving.
	if code, _ := get("/private/"+mod+"/@v/v1.0.0.info", "alice"); code != 200 {
		t.Fatalf("GET as alice: %d", code)
	}
	srv.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "cache put failed" })
	for _, tc := range []struct {
		user  string
		shown bool
	}{{"alice", true}, {"bob", false}, {"", false}} {
		_, page := get("/", tc.user)
		if got := strings.Contains(page, "cache put failed"); got != tc.shown {
			t.Errorf("%q sees the error: %v, want %v", tc.user, got, tc.shown)
		}
		if tc.shown && !strings.Contains(page, mod) {
			t.Errorf("the error does not name %s", mod)
		}
	}
}

// moduleZip is a module zip of path@version with one file.
func moduleZip(t *testing.T, path, version string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create(path + "@" + version + "/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "module %s\n\ngo 1.21\n", path)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestStatusPageEscapes renders the overview with what attackers choose
// (an error message, a user name, module paths): none of it becomes
// markup.
func TestStatusPageEscapes(t *testing.T) {
	hostile := `<script>alert(1)</script>"'><img src=x onerror=alert(2)>`
	page := &statusPage{Title: hostile, Viewer: viewer{Name: hostile, SignedIn: true}, Now: time.Now(),
		Repos:     []repoStatus{{Name: hostile, Prefix: hostile, Type: hostile, Link: "javascript:alert(3)"}},
		Downloads: []transfer{{Repo: hostile, Module: hostile, Version: hostile, Upstream: hostile, Waiting: 2, Total: -1}},
		Failures:  []failedDownload{{Repo: hostile, Module: hostile, Version: hostile, Upstream: hostile, Error: hostile}},
		Errors:    []loggedError{{Message: hostile, Repo: hostile, Module: hostile, Attrs: []loggedAttr{{hostile, hostile}}}},
	}
	var buf bytes.Buffer
	if err := statusTemplates.ExecuteTemplate(&buf, "overview", page); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, bad := range []string{"<script>", "<img", `href="javascript:`} {
		if strings.Contains(out, bad) {
			t.Errorf("the page has %q", bad)
		}
	}
	if !strings.Contains(out, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("the hostile text is not shown escaped")
	}
}

// waitAudit waits for a line of the audit log that has every one of
// parts.
func waitAudit(t *testing.T, file string, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(file)
		for _, line := range strings.Split(string(data), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit line with %q in:\n%s", parts, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStatusPageShowsFailedDownloads fetches two modules through an
// upstream that answers 502: the overview lists both failures, from the
// library's live view, with their upstream and error, each only to
// viewers who may read its module.
func TestStatusPageShowsFailedDownloads(t *testing.T) {
	buildServer(t)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "the upstream is failing", http.StatusBadGateway)
	}))
	defer failing.Close()
	dir := t.TempDir()
	config := writeFile(t, filepath.Join(dir, "goproxy.yaml"), `addr: 127.0.0.1:0
log: {format: json}
progress: {mode: "off"}
users:
  alice: {password_env: ALICE_PASSWORD}
cache: `+dir+`/cache
goproxy: `+failing.URL+`
gosumdb: "off"
download: {attempts: 1}
access:
  anonymous_read: example.com/seen
  grants:
    alice: {read: "*"}
`)
	srv := startServer(t, []string{"-config", config}, serverEnv(t, "ALICE_PASSWORD=alice-pw"))
	get := func(path, user string) (int, string) {
		t.Helper()
		return srv.getAs(t, path, user)
	}
	for _, mod := range []string{"example.com/seen", "example.com/hidden"} {
		if code, _ := get("/"+mod+"/@v/v1.0.0.zip", "alice"); code != http.StatusBadGateway {
			t.Fatalf("%s through a failing upstream: %d", mod, code)
		}
	}
	for _, tc := range []struct {
		user  string
		shown []string
	}{{"alice", []string{"example.com/seen", "example.com/hidden"}}, {"", []string{"example.com/seen"}}} {
		_, page := get("/", tc.user)
		text := pageText(page)
		for _, mod := range []string{"example.com/seen", "example.com/hidden"} {
			row := regexp.MustCompile(`\d\d:\d\d:\d\d root ` + regexp.QuoteMeta(mod) + `@v1\.0\.0 ` + regexp.QuoteMeta(failing.URL) + ` [^<]*502`)
			if want := slices.Contains(tc.shown, mod); row.MatchString(text) != want {
				t.Errorf("%q sees the failure of %s: %v, want %v\n%s", tc.user, mod, !want, want, text)
			}
		}
	}
}

// getAs GETs path from the server as user (whose password is user+"-pw"),
// or anonymously for "", and returns the status and body.
func (p *proc) getAs(t *testing.T, path, user string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", p.URL+path, nil)
	if user != "" {
		req.SetBasicAuth(user, user+"-pw")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, readAll(t, resp.Body)
}
