package goproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sync/singleflight"
)

// Resolver looks host names up in DNS servers of its own choosing rather
// than the system's: plain DNS over UDP or TCP, or DNS over HTTPS, TLS or
// QUIC. It asks for A and AAAA records at once, so that dialing can race
// the two address families, and caches answers for as long as their time
// to live allows. Servers are tried in order: one that fails, or answers
// SERVFAIL, passes the question to the next, and is tried last for a while.
//
// Names are looked up as given, as fully qualified names: there are no
// search domains, and the hosts file is not read. localhost and its
// subdomains are always the loopback addresses (RFC 6761).
//
// The zero value, like a nil *Resolver, uses the system resolver. Fields
// must not be changed once the Resolver has been used; it may be used by
// several goroutines at once.
type Resolver struct {
	// Servers lists the DNS servers to ask, in order, each in one of these
	// forms (the port may be omitted, and host may be an IP address or a
	// name):
	//
	//	host:53 or udp://host:53   plain DNS over UDP, asked again over TCP
	//	                           when the answer is truncated
	//	tcp://host:53              plain DNS over TCP
	//	tls://host:853             DNS over TLS (RFC 7858)
	//	https://host/dns-query     DNS over HTTPS (RFC 8484), with POST
	//	https://host/dns-query{?dns}
	//	                           the same with GET, marked as in the
	//	                           RFC's URI template, for servers or caches
	//	                           that prefer GET
	//	quic://host:853            DNS over QUIC (RFC 9250); needs QUIC
	//
	// If empty, the system resolver ([net.DefaultResolver]) answers.
	Servers []string

	// Bootstrap lists the servers that resolve the host names appearing in
	// Servers, in the same forms but with IP addresses only, so that
	// reaching a DNS server never needs that server. If empty, those names
	// are resolved by the system resolver.
	Bootstrap []string

	// Timeout bounds one query to one server, before the next server is
	// tried. Zero means 5 seconds.
	Timeout time.Duration

	// TLSConfig configures the TLS, HTTPS and QUIC servers' connections,
	// chiefly which certificates are trusted (RootCAs). The server name is
	// set from each server's URL. If nil, the system's roots are trusted.
	TLSConfig *tls.Config

	// QUIC carries the queries to quic:// servers. Package
	// github.com/goproxy-team/goproxy/dnsquic provides it: set QUIC to
	// new(dnsquic.Transport). It is kept out of this package so that
	// programs without quic:// servers do not link a QUIC implementation.
	// If nil, a quic:// server is a configuration error.
	QUIC DNSTransport

	initOnce  sync.Once
	initErr   error
	servers   []*dnsServer
	bootstrap *Resolver
	doh       *http.Client
	cache     dnsCache
	flights   singleflight.Group

	// now is the cache's clock; tests move it instead of sleeping.
	now func() time.Time
}

// DNSTransport sends DNS messages over a transport that [Resolver] does not
// implement itself; [Resolver.QUIC] is one.
type DNSTransport interface {
	// Exchange sends query, a DNS message in wire format, to the server at
	// addr (host:port, host usually an IP address) and returns the
	// server's response message. conf says which certificates to trust,
	// and its ServerName names the server.
	Exchange(ctx context.Context, addr string, conf *tls.Config, query []byte) ([]byte, error)
}

// Defaults and bounds of DNS resolution.
const (
	defaultDNSTimeout = 5 * time.Second
	// dnsFailurePenalty is how long a server that failed is tried after
	// the others, so that a dead first server does not cost a timeout on
	// every lookup.
	dnsFailurePenalty = 30 * time.Second
	// maxDNSTTL caps how long an answer is cached whatever its TTL, so
	// that a mistaken huge TTL cannot pin an address for days.
	maxDNSTTL = time.Hour
	// A negative answer (no such name, or no record of the type) is cached
	// for its zone's SOA minimum, capped at maxNegativeTTL, or for
	// defaultNegativeTTL when the server sent no SOA record: long enough
	// to absorb a burst of identical lookups, short enough that a name
	// that has just been created is soon seen.
	maxNegativeTTL     = 5 * time.Minute
	defaultNegativeTTL = 5 * time.Second
	// maxDNSCache bounds the number of cached answers.
	maxDNSCache = 4096
	// ednsSize is the UDP payload size announced in queries, the value the
	// 2020 DNS flag day recommends to avoid IP fragmentation.
	ednsSize = 1232
)

// dnsServer is one parsed entry of Resolver.Servers.
type dnsServer struct {
	display    string // as configured, for messages
	scheme     string // udp, tcp, tls, https or quic
	host, port string
	dohURL     *url.URL // https: the endpoint without the URI template
	dohGet     bool     // https: query with GET rather than POST
	tcp        *streamPool
	tls        *streamPool
	// failedUntil is when the server may be tried first again, in Unix
	// nanoseconds of the Resolver's clock; zero if it has not failed.
	failedUntil atomic.Int64
}

