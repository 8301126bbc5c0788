package goproxy

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// TestCredentialsNeverReduceAccess: a user granted only private modules
// reads the public ones anyone may read, as the go command does when it
// sends the user's credentials with every request to one proxy for both.
func TestCredentialsNeverReduceAccess(t *testing.T) {
	auth := &StaticAuth{
		AnonymousRead: moduletest.GraphPath(1),
		Users:         map[string]User{"alice": {Password: "alice-pw", Grant: Grant{Read: "corp.example.com", Publish: "corp.example.com"}}},
		Tokens:        map[string]Grant{"ci-token": {Publish: "corp.example.com"}},
	}
	for _, tc := range []struct {
		name    string
		set     func(r *http.Request)
		allowed bool
	}{
		{"anonymous", func(r *http.Request) {}, true},
		{"a user granted other modules", func(r *http.Request) { r.SetBasicAuth("alice", "alice-pw") }, true},
		{"a token granted other modules", func(r *http.Request) { r.Header.Set("Authorization", "Bearer ci-token") }, true},
		{"a wrong password", func(r *http.Request) { r.SetBasicAuth("alice", "wrong") }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			tc.set(r)
			if err := auth.Authorize(r, OpRead, moduletest.GraphPath(1)); (err == nil) != tc.allowed {
				t.Errorf("read of a public module: %v", err)
			}
			if err := auth.Authorize(r, OpPublish, moduletest.GraphPath(1)); err == nil {
				t.Error("publishing a public module was allowed")
			}
		})
	}

	if testing.Short() {
		return
	}
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := newTestProxy(t, up.URL)
	p.Hosted = DirCacher(t.TempDir())
	auth.AnonymousRead = "example.com"
	p.Authorize = auth.Authorize
	// The go command sends credentials over https only.
	srv := httptest.NewTLSServer(p)
	defer srv.Close()
	certFile := filepath.Join(t.TempDir(), "cert.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)

	gocmd := gocmdtest.New(t)
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte("machine "+srv.Listener.Addr().String()+" login alice password alice-pw\n"), 0o600)
	gocmd.Set("NETRC", netrc)
	gocmd.Set("SSL_CERT_FILE", certFile)
	gocmd.Set("GOPROXY", srv.URL)
	gocmd.WriteGoMod(moduletest.RootGoMod(vs))
	gocmd.MustRun(t, "mod", "download")
	gocmd.MustRun(t, "list", "-m", "-versions", moduletest.GraphPath(1))
}
