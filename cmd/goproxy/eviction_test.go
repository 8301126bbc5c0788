package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// evictionConfig is the server of TestEvictionKeepsARepositorysCacheSmall:
// a repository whose cache may hold 2 KiB, about three small module
// versions, evicted every second; its metrics on an address of their
// own.
const evictionConfig = `addr: 127.0.0.1:0
log: {format: json}
progress: {mode: "off"}
metrics: {addr: 127.0.0.1:0}
repositories:
  - name: small
    prefix: /small
    cache: DIR/cache
    goproxy: UPSTREAM
    gosumdb: "off"
    eviction: {max_bytes: 2KiB, interval: 1s}
`

// TestEvictionKeepsARepositorysCacheSmall fills a repository with a tiny
// max_bytes with five module versions, one after the other: eviction
// removes the least recently used down to the limit, the metrics (on
// their own address) count what it removed and what is left, and the
// status page shows it.
func TestEvictionKeepsARepositorysCacheSmall(t *testing.T) {
	buildServer(t)
	up := moduletest.NewServer(moduletest.Graph(10))
	defer up.Close()
	dir := t.TempDir()
	config := writeFile(t, filepath.Join(dir, "goproxy.yaml"),
		strings.NewReplacer("DIR", dir, "UPSTREAM", up.URL).Replace(evictionConfig))
	srv := startServer(t, []string{"-config", config}, serverEnv(t))
	metricsURL, _ := srv.waitLog(t, 10*time.Second, func(m map[string]any) bool { return m["msg"] == "serving metrics" })["url"].(string)
	if !strings.HasPrefix(metricsURL, "http://127.0.0.1:") || !strings.HasSuffix(metricsURL, "/metrics") {
		t.Fatalf("metrics served at %q", metricsURL)
	}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, readAll(t, resp.Body)
	}
	if code, _ := get(srv.URL + "/metrics"); code != 404 {
		t.Errorf("/metrics on the server's address, with metrics.addr set: %d", code)
	}

	const versions = 5
	for i := range versions {
		for _, ext := range []string{".info", ".mod", ".zip"} {
			if code, body := get(srv.URL + "/small/" + moduletest.GraphPath(i) + "/@v/v1.0.0" + ext); code != 200 {
				t.Fatalf("%s%s: %d %s", moduletest.GraphPath(i), ext, code, body)
			}
		}
	}
	// Wait for two runs to end after the last file was stored: the
	// first may have started before.
	runs := scrape(t, http.DefaultClient, metricsURL).sum("goproxy_eviction_runs_total", "repository", "small")
	var m scraped
	testwait.Within(t, 30*time.Second, func() bool {
		m = scrape(t, http.DefaultClient, metricsURL)
		return m.sum("goproxy_eviction_runs_total", "repository", "small") >= runs+2
	}, "two eviction runs; runs: ", testwait.Show(func() string { return fmt.Sprint(m.sum("goproxy_eviction_runs_total", "repository", "small")) }))
	fetched := m.sum("goproxy_upstream_fetch_bytes_total", "repository", "small")
	cached := m.sum("goproxy_cache_bytes", "repository", "small")
	evictedFiles := m.sum("goproxy_evicted_files_total", "repository", "small", "reason", "size")
	evictedBytes := m.sum("goproxy_evicted_bytes_total", "repository", "small", "reason", "size")
	t.Logf("fetched %v bytes; %v left in the cache (%v entries); %v files, %v bytes evicted in %v removals",
		fetched, cached, m.sum("goproxy_cache_entries", "repository", "small"), evictedFiles, evictedBytes,
		m.sum("goproxy_evictions_total", "repository", "small"))
	if fetched <= 2048 {
		t.Fatalf("only %v bytes fetched: the test needs more than max_bytes", fetched)
	}
	if cached > 2048 || cached == 0 {
		t.Errorf("the cache holds %v bytes after the runs, want at most 2 KiB", cached)
	}
	if evictedFiles == 0 || evictedBytes+cached != fetched {
		t.Errorf("%v bytes evicted and %v left, of %v fetched", evictedBytes, cached, fetched)
	}
	if m.sum("goproxy_evicted_files_total", "repository", "small", "reason", "age") != 0 {
		t.Error("files evicted by age, with no max_age")
	}
	// The least recently used went, the latest stayed.
	cache := filepath.Join(dir, "cache")
	if _, err := os.Stat(filepath.Join(cache, moduletest.GraphPath(0), "@v", "v1.0.0.zip")); err == nil {
		t.Errorf("the first version fetched is still cached")
	}
	for _, ext := range []string{".info", ".mod", ".zip"} {
		if _, err := os.Stat(filepath.Join(cache, moduletest.GraphPath(versions-1), "@v", "v1.0.0"+ext)); err != nil {
			t.Errorf("the last version fetched was evicted: %v", err)
		}
	}

	// The status page: the repository's eviction, and its module list
	// walked again after the run that removed the first version.
	evicted := regexp.MustCompile(`evicted (\d+) files [\d.]+ K?i?B in \d+ runs · at most 2\.0 KiB`)
	var text string
	var found []string
	testwait.Within(t, 30*time.Second, func() bool {
		_, page := get(srv.URL + "/-/status/repositories/small")
		text = pageText(page)
		found = evicted.FindStringSubmatch(text)
		return found != nil && !strings.Contains(text, moduletest.GraphPath(0)) && strings.Contains(text, moduletest.GraphPath(versions-1))
	}, "the repository's page to show the eviction:\n", testwait.Show(func() string { return text }))
	if files, _ := strconv.Atoi(found[1]); float64(files) < evictedFiles {
		t.Errorf("the status page shows %d files evicted, the metrics %v", files, evictedFiles)
	}
	_, overview := get(srv.URL + "/")
	if !regexp.MustCompile(`small\s+/small\s+proxy\s+15\s+[\d.]+ %\s+[\d.]+ (K?i?B)\s+\d+\s+—\s+\d+\s+\d+ files, [\d.]+ K?i?B`).MatchString(pageText(overview)) {
		t.Errorf("the overview's row of the repository:\n%s", pageText(overview))
	}
}

var (
	htmlTag   = regexp.MustCompile(`<[^>]*>`)
	htmlSpace = regexp.MustCompile(`\s+`)
)

// pageText is the text of an HTML page, tags dropped and spaces folded,
// for regular expressions.
func pageText(page string) string {
	text := htmlTag.ReplaceAllString(page, " ")
	text = strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">", "&#34;", `"`, "&#39;", "'").Replace(text)
	return htmlSpace.ReplaceAllString(text, " ")
}
