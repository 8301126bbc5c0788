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
	"testing"
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
	}
	root := t.TempDir()
	cacheDir := filepath.Join(root, "cache")
	os.WriteFile(filepath.Join(root, "secret"), []byte("do not serve"), 0o644)
	up := newFakeUpstream(t, testModuleFiles(t))
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
	up.mu.Lock()
	if len(up.counts) != 0 {
		t.Errorf("hostile requests reached the upstream: %v", up.counts)
	}
	up.mu.Unlock()
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 || entries[0].Name() != "secret" {
		t.Errorf("files appeared beside the cache: %v", entries)
	}
}

// TestHostileRawRequests sends request lines a browser or the go command
// would never send, through a real server, so that nothing between the
// socket and the handler cleans them first.
func TestHostileRawRequests(t *testing.T) {
	up := newFakeUpstream(t, testModuleFiles(t))
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
			up := newFakeUpstream(t, map[string][]byte{tt.path: []byte(tt.body)})
			if tt.hook != nil {
				up.setHook(tt.hook)
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
	up := newFakeUpstream(t, map[string][]byte{"/example.com/a/@v/v1.0.0.zip": damaged})
	p := newTestProxy(t, up.URL)
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.zip"); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "checksum") {
		t.Errorf("damaged zip: %d %q", w.Code, w.Body)
	}
	hp := newHostingProxy(t, "off")
	if err := hp.Publish(context.Background(), "example.com/a", "v1.0.0", bytes.NewReader(damaged)); !errors.Is(err, ErrInvalidModule) {
		t.Errorf("publishing a damaged zip: %v", err)
	}
}
