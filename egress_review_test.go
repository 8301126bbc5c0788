package goproxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/egresstest"
	"github.com/goproxy-team/goproxy/internal/gitrepotest"
)

// numericLoopbackForms are 127.0.0.1 and 169.254.169.254 as getaddrinfo,
// curl, browsers and the HTTP proxies built on them read a host, though
// netip and net.ParseIP do not: decimal, octal, hex and shortened forms.
var numericLoopbackForms = map[string]string{
	"2130706433":          "127.0.0.1",
	"0x7f000001":          "127.0.0.1",
	"0x7F000001":          "127.0.0.1",
	"017700000001":        "127.0.0.1",
	"0177.0.0.1":          "127.0.0.1",
	"127.000.000.001":     "127.0.0.1",
	"0x7f.0.0.1":          "127.0.0.1",
	"127.1":               "127.0.0.1",
	"127.0.1":             "127.0.0.1",
	"0x7f.1":              "127.0.0.1",
	"127.0.0.1.":          "127.0.0.1",
	"2852039166":          "169.254.169.254",
	"0251.0376.0251.0376": "169.254.169.254",
	"0xa9.0xfe.0xa9.0xfe": "169.254.169.254",
	"169.254.43518":       "169.254.169.254",
	"0":                   "0.0.0.0",
	"0x":                  "0.0.0.0",
}

// TestNumericHostFormsAreCheckedAsAddresses: a host an egress proxy
// (squid, a SOCKS server, curl) reads as an address is one, whatever Go
// makes of it, and the policy checks it before that proxy is asked.
func TestNumericHostFormsAreCheckedAsAddresses(t *testing.T) {
	p, err := newEgressPolicy(EgressPolicy{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range numericLoopbackForms {
		err := p.checkUnresolved(context.Background(), host, 443)
		if re := egressRefusal(err); re == nil || re.addr.Addr() != netip.MustParseAddr(want) {
			t.Errorf("checkUnresolved(%q) = %v, want %s refused", host, err, want)
		}
	}
	for _, host := range []string{"example.com", "1.2.3.4", "8.8.8.8", "1.2.3", "123.example", "0x7f.example", "1.2.3.4.5", "4294967296", "0x100000000", "256.0.0.1", "08.0.0.1", "1.2.3.0x100", "1e3"} {
		if err := p.checkUnresolved(context.Background(), host, 443); err != nil {
			t.Errorf("checkUnresolved(%q) = %v, want no refusal here", host, err)
		}
	}

	// Through an HTTP egress proxy, which would resolve these itself.
	hp := &egresstest.HTTPProxy{}
	hp.Start(t)
	d := (&Dialer{Proxy: "http://" + hp.Addr}).withPolicy(p)
	for host := range numericLoopbackForms {
		c, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort(host, "443"))
		if c != nil {
			c.Close()
		}
		if egressRefusal(err) == nil {
			t.Errorf("dial %s through an HTTP proxy: %v, want a refusal", host, err)
		}
	}
	if reqs := hp.Requests(); len(reqs) != 0 {
		t.Errorf("the egress proxy was asked for %q", reqs)
	}
}

// TestDirectFetchOfNumericLoopbackIsRefused: module paths may name hosts
// such as 127.1, which an egress proxy resolving names takes for loopback.
func TestDirectFetchOfNumericLoopbackIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	hp := &egresstest.HTTPProxy{}
	hp.Start(t)
	p := newDirectTestProxy(t, gitrepotest.NewServer(t), "GOPRIVATE=", "GOPROXY=direct", "GOSUMDB=off")
	p.Dialer = &Dialer{Proxy: "http://" + hp.Addr}
	log := watchEgress(t, p)
	for _, host := range []string{"127.1", "0177.0.0.1", "0x7f.1"} {
		w := do(p, "GET", "/"+host+"/x/@v/list")
		if w.Code != 403 || !strings.Contains(w.Body.String(), "egress policy") {
			t.Errorf("GET /%s/x/@v/list: %d %q, want 403 from the egress policy", host, w.Code, w.Body)
		}
	}
	log.refusedOnly(t, "127.0.0.1:443")
	if reqs := hp.Requests(); len(reqs) != 0 {
		t.Errorf("the egress proxy was asked for %q", reqs)
	}
}

// TestDirectFetchDoesNotFallBackToPlainHTTP: for a path naming its
// version control system (".git"), the go command tries each scheme it
// counts as secure, and counts as secure every scheme GIT_ALLOW_PROTOCOL
// lists. When https fails (an attacker on the path need only reset the
// connection), it must not go on to http:// unless GOINSECURE says so.
func TestDirectFetchDoesNotFallBackToPlainHTTP(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and git")
	}
	const modPath = "plain.goproxy.test/lib.git"
	const plainAddr = "203.0.113.11"
	o := newOrigin(t, "plain.goproxy.test")
	o.dns.Set("plain.goproxy.test", time.Minute, plainAddr)
	// Port 80 serves the repository in clear; port 443 has no route.
	o.route(plainAddr+":80", strings.TrimPrefix(o.git.URL, "http://"))
	o.newOriginRepo(t, "lib", modPath)

	p := o.newProxy(t)
	w := do(p, "GET", "/"+modPath+"/@v/v1.0.0.info")
	if w.Code == http.StatusOK {
		t.Errorf("GET .info: %d %q: fetched over plain http without GOINSECURE", w.Code, w.Body)
	}
	if o.asked(plainAddr + ":80") {
		t.Errorf("the go command went on to http:// after https failed: the egress proxy saw %q", o.socks.Requests())
	}

	// With GOINSECURE, http:// is what the operator asked for.
	p = o.newProxy(t)
	p.Env = append(p.Env, "GOINSECURE="+modPath)
	if w := do(p, "GET", "/"+modPath+"/@v/v1.0.0.info"); w.Code != http.StatusOK {
		t.Errorf("GET .info with GOINSECURE: %d %q", w.Code, w.Body)
	}
}

// TestEgressProxyBoundsRequestHeaders: the run's egress proxy reads a
// request's header before it knows whether the client holds the run's
// credential, so any local process may send it one: the header must be
// bounded, not read until memory runs out.
func TestEgressProxyBoundsRequestHeaders(t *testing.T) {
	d := (&Dialer{Proxy: "direct"}).withPolicy(&egressPolicy{endpoints: map[string]bool{}})
	tr, err := d.Transport()
	if err != nil {
		t.Fatal(err)
	}
	e, err := startEgressProxy(context.Background(), d, tr)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	proxyURL, _ := url.Parse(e.url)
	c, err := net.Dial("tcp", proxyURL.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(time.Minute))
	io.WriteString(c, "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX-Endless: ")
	chunk := bytes.Repeat([]byte("a"), 64<<10)
	const most = 32 << 20 // far more than socket buffers hold
	written := 0
	for written < most {
		n, err := c.Write(chunk)
		written += n
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the proxy stopped reading after %d bytes, but kept the connection", written)
			}
			return // cut off: the header was bounded
		}
	}
	t.Errorf("the proxy read a header of %d bytes and still wanted more", written)
}
