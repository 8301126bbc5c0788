package s3cacher

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// TestProxyServesTheGoCommandFromTheBucket runs the go command through a
// goproxy.Proxy whose Cacher is the bucket, then through a second proxy
// (another replica) over the same bucket with the upstream gone: every zip
// is the upstream's, byte for byte, both times.
func TestProxyServesTheGoCommandFromTheBucket(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	c := newCacher(t)
	vs := graphWithALargeZip(t)
	up := moduletest.NewServer(vs)
	defer up.Close()

	newProxy := func() *httptest.Server {
		p := &goproxy.Proxy{
			Cacher:    c,
			Env:       []string{"GOPROXY=" + up.URL, "GOSUMDB=off"},
			TempDir:   t.TempDir(),
			Transport: http.DefaultTransport, // loopback only, as TestMain made it
			Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		}
		srv := httptest.NewServer(p)
		t.Cleanup(srv.Close)
		return srv
	}
	byKey := map[string]*moduletest.Version{}
	for _, v := range vs {
		byKey[v.Path+"@"+v.Version] = v
	}
	gocmd := gocmdtest.New(t)
	gocmd.WriteGoMod(moduletest.RootGoMod(vs))
	var downloaded []*moduletest.Version
	download := func(t *testing.T) {
		downloaded = nil
		dec := json.NewDecoder(strings.NewReader(gocmd.MustRun(t, "mod", "download", "-json")))
		n := 0
		for dec.More() {
			var m struct{ Path, Version, Zip string }
			if err := dec.Decode(&m); err != nil {
				t.Fatal(err)
			}
			v := byKey[m.Path+"@"+m.Version]
			if v == nil {
				t.Errorf("downloaded %s@%s, which the upstream does not have", m.Path, m.Version)
				continue
			}
			want := v.Zip
			if v.ZipFile != "" {
				want, _ = os.ReadFile(v.ZipFile)
			}
			if got, err := os.ReadFile(m.Zip); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s@%s: the zip differs from the upstream's (%v)", m.Path, m.Version, err)
			}
			downloaded = append(downloaded, v)
			n++
		}
		if n < 13 {
			t.Errorf("go mod download fetched %d modules, want 13", n)
		}
	}

	gocmd.Set("GOPROXY", newProxy().URL)
	t.Run("through the proxy", download)

	// Immutable files are stored while clients are served: wait until
	// every zip and .mod is in the bucket before taking the upstream away.
	for _, v := range downloaded {
		escPath, _ := module.EscapePath(v.Path)
		escVersion, _ := module.EscapeVersion(v.Version)
		for _, ext := range []string{".mod", ".zip"} {
			name := escPath + "/@v/" + escVersion + ext
			testwait.Within(t, time.Minute, func() bool { _, err := c.Stat(t.Context(), name); return err == nil }, name, " in the bucket")
		}
	}
	up.Close()

	gocmd.FreshModCache(t)
	gocmd.Set("GOPROXY", newProxy().URL)
	t.Run("through another proxy on the bucket, the upstream gone", download)
}

// graphWithALargeZip is a module graph and a 24 MiB zip, over PartSize:
// stored in parts, served in growing ranges.
func graphWithALargeZip(t *testing.T) []*moduletest.Version {
	t.Helper()
	large, err := moduletest.LargeVersion(t.TempDir(), "example.com/large", "v1.0.0", 24<<20)
	if err != nil {
		t.Fatal(err)
	}
	return append(moduletest.Graph(12), large)
}
