package goproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/dnstest"
	"github.com/goproxy-team/goproxy/internal/egresstest"
	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testcert"
)

// The egress tests model a network where the upstream lives behind the
// egress proxy: the test DNS server gives its name the address
// unreachableIP, where nothing listens, and only the proxies, through
// behindEgress, know that it is served at 127.0.0.1.
const unreachableIP = "127.0.0.2"

// behindEgress is the proxies' way out: names resolved by r, and
// unreachableIP mapped to where the upstream really listens.
func behindEgress(r *Resolver) egresstest.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if !isIPLiteral(host) {
			addrs, err := r.lookup(ctx, host)
			if err != nil {
				return nil, err
			}
			host = addrs[0].String()
		}
		if host == unreachableIP {
			host = "127.0.0.1"
		}
		return egresstest.LoopbackOnly(ctx, network, net.JoinHostPort(host, port))
	}
}

// requireUnreachable fails the test unless addr refuses a direct
// connection, which the egress tests rely on.
func requireUnreachable(t *testing.T, addr string) {
	t.Helper()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s is reachable directly: the test cannot show that only the proxy reaches it", addr)
	}
}

// echoServer starts an echo server on 127.0.0.1 and returns its port.
func echoServer(t *testing.T) (port string) {
	_, port, _ = net.SplitHostPort(egresstest.Echo(t))
	return port
}

func echoes(t *testing.T, c net.Conn) {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}

func TestDialerSOCKS(t *testing.T) {
	dns := dnstest.NewServer(t, nil)
	port := echoServer(t)
	dns.Set("echo.goproxy.test", time.Minute, unreachableIP)
	dns.Set("twice.goproxy.test", time.Minute, "127.0.0.3", unreachableIP)
	requireUnreachable(t, net.JoinHostPort(unreachableIP, port))
	resolver := newTestResolver(t, dns, dns.DoHURL)

	socks := &egresstest.SOCKS5{Username: "gopher", Password: "s3cret", Dial: behindEgress(resolver)}
	socks.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("socks5h sends the name", func(t *testing.T) {
		before := dns.TotalQueries()
		d := &Dialer{Proxy: "socks5h://gopher:s3cret@" + socks.Addr, Resolver: newTestResolver(t, dns, dns.DoHURL)}
		c, err := d.DialContext(ctx, "tcp", "echo.goproxy.test:"+port)
		if err != nil {
			t.Fatal(err)
		}
		echoes(t, c)
		if got := socks.Requests(); got[len(got)-1] != "echo.goproxy.test:"+port {
			t.Errorf("the SOCKS server was asked for %q, want the name", got[len(got)-1])
		}
		// Only the SOCKS server's own lookup (through behindEgress) asked.
		if got := dns.TotalQueries() - before; got != 2 {
			t.Errorf("%d DNS queries, want the SOCKS server's 2 only", got)
		}
	})

	t.Run("socks5 resolves here and sends the address", func(t *testing.T) {
		d := &Dialer{Proxy: "socks5://gopher:s3cret@" + socks.Addr, Resolver: newTestResolver(t, dns, dns.DoHURL)}
		before := dns.Queries(dnstest.HTTPSPost)
		c, err := d.DialContext(ctx, "tcp", "echo.goproxy.test:"+port)
		if err != nil {
			t.Fatal(err)
		}
		echoes(t, c)
		if got := socks.Requests(); got[len(got)-1] != net.JoinHostPort(unreachableIP, port) {
			t.Errorf("the SOCKS server was asked for %q, want the address", got[len(got)-1])
		}
		if dns.Queries(dnstest.HTTPSPost) == before {
			t.Error("the Dialer's resolver was not asked")
		}
	})

	t.Run("socks5 tries each address", func(t *testing.T) {
		d := &Dialer{Proxy: "socks5://gopher:s3cret@" + socks.Addr, Resolver: newTestResolver(t, dns, dns.DoHURL)}
		n := len(socks.Requests())
		c, err := d.DialContext(ctx, "tcp", "twice.goproxy.test:"+port)
		if err != nil {
			t.Fatal(err)
		}
		echoes(t, c)
		want := []string{net.JoinHostPort("127.0.0.3", port), net.JoinHostPort(unreachableIP, port)}
		if got := socks.Requests()[n:]; !slices.Equal(got, want) {
			t.Errorf("the SOCKS server was asked for %q, want %q", got, want)
		}
	})

	t.Run("SOCKS5_PROXY from the environment", func(t *testing.T) {
		// A bare host:port there is socks5: the name is resolved here.
		d := &Dialer{Env: []string{"SOCKS5_PROXY=gopher:s3cret@" + socks.Addr}, Resolver: newTestResolver(t, dns, dns.DoHURL)}
		c, err := d.DialContext(ctx, "tcp", "echo.goproxy.test:"+port)
		if err != nil {
			t.Fatal(err)
		}
		echoes(t, c)
		if got := socks.Requests(); got[len(got)-1] != net.JoinHostPort(unreachableIP, port) {
			t.Errorf("the SOCKS server was asked for %q, want the address", got[len(got)-1])
		}
	})

	t.Run("the transport keeps connections", func(t *testing.T) {
		ca := testcert.New(t)
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, r.Proto)
		}))
		srv.TLS = ca.ServerConfig(t, "web.goproxy.test")
		srv.EnableHTTP2 = true
		srv.StartTLS()
		defer srv.Close()
		_, webPort, _ := net.SplitHostPort(srv.Listener.Addr().String())
		dns.Set("web.goproxy.test", time.Minute, unreachableIP)
		d := &Dialer{Proxy: "socks5://gopher:s3cret@" + socks.Addr, Resolver: newTestResolver(t, dns, dns.DoHURL), TLSConfig: ca.ClientConfig()}
		tr, err := d.Transport()
		if err != nil {
			t.Fatal(err)
		}
		defer tr.CloseIdleConnections()
		conns := socks.Connections()
		for range 3 {
			resp, err := (&http.Client{Transport: tr}).Get("https://web.goproxy.test:" + webPort + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "HTTP/2.0" {
				t.Errorf("request went over %s, want HTTP/2.0", body)
			}
		}
		if got := socks.Connections() - conns; got != 1 {
			t.Errorf("3 requests took %d connections, want 1", got)
		}
	})
}

