package goproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/goproxy-team/goproxy/internal/dnstest"
	"github.com/goproxy-team/goproxy/internal/egresstest"
	"github.com/goproxy-team/goproxy/internal/gitrepotest"
	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/testcert"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

func TestEgressPolicyDecidesByAddress(t *testing.T) {
	type verdict bool
	const allow, refuse verdict = true, false
	tests := []struct {
		name   string
		policy EgressPolicy
		host   string // as asked for; the address itself if empty
		addr   string
		want   verdict
	}{
		{name: "public IPv4", addr: "203.0.113.7:443", want: allow},
		{name: "public IPv6", addr: "[2001:db8::7]:443", want: allow},
		{name: "loopback", addr: "127.0.0.1:443", want: refuse},
		{name: "all of 127/8", addr: "127.3.2.1:443", want: refuse},
		{name: "IPv6 loopback", addr: "[::1]:443", want: refuse},
		{name: "loopback behind a name", host: "innocent.example", addr: "127.0.0.1:443", want: refuse},
		{name: "IPv4-mapped loopback", addr: "[::ffff:127.0.0.1]:443", want: refuse},
		{name: "unspecified reaches this host", addr: "0.0.0.0:443", want: refuse},
		{name: "IPv6 unspecified", addr: "[::]:443", want: refuse},
		{name: "this network", addr: "0.1.2.3:443", want: refuse},
		{name: "link-local", addr: "169.254.1.1:80", want: refuse},
		{name: "IPv6 link-local", addr: "[fe80::1]:80", want: refuse},
		{name: "metadata", addr: "169.254.169.254:80", want: refuse},
		{name: "AWS IPv6 metadata", addr: "[fd00:ec2::254]:80", want: refuse},
		{name: "metadata in NAT64", addr: "[64:ff9b::a9fe:a9fe]:80", want: refuse},
		{name: "loopback in 6to4", addr: "[2002:7f00:1::1]:80", want: refuse},
		{name: "multicast", addr: "224.0.0.1:80", want: refuse},
		{name: "broadcast", addr: "255.255.255.255:80", want: refuse},
		{name: "reserved IPv6", addr: "[100::1]:80", want: refuse},
		{name: "private", addr: "10.0.0.1:443", want: refuse},
		{name: "private 172.16/12", addr: "172.20.1.1:443", want: refuse},
		{name: "private 192.168/16", addr: "192.168.1.1:443", want: refuse},
		{name: "shared address space", addr: "100.64.0.1:443", want: refuse},
		{name: "unique local IPv6", addr: "[fd12:3456::1]:443", want: refuse},
		{name: "private networks allowed", policy: EgressPolicy{AllowPrivateNetworks: true}, addr: "10.0.0.1:443", want: allow},
		{name: "private networks allowed, IPv6", policy: EgressPolicy{AllowPrivateNetworks: true}, addr: "[fd12:3456::1]:443", want: allow},
		{name: "private networks allowed, not loopback", policy: EgressPolicy{AllowPrivateNetworks: true}, addr: "127.0.0.1:443", want: refuse},
		{name: "private networks allowed, not metadata", policy: EgressPolicy{AllowPrivateNetworks: true}, addr: "[fd00:ec2::254]:80", want: refuse},
		{name: "private networks allowed, not Alibaba's metadata", policy: EgressPolicy{AllowPrivateNetworks: true}, addr: "100.100.100.200:80", want: refuse},
		{name: "Azure's WireServer, though public", addr: "168.63.129.16:80", want: refuse},
		{name: "allowed address", policy: EgressPolicy{Allow: []string{"10.1.2.3"}}, addr: "10.1.2.3:22", want: allow},
		{name: "allowed address, other", policy: EgressPolicy{Allow: []string{"10.1.2.3"}}, addr: "10.1.2.4:443", want: refuse},
		{name: "allowed address and port", policy: EgressPolicy{Allow: []string{"127.0.0.1:8080"}}, addr: "127.0.0.1:8080", want: allow},
		{name: "allowed address, other port", policy: EgressPolicy{Allow: []string{"127.0.0.1:8080"}}, addr: "127.0.0.1:8081", want: refuse},
		{name: "allowed IPv6 address and port", policy: EgressPolicy{Allow: []string{"[::1]:8080"}}, addr: "[::1]:8080", want: allow},
		{name: "allowed prefix", policy: EgressPolicy{Allow: []string{"10.1.0.0/16"}}, addr: "10.1.200.3:443", want: allow},
		{name: "allowed prefix, outside", policy: EgressPolicy{Allow: []string{"10.1.0.0/16"}}, addr: "10.2.0.3:443", want: refuse},
		{name: "allowed name", policy: EgressPolicy{Allow: []string{"git.corp.example"}}, host: "git.corp.example", addr: "10.0.0.9:443", want: allow},
		{name: "allowed name, case and dot", policy: EgressPolicy{Allow: []string{"Git.Corp.Example"}}, host: "git.corp.example.", addr: "10.0.0.9:443", want: allow},
		{name: "allowed name, other name", policy: EgressPolicy{Allow: []string{"git.corp.example"}}, host: "evil.example", addr: "10.0.0.9:443", want: refuse},
		{name: "allowed name and port", policy: EgressPolicy{Allow: []string{"git.corp.example:8443"}}, host: "git.corp.example", addr: "10.0.0.9:443", want: refuse},
		{name: "allowed subdomains", policy: EgressPolicy{Allow: []string{"*.corp.example"}}, host: "git.corp.example", addr: "10.0.0.9:443", want: allow},
		{name: "allowed subdomains, not the domain", policy: EgressPolicy{Allow: []string{"*.corp.example"}}, host: "corp.example", addr: "10.0.0.9:443", want: refuse},
		{name: "allowed subdomains, not a lookalike", policy: EgressPolicy{Allow: []string{"*.corp.example"}}, host: "evilcorp.example", addr: "10.0.0.9:443", want: refuse},
		{name: "metadata only by its very address", policy: EgressPolicy{Allow: []string{"169.254.169.254"}}, addr: "169.254.169.254:80", want: allow},
		{name: "metadata not by a wider prefix", policy: EgressPolicy{Allow: []string{"169.254.0.0/16"}}, addr: "169.254.169.254:80", want: refuse},
		{name: "metadata not by a name", policy: EgressPolicy{Allow: []string{"metadata.google.internal"}}, host: "metadata.google.internal", addr: "169.254.169.254:80", want: refuse},
		{name: "a wider prefix for other link-local addresses", policy: EgressPolicy{Allow: []string{"169.254.0.0/16"}}, addr: "169.254.1.1:80", want: allow},
		{name: "configured endpoint", host: "goproxy.corp.example", addr: "10.0.0.5:443", want: allow},
		{name: "configured endpoint, other port", host: "goproxy.corp.example", addr: "10.0.0.5:22", want: refuse},
		{name: "configured endpoint by address", addr: "127.0.0.1:3000", want: allow},
		{name: "configured endpoint's address under another name", host: "evil.example", addr: "127.0.0.1:3000", want: refuse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newEgressPolicy(tt.policy, nil)
			if err != nil {
				t.Fatal(err)
			}
			p.allowEndpoints("https://goproxy.corp.example", "http://127.0.0.1:3000/prefix")
			ap := netip.MustParseAddrPort(tt.addr)
			host := tt.host
			if host == "" {
				host = ap.Addr().String()
			}
			err = p.check(context.Background(), host, ap)
			if got := verdict(err == nil); got != tt.want {
				t.Errorf("check(%q, %s) = %v, want allowed=%v", host, ap, err, tt.want)
			}
			if err != nil && egressRefusal(err) == nil {
				t.Errorf("the refusal %v is not an egressRefusedError", err)
			}
		})
	}
}

