package s3cacher

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// answerCounter counts a handler's answers: redirects, and the bytes of
// zips it sent itself.
type answerCounter struct {
	h         http.Handler
	redirects atomic.Int64
	zipBytes  atomic.Int64
}

func (a *answerCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cw := &countingWriter{ResponseWriter: w}
	a.h.ServeHTTP(cw, r)
	if cw.status == http.StatusTemporaryRedirect {
		a.redirects.Add(1)
	}
	if strings.HasSuffix(r.URL.Path, ".zip") {
		a.zipBytes.Add(cw.n)
	}
}

type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// escapedName is the cache name of v's file with extension ext.
func escapedName(v *moduletest.Version, ext string) string {
	escPath, _ := module.EscapePath(v.Path)
	escVersion, _ := module.EscapeVersion(v.Version)
	return escPath + "/@v/" + escVersion + ext
}

// upstreamZip is v's zip as the upstream serves it.
func upstreamZip(t *testing.T, v *moduletest.Version) []byte {
	if v.ZipFile == "" {
		return v.Zip
	}
	b, err := os.ReadFile(v.ZipFile)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTheGoCommandFollowsRedirectsToTheStoreAndVerifiesWhatItGets(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	c := newCacher(t)
	vs := graphWithALargeZip(t)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := &goproxy.Proxy{
		Cacher:    c,
		Env:       []string{"GOPROXY=" + up.URL, "GOSUMDB=off"},
		TempDir:   t.TempDir(),
		Transport: http.DefaultTransport,
		Redirect:  goproxy.DownloadRedirect{Enabled: true, Expiry: 30 * time.Second},
		Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	counter := &answerCounter{h: p}
	srv := httptest.NewServer(counter)
	defer srv.Close()

	byKey := map[string]*moduletest.Version{}
	for _, v := range vs {
		byKey[v.Path+"@"+v.Version] = v
	}
	gocmd := gocmdtest.New(t)
	gocmd.Set("GOPROXY", srv.URL)
	gocmd.WriteGoMod(moduletest.RootGoMod(vs))
	type download struct{ Path, Version, Zip, Sum, GoModSum string }
	run := func(t *testing.T) []download {
		var ds []download
		dec := json.NewDecoder(strings.NewReader(gocmd.MustRun(t, "mod", "download", "-json")))
		for dec.More() {
			var d download
			if err := dec.Decode(&d); err != nil {
				t.Fatal(err)
			}
			v := byKey[d.Path+"@"+d.Version]
			if v == nil {
				t.Fatalf("downloaded %s@%s, which the upstream does not have", d.Path, d.Version)
			}
			if got, err := os.ReadFile(d.Zip); err != nil || !bytes.Equal(got, upstreamZip(t, v)) {
				t.Errorf("%s@%s: the zip differs from the upstream's (%v)", d.Path, d.Version, err)
			}
			ds = append(ds, d)
		}
		if len(ds) < 13 {
			t.Fatalf("go mod download fetched %d modules, want 13", len(ds))
		}
		return ds
	}

	var first []download
	t.Run("cold: the proxy fetches and serves", func(t *testing.T) {
		first = run(t)
		if n := counter.redirects.Load(); n != 0 {
			t.Errorf("%d redirects for zips not yet in the store", n)
		}
	})
	for _, d := range first {
		name := escapedName(byKey[d.Path+"@"+d.Version], ".zip")
		testwait.Within(t, time.Minute, func() bool { _, err := c.Stat(t.Context(), name); return err == nil }, name, " stored")
	}
	// go.sum now holds what the first run downloaded: the second run's go
	// command checks the zips it gets from the store against it.
	var sums strings.Builder
	for _, d := range first {
		fmt.Fprintf(&sums, "%s %s %s\n%s %s/go.mod %s\n", d.Path, d.Version, d.Sum, d.Path, d.Version, d.GoModSum)
	}
	if err := os.WriteFile(filepath.Join(gocmd.Dir, "go.sum"), []byte(sums.String()), 0o666); err != nil {
		t.Fatal(err)
	}
	gocmd.FreshModCache(t)
	counter.redirects.Store(0)
	counter.zipBytes.Store(0)
	t.Run("warm: every zip is redirected to the store", func(t *testing.T) {
		second := run(t)
		if n := counter.redirects.Load(); n != int64(len(second)) {
			t.Errorf("%d redirects for %d zips", n, len(second))
		}
		if n := counter.zipBytes.Load(); n > int64(len(second))*1024 {
			t.Errorf("the proxy itself sent %d bytes of zips", n)
		}
		for i, d := range second {
			if d.Sum != first[i].Sum {
				t.Errorf("%s@%s: hash %s, the first run's %s", d.Path, d.Version, d.Sum, first[i].Sum)
			}
		}
	})
	t.Run("a corrupted object fails the go command's check", func(t *testing.T) {
		// Someone with write access to the bucket replaces a zip: the
		// go command refuses it against go.sum, redirected or not.
		v := byKey[first[0].Path+"@"+first[0].Version] // in go.sum
		var tampered bytes.Buffer
		zw := zip.NewWriter(&tampered)
		for name, content := range map[string]string{"go.mod": string(v.Mod), "tampered.go": "package tampered\n"} {
			w, _ := zw.Create(v.Path + "@" + v.Version + "/" + name)
			io.WriteString(w, content)
		}
		zw.Close()
		if err := c.Put(t.Context(), escapedName(v, ".zip"), bytes.NewReader(tampered.Bytes())); err != nil {
			t.Fatal(err)
		}
		gocmd.FreshModCache(t)
		_, stderr, err := gocmd.Run("mod", "download", v.Path+"@"+v.Version)
		if err == nil || !strings.Contains(stderr, "checksum mismatch") {
			t.Errorf("go mod download of a replaced zip: %v\n%s", err, stderr)
		}
	})
}