func (r *Resolver) init() error {
	r.initOnce.Do(func() { r.initErr = r.setup() })
	return r.initErr
}

func (r *Resolver) setup() error {
	if r.now == nil {
		r.now = time.Now
	}
	if len(r.Bootstrap) > 0 {
		r.bootstrap = &Resolver{Servers: r.Bootstrap, Timeout: r.Timeout, TLSConfig: r.TLSConfig, QUIC: r.QUIC, now: r.now}
		if err := r.bootstrap.init(); err != nil {
			return err
		}
		for _, s := range r.bootstrap.servers {
			if !isIPLiteral(s.host) {
				return fmt.Errorf("goproxy: bootstrap DNS server %q: the host must be an IP address", s.display)
			}
		}
	}
	for _, raw := range r.Servers {
		s, err := parseDNSServer(raw)
		if err != nil {
			return err
		}
		if s.scheme == "quic" && r.QUIC == nil {
			return fmt.Errorf("goproxy: DNS server %q: quic:// needs Resolver.QUIC (package github.com/goproxy-team/goproxy/dnsquic provides it)", s.display)
		}
		host, port := s.host, s.port
		s.tcp = &streamPool{dial: func(ctx context.Context) (net.Conn, error) {
			return r.dialServer(ctx, "tcp", host, port)
		}}
		if s.scheme == "tls" {
			s.tls = &streamPool{dial: func(ctx context.Context) (net.Conn, error) {
				return r.dialServerTLS(ctx, host, port)
			}}
		}
		if s.scheme == "https" && r.doh == nil {
			r.doh = r.newDoHClient()
		}
		r.servers = append(r.servers, s)
	}
	return nil
}

// parseDNSServer parses one entry of Resolver.Servers.
func parseDNSServer(raw string) (*dnsServer, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("goproxy: DNS server %q: "+format, append([]any{raw}, args...)...)
	}
	s := &dnsServer{display: raw}
	rest := raw
	if !strings.Contains(raw, "://") {
		s.scheme = "udp"
	} else {
		u, err := url.Parse(strings.TrimSuffix(raw, "{?dns}"))
		if err != nil {
			return nil, bad("not a URL")
		}
		s.scheme = u.Scheme
		if u.User != nil || u.Host == "" {
			return nil, bad("want scheme://host[:port]")
		}
		rest = u.Host
		switch s.scheme {
		case "https":
			if u.Path == "" {
				u.Path = "/dns-query"
			}
			s.dohURL = u
			s.dohGet = strings.HasSuffix(raw, "{?dns}")
		case "udp", "tcp", "tls", "quic":
			if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
				return nil, bad("a %s:// server has no path", s.scheme)
			}
		default:
			return nil, bad("unknown scheme %q: want udp, tcp, tls, https or quic", s.scheme)
		}
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		// No port, or an IPv6 address without brackets: the default port.
		host, port = strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]"), ""
	}
	if port == "" {
		port = map[string]string{"udp": "53", "tcp": "53", "tls": "853", "https": "443", "quic": "853"}[s.scheme]
	}
	if host == "" || strings.ContainsAny(host, " /@") || (strings.Contains(host, ":") && !isIPLiteral(host)) {
		return nil, bad("bad host %q", host)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return nil, bad("bad port %q", port)
	}
	s.host, s.port = host, port
	return s, nil
}

func isIPLiteral(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

// LookupIPAddr returns the IPv6 and IPv4 addresses of host, IPv6 first as
// RFC 8305 (Happy Eyeballs) orders them. An IP address is returned as it
// is. A name that does not exist gives a [*net.DNSError] whose IsNotFound
// is set; when every server fails, the error wraps each server's.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	addrs, err := r.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]net.IPAddr, len(addrs))
	for i, a := range addrs {
		out[i] = net.IPAddr{IP: net.IP(a.AsSlice()), Zone: a.Zone()}
	}
	return out, nil
}