func TestEgressRefusalSaysWhyAndHow(t *testing.T) {
	p, _ := newEgressPolicy(EgressPolicy{}, nil)
	for addr, want := range map[string][]string{
		"127.0.0.1:443":      {"rebind.example: a loopback address", "Egress.Allow"},
		"10.0.0.1:443":       {"a private address", "Egress.AllowPrivateNetworks"},
		"169.254.169.254:80": {"a cloud metadata address", "naming this very address"},
	} {
		err := p.check(context.Background(), "rebind.example", netip.MustParseAddrPort(addr))
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("refusal of %s: %v, want it to say %q", addr, err, w)
			}
		}
		// Clients read the refusal: the address behind an internal name
		// is for the log only.
		if ip, _, _ := strings.Cut(addr, ":"); err != nil && strings.Contains(err.Error(), ip) {
			t.Errorf("refusal of %s tells the client the address: %v", addr, err)
		}
	}
}

func TestDirectFetchesCannotReachConfiguredUpstreams(t *testing.T) {
	_, vkey, err := note.GenerateKey(rand.Reader, "sumdb.test")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{
		Cacher: new(MemCacher),
		Env:    []string{"GOPROXY=http://127.0.0.1:7001,direct", "GOSUMDB=" + vkey + " http://127.0.0.1:7002"},
	}
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	upstream, sumdb := netip.MustParseAddrPort("127.0.0.1:7001"), netip.MustParseAddrPort("127.0.0.1:7002")
	ctx := context.Background()
	if err := p.egress.check(ctx, "127.0.0.1", upstream); err != nil {
		t.Errorf("the proxy may not reach its own upstream: %v", err)
	}
	// A go-import tag naming the upstream must not make the go command
	// (or git) send it requests, with the .netrc credentials it holds.
	if err := p.directEgress.check(ctx, "127.0.0.1", upstream); err == nil {
		t.Error("the go command run for direct fetches may reach a configured upstream")
	}
	for _, pol := range []*egressPolicy{p.egress, p.directEgress} {
		if err := pol.check(ctx, "127.0.0.1", sumdb); err != nil {
			t.Errorf("the checksum database is refused: %v", err)
		}
	}
}