func TestDialerHTTPProxy(t *testing.T) {
	dns := dnstest.NewServer(t, nil)
	ca := testcert.New(t)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") })
	secure := httptest.NewUnstartedServer(handler)
	secure.TLS = ca.ServerConfig(t, "secure.goproxy.test")
	secure.StartTLS()
	defer secure.Close()
	plain := httptest.NewServer(handler)
	defer plain.Close()
	_, securePort, _ := net.SplitHostPort(secure.Listener.Addr().String())
	_, plainPort, _ := net.SplitHostPort(plain.Listener.Addr().String())
	dns.Set("secure.goproxy.test", time.Minute, unreachableIP)
	dns.Set("plain.goproxy.test", time.Minute, unreachableIP)
	dns.Set("egress.goproxy.test", time.Minute, "127.0.0.1")
	requireUnreachable(t, net.JoinHostPort(unreachableIP, securePort))

	p := &egresstest.HTTPProxy{Username: "gopher", Password: "s3cret", Dial: behindEgress(newTestResolver(t, dns, dns.DoHURL))}
	p.Start(t)
	_, proxyPort, _ := net.SplitHostPort(p.Addr)
	d := &Dialer{
		// The proxy by a name only the test's DNS server knows.
		Proxy:     "http://gopher:s3cret@egress.goproxy.test:" + proxyPort,
		Resolver:  newTestResolver(t, dns, dns.DoHURL),
		TLSConfig: ca.ClientConfig(),
	}
	tr, err := d.Transport()
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, u := range []string{"https://secure.goproxy.test:" + securePort + "/a", "http://plain.goproxy.test:" + plainPort + "/b"} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "hello" {
			t.Errorf("GET %s: %s %q", u, resp.Status, body)
		}
	}
	// DialContext, for connections of no known protocol, asks for a tunnel.
	echoPort := echoServer(t)
	dns.Set("echo.goproxy.test", time.Minute, unreachableIP)
	c, err := d.DialContext(context.Background(), "tcp", "echo.goproxy.test:"+echoPort)
	if err != nil {
		t.Fatal(err)
	}
	echoes(t, c)
	want := []string{"CONNECT secure.goproxy.test:" + securePort, "GET http://plain.goproxy.test:" + plainPort + "/b", "CONNECT echo.goproxy.test:" + echoPort}
	if got := p.Requests(); !slices.Equal(got, want) {
		t.Errorf("the proxy was asked %q, want %q", got, want)
	}
}

