package goproxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
)

func TestGoproxyWalk(t *testing.T) {
	const mod = "/example.com/a/@v/v1.0.0.mod"
	behaviours := map[string]func(w http.ResponseWriter, r *http.Request){
		"ok": func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("module example.com/a\n")) },
		"404": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no such module here", http.StatusNotFound)
		},
		"410": func(w http.ResponseWriter, r *http.Request) { http.Error(w, "gone from here", http.StatusGone) },
		"500": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "upstream exploded", http.StatusInternalServerError)
		},
		"timeout": func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
	}
	tests := []struct {
		name       string
		list       string // A and B stand for the two upstreams
		a, b       string // their behaviours
		env        []string
		wantStatus int
		wantBody   string
		wantB      int // requests B should see
	}{
		{name: "comma falls through on 404", list: "A,B", a: "404", b: "ok", wantStatus: 200, wantB: 1},
		{name: "comma falls through on 410", list: "A,B", a: "410", b: "ok", wantStatus: 200, wantB: 1},
		{name: "comma stops on 500", list: "A,B", a: "500", b: "ok", wantStatus: 502, wantBody: "upstream exploded"},
		{name: "comma stops on timeout", list: "A,B", a: "timeout", b: "ok", wantStatus: 502, wantBody: "timeout"},
		{name: "pipe falls through on 404", list: "A|B", a: "404", b: "ok", wantStatus: 200, wantB: 1},
		{name: "pipe falls through on 500", list: "A|B", a: "500", b: "ok", wantStatus: 200, wantB: 1},
		{name: "pipe falls through on timeout", list: "A|B", a: "timeout", b: "ok", wantStatus: 200, wantB: 1},
		// The error passed on is the one the go command would report
		// (cmd/go/internal/modfetch.TryProxies).
		{name: "all not found passes the last message on", list: "A,B", a: "404", b: "410", wantStatus: 410, wantBody: "gone from here", wantB: 1},
		{name: "a failure outranks a not-found", list: "A,B", a: "404", b: "500", wantStatus: 502, wantBody: "upstream exploded", wantB: 1},
		{name: "a not-found does not replace a failure", list: "A|B", a: "500", b: "404", wantStatus: 502, wantBody: "upstream exploded", wantB: 1},
		{name: "of two failures the last is passed on", list: "A|B", a: "500", b: "timeout", wantStatus: 502, wantBody: "timeout", wantB: 1},
		{name: "direct's failure outranks a proxy's", list: "A|direct", a: "500", wantStatus: 404, wantBody: "unknown revision"},
		{name: "off refuses", list: "off", wantStatus: 403, wantBody: "GOPROXY=off"},
		{name: "off after a not-found refuses", list: "A,off,B", a: "404", b: "ok", wantStatus: 403, wantBody: "GOPROXY=off"},
		{name: "comma falls through to direct", list: "A,direct", a: "404", wantStatus: 404, wantBody: "unknown revision"},
		{name: "entries after direct are ignored", list: "direct,B", b: "ok", wantStatus: 404, wantBody: "unknown revision"},
		{name: "GONOPROXY skips the proxies", list: "B", b: "ok", env: []string{"GONOPROXY=example.com/a"}, wantStatus: 404, wantBody: "unknown revision"},
		{name: "GOPRIVATE skips the proxies", list: "B", b: "ok", env: []string{"GOPRIVATE=example.com"}, wantStatus: 404, wantBody: "unknown revision"},
		{name: "GONOPROXY overrides GOPRIVATE", list: "B", b: "ok", env: []string{"GOPRIVATE=example.com", "GONOPROXY=none.example"}, wantStatus: 200, wantB: 1},
		{name: "empty entries are skipped", list: ",,B,", b: "ok", wantStatus: 200, wantB: 1},
	}
	// "direct" runs a stand-in for the go command that finds nothing, so
	// that no test reaches a real origin.
	goBin, _ := fakeGo(t, `echo '{"Path":"example.com/a","Version":"v1.0.0","Error":"example.com/a@v1.0.0: invalid version: unknown revision v1.0.0"}'; exit 1`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ups [2]*moduletest.Server
			for i, b := range []string{tt.a, tt.b} {
				u := newUpstream(t, nil)
				if h := behaviours[b]; h != nil {
					u.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool { h(w, r); return true })
				}
				ups[i] = u
			}
			list := strings.NewReplacer("A", ups[0].URL, "B", ups[1].URL).Replace(tt.list)
			p := newTestProxy(t, list, tt.env...)
			p.Transport = &http.Transport{ResponseHeaderTimeout: 200 * time.Millisecond}
			p.Download.Attempts = 1 // the walk, not the retries, is under test
			p.Direct.GoBin = goBin
			w := do(p, "GET", mod)
			if w.Code != tt.wantStatus || !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", w.Code, w.Body, tt.wantStatus, tt.wantBody)
			}
			if n := ups[1].Requests(mod); n != tt.wantB {
				t.Errorf("second upstream got %d requests, want %d", n, tt.wantB)
			}
		})
	}
}

