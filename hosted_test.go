package goproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// corpZip is a valid zip of corp.example.com/lib at version.
func corpZip(t *testing.T, version, body string) []byte {
	return makeZip(t,
		"corp.example.com/lib@"+version+"/go.mod", "module corp.example.com/lib\n\ngo 1.21\n",
		"corp.example.com/lib@"+version+"/lib.go", "package lib\n\n// "+body+"\n")
}

// newHostingProxy returns a proxy over up with a hosted store, readable by
// alice and reader, publishable by alice, administered by admin.
func newHostingProxy(t *testing.T, upURL string, env ...string) *Proxy {
	p := newTestProxy(t, upURL, env...)
	p.Hosted = DirCacher(t.TempDir())
	p.Authorize = (&StaticAuth{
		Users: map[string]User{
			"alice":  {Password: "alice-pw", Grant: Grant{Read: "*", Publish: "corp.example.com,example.com"}},
			"reader": {Password: "reader-pw", Grant: Grant{Read: "*"}},
			"admin":  {Password: "admin-pw", Grant: Grant{Administer: true}},
		},
		Tokens: map[string]Grant{"ci-token": {Read: "*", Publish: "corp.example.com"}},
	}).Authorize
	return p
}

func put(h http.Handler, path string, body []byte, user, password string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("PUT", path, bytes.NewReader(body))
	if user != "" {
		r.SetBasicAuth(user, password)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func getAs(h http.Handler, path, user, password string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", path, nil)
	if user != "" {
		r.SetBasicAuth(user, password)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestPublishAndFetchWithGoCommand(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	p := newHostingProxy(t, up.URL, "GOSUMDB="+db.vkey+" "+db.URL, "GONOSUMDB=corp.example.com")
	// The go command sends credentials over https only.
	srv := httptest.NewTLSServer(p)
	defer srv.Close()
	certFile := filepath.Join(t.TempDir(), "cert.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)

	// Publish with curl, then with the Go method.
	zipFile := filepath.Join(t.TempDir(), "lib.zip")
	os.WriteFile(zipFile, corpZip(t, "v1.0.0", "first"), 0o644)
	out, err := exec.Command("curl", "-sS", "-f", "--cacert", certFile, "-u", "alice:alice-pw", "-T", zipFile,
		srv.URL+"/corp.example.com/lib/@v/v1.0.0.zip").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	if err := p.Publish(context.Background(), "corp.example.com/lib", "v1.1.0", bytes.NewReader(corpZip(t, "v1.1.0", "second"))); err != nil {
		t.Fatal(err)
	}
	// A published version of a module the upstream also has.
	extra := makeZip(t, moduletest.GraphPath(1)+"@v1.5.0/go.mod", "module "+moduletest.GraphPath(1)+"\n")
	if err := p.Publish(context.Background(), moduletest.GraphPath(1), "v1.5.0", bytes.NewReader(extra)); err != nil {
		t.Fatal(err)
	}

	if testing.Short() {
		return
	}
	gocmd := gocmdtest.New(t)
	netrc := filepath.Join(t.TempDir(), "netrc")
	// The go command matches .netrc machines against host and port.
	os.WriteFile(netrc, []byte("machine "+srv.Listener.Addr().String()+" login alice password alice-pw\n"), 0o600)
	gocmd.Set("NETRC", netrc)
	gocmd.Set("SSL_CERT_FILE", certFile)
	gocmd.Set("GOPROXY", srv.URL)
	gocmd.Set("GOSUMDB", db.vkey)
	// Published versions are not in the checksum database: exempt them.
	gocmd.Set("GONOSUMDB", "corp.example.com,"+moduletest.GraphPath(1))
	gocmd.WriteGoMod([]byte("module example.com/root\n\ngo 1.21\n"))
	gocmd.MustRun(t, "get", "corp.example.com/lib@v1.0.0")
	if out := gocmd.MustRun(t, "list", "-m", "-versions", "corp.example.com/lib"); strings.TrimSpace(out) != "corp.example.com/lib v1.0.0 v1.1.0" {
		t.Errorf("published versions: %q", out)
	}
	if out := gocmd.MustRun(t, "list", "-m", "-versions", moduletest.GraphPath(1)); strings.TrimSpace(out) != moduletest.GraphPath(1)+" v1.0.0 v1.1.0 v1.2.0 v1.5.0" {
		t.Errorf("published and upstream versions merged: %q", out)
	}
	if out := gocmd.MustRun(t, "list", "-m", "-json", "corp.example.com/lib@latest"); !strings.Contains(out, `"Version": "v1.1.0"`) {
		t.Errorf("@latest of a published module: %s", out)
	}
	if db.asked("corp.example.com") != 0 {
		t.Error("the checksum database was asked about the private module")
	}

	// Without credentials the go command is refused.
	gocmd.Set("NETRC", filepath.Join(t.TempDir(), "none"))
	gocmd.FreshModCache(t)
	if _, stderr, err := gocmd.Run("mod", "download", "corp.example.com/lib@v1.0.0"); err == nil || !strings.Contains(stderr, "401") {
		t.Errorf("without credentials: %v %s", err, stderr)
	}
}

func TestPublishIsImmutable(t *testing.T) {
	p := newHostingProxy(t, "off")
	first := corpZip(t, "v1.0.0", "first")
	const path = "/corp.example.com/lib/@v/v1.0.0.zip"
	if w := put(p, path, first, "alice", "alice-pw"); w.Code != http.StatusCreated {
		t.Fatalf("publish: %d %s", w.Code, w.Body)
	}
	if w := put(p, path, first, "alice", "alice-pw"); w.Code != http.StatusCreated {
		t.Errorf("identical re-publish: %d %s", w.Code, w.Body)
	}
	if w := put(p, path, corpZip(t, "v1.0.0", "other"), "alice", "alice-pw"); w.Code != http.StatusConflict {
		t.Errorf("different re-publish: %d %s", w.Code, w.Body)
	}
	if err := p.Publish(context.Background(), "corp.example.com/lib", "v1.0.0", bytes.NewReader(corpZip(t, "v1.0.0", "other"))); !errors.Is(err, ErrVersionConflict) {
		t.Errorf("Publish of different content: %v", err)
	}
	if w := getAs(p, path, "alice", "alice-pw"); !bytes.Equal(w.Body.Bytes(), first) {
		t.Error("the original zip changed")
	}
	if w := getAs(p, "/corp.example.com/lib/@v/v1.0.0.mod", "reader", "reader-pw"); w.Body.String() != "module corp.example.com/lib\n\ngo 1.21\n" {
		t.Errorf(".mod from the zip: %q", w.Body)
	}
	var info struct {
		Version string
		Time    time.Time
	}
	w := getAs(p, "/corp.example.com/lib/@v/v1.0.0.info", "reader", "reader-pw")
	if json.Unmarshal(w.Body.Bytes(), &info) != nil || info.Version != "v1.0.0" || info.Time.IsZero() {
		t.Errorf(".info: %s", w.Body)
	}
}

func TestPublishAccessControl(t *testing.T) {
	p := newHostingProxy(t, "off")
	zip := corpZip(t, "v1.0.0", "x")
	const path = "/corp.example.com/lib/@v/v1.0.0.zip"
	w := put(p, path, zip, "", "")
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Header().Get("WWW-Authenticate"), "Basic") {
		t.Errorf("anonymous publish: %d %v", w.Code, w.Header())
	}
	if w := put(p, path, zip, "alice", "wrong"); w.Code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d", w.Code)
	}
	if w := put(p, path, zip, "nobody", "alice-pw"); w.Code != http.StatusUnauthorized {
		t.Errorf("unknown user: %d", w.Code)
	}
	if w := put(p, path, zip, "reader", "reader-pw"); w.Code != http.StatusForbidden {
		t.Errorf("read-only user publishing: %d %s", w.Code, w.Body)
	}
	if w := put(p, "/example.org/other/@v/v1.0.0.zip", zip, "alice", "alice-pw"); w.Code != http.StatusForbidden {
		t.Errorf("publishing outside the grant: %d %s", w.Code, w.Body)
	}
	if w := getAs(p, path, "", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("anonymous read: %d", w.Code)
	}
	r := httptest.NewRequest("PUT", path, bytes.NewReader(zip))
	r.Header.Set("Authorization", "Bearer ci-token")
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, r)
	if rec.Code != http.StatusCreated {
		t.Errorf("bearer token publish: %d %s", rec.Code, rec.Body)
	}
	if w := getAs(p, "/index", "alice", "alice-pw"); w.Code != http.StatusForbidden {
		t.Errorf("index without administer: %d", w.Code)
	}

	anon := newHostingProxy(t, "off")
	anon.Authorize = (&StaticAuth{AnonymousRead: "corp.example.com"}).Authorize
	if err := anon.Publish(context.Background(), "corp.example.com/lib", "v1.0.0", bytes.NewReader(zip)); err != nil {
		t.Fatal(err)
	}
	if w := getAs(anon, "/corp.example.com/lib/@v/list", "", ""); w.Code != 200 {
		t.Errorf("anonymous read allowed by pattern: %d %s", w.Code, w.Body)
	}
	if w := getAs(anon, "/example.com/a/@v/list", "", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("anonymous read outside the pattern: %d", w.Code)
	}
}

// TestStaticAuthComparesDigests checks that passwords of any length, empty
// or far longer than the right one, are refused; that the time taken does
// not reveal the right one's length is what BenchmarkStaticAuthWrongPassword
// shows.
func TestStaticAuthComparesDigests(t *testing.T) {
	a := &StaticAuth{Users: map[string]User{"alice": {Password: "pw"}}, Tokens: map[string]Grant{"t": {}}}
	a.prepare()
	for _, pw := range []string{"", "p", strings.Repeat("x", 4096)} {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth("alice", pw)
		if _, ok := a.identify(r); ok {
			t.Errorf("password %.10q accepted", pw)
		}
	}
}

// BenchmarkStaticAuthWrongPassword shows that a wrong password one byte
// shorter than the right one costs the same as one a byte longer: the
// time depends on what the client sent (it hashes it), never on how it
// compares with the secret. Measured: 15 bytes 287-301 ns, 17 bytes
// 291-306 ns, against a 16-byte password.
func BenchmarkStaticAuthWrongPassword(b *testing.B) {
	a := &StaticAuth{Users: map[string]User{"alice": {Password: strings.Repeat("s", 16)}}}
	for _, pw := range []string{"s", strings.Repeat("s", 15), strings.Repeat("s", 17)} {
		b.Run(fmt.Sprintf("len=%d", len(pw)), func(b *testing.B) {
			r := httptest.NewRequest("GET", "/", nil)
			r.SetBasicAuth("alice", pw)
			for b.Loop() {
				a.identify(r)
			}
		})
	}
}

func TestPublishRejectsInvalidUploads(t *testing.T) {
	tests := []struct {
		name, path string
		body       []byte
		want       int
	}{
		{"zip for another module", "/corp.example.com/lib/@v/v1.0.0.zip",
			makeZip(t, "corp.example.com/other@v1.0.0/go.mod", "module corp.example.com/other\n"), 400},
		{"zip for another version", "/corp.example.com/lib/@v/v1.0.0.zip", corpZip(t, "v1.0.1", "x"), 400},
		{"files outside the prefix", "/corp.example.com/lib/@v/v1.0.0.zip",
			makeZip(t, "corp.example.com/lib@v1.0.0/go.mod", "module corp.example.com/lib\n", "elsewhere/x.go", "package x\n"), 400},
		{"go.mod declaring another path", "/corp.example.com/lib/@v/v1.0.0.zip",
			makeZip(t, "corp.example.com/lib@v1.0.0/go.mod", "module corp.example.com/other\n"), 400},
		{"v2 without the major suffix", "/corp.example.com/lib/@v/v2.0.0.zip", corpZip(t, "v2.0.0", "x"), 400},
		{"+incompatible with a go.mod", "/corp.example.com/lib/@v/v2.0.0+incompatible.zip", corpZip(t, "v2.0.0+incompatible", "x"), 400},
		{"not a zip", "/corp.example.com/lib/@v/v1.0.0.zip", []byte("not a zip"), 400},
		{"non-canonical version", "/corp.example.com/lib/@v/v1.0.zip", corpZip(t, "v1.0", "x"), 400},
		{"a .mod instead of a zip", "/corp.example.com/lib/@v/v1.0.0.mod", []byte("module corp.example.com/lib\n"), 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newHostingProxy(t, "off")
			w := put(p, tt.path, tt.body, "alice", "alice-pw")
			if w.Code != tt.want || w.Body.Len() < 10 {
				t.Errorf("%d %q, want %d with a reason", w.Code, w.Body, tt.want)
			}
			assertNothingHosted(t, p)
		})
	}
	t.Run("zip over the limit, declared", func(t *testing.T) {
		p := newHostingProxy(t, "off")
		r := httptest.NewRequest("PUT", "/corp.example.com/lib/@v/v1.0.0.zip", strings.NewReader("PK"))
		r.ContentLength = maxZipSize + 1
		r.SetBasicAuth("alice", "alice-pw")
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "limit") {
			t.Errorf("%d %s", w.Code, w.Body)
		}
		assertNothingHosted(t, p)
	})
	t.Run("zip over the limit, streamed", func(t *testing.T) {
		p := newHostingProxy(t, "off")
		err := p.Publish(context.Background(), "corp.example.com/lib", "v1.0.0", io.LimitReader(zeros{}, maxZipSize+1))
		if !errors.Is(err, ErrInvalidModule) {
			t.Errorf("Publish of %d bytes: %v", maxZipSize+1, err)
		}
		assertNothingHosted(t, p)
	})
	t.Run("truncated upload", func(t *testing.T) {
		p := newHostingProxy(t, "off")
		srv := httptest.NewServer(p)
		defer srv.Close()
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		zip := corpZip(t, "v1.0.0", "x")
		fmt.Fprintf(conn, "PUT /corp.example.com/lib/@v/v1.0.0.zip HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6YWxpY2UtcHc=\r\nContent-Length: %d\r\n\r\n", len(zip))
		conn.Write(zip[:len(zip)/2])
		conn.(*net.TCPConn).CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("truncated upload: %s", resp.Status)
			}
			resp.Body.Close()
		}
		conn.Close()
		assertNothingHosted(t, p)
	})
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func assertNothingHosted(t *testing.T, p *Proxy) {
	t.Helper()
	if names := cachedNames(p.Hosted); len(names) != 0 {
		t.Errorf("stored: %v", names)
	}
}