func TestEgressAllowEntriesAreChecked(t *testing.T) {
	for _, entry := range []string{"", "10.0.0.0/33", "host:port", "host:0", "a b", "*", "*.", "x..y", "http://x"} {
		p := newTestProxy(t, "off")
		p.Egress.Allow = []string{entry}
		if err := p.Init(); err == nil || !strings.Contains(err.Error(), "Egress.Allow") {
			t.Errorf("Allow %q: Init said %v", entry, err)
		}
	}
	p := newTestProxy(t, "off")
	p.Egress.Allow = []string{"10.0.0.0/8", "10.1.2.3", "10.1.2.3:8443", "[fd00::1]", "[fd00::1]:22", "fd00::/8", "git.corp.example", "git.corp.example:8443", "*.corp.example"}
	if err := p.Init(); err != nil {
		t.Errorf("Init: %v", err)
	}
}

// egressLog records what a Proxy's egress policy decided.
type egressLog struct {
	mu      sync.Mutex
	allowed []string // address, and host when it differs
	refused []string
}

// watchEgress initializes p and records its egress policy's decisions.
func watchEgress(t *testing.T, p *Proxy) *egressLog {
	t.Helper()
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	l := &egressLog{}
	observe := func(host string, addr netip.AddrPort, err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		entry := addr.String() + " " + host
		if err == nil {
			l.allowed = append(l.allowed, entry)
		} else {
			l.refused = append(l.refused, entry)
		}
	}
	p.egress.observe, p.directEgress.observe = observe, observe
	return l
}

func hasAddr(entries []string, addr string) bool {
	for _, e := range entries {
		if strings.HasPrefix(e, addr+" ") {
			return true
		}
	}
	return false
}

// refusedOnly fails the test unless the policy refused addr and never let
// a connection to it through.
func (l *egressLog) refusedOnly(t *testing.T, addr string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if hasAddr(l.allowed, addr) {
		t.Errorf("the egress policy let a connection to %s through: allowed %q", addr, l.allowed)
	}
	if !hasAddr(l.refused, addr) {
		t.Errorf("the egress policy was never asked about %s: refused %q", addr, l.refused)
	}
}

// decisions counts the policy's decisions so far.
func (l *egressLog) decisions() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.allowed) + len(l.refused)
}

func (l *egressLog) reached(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return hasAddr(l.allowed, addr)
}

// countingListener accepts connections on 127.0.0.1 (or ip, if given) and
// counts them: a destination that must never be reached.
func countingListener(t *testing.T, ip string) (addr string, accepted func() int) {
	t.Helper()
	if ip == "" {
		ip = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	n := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
			c.Close()
		}
	}()
	return ln.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

