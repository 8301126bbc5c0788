package goproxy

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"unicode"

	"github.com/goproxy-team/goproxy/internal/testwait"
	"golang.org/x/mod/module"
)

func TestHostileRequests(t *testing.T) {
	tests := []struct {
		name, path string
	}{
		{"dot-dot traversal", "/example.com/../../secret/@v/list"},
		{"encoded dot-dot", "/example.com/%2e%2e/%2e%2e/secret/@v/v1.0.0.mod"},
		{"encoded slash in version", "/example.com/a/@v/..%2f..%2fsecret.mod"},
		{"dot-dot version", "/example.com/a/@v/%2e%2e.info"},
		{"NUL in path", "/example.com/a%00/@v/list"},
		{"NUL in version", "/example.com/a/@v/v1.0.0%00.info"},
		{"invalid case encoding", "/example.com/!!a/@v/list"},
		{"dangling case escape", "/example.com/a!/@v/list"},
		{"unescaped upper case", "/example.com/Upper/@v/list"},
		{"over-long path", "/example.com/" + strings.Repeat("a", 2000) + "/@v/list"},
		{"non-canonical version zip", "/example.com/a/@v/v1.0.zip"},
		{"non-canonical version mod", "/example.com/a/@v/v1.0.0+build.mod"},
		{"not a version", "/example.com/a/@v/notaversion.zip"},
		{"major version mismatch", "/example.com/a/@v/v2.0.0.mod"},
		{"empty version", "/example.com/a/@v/.info"},
		{"unknown suffix", "/example.com/a/@v/v1.0.0.tar.gz"},
		{"suffix after a slash", "/example.com/a/@v/v1.0.0.info/../../x"},
		{"bare module path", "/example.com/a"},
		{"root", "/"},
		{"leading dot element", "/.hidden.com/@v/list"},
		{"backslash", "/example.com/a\\..\\b/@v/list"},
		{"checksum database not configured", "/sumdb/other.example/latest"},
		{"checksum database bad tile", "/sumdb/sum.golang.org/tile/8/0/../../x"},
		{"checksum database bad lookup", "/sumdb/sum.golang.org/lookup/example.com/a@v1.0"},
		{"checksum database unknown file", "/sumdb/sum.golang.org/secret"},
		{"encoded slash in a module path", "/example.com%2Fa/@v/list"},
		{"encoded slash, lower case", "/example.com%2fa/@v/v1.0.0.info"},
		{"path element of 256 bytes", "/example.com/" + strings.Repeat("a", 256) + "/@v/list"},
		{"path element of 1000 bytes", "/example.com/" + strings.Repeat("a", 1000) + "/@v/v1.0.0.zip"},
		{"version element of 256 bytes", "/example.com/a/@v/v1.0.0-" + strings.Repeat("a", 246) + ".info"},
		{"checksum database lookup element of 300 bytes", "/sumdb/sum.golang.org/lookup/example.com/" + strings.Repeat("a", 300) + "@v1.0.0"},
	}
	root := t.TempDir()
	cacheDir := filepath.Join(root, "cache")
	os.WriteFile(filepath.Join(root, "secret"), []byte("do not serve"), 0o644)
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	p.Cacher = DirCacher(cacheDir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(p, "GET", tt.path)
			if w.Code < 400 || w.Code > 499 {
				t.Errorf("GET %s: %d, want 4xx", tt.path, w.Code)
			}
			if strings.Contains(w.Body.String(), "do not serve") || w.Body.Len() == 0 {
				t.Errorf("GET %s: body %q", tt.path, w.Body)
			}
		})
	}
	if n := up.TotalRequests(); n != 0 {
		t.Errorf("%d hostile requests reached the upstream", n)
	}
	p.Close() // waits for the index feed, made at start
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.Name() != "secret" && e.Name() != "cache" {
			t.Errorf("a file appeared beside the cache: %v", e)
		}
	}
	// The cache holds its index feed, made at start, and nothing else.
	for _, f := range filesUnder(t, cacheDir) {
		if f != filepath.Join(cacheDir, indexJournal) {
			t.Errorf("a hostile request left %s", f)
		}
	}
}