func TestParseUpstreams(t *testing.T) {
	tests := []struct {
		in   string
		want []Upstream
	}{
		{"https://a.example,direct", []Upstream{{URL: "https://a.example", Priority: 2}, {URL: "direct", Priority: 1}}},
		{"a.example/path/|b.example", []Upstream{{URL: "https://a.example/path/", Priority: 2, FallBackOnError: true}, {URL: "https://b.example", Priority: 1}}},
		{" off ", []Upstream{{URL: "off", Priority: 1}}},
	}
	for _, tt := range tests {
		got, err := ParseUpstreams(tt.in)
		if err != nil || len(got) != len(tt.want) {
			t.Errorf("ParseUpstreams(%q) = %v, %v", tt.in, got, err)
			continue
		}
		for i := range got {
			if fmt.Sprint(got[i]) != fmt.Sprint(tt.want[i]) {
				t.Errorf("ParseUpstreams(%q)[%d] = %+v, want %+v", tt.in, i, got[i], tt.want[i])
			}
		}
	}
	for _, bad := range []string{"", ",", "ftp://a.example", "http://a b/"} {
		if _, err := ParseUpstreams(bad); err == nil {
			t.Errorf("ParseUpstreams(%q) accepted", bad)
		}
	}
}

func TestCredentialsStayOutOfMessages(t *testing.T) {
	up := newUpstream(t, nil)
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool { http.Error(w, "boom", 500); return true })
	var logs syncBuffer
	p := newTestProxy(t, strings.Replace(up.URL, "http://", "http://user:s3cret@", 1))
	p.Logger = newBufferLogger(&logs)
	w := do(p, "GET", "/example.com/a/@v/list")
	if strings.Contains(w.Body.String(), "s3cret") || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("password leaked: body %q, logs %q", w.Body, logs.String())
	}
}

// authUpstream serves testModuleFiles only to requests that pass check,
// answering 401 otherwise, and records the Authorization headers it saw.
func authUpstream(t *testing.T, check func(r *http.Request) bool) *moduletest.Server {
	up := newUpstream(t, testModuleFiles(t))
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !check(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="modules"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return true
		}
		return false
	})
	return up
}