func TestCacheAdministration(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newHostingProxy(t, up.URL)
	const zip = "/example.com/a/@v/v1.0.0.zip"
	for _, f := range []string{"/example.com/a/@v/v1.0.0.info", "/example.com/a/@v/v1.0.0.mod", zip, "/example.com/a/@v/list"} {
		if w := getAs(p, f, "reader", "reader-pw"); w.Code != 200 {
			t.Fatalf("%s: %d %s", f, w.Code, w.Body)
		}
	}
	testwait.For(t, p.flights.idle)
	if err := p.Publish(context.Background(), "corp.example.com/lib", "v1.0.0", bytes.NewReader(corpZip(t, "v1.0.0", "x"))); err != nil {
		t.Fatal(err)
	}

	w := getAs(p, "/-/cached/example.com/a", "admin", "admin-pw")
	if w.Code != 200 || !strings.Contains(w.Body.String(), "example.com/a/@v/v1.0.0.zip") {
		t.Errorf("cached listing: %d %s", w.Code, w.Body)
	}

	// The index lists versions as they entered the cache or were published.
	w = getAs(p, "/index", "admin", "admin-pw")
	lines := strings.Split(strings.TrimSpace(w.Body.String()), "\n")
	if w.Code != 200 || len(lines) != 2 || !strings.Contains(lines[0], `"Path":"example.com/a"`) || !strings.Contains(lines[1], `"Path":"corp.example.com/lib"`) {
		t.Fatalf("index: %d %q", w.Code, lines)
	}
	if w := getAs(p, "/index?limit=1", "admin", "admin-pw"); strings.Count(w.Body.String(), "\n") != 1 {
		t.Errorf("index with limit=1: %q", w.Body)
	}
	var first IndexEntry
	json.Unmarshal([]byte(lines[1]), &first)
	since := first.Timestamp.Format(time.RFC3339Nano)
	if w := getAs(p, "/index?since="+since, "admin", "admin-pw"); !strings.Contains(w.Body.String(), "corp.example.com/lib") || strings.Contains(w.Body.String(), `"example.com/a"`) {
		t.Errorf("index since %s: %q", since, w.Body)
	}
	if w := getAs(p, "/index?since=yesterday", "admin", "admin-pw"); w.Code != http.StatusBadRequest {
		t.Errorf("bad since: %d", w.Code)
	}

	// Removing a cached version makes the next request fetch it again.
	del := httptest.NewRequest("DELETE", zip, nil)
	del.SetBasicAuth("admin", "admin-pw")
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, del)
	if rec.Code != 200 {
		t.Fatalf("DELETE: %d %s", rec.Code, rec.Body)
	}
	before := up.Requests(zip)
	getAs(p, zip, "reader", "reader-pw")
	if up.Requests(zip) != before+1 {
		t.Error("the removed version was not fetched again")
	}
	del = httptest.NewRequest("DELETE", zip, nil)
	del.SetBasicAuth("reader", "reader-pw")
	rec = httptest.NewRecorder()
	p.ServeHTTP(rec, del)
	if rec.Code != http.StatusForbidden {
		t.Errorf("DELETE without administer: %d", rec.Code)
	}
}

