package main

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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