// TestHostileRawRequests sends request lines a browser or the go command
// would never send, through a real server, so that nothing between the
// socket and the handler cleans them first.
func TestHostileRawRequests(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	srv := httptest.NewServer(p)
	defer srv.Close()
	for _, target := range []string{
		"/../../../../etc/passwd",
		"/example.com/../../../etc/passwd/@v/list",
		"/example.com/a/@v/../../../../etc/passwd.info",
		"/example.com/a/@v/v1.0.0.info?x=/../../",
	} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		if strings.Contains(string(body), "root:") {
			t.Errorf("%s served a system file", target)
		}
		if target == "/example.com/a/@v/v1.0.0.info?x=/../../" {
			if resp.StatusCode != 200 {
				t.Errorf("%s: %d (the query string is not part of the path)", target, resp.StatusCode)
			}
		} else if resp.StatusCode < 400 || resp.StatusCode > 499 {
			t.Errorf("%s: %d %q, want 4xx", target, resp.StatusCode, body)
		}
	}
}

func TestHostileUpstreams(t *testing.T) {
	const declaredHuge = maxZipSize + 1
	tests := []struct {
		name string
		path string
		body string
		hook func(w http.ResponseWriter, r *http.Request) bool
	}{
		{name: "invalid info JSON", path: "/example.com/a/@v/v1.0.0.info", body: "{not json"},
		{name: "info for another version", path: "/example.com/a/@v/v1.0.0.info", body: `{"Version":"v1.0.1"}`},
		{name: "latest naming a non-canonical version", path: "/example.com/a/@latest", body: `{"Version":"v1.0"}`},
		{name: "query answered with a branch name", path: "/example.com/a/@v/master.info", body: `{"Version":"master"}`},
		{name: "mod that does not parse", path: "/example.com/a/@v/v1.0.0.mod", body: "module example.com/a\nrequire (\n"},
		{name: "zip that is not a zip", path: "/example.com/a/@v/v1.0.0.zip", body: "PK garbage"},
		{name: "zip with files outside its prefix", path: "/example.com/a/@v/v1.0.0.zip",
			body: string(makeZip(t, "example.com/a@v1.0.0/go.mod", "module example.com/a\n", "example.com/evil@v1.0.0/x.go", "package x\n"))},
		{name: "zip for another version", path: "/example.com/a/@v/v1.0.0.zip",
			body: string(makeZip(t, "example.com/a@v1.0.1/go.mod", "module example.com/a\n"))},
		{name: "zip declared over 500 MB", path: "/example.com/a/@v/v1.0.0.zip", hook: func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Content-Length", strconv.FormatInt(declaredHuge, 10))
			w.WriteHeader(200)
			w.Write([]byte("PK"))
			return true
		}},
		{name: "zip over 500 MB undeclared", path: "/example.com/a/@v/v1.0.0.zip", hook: func(w http.ResponseWriter, r *http.Request) bool {
			w.WriteHeader(200)
			chunk := make([]byte, 1<<20)
			for sent := 0; sent <= maxZipSize; sent += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return true
				}
			}
			return true
		}},
		{name: "info over its cap", path: "/example.com/a/@v/v1.0.0.info", body: `{"Version":"v1.0.0","X":"` + strings.Repeat("x", maxInfoSize) + `"}`},
		{name: "truncated body", path: "/example.com/a/@v/v1.0.0.zip", hook: truncate},
		{name: "truncated mod", path: "/example.com/a/@v/v1.0.0.mod", hook: truncate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, map[string][]byte{tt.path: []byte(tt.body)})
			if tt.hook != nil {
				up.SetHandlerHook(tt.hook)
			}
			p := newTestProxy(t, up.URL)
			w := do(p, "GET", tt.path)
			if w.Code != http.StatusBadGateway {
				t.Errorf("%d %q, want 502", w.Code, w.Body)
			}
			if cached := cachedNames(p.Cacher); len(cached) != 0 {
				t.Errorf("cached %v", cached)
			}
			if tmp := filesUnder(t, p.TempDir); len(tmp) != 0 {
				t.Errorf("temporary files left behind: %v", tmp)
			}
		})
	}
}