func TestPublishFinishesAnInterruptedPublish(t *testing.T) {
	p := newHostingProxy(t, "off")
	zip := corpZip(t, "v1.0.0", "x")
	// A publish that stopped after storing the zip, before .mod and .info.
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	p.Hosted.Put(context.Background(), "corp.example.com/lib/@v/v1.0.0.zip", bytes.NewReader(zip))
	if w := getAs(p, "/corp.example.com/lib/@v/list", "alice", "alice-pw"); w.Code == 200 && strings.Contains(w.Body.String(), "v1.0.0") {
		t.Errorf("a version without .info is listed: %q", w.Body)
	}
	if w := put(p, "/corp.example.com/lib/@v/v1.0.0.zip", zip, "alice", "alice-pw"); w.Code != http.StatusCreated {
		t.Fatalf("publishing again: %d %s", w.Code, w.Body)
	}
	if w := getAs(p, "/corp.example.com/lib/@v/list", "alice", "alice-pw"); w.Body.String() != "v1.0.0\n" {
		t.Errorf("list after finishing: %d %q", w.Code, w.Body)
	}
}

// failingStore fails every Get with an error other than not-found.
type failingStore struct{ DirCacher }

func (failingStore) Get(context.Context, string) (CachedFile, error) {
	return nil, errors.New("store unavailable")
}

