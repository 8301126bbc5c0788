package goproxy_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/goproxy-team/goproxy"
)

// A Proxy mounted under /go/, next to a route of the program's own: the go
// command is then given GOPROXY=https://host/go.
func ExampleProxy_mountedUnderPrefix() {
	cacheDir, err := os.MkdirTemp("", "goproxy-example-*")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(cacheDir)
	proxy := &goproxy.Proxy{
		Cacher: goproxy.DirCacher(cacheDir),
		// Offline, for the example: no upstream is ever asked.
		Env: []string{"GOPROXY=off"},
	}
	if err := proxy.Init(); err != nil { // optional: fail at start-up, not at the first request
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/go/", http.StripPrefix("/go", proxy))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })

	for _, path := range []string{"/healthz", "/go/example.com/m/@v/list"} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		fmt.Printf("%s: %d %s", path, w.Code, w.Body)
	}
	// Output:
	// /healthz: 200 ok
	// /go/example.com/m/@v/list: 403 module lookup disabled by GOPROXY=off
}

// Routes send some modules to upstreams of their own, with credentials
// that go to those upstreams only; the rest follow GOPROXY.
func ExampleRoute() {
	mirrors, err := goproxy.ParseUpstreams("https://mirror-a.example.com|https://mirror-b.example.com")
	if err != nil {
		log.Fatal(err)
	}
	proxy := &goproxy.Proxy{
		Cacher: goproxy.DirCacher("/var/cache/goproxy"),
		Env:    []string{"GOPROXY=https://proxy.golang.org,direct"},
		Routes: []goproxy.Route{
			{
				// The company's modules, from its own proxy, with a token,
				// kept away from the public checksum database.
				Pattern:   "corp.example.com",
				Upstreams: []goproxy.Upstream{{URL: "https://goproxy.corp.example.com", Token: os.Getenv("CORP_GOPROXY_TOKEN")}},
				Private:   true,
			},
			{
				// A partner's modules, with basic auth and a header, and
				// their origin repositories as the last resort.
				Pattern: "partner.example.org/*",
				Upstreams: []goproxy.Upstream{
					{URL: "https://proxy.partner.example.org", Priority: 2, Username: "us", Password: os.Getenv("PARTNER_PASSWORD"),
						Header: http.Header{"X-Api-Key": {os.Getenv("PARTNER_KEY")}}},
					{URL: "direct", Priority: 1},
				},
			},
			{
				// Two mirrors of equal standing share the load, each
				// taking over when the other fails.
				Pattern:   "mirrored.example.net",
				Upstreams: mirrors,
			},
		},
	}
	if err := proxy.Init(); err != nil {
		log.Fatal(err)
	}
	http.Handle("/", proxy)
}

// Published modules are served with the cached ones from one GOPROXY URL.
// StaticAuth lets alice publish the company's modules, and anyone read
// them; here PUT and GET are made as a client would.
func ExampleStaticAuth() {
	hostedDir, err := os.MkdirTemp("", "goproxy-example-*")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(hostedDir)
	auth := &goproxy.StaticAuth{
		Users: map[string]goproxy.User{
			"alice": {Password: "correct horse", Grant: goproxy.Grant{Read: "*", Publish: "corp.example.com"}},
		},
		AnonymousRead: "*",
	}
	proxy := &goproxy.Proxy{
		Cacher: &goproxy.MemCacher{},
		Hosted: goproxy.DirCacher(hostedDir),
		// Published modules are private: no checksum database knows them.
		Env:       []string{"GOPROXY=off", "GONOSUMDB=corp.example.com"},
		Authorize: auth.Authorize,
	}

	// The zip of corp.example.com/lib v1.0.0, as the go command lays it out.
	var zipBody bytes.Buffer
	zw := zip.NewWriter(&zipBody)
	for name, content := range map[string]string{
		"corp.example.com/lib@v1.0.0/go.mod": "module corp.example.com/lib\n",
		"corp.example.com/lib@v1.0.0/lib.go": "package lib\n",
	} {
		f, _ := zw.Create(name)
		io.WriteString(f, content)
	}
	zw.Close()

	send := func(method, path, user string, body io.Reader) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, body)
		if user != "" {
			r.SetBasicAuth(user, "correct horse")
		}
		w := httptest.NewRecorder()
		proxy.ServeHTTP(w, r)
		return w
	}
	w := send("PUT", "/corp.example.com/lib/@v/v1.0.0.zip", "", bytes.NewReader(zipBody.Bytes()))
	fmt.Println("anonymous PUT:", w.Code)
	w = send("PUT", "/corp.example.com/lib/@v/v1.0.0.zip", "alice", bytes.NewReader(zipBody.Bytes()))
	fmt.Print("alice's PUT: ", w.Code, " ", w.Body)
	w = send("GET", "/corp.example.com/lib/@v/list", "", nil)
	fmt.Printf("list: %d %q\n", w.Code, w.Body)
	var info struct{ Version string }
	w = send("GET", "/corp.example.com/lib/@latest", "", nil)
	json.Unmarshal(w.Body.Bytes(), &info)
	fmt.Println("@latest:", w.Code, info.Version)
	w = send("GET", "/corp.example.com/lib/@v/v1.0.0.mod", "", nil)
	fmt.Print(".mod: ", w.Code, " ", strings.TrimSpace(w.Body.String()), "\n")
	// Output:
	// anonymous PUT: 401
	// alice's PUT: 201 published corp.example.com/lib@v1.0.0
	// list: 200 "v1.0.0\n"
	// @latest: 200 v1.0.0
	// .mod: 200 module corp.example.com/lib
}

// A fill brings into the cache what a build needs; a bundle carries it,
// with the checksum database's proofs, to a proxy beyond an air gap,
// which serves it offline and answers the go command's checksum database
// requests from what the bundle brought.
func ExampleProxy_Fill() {
	ctx := context.Background()
	online := &goproxy.Proxy{
		Cacher: goproxy.DirCacher("/var/cache/goproxy"),
		Env:    []string{"GOPROXY=https://proxy.golang.org", "GOSUMDB=sum.golang.org"},
	}
	defer online.Close()
	goMod, err := os.ReadFile("go.mod")
	if err != nil {
		log.Fatal(err)
	}
	// Everything go mod download all needs in that module.
	plan, err := online.PlanFill(ctx, "go.mod", goMod)
	if err != nil {
		log.Fatal(err)
	}
	report, err := online.Fill(ctx, plan, &goproxy.FillOptions{Journal: "/var/tmp/goproxy-fill.journal"})
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range report.Failed {
		log.Printf("%s: %v", f.Item, f.Err)
	}
	log.Print(report.Summary())
	bundle, err := os.Create("bundle.tar.gz")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := online.ExportBundle(ctx, bundle, plan.Items); err != nil {
		log.Fatal(err)
	}
	if err := bundle.Close(); err != nil {
		log.Fatal(err)
	}

	// Beyond the gap: the same database key, no network.
	offline := &goproxy.Proxy{
		Cacher:  goproxy.DirCacher("/srv/goproxy"),
		Env:     []string{"GOPROXY=off", "GOSUMDB=sum.golang.org"},
		Offline: true,
	}
	defer offline.Close()
	in, err := os.Open("bundle.tar.gz")
	if err != nil {
		log.Fatal(err)
	}
	defer in.Close()
	if _, err := offline.ImportBundle(ctx, in); err != nil {
		log.Fatal(err) // errors.Is(err, goproxy.ErrBundleRefused): nothing stored
	}
	http.Handle("/", offline)
}
