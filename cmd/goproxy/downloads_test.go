package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"

	"github.com/goproxy-team/goproxy/internal/testwait"
)

// fakeClock is a time that tests move by hand.
type fakeClock struct{ t time.Time }

func newFakeClock() *fakeClock               { return &fakeClock{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestTransferProgressAndLabels(t *testing.T) {
	d := transfer{Module: "example.com/m", Version: "v1.0.0", Kind: goproxy.RequestZip, Done: 1 << 20, Total: 10 << 20, Rate: 1 << 20}
	if d.Percent() != 10 || d.ETA() != 9*time.Second {
		t.Errorf("%d %%, ETA %v; want 10 %%, 9s", d.Percent(), d.ETA())
	}
	d.Total, d.Rate = -1, 0
	if d.Percent() != -1 || d.ETA() != -1 {
		t.Errorf("with the size unknown: %d %%, ETA %v", d.Percent(), d.ETA())
	}
	for _, tc := range []struct {
		module, version string
		kind            goproxy.RequestKind
		upstream, want  string
	}{
		{"example.com/m", "v1.0.0", goproxy.RequestZip, "direct", "example.com/m@v1.0.0"},
		{"example.com/m", "v1.0.0", goproxy.RequestInfo, "direct", "example.com/m@v1.0.0 (.info)"},
		{"example.com/m", "", goproxy.RequestList, "direct", "example.com/m (version list)"},
		{"example.com/m", "", goproxy.RequestLatest, "direct", "example.com/m@latest"},
		{"example.com/m", "v1.0.0", goproxy.RequestSumDB, "sumdb/sum.golang.org", "example.com/m@v1.0.0 (sumdb/sum.golang.org)"},
		{"", "", goproxy.RequestSumDB, "sumdb/sum.golang.org", "sumdb/sum.golang.org (tile)"},
	} {
		if got := downloadLabel(tc.module, tc.version, tc.kind, tc.upstream); got != tc.want {
			t.Errorf("%s %s %s: %q, want %q", tc.kind, tc.module, tc.version, got, tc.want)
		}
	}
}

// TestLiveViewsShowEachRepositorysDownloadsAndFailures runs two
// repositories' Proxies: a slow download of one shows with its
// repository, upstream and waiting client; a failed fetch of the other
// among the recent failures; and a Proxy removed (retired) shows no more.
func TestLiveViewsShowEachRepositorysDownloadsAndFailures(t *testing.T) {
	const large, version = "example.com/large", "v1.0.0"
	upstream := slowUpstream(t, large, version, 4<<20, 256<<10)
	// An upstream that refuses connections: every fetch fails.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	newTestProxy := func(goproxyList string) *goproxy.Proxy {
		p := &goproxy.Proxy{Cacher: goproxy.DirCacher(t.TempDir()), TempDir: t.TempDir(),
			Env:      []string{"GOPROXY=" + goproxyList, "GOSUMDB=off"},
			Download: goproxy.DownloadOptions{Attempts: 1, Connections: 1},
			Logger:   slog.New(slog.DiscardHandler)}
		if err := p.Init(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	a, b := newTestProxy(upstream), newTestProxy(down)
	live := newLiveViews()
	live.add(a, "a")
	live.add(b, "b")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan struct{})
	go func() {
		defer close(served)
		r := httptest.NewRequestWithContext(ctx, "GET", "/"+large+"/@v/"+version+".zip", nil)
		a.ServeHTTP(httptest.NewRecorder(), r)
	}()
	b.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/example.com/m/@v/v1.0.0.info", nil))

	var ds []transfer
	testwait.Within(t, 20*time.Second, func() bool {
		ds = live.downloads()
		return len(ds) == 1 && ds[0].Done > 0 && ds[0].Total > 0
	}, "one download under way; in flight: ", testwait.Show(func() string { return fmt.Sprintf("%+v", ds) }))
	d := ds[0]
	if d.Repo != "a" || d.Label() != large+"@"+version || d.Upstream != upstream || d.Waiting != 1 || d.Total != 4<<20 {
		t.Errorf("the download in flight: %+v", d)
	}
	fs := live.recentFailures()
	if len(fs) != 1 || fs[0].Repo != "b" || fs[0].Label() != "example.com/m@v1.0.0 (.info)" || fs[0].Upstream != down || fs[0].Error == "" {
		t.Errorf("recent failures: %+v", fs)
	}

	live.remove(a)
	if ds := live.downloads(); len(ds) != 0 {
		t.Errorf("a removed Proxy's downloads are shown: %+v", ds)
	}
	cancel()
	<-served
}

// listSource is a downloadSource with a fixed list.
type listSource []transfer

func (l listSource) downloads() []transfer { return l }

func TestProgressLinesAreThrottledAndOnlyForLargeDownloads(t *testing.T) {
	clock := newFakeClock()
	start := clock.t
	src := listSource{
		{Repo: "r", Module: "example.com/large", Version: "v1.0.0", Kind: goproxy.RequestZip, Upstream: "https://proxy.example.com",
			Started: start, Done: 1 << 20, Total: 64 << 20, Rate: 1 << 20, Waiting: 2},
		{Repo: "r", Module: "example.com/small", Version: "v1.0.0", Kind: goproxy.RequestZip, Started: start.Add(25 * time.Second), Done: 1 << 10, Total: 1 << 20},
		{Repo: "r", Module: "example.com/slow", Version: "v1.0.0", Kind: goproxy.RequestZip, Started: start, Done: 1 << 10, Total: -1},
	}
	var buf bytes.Buffer
	l := &lineDisplay{source: src, every: 10 * time.Second, minSize: 16 << 20, minDuration: 30 * time.Second}
	l.setLogger(slog.New(slog.NewJSONHandler(&buf, nil)))
	l.last = map[transferKey]time.Time{}
	for range 40 { // 40 s, a look every second
		clock.advance(time.Second)
		l.report(context.Background(), clock.t)
	}
	counts := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		counts[m["module"].(string)]++
	}
	// large: at 1, 11, 21, 31 s; slow: once it has lasted 30 s, at 30
	// and 40 s; small: never (it lasts 15 s).
	want := map[string]int{"example.com/large@v1.0.0": 4, "example.com/slow@v1.0.0": 2}
	if len(counts) != len(want) || counts["example.com/large@v1.0.0"] != 4 || counts["example.com/slow@v1.0.0"] != 2 {
		t.Errorf("lines by download: %v, want %v\n%s", counts, want, buf.String())
	}
	for _, want := range []string{`"percent":1,`, `"eta":63000000000`, `"upstream":"https://proxy.example.com"`, `"waiting":2`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the large download's line has no %s:\n%s", want, buf.String())
		}
	}
}