func TestDialerEnvironment(t *testing.T) {
	type want struct{ http, https, conn string }
	for _, tc := range []struct {
		name  string
		proxy string
		env   []string
		want  want
		// environ lists variables Environ must return.
		environ []string
	}{
		{
			name:    "no variables",
			want:    want{},
			environ: []string{"HTTP_PROXY=", "https_proxy=", "ALL_PROXY=", "no_proxy="},
		},
		{
			name:    "per scheme",
			env:     []string{"HTTP_PROXY=http://h:1", "HTTPS_PROXY=https://s:2"},
			want:    want{http: "http://h:1", https: "https://s:2", conn: "https://s:2"},
			environ: []string{"HTTP_PROXY=http://h:1", "http_proxy=http://h:1", "HTTPS_PROXY=https://s:2", "ALL_PROXY="},
		},
		{
			name:    "lower case, and a bare host:port is http",
			env:     []string{"https_proxy=s:3128"},
			want:    want{https: "http://s:3128", conn: "http://s:3128"},
			environ: []string{"HTTPS_PROXY=http://s:3128"},
		},
		{
			name:    "ALL_PROXY for what has no variable of its own",
			env:     []string{"ALL_PROXY=socks5h://a:1080", "HTTP_PROXY=http://h:1"},
			want:    want{http: "http://h:1", https: "socks5h://a:1080", conn: "socks5h://a:1080"},
			environ: []string{"HTTPS_PROXY=socks5h://a:1080", "ALL_PROXY=socks5h://a:1080"},
		},
		{
			name:    "SOCKS5_PROXY last, socks5 by default",
			env:     []string{"SOCKS5_PROXY=k:1080"},
			want:    want{http: "socks5://k:1080", https: "socks5://k:1080", conn: "socks5://k:1080"},
			environ: []string{"HTTP_PROXY=socks5://k:1080", "ALL_PROXY=socks5://k:1080"},
		},
		{
			name:  "NO_PROXY",
			env:   []string{"HTTPS_PROXY=http://s:2", "ALL_PROXY=socks5://a:1", "NO_PROXY=.internal.test,other.test"},
			want:  want{https: "http://s:2", http: "socks5://a:1", conn: "socks5://a:1"},
			proxy: "",
			environ: []string{
				"NO_PROXY=.internal.test,other.test", "no_proxy=.internal.test,other.test",
			},
		},
		{
			name:    "Proxy replaces the variables",
			proxy:   "socks5h://p:1",
			env:     []string{"HTTPS_PROXY=http://s:2"},
			want:    want{http: "socks5h://p:1", https: "socks5h://p:1", conn: "socks5h://p:1"},
			environ: []string{"HTTPS_PROXY=socks5h://p:1"},
		},
		{
			name:    "direct",
			proxy:   "direct",
			env:     []string{"HTTPS_PROXY=http://s:2", "ALL_PROXY=socks5://a:1"},
			environ: []string{"HTTPS_PROXY=", "ALL_PROXY="},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Dialer{Proxy: tc.proxy, Env: append(tc.env, "PATH=/bin")}
			if err := d.init(); err != nil {
				t.Fatal(err)
			}
			str := func(u *url.URL) string {
				if u == nil {
					return ""
				}
				return u.String()
			}
			got := want{str(d.egress.httpURL), str(d.egress.httpsURL), str(d.egress.connURL)}
			if got != tc.want {
				t.Errorf("proxies %+v, want %+v", got, tc.want)
			}
			env := d.Environ()
			for _, kv := range tc.environ {
				if !slices.Contains(env, kv) {
					t.Errorf("Environ() = %q, lacks %q", env, kv)
				}
			}
			// What the Transport asks net/http to use: HTTP proxies only,
			// never for loopback or NO_PROXY hosts.
			tr, err := d.Transport()
			if err != nil {
				t.Fatal(err)
			}
			for _, target := range []string{"http://x.test/", "https://x.test/", "https://a.internal.test/", "https://127.0.0.1/", "https://localhost/"} {
				req, _ := http.NewRequest("GET", target, nil)
				p, err := tr.Proxy(req)
				if err != nil {
					t.Fatal(err)
				}
				var want string
				if target == "http://x.test/" && !strings.HasPrefix(tc.want.http, "socks") {
					want = tc.want.http
				}
				if target == "https://x.test/" && !strings.HasPrefix(tc.want.https, "socks") {
					want = tc.want.https
				}
				if target == "https://a.internal.test/" && !strings.Contains(strings.Join(tc.env, " "), "internal.test") && !strings.HasPrefix(tc.want.https, "socks") {
					want = tc.want.https
				}
				if str(p) != want {
					t.Errorf("proxy for %s: %q, want %q", target, str(p), want)
				}
			}
		})
	}

	t.Run("nil and zero Dialers read the process environment", func(t *testing.T) {
		t.Setenv("HTTPS_PROXY", "http://from-env.test:8080")
		for _, d := range []*Dialer{nil, {}} {
			tr, err := d.Transport()
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("GET", "https://example.test/", nil)
			if p, _ := tr.Proxy(req); p == nil || p.Host != "from-env.test:8080" {
				t.Errorf("proxy %v, want the environment's", p)
			}
			if tr.TLSHandshakeTimeout != defaultTLSHandshakeTimeout || tr.ResponseHeaderTimeout != defaultResponseHeaderTimeout || tr.IdleConnTimeout != defaultIdleConnTimeout || !tr.ForceAttemptHTTP2 {
				t.Errorf("transport lacks the default timeouts: %+v", tr)
			}
		}
	})
}

