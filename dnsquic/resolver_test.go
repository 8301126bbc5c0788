package dnsquic_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/dnsquic"
	"github.com/goproxy-team/goproxy/dnsquic/internal/doqtest"
	"github.com/goproxy-team/goproxy/internal/dnstest"
)

const onlyTestKnows = "only.goproxy.test"

var onlyTestKnowsAddrs = []string{"2001:db8::10", "192.0.2.10"}

func newResolver(t *testing.T, dns *dnstest.Server, servers ...string) *goproxy.Resolver {
	t.Helper()
	quic := new(dnsquic.Transport)
	t.Cleanup(func() { quic.Close() })
	return &goproxy.Resolver{Servers: servers, TLSConfig: dns.CA.ClientConfig(), QUIC: quic, Timeout: 2 * time.Second}
}

func lookup(t *testing.T, r *goproxy.Resolver, host string) []string {
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

func TestResolverOverQUIC(t *testing.T) {
	dns := dnstest.NewServer(t, nil)
	addr := doqtest.Serve(t, dns)
	dns.Set(onlyTestKnows, time.Minute, "192.0.2.10", "2001:db8::10")
	r := newResolver(t, dns, "quic://"+addr)
	if got := lookup(t, r, onlyTestKnows); !slices.Equal(got, onlyTestKnowsAddrs) {
		t.Errorf("addresses %v, want %v (IPv6 first)", got, onlyTestKnowsAddrs)
	}
	if got := dns.Queries(dnstest.QUIC); got != 2 {
		t.Errorf("%d queries over QUIC, want 2 (A and AAAA)", got)
	}
}

func TestResolverFallsThroughASilentQUICServer(t *testing.T) {
	good := dnstest.NewServer(t, nil)
	good.Set(onlyTestKnows, time.Minute, "192.0.2.10", "2001:db8::10")
	silent := dnstest.NewServer(t, good.CA)
	silentAddr := doqtest.Serve(t, silent)
	silent.SetFailure(dnstest.Drop)
	r := newResolver(t, good, "quic://"+silentAddr, good.DoHURL)
	r.Timeout = 300 * time.Millisecond
	if got := lookup(t, r, onlyTestKnows); !slices.Equal(got, onlyTestKnowsAddrs) {
		t.Errorf("addresses %v, want %v", got, onlyTestKnowsAddrs)
	}
	if silent.Queries(dnstest.QUIC) == 0 {
		t.Error("the silent server was not asked first")
	}
}

func TestResolverBootstrapsAQUICServerByName(t *testing.T) {
	dns := dnstest.NewServer(t, nil)
	addr := doqtest.Serve(t, dns)
	dns.Set(onlyTestKnows, time.Minute, "192.0.2.10", "2001:db8::10")
	dns.Set(dnstest.Name, time.Minute, "127.0.0.1")
	_, port, _ := net.SplitHostPort(addr)
	r := newResolver(t, dns, "quic://"+net.JoinHostPort(dnstest.Name, port))
	r.Bootstrap = []string{dns.UDPAddr}
	if got := lookup(t, r, onlyTestKnows); !slices.Equal(got, onlyTestKnowsAddrs) {
		t.Errorf("addresses %v, want %v", got, onlyTestKnowsAddrs)
	}
	if dns.Queries(dnstest.UDP) == 0 {
		t.Error("the bootstrap server was not asked for the server's name")
	}
}
