package goproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/dnstest"
)

// fakeClock is a Resolver clock that tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newTestResolver returns a Resolver asking servers, trusting dns's CA,
// with a quick timeout. DNS over QUIC is tested in the dnsquic module,
// which keeps QUIC out of this one.
func newTestResolver(t *testing.T, dns *dnstest.Server, servers ...string) *Resolver {
	t.Helper()
	return &Resolver{
		Servers:   servers,
		TLSConfig: dns.CA.ClientConfig(),
		Timeout:   2 * time.Second,
	}
}

// refusingQUIC is a DNSTransport for configurations that name quic://
// servers without asking them.
type refusingQUIC struct{}

func (refusingQUIC) Exchange(context.Context, string, *tls.Config, []byte) ([]byte, error) {
	return nil, errors.New("not asked in this test")
}

// lookupStrings resolves host and returns the addresses as strings.
func lookupStrings(t *testing.T, r *Resolver, host string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := r.LookupIPAddr(ctx, host)
	if err != nil {
		t.Fatalf("LookupIPAddr(%q): %v", host, err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.IP.String())
	}
	return out
}

// onlyTestKnows is a name that only the test's DNS server can resolve, with
// addresses from the documentation ranges: they are answers, never dialed.
const onlyTestKnows = "only.goproxy.test"

var onlyTestKnowsAddrs = []string{"2001:db8::10", "192.0.2.10"}

func TestResolverTransports(t *testing.T) {
	dns := dnstest.NewServer(t, nil)
	dns.Set(onlyTestKnows, time.Minute, "192.0.2.10", "2001:db8::10")
	for _, tc := range []struct {
		name   string
		server string
		want   map[dnstest.Transport]int // queries per transport: A and AAAA
		before func()
	}{
		{name: "udp URL", server: "udp://" + dns.UDPAddr, want: map[dnstest.Transport]int{dnstest.UDP: 2}},
		{name: "plain host:port is udp", server: dns.UDPAddr, want: map[dnstest.Transport]int{dnstest.UDP: 2}},
		{name: "tcp", server: "tcp://" + dns.TCPAddr, want: map[dnstest.Transport]int{dnstest.TCP: 2}},
		{
			// The resolver asks again over TCP at the same address, so the
			// server here is one address serving both (server left empty).
			name:   "udp truncated retries over tcp",
			want:   map[dnstest.Transport]int{dnstest.UDP: 2, dnstest.TCP: 2},
			before: func() { dns.SetTruncateUDP(true) },
		},
		{name: "https POST", server: dns.DoHURL, want: map[dnstest.Transport]int{dnstest.HTTPSPost: 2}},
		{name: "https GET", server: dns.DoHURL + "{?dns}", want: map[dnstest.Transport]int{dnstest.HTTPSGet: 2}},
		{name: "tls", server: "tls://" + dns.TLSAddr, want: map[dnstest.Transport]int{dnstest.TLS: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := tc.server
			if server == "" {
				server = "udp://" + sharedPortDNS(t, dns)
			}
			if tc.before != nil {
				tc.before()
				defer dns.SetTruncateUDP(false)
			}
			before := map[dnstest.Transport]int{}
			for _, tr := range []dnstest.Transport{dnstest.UDP, dnstest.TCP, dnstest.HTTPSGet, dnstest.HTTPSPost, dnstest.TLS} {
				before[tr] = dns.Queries(tr)
			}
			r := newTestResolver(t, dns, server)
			if got := lookupStrings(t, r, onlyTestKnows); !slices.Equal(got, onlyTestKnowsAddrs) {
				t.Errorf("addresses %v, want %v (IPv6 first)", got, onlyTestKnowsAddrs)
			}
			for tr, n := range before {
				if got := dns.Queries(tr) - n; got != tc.want[tr] {
					t.Errorf("%d queries over %s, want %d", got, tr, tc.want[tr])
				}
			}
		})
	}
}

// sharedPortDNS returns an address whose UDP port relays to dns's UDP
// listener and whose TCP port, the same number, relays to dns's TCP
// listener, as a real server's would: a truncated UDP answer sends the
// resolver to the same address over TCP.
func sharedPortDNS(t *testing.T, dns *dnstest.Server) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			ln.Close()
			continue // the UDP port is taken: try another number
		}
		t.Cleanup(func() { ln.Close(); pc.Close() })
		go relayTCP(ln, dns.TCPAddr)
		go relayUDP(pc, dns.UDPAddr)
		return ln.Addr().String()
	}
	t.Fatal("no port free for both TCP and UDP")
	return ""
}

func relayTCP(ln net.Listener, to string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", to)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { copyConn(up, c) }()
			copyConn(c, up)
		}()
	}
}

func copyConn(dst, src net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// relayUDP forwards each datagram to the server and its answer back.
func relayUDP(pc net.PacketConn, to string) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := append([]byte(nil), buf[:n]...)
		go func() {
			up, err := net.Dial("udp", to)
			if err != nil {
				return
			}
			defer up.Close()
			up.SetDeadline(time.Now().Add(5 * time.Second))
			up.Write(q)
			resp := make([]byte, 65535)
			if n, err := up.Read(resp); err == nil {
				pc.WriteTo(resp[:n], from)
			}
		}()
	}
}