func TestRouteCredentials(t *testing.T) {
	const mod = "/example.com/a/@v/v1.0.0.mod"
	t.Run("basic auth", func(t *testing.T) {
		up := authUpstream(t, func(r *http.Request) bool { u, pw, ok := r.BasicAuth(); return ok && u == "alice" && pw == "s3cret" })
		p := newTestProxy(t, "off")
		if w := do(p, "GET", mod); w.Code == 200 {
			t.Fatal("the global list (off) served the module")
		}
		p = newTestProxy(t, "off")
		p.Routes = []Route{{Pattern: "example.com", Upstreams: []Upstream{{URL: up.URL, Username: "alice", Password: "s3cret"}}}}
		if w := do(p, "GET", mod); w.Code != 200 {
			t.Errorf("basic-auth route: %d %s", w.Code, w.Body)
		}
		p = newTestProxy(t, "off")
		p.Routes = []Route{{Pattern: "example.com", Upstreams: []Upstream{{URL: up.URL}}}}
		if w := do(p, "GET", mod); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "unauthorized") || w.Header().Get("WWW-Authenticate") != "" {
			t.Errorf("route without credentials: %d %s (WWW-Authenticate %q), want the upstream's 401 and message, without its challenge",
				w.Code, w.Body, w.Header().Get("WWW-Authenticate"))
		}
	})
	t.Run("credentials in the GOPROXY URL", func(t *testing.T) {
		up := authUpstream(t, func(r *http.Request) bool { u, pw, ok := r.BasicAuth(); return ok && u == "alice" && pw == "s3cret" })
		var logs syncBuffer
		p := newTestProxy(t, strings.Replace(up.URL, "http://", "http://alice:s3cret@", 1))
		p.Logger = newBufferLogger(&logs)
		if w := do(p, "GET", mod); w.Code != 200 {
			t.Errorf("GOPROXY with user information: %d %s", w.Code, w.Body)
		}
		if strings.Contains(logs.String(), "s3cret") {
			t.Error("password in the logs")
		}
	})
	t.Run("bearer token", func(t *testing.T) {
		up := authUpstream(t, func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer t0ken" })
		p := newTestProxy(t, "off")
		p.Routes = []Route{{Pattern: "example.com/a", Upstreams: []Upstream{{URL: up.URL, Token: "t0ken"}}}}
		if w := do(p, "GET", mod); w.Code != 200 {
			t.Errorf("bearer route: %d %s", w.Code, w.Body)
		}
	})
	t.Run("custom header", func(t *testing.T) {
		up := authUpstream(t, func(r *http.Request) bool { return r.Header.Get("X-Api-Key") == "k3y" })
		p := newTestProxy(t, "off")
		p.Routes = []Route{{Pattern: "example.com/*", Upstreams: []Upstream{{URL: up.URL, Header: http.Header{"X-Api-Key": {"k3y"}}}}}}
		if w := do(p, "GET", mod); w.Code != 200 {
			t.Errorf("header route: %d %s", w.Code, w.Body)
		}
	})
	t.Run("netrc", func(t *testing.T) {
		netrcFile := filepath.Join(t.TempDir(), "netrc")
		os.WriteFile(netrcFile, []byte("machine 127.0.0.1 login netrc-user password netrc-pw\n"), 0o600)
		files := testModuleFiles(t)
		upstream := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, pw, ok := r.BasicAuth(); !ok || u != "netrc-user" || pw != "netrc-pw" {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			w.Write(files[r.URL.Path])
		}))
		defer upstream.Close()
		p := newTestProxy(t, upstream.URL, "NETRC="+netrcFile)
		p.Transport = upstream.Client().Transport
		if w := do(p, "GET", mod); w.Code != 200 {
			t.Errorf(".netrc over https: %d %s", w.Code, w.Body)
		}
		// As with the go command, never over plain http.
		var sent atomic.Bool
		plain := newUpstream(t, testModuleFiles(t))
		plain.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
			sent.Store(r.Header.Get("Authorization") != "")
			return false
		})
		do(newTestProxy(t, plain.URL, "NETRC="+netrcFile), "GET", mod)
		if sent.Load() {
			t.Error(".netrc credentials went over plain http")
		}
	})
}

func TestCredentialsDoNotFollowRedirects(t *testing.T) {
	other := newUpstream(t, testModuleFiles(t))
	var seen []string
	var mu sync.Mutex
	other.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization")+"|"+r.Header.Get("X-Api-Key"))
		mu.Unlock()
		return false
	})
	redirector := newUpstream(t, nil)
	redirector.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusFound)
		return true
	})
	for _, up := range []Upstream{
		{URL: redirector.URL, Token: "t0ken"},
		{URL: redirector.URL, Username: "alice", Password: "s3cret"},
		{URL: redirector.URL, Header: http.Header{"X-Api-Key": {"k3y"}}},
	} {
		p := newTestProxy(t, "off")
		p.Prefetch.Off = true // the go.mod's request alone reaches the target
		p.Routes = []Route{{Pattern: "example.com", Upstreams: []Upstream{up}}}
		// Not a configured endpoint: the egress policy must be told.
		p.Egress.Allow = []string{strings.TrimPrefix(other.URL, "http://")}
		if w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod"); w.Code != 200 {
			t.Errorf("redirected fetch: %d %s", w.Code, w.Body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if s != "|" {
			t.Errorf("the redirect target received credentials: %q", s)
		}
	}
	if len(seen) != 3 {
		t.Errorf("redirect target saw %d requests, want 3", len(seen))
	}
}

func TestPrivateRouteStaysPrivate(t *testing.T) {
	public := newUpstream(t, testModuleFiles(t))
	private := newUpstream(t, testModuleFiles(t))
	db := newTestSumDB(t, nil)
	p := newVerifyingProxy(t, public.URL, db)
	p.Routes = []Route{{Pattern: "example.com/a", Private: true, Upstreams: []Upstream{{URL: private.URL}}}}
	for _, f := range []string{"list", "v1.0.0.info", "v1.0.0.mod", "v1.0.0.zip"} {
		if w := do(p, "GET", "/example.com/a/@v/"+f); w.Code != 200 {
			t.Errorf("%s: %d %s", f, w.Code, w.Body)
		}
	}
	if asked := public.TotalRequests(); asked != 0 {
		t.Errorf("the public upstream was asked %d times about a private module", asked)
	}
	if n := db.total(); n != 0 {
		t.Errorf("the checksum database was asked %d times about a private module", n)
	}
	// The same module on a non-private route is verified, so the test
	// would have seen a lookup.
	p = newVerifyingProxy(t, public.URL, db)
	do(p, "GET", "/example.com/a/@v/v1.0.0.mod")
	if db.asked("example.com/a") == 0 {
		t.Error("a public module was not looked up; the assertion above proves nothing")
	}
}