func TestHostedStoreFailureFailsClosed(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newHostingProxy(t, up.URL)
	p.Hosted = failingStore{DirCacher(t.TempDir())}
	if w := getAs(p, "/example.com/a/@v/v1.0.0.mod", "reader", "reader-pw"); w.Code != http.StatusBadGateway {
		t.Errorf("with the hosted store failing: %d %s", w.Code, w.Body)
	}
	if up.Requests("/example.com/a/@v/v1.0.0.mod") != 0 {
		t.Error("the module's path went upstream while the hosted store failed")
	}
}

func TestAuthorizedAnswersArePrivate(t *testing.T) {
	p := newHostingProxy(t, "off")
	if err := p.Publish(context.Background(), "corp.example.com/lib", "v1.0.0", bytes.NewReader(corpZip(t, "v1.0.0", "x"))); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"v1.0.0.zip", "v1.0.0.mod", "list"} {
		w := getAs(p, "/corp.example.com/lib/@v/"+f, "alice", "alice-pw")
		if cc := w.Header().Get("Cache-Control"); w.Code != 200 || !strings.HasPrefix(cc, "private") {
			t.Errorf("%s: %d, Cache-Control %q; shared caches must not keep it", f, w.Code, cc)
		}
	}
}

func TestHostedAndCacherMustDiffer(t *testing.T) {
	dir := t.TempDir()
	p := &Proxy{Cacher: DirCacher(dir), Hosted: DirCacher(dir + "/"), Env: []string{"GOPROXY=off"}}
	if err := p.Init(); err == nil {
		t.Error("Init accepted one directory for both")
	}
}