func TestDialerTimeouts(t *testing.T) {
	t.Run("TLS handshake", func(t *testing.T) {
		// A server that accepts but never speaks TLS.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var mu sync.Mutex
		var held []net.Conn
		defer func() {
			mu.Lock()
			for _, c := range held {
				c.Close()
			}
			mu.Unlock()
		}()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		}()
		d := &Dialer{Proxy: "direct", TLSHandshakeTimeout: 200 * time.Millisecond}
		tr, err := d.Transport()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/")
		if err == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("GET took %v: %v", time.Since(start), err)
		}
	})
	t.Run("response header", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(release)
		d := &Dialer{Proxy: "direct", ResponseHeaderTimeout: 200 * time.Millisecond}
		tr, err := d.Transport()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = (&http.Client{Transport: tr}).Get(srv.URL)
		if err == nil || !strings.Contains(err.Error(), "timeout awaiting response headers") || time.Since(start) > 5*time.Second {
			t.Fatalf("GET took %v: %v", time.Since(start), err)
		}
	})
}

func TestDialerRacesFamilies(t *testing.T) {
	// dual.goproxy.test has an IPv6 address, tried first, where nothing
	// listens, and the IPv4 address of the echo server.
	dns := dnstest.NewServer(t, nil)
	port := echoServer(t)
	dns.Set("dual.goproxy.test", time.Minute, "::1", "127.0.0.1")
	d := &Dialer{Proxy: "direct", Resolver: newTestResolver(t, dns, "udp://"+dns.UDPAddr)}
	c, err := d.DialContext(context.Background(), "tcp", "dual.goproxy.test:"+port)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RemoteAddr().String(); got != "127.0.0.1:"+port {
		t.Errorf("connected to %s", got)
	}
	echoes(t, c)
	if _, err := d.DialContext(context.Background(), "tcp6", "dual.goproxy.test:"+port); err == nil {
		t.Error("tcp6 reached the IPv4-only listener")
	}
}