// truncate promises a body of 1000 bytes, sends 10 and drops the connection.
func truncate(w http.ResponseWriter, r *http.Request) bool {
	w.Header().Set("Content-Length", "1000")
	w.WriteHeader(200)
	w.Write([]byte("0123456789"))
	w.(http.Flusher).Flush()
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
	return true
}

// TestDamagedZipContentRefused damages a file inside a zip whose names and
// sizes are intact, which golang.org/x/mod/zip.CheckZip alone lets through.
func TestDamagedZipContentRefused(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range [][2]string{{"example.com/a@v1.0.0/go.mod", "module example.com/a\n"}, {"example.com/a@v1.0.0/a.go", "package a // some text to damage\n"}} {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: f[0], Method: zip.Store})
		io.WriteString(w, f[1])
	}
	zw.Close()
	damaged := buf.Bytes()
	i := bytes.Index(damaged, []byte("some text"))
	damaged[i] ^= 0xff
	up := newUpstream(t, map[string][]byte{"/example.com/a/@v/v1.0.0.zip": damaged})
	p := newTestProxy(t, up.URL)
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.zip"); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "checksum") {
		t.Errorf("damaged zip: %d %q", w.Code, w.Body)
	}
	hp := newHostingProxy(t, "off")
	if err := hp.Publish(context.Background(), "example.com/a", "v1.0.0", bytes.NewReader(damaged)); !errors.Is(err, ErrInvalidModule) {
		t.Errorf("publishing a damaged zip: %v", err)
	}
}

// TestLongPathElementsAreStoredOrRefused checks the one rule for long path
// elements, whatever the Cacher: up to 255 bytes they are served and
// cached like any other, beyond they are refused before anything is asked.
func TestLongPathElementsAreStoredOrRefused(t *testing.T) {
	for _, n := range []int{255 - len(".info") - len("v1.0.0"), 255, 256, 1024} {
		t.Run(fmt.Sprintf("%d bytes", n), func(t *testing.T) {
			elem := strings.Repeat("a", n)
			modPath := "example.com/" + elem
			info := "/" + modPath + "/@v/v1.0.0.info"
			up := newUpstream(t, map[string][]byte{
				"/" + modPath + "/@v/list": []byte("v1.0.0\n"),
				info:                       []byte(testInfo),
			})
			var logs syncBuffer
			for _, c := range []Cacher{DirCacher(t.TempDir()), &MemCacher{}} {
				p := newTestProxy(t, up.URL)
				p.Cacher = c
				p.Logger = newBufferLogger(&logs)
				for _, path := range []string{"/" + modPath + "/@v/list", info} {
					w := do(p, "GET", path)
					fits := len(elem) <= 255 && (path != info || len("v1.0.0.info") <= 255)
					switch {
					case fits && w.Code != 200:
						t.Errorf("%T: GET %.60s…: %d %s", c, path, w.Code, w.Body)
					case !fits && w.Code != http.StatusBadRequest && w.Code != http.StatusRequestURITooLong:
						t.Errorf("%T: GET %.60s…: %d, want 400 (or 414 for a path over 1024 bytes)", c, path, w.Code)
					}
					testwait.For(t, p.flights.idle)
					if _, err := c.Get(context.Background(), strings.TrimPrefix(path, "/")); fits && err != nil {
						t.Errorf("%T: %.60s… not cached: %v", c, path, err)
					}
				}
			}
			if n > 255 && up.TotalRequests() != 0 {
				t.Errorf("refused requests reached the upstream: %d requests", up.TotalRequests())
			}
			if strings.Contains(logs.String(), "level=ERROR") {
				t.Errorf("errors logged:\n%s", logs.String())
			}
		})
	}
}