func (r *Resolver) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	if r == nil || len(r.Servers) == 0 {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		for i, a := range addrs {
			addrs[i] = a.Unmap()
		}
		return addrs, err
	}
	if err := r.init(); err != nil {
		return nil, err
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return []netip.Addr{netip.IPv6Loopback(), netip.AddrFrom4([4]byte{127, 0, 0, 1})}, nil
	}
	qname, err := dnsmessage.NewName(name + ".")
	if err != nil || name == "" || strings.Contains(name, "..") {
		return nil, &net.DNSError{Err: "invalid host name", Name: host, IsNotFound: true}
	}
	var (
		wg         sync.WaitGroup
		v6, v4     []netip.Addr
		err6, err4 error
	)
	wg.Go(func() { v6, err6 = r.lookupType(ctx, qname, dnsmessage.TypeAAAA) })
	v4, err4 = r.lookupType(ctx, qname, dnsmessage.TypeA)
	wg.Wait()
	if len(v6)+len(v4) > 0 {
		// A fresh slice: v6 and v4 may be the cache's own.
		return append(append(make([]netip.Addr, 0, len(v6)+len(v4)), v6...), v4...), nil
	}
	for _, err := range []error{err4, err6} {
		if err != nil && !errors.Is(err, errNoSuchHost) {
			return nil, &net.DNSError{
				Err:         err.Error(),
				Name:        host,
				IsTimeout:   errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded),
				IsTemporary: true,
				UnwrapErr:   err,
			}
		}
	}
	return nil, &net.DNSError{Err: errNoSuchHost.Error(), Name: host, IsNotFound: true}
}

// errNoSuchHost is a negative answer: the name, or the record type asked
// for, does not exist.
var errNoSuchHost = errors.New("no such host")

