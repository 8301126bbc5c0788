package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
)

// TestMetricsAndEvictionSettingsAreChecked gives bad metrics and
// eviction settings: each is reported with its file, line and key.
func TestMetricsAndEvictionSettingsAreChecked(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, config string
		want         []string
	}{
		{"metrics", `addr: 127.0.0.1:8080
cache: DIR/cache
metrics:
  access: everyone
  path: metrics
  addr: 127.0.0.1:8080
`, []string{
			`goproxy.yaml:4: metrics.access: "everyone" is not open or admin`,
			`goproxy.yaml:5: metrics.path: "metrics" is not a path such as /metrics`,
			`goproxy.yaml:6: metrics.addr: is addr`,
		}},
		{"a metrics path a module could have", `cache: DIR/cache
metrics: {path: /example.com/metrics}
`, []string{`goproxy.yaml:2: metrics.path: "/example.com/metrics": its first element must not have a dot`}},
		{"a metrics path of the server's", `cache: DIR/cache
metrics: {path: /-/metrics}
`, []string{`goproxy.yaml:2: metrics.path: /- is the server's own`}},
		{"admin access and no admin", `cache: DIR/cache
users:
  bob: {password_env: BOB_PASSWORD}
metrics: {access: admin}
`, []string{`goproxy.yaml:4: metrics.access: is admin, but no user or token has admin: true`}},
		{"a repository under the metrics' path", `cache: DIR/cache
metrics: {path: /ops/metrics}
repositories:
  - prefix: /ops
`, []string{`goproxy.yaml:4: repositories[0].prefix: "/ops" and metrics.path "/ops/metrics" nest`}},
		{"eviction", `cache: DIR/cache
repositories:
  - prefix: /a
    eviction:
      max_age: -1h
      max_bytes: 1GiB
  - prefix: /b
    eviction: {interval: 1m}
`, []string{
			`goproxy.yaml:5: repositories[0].eviction.max_age: must not be negative`,
			`goproxy.yaml:8: repositories[1].eviction.interval: is set, but neither max_age nor max_bytes`,
		}},
		{"an eviction size that is none", `cache: DIR/cache
eviction:
  max_bytes: lots
`, []string{`goproxy.yaml:3: eviction.max_bytes: "lots" is not a size`}},
		{"eviction at the top level with repositories", `cache: DIR/cache
eviction: {max_bytes: 1GiB}
repositories:
  - prefix: /a
`, []string{`goproxy.yaml:3: repositories: with repositories listed, repository settings`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, filepath.Join(dir, "goproxy.yaml"), strings.ReplaceAll(tc.config, "DIR", dir))
			o, _ := parseFlags([]string{"-config", file}, io.Discard)
			cfg, src, err := loadConfig(o, lookupIn(nil))
			if err == nil {
				err = cfg.Validate(src, []string{"BOB_PASSWORD=pw"})
			}
			if err == nil {
				t.Fatal("the configuration passed")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("no %q in:\n%v", want, err)
				}
			}
		})
	}
}

// TestEvictionSettingsReachTheProxy: a repository's eviction settings
// make its Proxy's Eviction, and are part of its spec, so that changing
// them makes the Proxy anew on reload.
func TestEvictionSettingsReachTheProxy(t *testing.T) {
	dir := t.TempDir()
	pl := planOf(t, dir, `cache: `+dir+`/cache
goproxy: "off"
eviction: {max_age: 720h, max_bytes: 20GiB, interval: 30m}
`)
	want := goproxy.Eviction{MaxAge: 720 * time.Hour, MaxBytes: 20 << 30, Interval: 30 * time.Minute}
	if got := pl.repos[0].spec.Eviction; got != want {
		t.Errorf("the spec's eviction: %+v, want %+v", got, want)
	}
	p, _, err := newProxy(&pl.repos[0].spec, t.TempDir(), nil, nil, goproxy.Metrics{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Eviction != want {
		t.Errorf("the Proxy's eviction: %+v, want %+v", p.Eviction, want)
	}
}

// TestAReloadThatChangesEvictionMakesTheProxyAnew applies a plan, then
// the same plan, then one with other eviction settings: the repository
// keeps its Proxy the first time and gets a new one, with the new
// settings, the second, while its counts go on.
func TestAReloadThatChangesEvictionMakesTheProxyAnew(t *testing.T) {
	dir := t.TempDir()
	plan := func(maxBytes string) *plan {
		t.Helper()
		return planOf(t, dir, `cache: `+dir+`/cache
goproxy: "off"
eviction: {max_bytes: `+maxBytes+`}
`)
	}
	logs, err := newLogs(defaultConfig(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{logs: logs, metrics: newServerMetrics(), live: newLiveViews(), scanner: newCacheScanner(logs.main),
		directBase: t.TempDir(), stopping: make(chan struct{})}
	defer func() {
		close(s.stopping)
		s.retiring.Wait()
		for _, r := range s.state.Load().repos {
			r.inst.proxy.Close()
		}
	}()
	proxy := func() *goproxy.Proxy { return s.state.Load().repos[0].inst.proxy }
	if err := s.apply(plan("1GiB")); err != nil {
		t.Fatal(err)
	}
	first := proxy()
	first.Metrics.Request(goproxy.RequestMetric{Kind: goproxy.RequestInfo, Status: 200, Cache: goproxy.CacheHit})
	if err := s.apply(plan("1GiB")); err != nil {
		t.Fatal(err)
	}
	if proxy() != first {
		t.Error("an unchanged repository got a new Proxy")
	}
	if err := s.apply(plan("2GiB")); err != nil {
		t.Fatal(err)
	}
	if p := proxy(); p == first || p.Eviction.MaxBytes != 2<<30 {
		t.Errorf("after a reload with another max_bytes: the same Proxy %v, MaxBytes %d", p == first, p.Eviction.MaxBytes)
	}
	proxy().Metrics.Request(goproxy.RequestMetric{Kind: goproxy.RequestInfo, Status: 200, Cache: goproxy.CacheHit})
	if got := s.metrics.requestStats("root").Hits; got != 2 {
		t.Errorf("%d hits counted across the reload, want 2", got)
	}
}