func TestUpstreamRedirectsAreChecked(t *testing.T) {
	dns := dnstest.NewServer(t, nil)
	dns.Set("metadata.goproxy.test", time.Minute, "169.254.169.254")
	other, otherHits := countingListener(t, "")
	dns.Set("other.goproxy.test", time.Minute, "127.0.0.1")
	_, otherPort, _ := net.SplitHostPort(other)
	targets := map[string]string{
		"/metadata/":        "http://169.254.169.254/latest/meta-data/",
		"/metadata-name/":   "http://metadata.goproxy.test/latest/meta-data/",
		"/loopback/":        "http://" + other + "/x",
		"/loopback-name/":   "http://other.goproxy.test:" + otherPort + "/x",
		"/localhost-name/":  "http://localhost:" + otherPort + "/x",
		"/ipv6-mapped/":     "http://[::ffff:169.254.169.254]/latest/",
		"/unspecified-ip/":  "http://0.0.0.0:" + otherPort + "/x",
		"/same-upstream/ok": "",
	}
	up := newUpstream(t, testModuleFiles(t))
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		for prefix, target := range targets {
			if strings.HasPrefix(r.URL.Path, prefix) && target != "" {
				http.Redirect(w, r, target, http.StatusFound)
				return true
			}
		}
		if rest, ok := strings.CutPrefix(r.URL.Path, "/same-upstream/ok/"); ok {
			// A redirect within the configured upstream is fine.
			http.Redirect(w, r, "/"+rest, http.StatusFound)
			return true
		}
		return false
	})
	for _, withDNS := range []bool{false, true} {
		name := "system resolver"
		if withDNS {
			name = "Resolver"
		}
		t.Run(name, func(t *testing.T) {
			// The Proxy's own dialer, not the tests' loopback-only transport.
			for prefix := range targets {
				t.Run(strings.Trim(prefix, "/"), func(t *testing.T) {
					if strings.Contains(prefix, "-name") && !withDNS && !strings.Contains(prefix, "localhost") {
						t.Skip("names of the test DNS server need the Resolver")
					}
					p := newTestProxy(t, up.URL+strings.TrimSuffix(prefix, "/"))
					p.Transport = nil
					p.Dialer = &Dialer{Proxy: "direct"}
					if withDNS {
						p.Dialer.Resolver = newTestResolver(t, dns, "udp://"+dns.UDPAddr)
					}
					log := watchEgress(t, p)
					redirecting := strings.TrimSuffix(prefix, "/") + "/example.com/a/@v/v1.0.0.mod"
					before := up.Requests(redirecting)
					w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod")
					if prefix == "/same-upstream/ok" {
						if w.Code != http.StatusOK {
							t.Errorf("redirect within the upstream: %d %q", w.Code, w.Body)
						}
						return
					}
					if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "egress policy") {
						t.Errorf("redirect to %s: %d %q, want 403 from the egress policy", targets[prefix], w.Code, w.Body)
					}
					// The policy will not change its mind: no retry.
					if n := up.Requests(redirecting) - before; n != 1 {
						t.Errorf("the upstream was asked %d times, want once", n)
					}
					switch prefix {
					case "/metadata/", "/metadata-name/", "/ipv6-mapped/":
						log.refusedOnly(t, "169.254.169.254:80")
					case "/loopback/", "/loopback-name/":
						log.refusedOnly(t, other)
					}
				})
			}
		})
	}
	if n := otherHits(); n != 0 {
		t.Errorf("the loopback service behind the redirects saw %d connections", n)
	}
}

func TestUpstreamOnLoopbackStillWorks(t *testing.T) {
	up := newUpstream(t, testModuleFiles(t))
	p := newTestProxy(t, up.URL)
	p.Transport = nil
	p.Dialer = &Dialer{Proxy: "direct"}
	log := watchEgress(t, p)
	if w := do(p, "GET", "/example.com/a/@v/v1.0.0.mod"); w.Code != http.StatusOK {
		t.Errorf("GET from a configured upstream on loopback: %d %q", w.Code, w.Body)
	}
	if hostPort := strings.TrimPrefix(up.URL, "http://"); !log.reached(hostPort) {
		t.Errorf("the policy was not asked about the upstream %s", hostPort)
	}
}