func TestQueriesConsiderPublishedVersions(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := newHostingProxy(t, up.URL)
	mod := moduletest.GraphPath(1) // upstream has v1.0.0, v1.1.0, v1.2.0
	publish := func(version string) {
		zip := makeZip(t, mod+"@"+version+"/go.mod", "module "+mod+"\n")
		if err := p.Publish(context.Background(), mod, version, bytes.NewReader(zip)); err != nil {
			t.Fatal(err)
		}
	}
	publish("v1.1.5")
	publish("v1.3.0-rc.1")
	for _, tt := range []struct{ path, want string }{
		{"/@latest", "v1.2.0"},        // a release beats a newer pre-release
		{"/@v/latest.info", "v1.2.0"}, // the same as a query
		{"/@v/v1.1.info", "v1.1.5"},   // the published v1.1.5 beats the upstream's v1.1.0
		{"/@v/v1.info", "v1.2.0"},
	} {
		w := getAs(p, "/"+mod+tt.path, "reader", "reader-pw")
		if !strings.Contains(w.Body.String(), `"Version":"`+tt.want+`"`) && !strings.Contains(w.Body.String(), `"Version": "`+tt.want+`"`) {
			t.Errorf("%s: %d %s, want %s", tt.path, w.Code, w.Body, tt.want)
		}
	}
	publish("v1.4.0")
	if w := getAs(p, "/"+mod+"/@latest", "reader", "reader-pw"); !strings.Contains(w.Body.String(), "v1.4.0") {
		t.Errorf("@latest after publishing v1.4.0: %s", w.Body)
	}
	if w := getAs(p, "/"+mod+"/@v/v2.info", "reader", "reader-pw"); w.Code == 200 {
		t.Errorf("a query no version matches: %d %s", w.Code, w.Body)
	}
}