func TestResolverCache(t *testing.T) {
	dns := dnstest.NewServer(t, nil)
	dns.Set("host.goproxy.test", time.Minute, "192.0.2.1", "2001:db8::1")
	dns.Set("alias.goproxy.test", 5*time.Second, "host.goproxy.test")
	dns.SetNegativeTTL(7 * time.Second)
	clock := newFakeClock()
	r := newTestResolver(t, dns, dns.DoHURL)
	r.now = clock.Now

	asked := func(t *testing.T, host string, want int) {
		t.Helper()
		before := dns.TotalQueries()
		lookupStrings(t, r, host)
		if got := dns.TotalQueries() - before; got != want {
			t.Errorf("lookup of %s asked %d queries, want %d", host, got, want)
		}
	}
	t.Run("a second lookup within the TTL asks no server", func(t *testing.T) {
		asked(t, "host.goproxy.test", 2) // A and AAAA
		clock.Advance(59 * time.Second)
		asked(t, "HOST.goproxy.test.", 0) // the same name
	})
	t.Run("after the TTL the servers are asked again", func(t *testing.T) {
		clock.Advance(2 * time.Second)
		asked(t, "host.goproxy.test", 2)
	})
	t.Run("a CNAME chain is cached for its shortest TTL", func(t *testing.T) {
		asked(t, "alias.goproxy.test", 2)
		clock.Advance(4 * time.Second)
		asked(t, "alias.goproxy.test", 0)
		clock.Advance(2 * time.Second)
		asked(t, "alias.goproxy.test", 2)
	})
	t.Run("a negative answer is cached for the SOA minimum", func(t *testing.T) {
		notFound := func() {
			t.Helper()
			before := dns.TotalQueries()
			_, err := r.LookupIPAddr(context.Background(), "missing.goproxy.test")
			var de *net.DNSError
			if !errors.As(err, &de) || !de.IsNotFound {
				t.Fatalf("lookup of a missing name: %v, want a not-found *net.DNSError", err)
			}
			t.Logf("asked %d", dns.TotalQueries()-before)
		}
		before := dns.TotalQueries()
		notFound()
		clock.Advance(6 * time.Second)
		notFound()
		if got := dns.TotalQueries() - before; got != 2 {
			t.Errorf("two lookups within the negative TTL asked %d queries, want 2", got)
		}
		clock.Advance(2 * time.Second)
		notFound()
		if got := dns.TotalQueries() - before; got != 4 {
			t.Errorf("after the negative TTL: %d queries in all, want 4", got)
		}
	})
	t.Run("concurrent lookups share one query", func(t *testing.T) {
		clock.Advance(time.Hour)
		before := dns.TotalQueries()
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() { lookupStrings(t, r, "host.goproxy.test") })
		}
		wg.Wait()
		if got := dns.TotalQueries() - before; got != 2 {
			t.Errorf("10 concurrent lookups asked %d queries, want 2", got)
		}
	})
}