// lookupType returns the addresses of one type from the cache or, sharing
// the work with concurrent lookups of the same, from the servers.
func (r *Resolver) lookupType(ctx context.Context, name dnsmessage.Name, qtype dnsmessage.Type) ([]netip.Addr, error) {
	key := dnsKey{name.String(), qtype}
	if e, ok := r.cache.get(key, r.now()); ok {
		if e.notFound {
			return nil, errNoSuchHost
		}
		return e.addrs, nil
	}
	// The shared query outlives a caller who gives up, so as not to fail
	// the others waiting for it; each server's Timeout bounds it.
	flightCtx := context.WithoutCancel(ctx)
	ch := r.flights.DoChan(key.name+" "+qtype.String(), func() (any, error) {
		ans, err := r.query(flightCtx, name, qtype)
		if err != nil {
			return nil, err
		}
		r.cache.put(key, ans, r.now())
		return ans, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		ans := res.Val.(dnsAnswer)
		if ans.notFound {
			return nil, errNoSuchHost
		}
		return ans.addrs, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// query asks the servers in turn until one answers, those that failed
// lately last.
func (r *Resolver) query(ctx context.Context, name dnsmessage.Name, qtype dnsmessage.Type) (dnsAnswer, error) {
	q := dnsmessage.Question{Name: name, Type: qtype, Class: dnsmessage.ClassINET}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = defaultDNSTimeout
	}
	var errs []error
	for _, s := range r.serverOrder() {
		// Message IDs guard plain DNS against spoofed answers. DoH leaves
		// them 0 so that HTTP caches can share answers (RFC 8484 §4.1),
		// and DoQ requires 0 (RFC 9250 §4.2.1).
		var id uint16
		if s.scheme == "udp" || s.scheme == "tcp" || s.scheme == "tls" {
			id = uint16(rand.Uint32())
		}
		msg, err := buildQuery(id, q)
		if err != nil {
			return dnsAnswer{}, err
		}
		qctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := r.exchange(qctx, s, msg)
		var ans dnsAnswer
		if err == nil {
			ans, err = parseAnswer(resp, id, q)
		}
		cancel()
		if err == nil {
			s.failedUntil.Store(0)
			return ans, nil
		}
		s.failedUntil.Store(r.now().Add(dnsFailurePenalty).UnixNano())
		errs = append(errs, fmt.Errorf("%s: %w", s.display, err))
	}
	// One line, unlike errors.Join's, for logs; every cause stays wrapped.
	format := strings.TrimSuffix(strings.Repeat("%w; ", len(errs)), "; ")
	args := make([]any, len(errs))
	for i, err := range errs {
		args[i] = err
	}
	return dnsAnswer{}, fmt.Errorf(format, args...)
}

// serverOrder returns the servers in their configured order, except that
// those that failed within dnsFailurePenalty come last.
func (r *Resolver) serverOrder() []*dnsServer {
	now := r.now().UnixNano()
	order := make([]*dnsServer, 0, len(r.servers))
	var failed []*dnsServer
	for _, s := range r.servers {
		if s.failedUntil.Load() > now {
			failed = append(failed, s)
		} else {
			order = append(order, s)
		}
	}
	return append(order, failed...)
}

func buildQuery(id uint16, q dnsmessage.Question) ([]byte, error) {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(ednsSize, dnsmessage.RCodeSuccess, false); err != nil {
		return nil, err
	}
	if err := b.OPTResource(opt, dnsmessage.OPTResource{}); err != nil {
		return nil, err
	}
	return b.Finish()
}

// dnsAnswer is what a server said about one name and type.
type dnsAnswer struct {
	addrs    []netip.Addr
	notFound bool          // NXDOMAIN, or no record of the type
	ttl      time.Duration // how long the answer may be cached
}

// errTruncated is a UDP answer too large for a datagram.
var errTruncated = errors.New("answer truncated")

// parseAnswer reads the response to the query with id and question q. A
// server error (SERVFAIL, REFUSED, ...) is an error, so that the next
// server is asked; a negative answer is not.
func parseAnswer(resp []byte, id uint16, q dnsmessage.Question) (dnsAnswer, error) {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return dnsAnswer{}, fmt.Errorf("malformed answer: %w", err)
	}
	if !h.Response || h.ID != id {
		return dnsAnswer{}, errors.New("the answer does not match the query")
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return dnsAnswer{}, fmt.Errorf("malformed answer: %w", err)
	}
	if len(qs) != 1 || qs[0].Type != q.Type || !strings.EqualFold(qs[0].Name.String(), q.Name.String()) {
		return dnsAnswer{}, errors.New("the answer is to another question")
	}
	if h.Truncated {
		return dnsAnswer{}, errTruncated
	}
	if h.RCode != dnsmessage.RCodeSuccess && h.RCode != dnsmessage.RCodeNameError {
		return dnsAnswer{}, fmt.Errorf("the server answered %s", rcodeName(h.RCode))
	}
	answers, err := p.AllAnswers()
	if err != nil {
		return dnsAnswer{}, fmt.Errorf("malformed answer: %w", err)
	}
	// Follow the CNAME chain from the name asked to the name whose
	// records answer; every record used bounds the answer's TTL.
	ttl := maxDNSTTL
	target := strings.ToLower(q.Name.String())
	for range 16 {
		next := ""
		for _, rr := range answers {
			if c, ok := rr.Body.(*dnsmessage.CNAMEResource); ok && strings.EqualFold(rr.Header.Name.String(), target) {
				next = strings.ToLower(c.CNAME.String())
				ttl = min(ttl, time.Duration(rr.Header.TTL)*time.Second)
			}
		}
		if next == "" || next == target {
			break
		}
		target = next
	}
	var ans dnsAnswer
	for _, rr := range answers {
		if rr.Header.Type != q.Type || !strings.EqualFold(rr.Header.Name.String(), target) {
			continue
		}
		switch body := rr.Body.(type) {
		case *dnsmessage.AResource:
			ans.addrs = append(ans.addrs, netip.AddrFrom4(body.A))
		case *dnsmessage.AAAAResource:
			ans.addrs = append(ans.addrs, netip.AddrFrom16(body.AAAA))
		default:
			continue
		}
		ttl = min(ttl, time.Duration(rr.Header.TTL)*time.Second)
	}
	if h.RCode == dnsmessage.RCodeSuccess && len(ans.addrs) > 0 {
		ans.ttl = ttl
		return ans, nil
	}
	// A negative answer: its zone's SOA record says how long it holds
	// (RFC 2308 §5).
	ans = dnsAnswer{notFound: true, ttl: defaultNegativeTTL}
	if auths, err := p.AllAuthorities(); err == nil {
		for _, rr := range auths {
			if soa, ok := rr.Body.(*dnsmessage.SOAResource); ok {
				ans.ttl = min(time.Duration(min(rr.Header.TTL, soa.MinTTL))*time.Second, maxNegativeTTL)
			}
		}
	}
	return ans, nil
}

// rcodeName names a response code as DNS tools do.
func rcodeName(c dnsmessage.RCode) string {
	switch c {
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("RCODE %d", c)
}

// dnsCache holds answers until their TTL runs out.
type dnsCache struct {
	mu      sync.Mutex
	entries map[dnsKey]dnsEntry
}

type dnsKey struct {
	name  string // fully qualified, lower case
	qtype dnsmessage.Type
}

type dnsEntry struct {
	addrs    []netip.Addr
	notFound bool
	expires  time.Time
}

func (c *dnsCache) get(key dnsKey, now time.Time) (dnsEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return dnsEntry{}, false
	}
	if !now.Before(e.expires) {
		delete(c.entries, key)
		return dnsEntry{}, false
	}
	return e, true
}

func (c *dnsCache) put(key dnsKey, ans dnsAnswer, now time.Time) {
	if ans.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[dnsKey]dnsEntry)
	}
	makeRoom(c.entries, maxDNSCache, func(e dnsEntry) bool { return !now.Before(e.expires) })
	c.entries[key] = dnsEntry{addrs: ans.addrs, notFound: ans.notFound, expires: now.Add(ans.ttl)}
}
