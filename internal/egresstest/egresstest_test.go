package egresstest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/proxy"

	"github.com/goproxy-team/goproxy/internal/testcert"
)

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	defer c.Close()
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello\n" {
		t.Fatalf("echo read %q, %v", buf, err)
	}
}

func TestSOCKS5(t *testing.T) {
	target := Echo(t)
	_, port, _ := net.SplitHostPort(target)

	t.Run("no auth, address and name as received", func(t *testing.T) {
		s := &SOCKS5{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			// The test's own name for the echo server.
			if host, _, _ := net.SplitHostPort(addr); host == "echo.test" {
				addr = target
			}
			return LoopbackOnly(ctx, network, addr)
		}}
		s.Start(t)
		d, err := proxy.SOCKS5("tcp", s.Addr, nil, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		for _, addr := range []string{target, "echo.test:" + port} {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c)
		}
		if got, want := s.Requests(), []string{target, "echo.test:" + port}; !slices.Equal(got, want) {
			t.Errorf("Requests = %q, want %q", got, want)
		}
		if s.Connections() != 2 {
			t.Errorf("Connections = %d, want 2", s.Connections())
		}
	})

	t.Run("user name and password", func(t *testing.T) {
		s := &SOCKS5{Username: "alice", Password: "s3cret"}
		s.Start(t)
		good, _ := proxy.SOCKS5("tcp", s.Addr, &proxy.Auth{User: "alice", Password: "s3cret"}, proxy.Direct)
		c, err := good.Dial("tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c)
		for _, auth := range []*proxy.Auth{nil, {User: "alice", Password: "wrong"}} {
			d, _ := proxy.SOCKS5("tcp", s.Addr, auth, proxy.Direct)
			if c, err := d.Dial("tcp", target); err == nil {
				c.Close()
				t.Errorf("credentials %v were accepted", auth)
			}
		}
		if s.AuthFailures() != 2 {
			t.Errorf("AuthFailures = %d, want 2", s.AuthFailures())
		}
	})

	t.Run("loopback only by default", func(t *testing.T) {
		s := &SOCKS5{}
		s.Start(t)
		d, _ := proxy.SOCKS5("tcp", s.Addr, nil, proxy.Direct)
		if c, err := d.Dial("tcp", "echo.test:"+port); err == nil {
			c.Close()
			t.Error("reached a name without a Dial")
		}
	})
}

func TestHTTPProxy(t *testing.T) {
	ca := testcert.New(t)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", r.URL.Path)
	})
	plain := httptest.NewServer(handler)
	defer plain.Close()
	secure := httptest.NewUnstartedServer(handler)
	secure.TLS = ca.ServerConfig(t, "127.0.0.1")
	secure.StartTLS()
	defer secure.Close()

	p := &HTTPProxy{Username: "alice", Password: "s3cret"}
	p.Start(t)
	client := func(user *url.Userinfo) *http.Client {
		return &http.Client{Transport: &http.Transport{
			Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: p.Addr, User: user}),
			TLSClientConfig: ca.ClientConfig(),
		}}
	}
	good := client(url.UserPassword("alice", "s3cret"))
	for _, u := range []string{plain.URL + "/a", secure.URL + "/b"} {
		resp, err := good.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "hello from /") {
			t.Errorf("GET %s: %s %q", u, resp.Status, body)
		}
	}
	want := []string{"GET " + plain.URL + "/a", "CONNECT " + strings.TrimPrefix(secure.URL, "https://")}
	if got := p.Requests(); !slices.Equal(got, want) {
		t.Errorf("Requests = %q, want %q", got, want)
	}

	bad := client(url.UserPassword("alice", "wrong"))
	if resp, err := bad.Get(plain.URL); err != nil || resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("http:// with bad credentials: %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if _, err := bad.Get(secure.URL); err == nil {
		t.Error("https:// with bad credentials succeeded")
	}
	if p.AuthFailures() != 2 {
		t.Errorf("AuthFailures = %d, want 2", p.AuthFailures())
	}
}