// TestDialerRebindingCannotPass has a name's DNS answer change from an
// allowed address to loopback between two connections: the second is
// refused, since the address checked is the one dialled.
func TestDialerRebindingCannotPass(t *testing.T) {
	dns := dnstest.NewServer(t, nil)
	allowed, allowedHits := countingListener(t, "127.0.0.3")
	_, port, _ := net.SplitHostPort(allowed)
	loopback, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Skipf("no listener on 127.0.0.1:%s: %v", port, err)
	}
	var loopbackHits sync.WaitGroup
	hit := make(chan struct{}, 1)
	loopbackHits.Go(func() {
		if c, err := loopback.Accept(); err == nil {
			c.Close()
			hit <- struct{}{}
		}
	})
	defer loopbackHits.Wait()
	defer loopback.Close()
	// Time to live 0: every connection looks the name up again.
	dns.Set("rebind.goproxy.test", 0, "127.0.0.3")

	policy, err := newEgressPolicy(EgressPolicy{Allow: []string{"127.0.0.3"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := (&Dialer{Proxy: "direct", Resolver: newTestResolver(t, dns, "udp://"+dns.UDPAddr)}).withPolicy(policy)
	ctx := context.Background()
	c, err := d.DialContext(ctx, "tcp", "rebind.goproxy.test:"+port)
	if err != nil {
		t.Fatalf("the allowed address: %v", err)
	}
	c.Close()
	dns.Set("rebind.goproxy.test", 0, "127.0.0.1")
	if c, err := d.DialContext(ctx, "tcp", "rebind.goproxy.test:"+port); err == nil || egressRefusal(err) == nil {
		if c != nil {
			c.Close()
		}
		t.Fatalf("after the answer changed to loopback: %v, want a refusal", err)
	}
	testwait.For(t, func() bool { return allowedHits() == 1 })
	select {
	case <-hit:
		t.Error("the loopback listener was reached")
	default:
	}
}

// TestEgressProxyServesOnlyItsRun checks that the go command's egress
// proxy answers only its own credentials, tunnels what the policy allows,
// forwards plain http:// requests, and refuses the rest with 403.
func TestEgressProxyServesOnlyItsRun(t *testing.T) {
	target := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprint(w, "hello from ", r.URL.Path)
		if len(body) > 0 {
			fmt.Fprint(w, ", ", len(body), " bytes")
		}
	})
	allowedSrv := &http.Server{Handler: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go allowedSrv.Serve(ln)
	defer allowedSrv.Close()
	allowed := ln.Addr().String()
	refused, refusedHits := countingListener(t, "")

	policy, err := newEgressPolicy(EgressPolicy{Allow: []string{allowed}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := (&Dialer{Proxy: "direct"}).withPolicy(policy)
	tr, err := d.Transport()
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	e, err := startEgressProxy(context.Background(), d, tr)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	proxyURL, _ := url.Parse(e.url)

	connect := func(auth, dest string) (*http.Response, net.Conn) {
		t.Helper()
		c, err := net.Dial("tcp", proxyURL.Host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", dest, dest)
		if auth != "" {
			fmt.Fprintf(c, "Proxy-Authorization: Basic %s\r\n", base64.StdEncoding.EncodeToString([]byte(auth)))
		}
		io.WriteString(c, "\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp, c
	}
	password, _ := proxyURL.User.Password()
	for _, auth := range []string{"", "goproxy:wrong", "other:" + password} {
		resp, c := connect(auth, allowed)
		c.Close()
		if resp.StatusCode != http.StatusProxyAuthRequired {
			t.Errorf("CONNECT with credentials %q: %s, want 407", auth, resp.Status)
		}
	}
	resp, c := connect("goproxy:"+password, allowed)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("CONNECT to an allowed destination: %s", resp.Status)
	}
	c.Close()
	resp, c = connect("goproxy:"+password, refused)
	body, _ := io.ReadAll(resp.Body)
	c.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "loopback") {
		t.Errorf("CONNECT to a refused destination: %s %q, want 403 saying why", resp.Status, body)
	}
	if e.refusal() == nil {
		t.Error("the refusal was not recorded")
	}

	// Plain http:// requests, as git sends them, through the proxy.
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	client.Transport.(*http.Transport).Proxy = func(*http.Request) (*url.URL, error) { return proxyURL, nil }
	get := func(u string) (int, string) {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://" + allowed + "/a"); code != 200 || body != "hello from /a" {
		t.Errorf("GET through the proxy: %d %q", code, body)
	}
	if code, body := get("http://" + refused + "/a"); code != http.StatusForbidden || !strings.Contains(body, "egress policy") {
		t.Errorf("GET of a refused destination through the proxy: %d %q", code, body)
	}
	if n := refusedHits(); n != 0 {
		t.Errorf("the refused destination saw %d connections", n)
	}

	// curl asks whether it may send a large body, and waits for the
	// answer: the proxy gives it.
	c, err = net.Dial("tcp", proxyURL.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "POST http://%s/upload HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\nExpect: 100-continue\r\nContent-Length: 4096\r\n\r\n",
		allowed, allowed, base64.StdEncoding.EncodeToString([]byte("goproxy:"+password)))
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("after Expect: 100-continue: %q, %v", line, err)
	}
	br.ReadString('\n') // the blank line ending the interim response
	c.Write(bytes.Repeat([]byte("x"), 4096))
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "hello from /upload, 4096 bytes" {
		t.Errorf("POST with Expect through the proxy: %s %q", resp.Status, body)
	}
}

// origin is a small internet for direct fetches: a DNS server, an HTTPS
// server answering go-import look-ups and serving git repositories for
// any name, and a SOCKS5 server, the Proxy's egress proxy, that routes the
// addresses the names resolve to (documentation addresses, public as far
// as the policy knows) to that server. What the SOCKS server is asked for
// is every connection the proxy, the go command and git made.
type origin struct {
	dns   *dnstest.Server
	git   *gitrepotest.Server
	socks *egresstest.SOCKS5
	web   string // the HTTPS server's address
	// caFile trusts the server's certificate, for SSL_CERT_FILE and
	// GIT_SSL_CAINFO.
	caFile string

	mu     sync.Mutex
	routes map[string]string // address:port asked of the SOCKS server -> where it is
	tags   map[string]string // module path -> go-import tag content
	onTag  func(modPath string)
}

// originAddr is where every origin name resolves to, unless a test says
// otherwise: an address of the documentation range, which the egress
// policy takes for a public one.
const originAddr = "203.0.113.10"

func newOrigin(t *testing.T, names ...string) *origin {
	t.Helper()
	o := &origin{
		dns:    dnstest.NewServer(t, nil),
		git:    gitrepotest.NewServer(t),
		routes: make(map[string]string),
		tags:   make(map[string]string),
	}
	ca := testcert.New(t)
	o.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(o.caFile, ca.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("go-get") == "1" {
			modPath := r.Host + strings.TrimSuffix(r.URL.Path, "/")
			o.mu.Lock()
			content, hook := o.tags[modPath], o.onTag
			o.mu.Unlock()
			if content == "" {
				http.NotFound(w, r)
				return
			}
			if hook != nil {
				hook(modPath)
			}
			fmt.Fprintf(w, "<html><head><meta name=\"go-import\" content=\"%s\"></head></html>\n", content)
			return
		}
		o.git.Handler().ServeHTTP(w, r)
	}))
	srv.TLS = ca.ServerConfig(t, names...)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	o.web = srv.Listener.Addr().String()
	for _, name := range names {
		o.dns.Set(name, time.Minute, originAddr)
	}
	o.route(originAddr+":443", o.web)
	o.socks = &egresstest.SOCKS5{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		o.mu.Lock()
		to, ok := o.routes[addr]
		o.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("origin: no route to %s", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, to)
	}}
	o.socks.Start(t)
	return o
}