func TestEqualPrioritiesShareLoadAndFailOver(t *testing.T) {
	a := newUpstream(t, testModuleFiles(t))
	b := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, "off")
	p.NotFoundTTL = -1
	p.MutableTTL = -1 // every list request goes upstream
	p.Routes = []Route{{Pattern: "example.com", Upstreams: []Upstream{{URL: a.URL, Priority: 1}, {URL: b.URL, Priority: 1}}}}
	const list = "/example.com/a/@v/list"
	for range 10 {
		if w := do(p, "GET", list); w.Code != 200 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	if na, nb := a.Requests(list), b.Requests(list); na != 5 || nb != 5 {
		t.Errorf("requests split %d/%d, want 5/5", na, nb)
	}
	b.Close() // one upstream dies: every request still succeeds
	for range 10 {
		if w := do(p, "GET", list); w.Code != 200 {
			t.Errorf("with one upstream down: %d %s", w.Code, w.Body)
		}
	}
}

func TestPrioritiesFallThrough(t *testing.T) {
	high := newUpstream(t, nil) // has nothing
	low := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, "off")
	p.Routes = []Route{{Pattern: "example.com", Upstreams: []Upstream{{URL: low.URL, Priority: 1}, {URL: high.URL, Priority: 10}}}}
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod"); w.Code != 200 {
		t.Errorf("%d %s", w.Code, w.Body)
	}
	if high.Requests("/example.com/a/@v/v1.0.0.mod") != 1 || low.Requests("/example.com/a/@v/v1.0.0.mod") != 1 {
		t.Error("the higher priority was not tried first")
	}
}

func TestUpstreamPathsAreEscaped(t *testing.T) {
	var got []string
	var mu sync.Mutex
	up := newUpstream(t, nil)
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		got = append(got, r.URL.EscapedPath())
		mu.Unlock()
		http.Error(w, "no", http.StatusNotFound)
		return true
	})
	p := newTestProxy(t, up.URL)
	p.Routes = []Route{{Pattern: "example.com", Upstreams: []Upstream{{URL: up.URL, Token: "t0ken"}}}}
	// Queries may hold '%', '#' and encoded slashes; each must reach the
	// upstream exactly as the client sent it, never decoded twice.
	for _, q := range []string{"%252e%252e%252f%252e%252e%252fadmin%252fkeys", "x%2523y", "a%20b"} {
		do(p, "GET", "/example.com/a/@v/"+q+".info")
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"/example.com/a/@v/%252e%252e%252f%252e%252e%252fadmin%252fkeys.info",
		"/example.com/a/@v/x%2523y.info",
		"/example.com/a/@v/a%20b.info",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("upstream saw %q, want %q", got, want)
	}
}

func TestRedirectFromHTTPSToHTTPRefused(t *testing.T) {
	plain := newUpstream(t, testModuleFiles(t))
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+r.URL.Path, http.StatusFound)
	}))
	defer secure.Close()
	p := newTestProxy(t, secure.URL)
	p.Transport = secure.Client().Transport
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod"); w.Code == 200 || !strings.Contains(w.Body.String(), "insecure") {
		t.Errorf("downgrade redirect: %d %s", w.Code, w.Body)
	}
	if plain.Requests("/example.com/a/@v/v1.0.0.mod") != 0 {
		t.Error("the insecure target was reached")
	}
}

func TestProxyThatIsItsOwnUpstream(t *testing.T) {
	p := newTestProxy(t, "off")
	srv := httptest.NewServer(p)
	defer srv.Close()
	p.Env = []string{"GOPROXY=" + srv.URL, "GOSUMDB=off"}
	w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod")
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "its own upstream") {
		t.Errorf("self-loop: %d %s", w.Code, w.Body)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:s3cret@host/path":  "https://user:xxxxx@host/path",
		"https://t0ken@host/path?x=@y":   "https://xxxxx@host/path?x=@y",
		"http://host:80/path":            "http://host:80/path",
		"socks5h://a:b@[::1]:1080":       "socks5h://a:xxxxx@[::1]:1080",
		"https://us er:s3cret@ho st/%zz": "https://us er:xxxxx@ho st/%zz",
		"user:s3cret@host":               "user:xxxxx@host",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInvalidUpstreamKeepsItsPassword(t *testing.T) {
	p := &Proxy{Env: []string{"GOPROXY=https://user:s3cret@host/%zz"}}
	if err := p.Init(); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Init = %v; want an error without the password", err)
	}
}