func TestUpstreamVersionListsAreValidated(t *testing.T) {
	tests := []struct {
		name, modPath, list string
		want                string // "" for 502
	}{
		{
			name:    "junk, duplicates, CRLF and escapes",
			modPath: "example.com/a",
			list: "v1.0.0\r\nv1.1.0\r\nv1.0.0\n\n  garbage line\n\x1b[31mv9.9.9\x1b[0m\n../../etc/passwd\n" +
				"v2.0.0\nv1.2\nv1.3.0-rc.1\nv1.3.0+meta\nv0.0.0-20240102030405-abcdefabcdef\n\a\n",
			want: "v1.0.0\nv1.1.0\nv1.3.0-rc.1\nv0.0.0-20240102030405-abcdefabcdef\n",
		},
		{
			name:    "times as the go command reads them",
			modPath: "example.com/a",
			list:    "v1.0.0 2024-01-02T03:04:05Z\nv1.1.0 not-a-time\nv1.2.0 9999-12-31T23:59:59-23:59\nv1.3.0 0000-01-01T00:00:00+01:00\n",
			want:    "v1.0.0 2024-01-02T03:04:05Z\nv1.1.0\nv1.2.0\nv1.3.0\n",
		},
		{
			name:    "major versions by the module path",
			modPath: "example.com/a/v2",
			list:    "v1.0.0\nv2.0.0\nv2.1.0+incompatible\nv3.0.0\n",
			want:    "v2.0.0\n",
		},
		{
			name:    "incompatible versions of a v0/v1 path",
			modPath: "example.com/a",
			list:    "v2.0.0+incompatible\nv1.0.0\nv1.1.0+incompatible\nv0.1.0+incompatible\n",
			want:    "v2.0.0+incompatible\nv1.0.0\n",
		},
		{name: "an empty list is a module without tags", modPath: "example.com/a", list: "\n", want: ""},
		{name: "nothing valid", modPath: "example.com/a", list: "<html>oops</html>\n../../etc/passwd\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			esc, _ := module.EscapePath(tt.modPath)
			path := "/" + esc + "/@v/list"
			up := newUpstream(t, map[string][]byte{path: []byte(tt.list)})
			p := newTestProxy(t, up.URL)
			w := do(p, "GET", path)
			if tt.name == "nothing valid" {
				if w.Code != http.StatusBadGateway || len(cachedNames(p.Cacher)) != 0 {
					t.Errorf("%d %q, cached %v; want 502, nothing cached", w.Code, w.Body, cachedNames(p.Cacher))
				}
				return
			}
			if w.Code != 200 || w.Body.String() != tt.want {
				t.Errorf("%d %q, want %q", w.Code, w.Body, tt.want)
			}
		})
	}
}

func TestUpstreamErrorBodiesAreReduced(t *testing.T) {
	junk := "first line of the reason\r\n\x1b[31mred\x1b[0m \x07bell\x1b]0;title\x07 \xff\xfe done\n" + strings.Repeat("padding\r\n", 500)
	tests := []struct {
		name, contentType, body string
		status                  int
		want                    string
	}{
		{"terminal junk in a 502", "text/plain", junk, 502, "first line of the reason red bell done padding"},
		{"terminal junk in a 404", "text/plain", junk, 404, "first line of the reason red bell done padding"},
		{"an HTML error page", "text/html", "<html><head><title>502 Bad\nGateway</title></head><body><script>x()</script></body></html>", 502, "502 Bad Gateway"},
		{"an HTML page without a title", "text/html; charset=utf-8", "<!DOCTYPE html><p>hi</p>", 403, "(an HTML page)"},
		{"bidirectional overrides", "text/plain", "safe\u202etxt.exe", 403, "safetxt.exe"},
		// Lower-casing changes the length of these, so a title found in
		// the lower-cased page is not at the same offsets in the page.
		{"an HTML page with invalid UTF-8 before its title", "text/html", strings.Repeat("\xff", 40) + "<title>Gateway</title>", 502, "Gateway"},
		{"an HTML page with Ⱥ before its title", "text/html", strings.Repeat("Ⱥ", 40) + "<title>Gateway</title>", 502, "Gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, nil)
			up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Type", tt.contentType)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
				return true
			})
			p := newTestProxy(t, up.URL)
			p.Download.Attempts = 1
			w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod")
			msg := strings.TrimSuffix(w.Body.String(), "\n")
			if !strings.Contains(msg, tt.want) {
				t.Errorf("%d %q, want it to contain %q", w.Code, msg, tt.want)
			}
			if len(msg) > 500 || strings.ContainsFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }) {
				t.Errorf("message of %d bytes, or not printable on one line: %q", len(msg), msg)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}