// route sends the SOCKS server's connections to addr to where.
func (o *origin) route(addr, where string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.routes[addr] = where
}

// tag makes the server answer the go-import look-up of modPath with
// content ("prefix vcs repo-URL").
func (o *origin) tag(modPath, content string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tags[modPath] = content
}

// asked reports whether the SOCKS server was asked for addr.
func (o *origin) asked(addr string) bool {
	return slices.Contains(o.socks.Requests(), addr)
}

// newProxy returns a Proxy that fetches everything directly, from the
// origin, with the egress policy's defaults.
func (o *origin) newProxy(t *testing.T) *Proxy {
	t.Helper()
	p := newDirectTestProxy(t, o.git, "SSL_CERT_FILE="+o.caFile, "GIT_SSL_CAINFO="+o.caFile, "GOPRIVATE=", "GOPROXY=direct")
	p.Egress = EgressPolicy{}
	p.Dialer = &Dialer{
		// socks5: names are resolved, and checked, by the Proxy.
		Proxy:    "socks5://" + o.socks.Addr,
		Resolver: newTestResolver(t, o.dns, "udp://"+o.dns.UDPAddr),
	}
	return p
}

// newOriginRepo creates the repository modPath is served from, at name,
// with version v1.0.0.
func (o *origin) newOriginRepo(t *testing.T, name, modPath string) {
	repo := o.git.NewRepo(t, name)
	repo.WriteFile(t, "go.mod", "module "+modPath+"\n\ngo 1.21\n")
	repo.WriteFile(t, "x.go", "package x\n\nconst V = 1\n")
	repo.Commit(t, "first")
	repo.Tag(t, "v1.0.0")
}