// TestDialerRedactsCredentials forces every kind of failure that involves
// a proxy URL and checks that its password appears in no error, no log
// line and no response.
func TestDialerRedactsCredentials(t *testing.T) {
	const secret = "pa55w0rd-SECRET"
	socks := &egresstest.SOCKS5{Username: "gopher", Password: "other"}
	socks.Start(t)
	hp := &egresstest.HTTPProxy{Username: "gopher", Password: "other"}
	hp.Start(t)
	closed := closedTCPPort(t)

	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))

	check := func(t *testing.T, what, text string) {
		t.Helper()
		if strings.Contains(text, secret) {
			t.Errorf("%s shows the password: %s", what, text)
		} else {
			t.Logf("%s: %s", what, text)
		}
	}
	for _, tc := range []struct {
		name  string
		proxy string
		env   []string
	}{
		{name: "unparsable URL", proxy: "http://gopher:" + secret + "%zz@127.0.0.1:1"},
		{name: "unparsable URL from the environment", env: []string{"HTTPS_PROXY=http://gopher:" + secret + "%zz@127.0.0.1:1"}},
		{name: "unknown scheme", proxy: "ftp://gopher:" + secret + "@127.0.0.1:1"},
		{name: "path in URL", proxy: "http://gopher:" + secret + "@127.0.0.1:1/x"},
		{name: "token as user name", proxy: "ftp://" + secret + "@127.0.0.1:1"},
		// socks5h, here and below: with socks5 the target's name would be
		// resolved first, by the system resolver, outside the test.
		{name: "SOCKS proxy refusing connections", proxy: "socks5h://gopher:" + secret + "@" + closed},
		{name: "SOCKS proxy refusing the credentials", proxy: "socks5h://gopher:" + secret + "@" + socks.Addr},
		{name: "HTTP proxy refusing connections", proxy: "http://gopher:" + secret + "@" + closed},
		{name: "HTTP proxy refusing the credentials", proxy: "http://gopher:" + secret + "@" + hp.Addr},
		{name: "HTTP proxy from the environment refusing the credentials", env: []string{"HTTPS_PROXY=http://gopher:" + secret + "@" + hp.Addr, "HTTP_PROXY=http://gopher:" + secret + "@" + hp.Addr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Dialer{Proxy: tc.proxy, Env: tc.env}
			if tc.env == nil {
				d.Env = []string{}
			}
			tr, err := d.Transport()
			if err != nil {
				check(t, "Transport error", err.Error())
				check(t, "Transport error (%+v)", fmt.Sprintf("%+v", err))
				if _, err := d.DialContext(context.Background(), "tcp", "x.goproxy.test:1"); err == nil {
					t.Error("DialContext succeeded with an invalid configuration")
				} else {
					check(t, "DialContext error", err.Error())
				}
				return
			}
			defer tr.CloseIdleConnections()
			if c, err := d.DialContext(context.Background(), "tcp", "x.goproxy.test:1"); err == nil {
				c.Close()
			} else {
				check(t, "DialContext error", err.Error())
			}
			for _, target := range []string{"https://x.goproxy.test:1/", "http://x.goproxy.test:1/"} {
				resp, err := (&http.Client{Transport: tr}).Get(target)
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					check(t, "response", resp.Status+" "+string(body))
					continue
				}
				check(t, "GET error", err.Error())
			}
			// A Proxy using the transport: its logs and its answer to the
			// go command.
			p := &Proxy{
				Cacher:    &MemCacher{},
				Env:       []string{"GOPROXY=https://x.goproxy.test:1"},
				Transport: tr,
				Logger:    logger,
				TempDir:   t.TempDir(),
				Download:  DownloadOptions{Attempts: 1},
			}
			w := httptest.NewRecorder()
			p.ServeHTTP(w, httptest.NewRequest("GET", "/example.com/m/@v/list", nil))
			check(t, "proxy answer", w.Body.String())
		})
	}
	logMu.Lock()
	check(t, "logs", logs.String())
	logMu.Unlock()
	if socks.AuthFailures() == 0 || hp.AuthFailures() == 0 {
		t.Errorf("the proxies refused %d and %d credentials: the test did not reach them", socks.AuthFailures(), hp.AuthFailures())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func closedTCPPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestDialerGoCommandEndToEnd has the installed go command download a
// module graph through a Proxy whose upstream has a name that only the
// test's DNS-over-HTTPS server resolves, to an address that only the
// egress proxy can reach: once through SOCKS5, once through an HTTP proxy
// with CONNECT.
func TestDialerGoCommandEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	ca := testcert.New(t)
	// The same modules over TLS, for CONNECT, which net/http uses for
	// https:// upstreams only.
	upTLS := httptest.NewUnstartedServer(up.Handler())
	upTLS.TLS = ca.ServerConfig(t, "modules.goproxy.test")
	upTLS.StartTLS()
	defer upTLS.Close()
	_, upPort, _ := net.SplitHostPort(strings.TrimPrefix(up.URL, "http://"))
	_, upTLSPort, _ := net.SplitHostPort(upTLS.Listener.Addr().String())
	requireUnreachable(t, net.JoinHostPort(unreachableIP, upPort))
	requireUnreachable(t, net.JoinHostPort(unreachableIP, upTLSPort))

	dns := dnstest.NewServer(t, nil)
	dns.Set("modules.goproxy.test", time.Minute, unreachableIP)
	dns.Set("egress.goproxy.test", time.Minute, "127.0.0.1")

	download := func(t *testing.T, upstream string, d *Dialer) {
		tr, err := d.Transport()
		if err != nil {
			t.Fatal(err)
		}
		defer tr.CloseIdleConnections()
		p := newTestProxy(t, upstream)
		p.Transport = tr
		srv := httptest.NewServer(p)
		defer srv.Close()
		gocmd := gocmdtest.New(t)
		gocmd.Set("GOPROXY", srv.URL)
		gocmd.WriteGoMod(moduletest.RootGoMod(vs))
		dec := json.NewDecoder(strings.NewReader(gocmd.MustRun(t, "mod", "download", "-json")))
		n := 0
		for dec.More() {
			var m struct{ Path, Version, Error string }
			if err := dec.Decode(&m); err != nil {
				t.Fatal(err)
			}
			if m.Error != "" {
				t.Errorf("%s@%s: %s", m.Path, m.Version, m.Error)
			}
			n++
		}
		if n < 10 {
			t.Errorf("go mod download fetched %d modules, want at least 10", n)
		}
		t.Logf("go mod download fetched %d modules", n)
	}

	t.Run("through SOCKS5", func(t *testing.T) {
		socks := &egresstest.SOCKS5{Username: "gopher", Password: "s3cret", Dial: behindEgress(newTestResolver(t, dns, "udp://"+dns.UDPAddr))}
		socks.Start(t)
		doh := dns.Queries(dnstest.HTTPSPost)
		upBefore := up.TotalRequests()
		download(t, "http://modules.goproxy.test:"+upPort, &Dialer{
			Proxy:    "socks5://gopher:s3cret@" + socks.Addr,
			Resolver: newTestResolver(t, dns, dns.DoHURL),
		})
		if dns.Queries(dnstest.HTTPSPost) == doh {
			t.Error("the DoH server was not asked")
		}
		reqs := socks.Requests()
		t.Logf("SOCKS server: %d connections; upstream: %d requests", len(reqs), up.TotalRequests()-upBefore)
		if len(reqs) == 0 || up.TotalRequests() == upBefore {
			t.Fatalf("the SOCKS server saw %d requests and the upstream %d", len(reqs), up.TotalRequests()-upBefore)
		}
		for _, r := range reqs {
			if r != net.JoinHostPort(unreachableIP, upPort) {
				t.Errorf("the SOCKS server was asked for %s", r)
			}
		}
	})

	t.Run("through an HTTP proxy", func(t *testing.T) {
		hp := &egresstest.HTTPProxy{Username: "gopher", Password: "s3cret", Dial: behindEgress(newTestResolver(t, dns, "udp://"+dns.UDPAddr))}
		hp.Start(t)
		_, hpPort, _ := net.SplitHostPort(hp.Addr)
		doh := dns.Queries(dnstest.HTTPSPost)
		upBefore := up.TotalRequests()
		download(t, "https://modules.goproxy.test:"+upTLSPort, &Dialer{
			Proxy:     "http://gopher:s3cret@egress.goproxy.test:" + hpPort,
			Resolver:  newTestResolver(t, dns, dns.DoHURL),
			TLSConfig: ca.ClientConfig(),
		})
		if dns.Queries(dnstest.HTTPSPost) == doh {
			t.Error("the DoH server was not asked for the proxy's name")
		}
		reqs := hp.Requests()
		t.Logf("HTTP proxy: %d tunnels; upstream: %d requests", len(reqs), up.TotalRequests()-upBefore)
		if len(reqs) == 0 || up.TotalRequests() == upBefore {
			t.Fatalf("the HTTP proxy saw %d requests and the upstream %d", len(reqs), up.TotalRequests()-upBefore)
		}
		for _, r := range reqs {
			if r != "CONNECT modules.goproxy.test:"+upTLSPort {
				t.Errorf("the HTTP proxy was asked %q", r)
			}
		}
	})
}