// publishOnMiss is a Hosted store that publishes a version the first time
// a read finds its .info missing: the publish lands between the read's
// look at the published store and its fetch from the upstreams.
type publishOnMiss struct {
	Cacher
	info    string
	once    sync.Once
	publish func()
}

func (c *publishOnMiss) Get(ctx context.Context, name string) (CachedFile, error) {
	cf, err := c.Cacher.Get(ctx, name)
	if name == c.info && errors.Is(err, fs.ErrNotExist) {
		c.once.Do(c.publish)
	}
	return cf, err
}

// A version published while a read of it is under way is not shadowed by
// the upstream copy that read fetched: the hot tier does not keep it.
func TestPublishDuringAReadIsNotShadowedByTheUpstreamCopy(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	const mod = "/example.com/a/@v/v1.0.0.mod"
	published := "module example.com/a\n\ngo 1.21\n"
	hosted := &publishOnMiss{Cacher: DirCacher(t.TempDir()), info: "example.com/a/@v/v1.0.0.info"}
	hosted.publish = func() {
		zip := makeZip(t, "example.com/a@v1.0.0/go.mod", published, "example.com/a@v1.0.0/a.go", "package a\n")
		if err := p.Publish(context.Background(), "example.com/a", "v1.0.0", bytes.NewReader(zip)); err != nil {
			t.Errorf("publishing: %v", err)
		}
	}
	p.Hosted = hosted
	do(p, "GET", mod) // raced by the publish: either copy may answer
	if w := do(p, "GET", mod); w.Code != 200 || w.Body.String() != published {
		t.Errorf("after the publish: %d %q, want the published %q", w.Code, w.Body, published)
	}
}

// TestInitRefusesAHostedStoreInsideTheCache: eviction walks the whole
// cache directory, so a hosted store within it would have its published
// versions evicted (and the other way round, cached files would pass for
// published ones).
func TestInitRefusesAHostedStoreInsideTheCache(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ cache, hosted string }{
		{dir, filepath.Join(dir, "hosted")},
		{filepath.Join(dir, "cache"), dir},
		{filepath.Join(dir, "x") + "/", filepath.Join(dir, "x", "..", "x", "hosted")},
	} {
		p := &Proxy{Cacher: DirCacher(tc.cache), Hosted: DirCacher(tc.hosted), Env: []string{"GOPROXY=off", "GOSUMDB=off"}}
		if err := p.Init(); err == nil {
			t.Errorf("Init with Cacher %s and Hosted %s: no error", tc.cache, tc.hosted)
		}
		p.Close()
	}
	for _, tc := range []struct{ cache, hosted string }{
		{filepath.Join(dir, "cache"), filepath.Join(dir, "cache-hosted")},
		{filepath.Join(dir, "a", "cache"), filepath.Join(dir, "b", "cache")},
	} {
		p := &Proxy{Cacher: DirCacher(tc.cache), Hosted: DirCacher(tc.hosted), Env: []string{"GOPROXY=off", "GOSUMDB=off"}}
		if err := p.Init(); err != nil {
			t.Errorf("Init with Cacher %s and Hosted %s: %v", tc.cache, tc.hosted, err)
		}
		p.Close()
	}
}