func TestUpstreamRefusalsArePassedOnAndRemembered(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusUnavailableForLegalReasons} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			up := newUpstream(t, nil)
			up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
				http.Error(w, "the prefix example.com/private is not yours", status)
				return true
			})
			p := newTestProxy(t, up.URL)
			for range 3 {
				w := do(p, "GET", "/example.com/private/@v/list")
				if w.Code != status || !strings.Contains(w.Body.String(), "is not yours") {
					t.Errorf("%d %q, want %d with the upstream's message", w.Code, w.Body, status)
				}
			}
			if n := up.Requests("/example.com/private/@v/list"); n != 1 {
				t.Errorf("%d upstream requests, want 1: a refusal is not retried and is remembered", n)
			}
		})
	}
}

// TestRefusalIsNotRememberedWhenALaterUpstreamFailedForNow walks A|B: A
// refuses, B fails for the moment. The outcome rests on B's moment, so the
// next request walks again and finds B healed.
func TestRefusalIsNotRememberedWhenALaterUpstreamFailedForNow(t *testing.T) {
	refusing := newUpstream(t, nil)
	refusing.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "not for you", http.StatusForbidden)
		return true
	})
	var healed atomic.Bool
	flaky := newUpstream(t, testModuleFiles(t))
	flaky.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if healed.Load() {
			return false
		}
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return true
	})
	p := newTestProxy(t, refusing.URL+"|"+flaky.URL)
	p.Download.Attempts = 1
	mod := "/example.com/a/@v/v1.0.0.mod"
	if w := do(p, "GET", mod); w.Code == http.StatusOK {
		t.Fatalf("%d %q while the second upstream fails", w.Code, w.Body)
	}
	healed.Store(true)
	if w := do(p, "GET", mod); w.Code != http.StatusOK {
		t.Errorf("after the second upstream healed: %d %q, want 200", w.Code, w.Body)
	}
}

func TestRefusedRedirectIsNotRetried(t *testing.T) {
	plain := newUpstream(t, testModuleFiles(t))
	var asked atomic.Int32
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Redirect(w, r, plain.URL+r.URL.Path, http.StatusFound)
	}))
	defer secure.Close()
	p := newTestProxy(t, secure.URL)
	p.Transport = secure.Client().Transport
	w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod")
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "insecure") {
		t.Errorf("%d %q, want 502 refusing the insecure redirect", w.Code, w.Body)
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("the redirecting upstream was asked %d times; a refusal is final", n)
	}
	if n := plain.Requests("/example.com/a/@v/v1.0.0.mod"); n != 0 {
		t.Errorf("the insecure target was asked %d times", n)
	}
}

// TestLongVersionElementIsCached stores a file whose name is exactly as
// long as an element may be: the DirCacher's temporary file must fit too.
func TestLongVersionElementIsCached(t *testing.T) {
	version := "v1.0.0-" + strings.Repeat("a", maxElemLen-len("v1.0.0-.info"))
	name := "example.com/a/@v/" + version + ".info"
	up := newUpstream(t, map[string][]byte{"/" + name: fmt.Appendf(nil, `{"Version":%q}`, version)})
	var logs syncBuffer
	p := newTestProxy(t, up.URL)
	c := DirCacher(t.TempDir())
	p.Cacher = c
	p.Logger = newBufferLogger(&logs)
	if w := do(p, "GET", "/"+name); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	testwait.For(t, p.flights.idle)
	if _, err := c.Get(context.Background(), name); err != nil || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("not cached (%v):\n%s", err, logs.String())
	}
}