func TestDirectFetchRefusedDestinations(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and git")
	}
	o := newOrigin(t, "metadata.goproxy.test", "tagged.goproxy.test", "rebind.goproxy.test", "fine.goproxy.test", "ssh.goproxy.test", "hg.goproxy.test")
	o.dns.Set("metadata.goproxy.test", time.Minute, "169.254.169.254")
	// What must never be reached: a service on loopback, behind an
	// address of its own and behind 127.0.0.1:443 (for the rebinding).
	service, serviceHits := countingListener(t, "")
	o.route(service, service)
	o.route("127.0.0.1:443", service)
	o.route("169.254.169.254:443", service)

	o.newOriginRepo(t, "fine", "fine.goproxy.test/x")
	o.tag("fine.goproxy.test/x", "fine.goproxy.test/x git https://fine.goproxy.test/fine")
	o.tag("tagged.goproxy.test/x", "tagged.goproxy.test/x git https://"+service+"/fine")
	o.tag("ssh.goproxy.test/x", "ssh.goproxy.test/x git ssh://git@"+service+"/fine")
	o.tag("hg.goproxy.test/x", "hg.goproxy.test/x hg https://"+service+"/fine")
	o.tag("rebind.goproxy.test/x", "rebind.goproxy.test/x git https://rebind.goproxy.test/fine")
	// The rebinding origin answers its go-import look-up from an allowed
	// address, then moves its name to loopback for git's connection.
	o.dns.Set("rebind.goproxy.test", 0, originAddr)
	o.onTag = func(modPath string) {
		if modPath == "rebind.goproxy.test/x" {
			o.dns.Set("rebind.goproxy.test", 0, "127.0.0.1")
		}
	}

	var logs syncBuffer
	p := o.newProxy(t)
	p.Logger = newBufferLogger(&logs)
	log := watchEgress(t, p)
	for _, tt := range []struct {
		name, path string
		want       int
		says       string
		refused    string // the address the policy must have refused
	}{
		{"loopback address", "/127.0.0.1/x/@v/list", 403, "a loopback address", "127.0.0.1:443"},
		{"a name below localhost", "/x.localhost/x/@v/list", 403, "a loopback address", "[::1]:443"},
		{"name resolving to the metadata service", "/metadata.goproxy.test/x/@v/list", 403, "a cloud metadata address", "169.254.169.254:443"},
		{"go-import tag pointing git at loopback", "/tagged.goproxy.test/x/@v/v1.0.0.info", 403, "a loopback address", service},
		{"DNS answer changing to loopback", "/rebind.goproxy.test/x/@v/v1.0.0.info", 403, "a loopback address", "127.0.0.1:443"},
		// git refuses before ssh runs: the policy cannot see ssh's
		// connections.
		{"go-import tag naming an ssh:// repository", "/ssh.goproxy.test/x/@v/v1.0.0.info", 403, "Egress.AllowSSH", ""},
		// Mercurial skips proxies for loopback addresses: git only.
		{"go-import tag naming a Mercurial repository", "/hg.goproxy.test/x/@v/v1.0.0.info", 403, "GOVCS", ""},
		// Not even a module path: the go command would refuse it too.
		{"localhost", "/localhost/x/@v/list", 400, "missing dot", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := log.decisions()
			w := do(p, "GET", tt.path)
			if w.Code != tt.want || !strings.Contains(w.Body.String(), tt.says) {
				t.Errorf("GET %s: %d %q, want %d saying %q", tt.path, w.Code, w.Body, tt.want, tt.says)
			}
			if tt.want == http.StatusBadRequest && log.decisions() != before {
				t.Errorf("GET %s: a connection was attempted for an invalid module path", tt.path)
			}
			if tt.refused != "" {
				if !strings.Contains(w.Body.String(), "egress policy") {
					t.Errorf("GET %s: %q does not say the egress policy refused it", tt.path, w.Body)
				}
				log.refusedOnly(t, tt.refused)
				if o.asked(tt.refused) {
					t.Errorf("the egress proxy was asked for %s", tt.refused)
				}
			}
		})
	}
	if n := serviceHits(); n != 0 {
		t.Errorf("the loopback service saw %d connections", n)
	}
	if !o.asked(originAddr + ":443") {
		t.Errorf("the origin was never reached: the egress proxy saw %q", o.socks.Requests())
	}
	for _, want := range []string{
		`msg="egress refused" module=metadata.goproxy.test/x host=metadata.goproxy.test address=169.254.169.254:443 reason="a cloud metadata address"`,
		`msg="egress refused" module=tagged.goproxy.test/x host=127.0.0.1 address=` + service,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %s:\n%s", want, logs.String())
		}
	}

	// The same origin, through the same Proxy, serves an allowed module.
	w := do(p, "GET", "/fine.goproxy.test/x/@v/v1.0.0.info")
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"Version":"v1.0.0"`) {
		t.Errorf("GET of a module on an allowed origin: %d %q", w.Code, w.Body)
	}
}

// syncBuffer is a bytes.Buffer for loggers written by several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDirectFetchFromAllowedOrigin has the go command download, through
// the proxy, a module whose origin is on a private address, which the
// egress policy refuses until it is allowed.
func TestDirectFetchFromAllowedOrigin(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and git")
	}
	const modPath = "git.corp.goproxy.test/lib"
	const privateAddr = "10.20.30.40"
	o := newOrigin(t, "git.corp.goproxy.test")
	o.dns.Set("git.corp.goproxy.test", time.Minute, privateAddr)
	o.route(privateAddr+":443", o.web)
	o.newOriginRepo(t, "lib", modPath)
	o.tag(modPath, modPath+" git https://git.corp.goproxy.test/lib")

	for _, tt := range []struct {
		name   string
		policy EgressPolicy
		want   int
	}{
		{"refused by default", EgressPolicy{}, http.StatusForbidden},
		{"private networks allowed", EgressPolicy{AllowPrivateNetworks: true}, http.StatusOK},
		{"the host allowed", EgressPolicy{Allow: []string{"git.corp.goproxy.test"}}, http.StatusOK},
		{"its network allowed", EgressPolicy{Allow: []string{"10.20.0.0/16"}}, http.StatusOK},
		{"another port allowed", EgressPolicy{Allow: []string{privateAddr + ":8443"}}, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := o.newProxy(t)
			p.Egress = tt.policy
			log := watchEgress(t, p)
			w := do(p, "GET", "/"+modPath+"/@v/v1.0.0.info")
			if w.Code != tt.want {
				t.Fatalf("GET .info: %d %q, want %d", w.Code, w.Body, tt.want)
			}
			if tt.want == http.StatusForbidden {
				log.refusedOnly(t, privateAddr+":443")
				return
			}
			if !log.reached(privateAddr + ":443") {
				t.Errorf("the policy was not asked about %s", privateAddr)
			}
		})
	}

	t.Run("end to end, through an HTTP egress proxy", func(t *testing.T) {
		// An HTTP egress proxy resolves names itself: the policy checks
		// addresses, and the egress proxy is trusted with names.
		hp := &egresstest.HTTPProxy{}
		hp.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(addr)
			if host == "git.corp.goproxy.test" {
				addr = net.JoinHostPort(privateAddr, port)
			}
			return o.socks.Dial(ctx, network, addr)
		}
		hp.Start(t)
		p := o.newProxy(t)
		p.Dialer.Proxy = "http://" + hp.Addr
		p.Egress.AllowPrivateNetworks = true
		srv := httptest.NewServer(p)
		defer srv.Close()
		gocmd := gocmdtest.New(t)
		gocmd.Set("GOPROXY", srv.URL)
		gocmd.WriteGoMod([]byte("module example.com/main\n\ngo 1.21\n\nrequire " + modPath + " v1.0.0\n"))
		gocmd.MustRun(t, "mod", "download", modPath)
		if out := gocmd.MustRun(t, "list", "-m", "-versions", modPath); strings.TrimSpace(out) != modPath+" v1.0.0" {
			t.Errorf("go list -m -versions: %q", out)
		}
		if !slices.Contains(hp.Requests(), "CONNECT git.corp.goproxy.test:443") {
			t.Errorf("the go command's connections did not leave through the egress proxy: it saw %q", hp.Requests())
		}
	})
}

// BenchmarkDialerPolicy measures what the egress policy adds to a
// connection: a dial of a loopback listener without and with the check.
func BenchmarkDialerPolicy(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	policy, err := newEgressPolicy(EgressPolicy{Allow: []string{"10.0.0.0/8", "git.corp.example", addr}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		d    *Dialer
	}{
		{"unchecked", &Dialer{Proxy: "direct"}},
		{"checked", (&Dialer{Proxy: "direct"}).withPolicy(policy)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				c, err := bc.d.DialContext(ctx, "tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkEgressProxyPerRun measures what each go command run pays for
// its own egress proxy, against starting the smallest process there is.
func BenchmarkEgressProxyPerRun(b *testing.B) {
	d := (&Dialer{Proxy: "direct"}).withPolicy(&egressPolicy{endpoints: map[string]bool{}})
	tr, err := d.Transport()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("egress proxy", func(b *testing.B) {
		for b.Loop() {
			e, err := startEgressProxy(context.Background(), d, tr)
			if err != nil {
				b.Fatal(err)
			}
			e.close()
		}
	})
	b.Run("baseline: run true", func(b *testing.B) {
		bin, err := exec.LookPath("true")
		if err != nil {
			b.Skip("no true command")
		}
		for b.Loop() {
			if err := exec.Command(bin).Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEgressPolicyCheck measures one decision, the policy's whole
// cost per address dialled.
func BenchmarkEgressPolicyCheck(b *testing.B) {
	policy, err := newEgressPolicy(EgressPolicy{Allow: []string{"10.0.0.0/8", "git.corp.example", "*.corp.example", "192.168.1.1:8443"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	policy.allowEndpoints("https://proxy.golang.org", "https://sum.golang.org")
	for _, addr := range []string{"203.0.113.7:443", "10.1.2.3:443", "127.0.0.1:443"} {
		ap := netip.MustParseAddrPort(addr)
		b.Run(addr, func(b *testing.B) {
			for b.Loop() {
				policy.decide("git.example.com", ap)
			}
		})
	}
}

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

// TestEgressProxyRefusingItsCredentialsAnswers502: a 407 from the egress
// proxy is about the proxy's own configuration, which no client can do
// anything about: it answers 502, not 407 (which would make the go
// command ask its user for proxy credentials).
func TestEgressProxyRefusingItsCredentialsAnswers502(t *testing.T) {
	hp := &egresstest.HTTPProxy{Username: "proxy-user", Password: "right"}
	hp.Start(t)
	// Never reached: the egress proxy refuses first.
	p := newTestProxy(t, "http://upstream.goproxy.test")
	p.Transport = nil // through the Dialer's egress proxy
	p.Dialer = &Dialer{Proxy: "http://proxy-user:wrong@" + hp.Addr}
	w := do(p, "GET", "/example.com/a/@v/list")
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "407") || strings.Contains(w.Body.String(), "wrong") {
		t.Errorf("%d %q, want 502 naming the 407, without the credentials", w.Code, w.Body)
	}
}
