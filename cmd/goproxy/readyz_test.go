package main

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/testwait"
)

func TestReadyzChecksAtMostOnceASecondHoweverOftenItIsAsked(t *testing.T) {
	var heads atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			heads.Add(1)
		}
	}))
	defer up.Close()
	dir := t.TempDir()
	config := `addr: 127.0.0.1:0
cache: ` + filepath.Join(dir, "cache") + `
log: {format: json}
goproxy: ` + up.URL + `
gosumdb: "off"
readyz: {check_upstreams: true}
`
	srv := startServer(t, []string{"-config", writeFile(t, filepath.Join(dir, "goproxy.yaml"), config)}, serverEnv(t))
	start := time.Now()
	const asks = 200
	for range asks {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "upstream "+up.URL+": ok") {
			t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
		}
	}
	// One check when first asked, then at most one for each second
	// that began during the run.
	if got, most := heads.Load(), int64(time.Since(start)/time.Second)+1; got > most {
		t.Errorf("%d /readyz answers asked the upstream %d times in %v; want at most %d", asks, got, time.Since(start).Round(time.Millisecond), most)
	}
}

// TestAReadyzProbeWaitingForAnotherCheckAnswersForTheCurrentState: a probe
// that waits while another's check runs must check (or share the answer
// of) the state current once its turn comes, not the one it saw on
// arrival, which a reload meanwhile may have retired (its Proxies closed,
// its stores gone).
func TestAReadyzProbeWaitingForAnotherCheckAnswersForTheCurrentState(t *testing.T) {
	dir := t.TempDir()
	s := inProcessServer(t)
	if err := s.apply(planOf(t, dir, "cache: "+dir+"/old-cache\ngoproxy: \"off\"\n")); err != nil {
		t.Fatal(err)
	}
	s.readiness.Lock() // another probe's check under way
	answered := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		s.serveReadyz(rec, httptest.NewRequest("GET", "/readyz", nil))
		answered <- rec
	}()
	testwait.Within(t, 10*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "serveReadyz") && strings.Contains(g, "sync.Mutex.Lock") {
				return true
			}
		}
		return false
	}, "the probe to wait for the check under way")
	if err := s.apply(planOf(t, dir, "cache: "+dir+"/new-cache\ngoproxy: \"off\"\n")); err != nil {
		t.Fatal(err)
	}
	s.readiness.Unlock()
	rec := <-answered
	if body := rec.Body.String(); rec.Code != http.StatusOK || !strings.Contains(body, "new-cache") || strings.Contains(body, "old-cache") {
		t.Errorf("/readyz after a reload while it waited: %d\n%s\nwant the new state's answer", rec.Code, body)
	}
}