// closedPort returns a loopback address where nothing listens, over UDP
// and TCP alike.
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestResolverFallsThrough(t *testing.T) {
	good := dnstest.NewServer(t, nil)
	good.Set(onlyTestKnows, time.Minute, "192.0.2.10", "2001:db8::10")
	good.Set("other.goproxy.test", time.Minute, "192.0.2.11")
	servfail := dnstest.NewServer(t, good.CA)
	servfail.SetFailure(dnstest.ServFail)
	silent := dnstest.NewServer(t, good.CA)
	silent.SetFailure(dnstest.Drop)

	for _, tc := range []struct {
		name   string
		failed string
		count  func() int
	}{
		{"closed UDP port", "udp://" + closedPort(t), nil},
		{"closed TCP port", "tcp://" + closedPort(t), nil},
		{"SERVFAIL over https", servfail.DoHURL, func() int { return servfail.Queries(dnstest.HTTPSPost) }},
		{"SERVFAIL over tls", "tls://" + servfail.TLSAddr, func() int { return servfail.Queries(dnstest.TLS) }},
		{"no answer over udp", "udp://" + silent.UDPAddr, func() int { return silent.Queries(dnstest.UDP) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			r := newTestResolver(t, good, tc.failed, good.DoHURL)
			r.Timeout = 300 * time.Millisecond
			r.now = clock.Now
			askedBefore := 0
			if tc.count != nil {
				askedBefore = tc.count()
			}
			if got := lookupStrings(t, r, onlyTestKnows); !slices.Equal(got, onlyTestKnowsAddrs) {
				t.Errorf("addresses %v, want %v", got, onlyTestKnowsAddrs)
			}
			if tc.count != nil && tc.count() == askedBefore {
				t.Error("the failing server was not asked first")
			}
			// The failed server now comes last: the next lookup goes
			// straight to the good one, until the penalty has passed.
			if tc.count != nil {
				askedBefore = tc.count()
			}
			goodBefore := good.TotalQueries()
			start := time.Now()
			lookupStrings(t, r, "other.goproxy.test")
			if tc.count != nil && tc.count() != askedBefore {
				t.Error("the failing server was asked first again")
			}
			if good.TotalQueries()-goodBefore != 2 || time.Since(start) > r.Timeout {
				t.Errorf("the good server took %v for %d queries", time.Since(start), good.TotalQueries()-goodBefore)
			}
			clock.Advance(dnsFailurePenalty + time.Hour)
			lookupStrings(t, r, onlyTestKnows)
			if tc.count != nil && tc.count() == askedBefore {
				t.Error("the failed server was not tried first again after the penalty")
			}
		})
	}

	t.Run("every server failing", func(t *testing.T) {
		r := newTestResolver(t, good, servfail.DoHURL, "udp://"+closedPort(t))
		_, err := r.LookupIPAddr(context.Background(), onlyTestKnows)
		var de *net.DNSError
		if !errors.As(err, &de) || de.IsNotFound || !de.IsTemporary {
			t.Fatalf("error %v, want a temporary *net.DNSError", err)
		}
		for _, want := range []string{servfail.DoHURL, "SERVFAIL", "udp://"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
}

func TestResolverBootstrap(t *testing.T) {
	dns := dnstest.NewServer(t, nil)
	dns.Set(onlyTestKnows, time.Minute, "192.0.2.10", "2001:db8::10")
	dns.Set(dnstest.Name, time.Minute, "127.0.0.1") // the server's own name
	byName := func(addr string) string {
		_, port, _ := net.SplitHostPort(addr)
		return net.JoinHostPort(dnstest.Name, port)
	}
	for _, server := range []string{
		strings.Replace(dns.DoHURL, "127.0.0.1", dnstest.Name, 1),
		"tls://" + byName(dns.TLSAddr),
	} {
		t.Run(server, func(t *testing.T) {
			r := newTestResolver(t, dns, server)
			r.Bootstrap = []string{dns.UDPAddr}
			before := dns.Queries(dnstest.UDP)
			if got := lookupStrings(t, r, onlyTestKnows); !slices.Equal(got, onlyTestKnowsAddrs) {
				t.Errorf("addresses %v, want %v", got, onlyTestKnowsAddrs)
			}
			if dns.Queries(dnstest.UDP) == before {
				t.Error("the bootstrap server was not asked for the server's name")
			}
		})
	}
}

func TestResolverConfiguration(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *Resolver
		want string // in the error
	}{
		{"quic needs QUIC", &Resolver{Servers: []string{"quic://127.0.0.1:853"}}, "dnsquic"},
		{"unknown scheme", &Resolver{Servers: []string{"ftp://127.0.0.1"}}, "unknown scheme"},
		{"path on tls", &Resolver{Servers: []string{"tls://127.0.0.1/x"}}, "no path"},
		{"scheme without slashes", &Resolver{Servers: []string{"udp:127.0.0.1"}}, "bad port"},
		{"bootstrap by name", &Resolver{Servers: []string{"tls://dns.test"}, Bootstrap: []string{"dns.test:53"}}, "must be an IP address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.init()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if _, lerr := tc.r.LookupIPAddr(context.Background(), "example.test"); lerr == nil || lerr.Error() != err.Error() {
				t.Errorf("LookupIPAddr error %v, want the configuration error", lerr)
			}
		})
	}
	t.Run("default ports", func(t *testing.T) {
		r := &Resolver{Servers: []string{"127.0.0.1", "tls://127.0.0.1", "https://127.0.0.1", "quic://[::1]", "udp://[::1]:5353"}, QUIC: refusingQUIC{}}
		if err := r.init(); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range r.servers {
			got = append(got, s.scheme+" "+net.JoinHostPort(s.host, s.port))
		}
		want := []string{"udp 127.0.0.1:53", "tls 127.0.0.1:853", "https 127.0.0.1:443", "quic [::1]:853", "udp [::1]:5353"}
		if !slices.Equal(got, want) {
			t.Errorf("servers %q, want %q", got, want)
		}
		if r.servers[2].dohURL.String() != "https://127.0.0.1/dns-query" {
			t.Errorf("DoH URL %s, want the /dns-query default", r.servers[2].dohURL)
		}
	})
}

func TestResolverWithoutServers(t *testing.T) {
	// No servers: the system resolver, which answers these without the
	// network (addresses as they are, localhost from the hosts file).
	for _, r := range []*Resolver{nil, {}} {
		if got := lookupStrings(t, r, "192.0.2.1"); !slices.Equal(got, []string{"192.0.2.1"}) {
			t.Errorf("an address resolved to %v", got)
		}
		if got := lookupStrings(t, r, "localhost"); len(got) == 0 {
			t.Error("localhost resolved to nothing")
		}
	}
	// With servers, localhost is answered without asking them (RFC 6761).
	r := &Resolver{Servers: []string{"udp://" + closedPort(t)}}
	if got := lookupStrings(t, r, "api.localhost"); !slices.Equal(got, []string{"::1", "127.0.0.1"}) {
		t.Errorf("api.localhost resolved to %v", got)
	}
}
