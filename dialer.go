package goproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpproxy"
	"golang.org/x/net/proxy"
)

// Dialer makes the proxy's outbound connections: to upstream proxies, to
// checksum databases and, through the environment it gives the go
// command, to origin servers in direct mode. It resolves names with its
// Resolver, racing IPv6 and IPv4 (RFC 8305), and goes through an egress
// proxy when one is configured:
//
//	http://[user:password@]host:port    an HTTP proxy (CONNECT for https)
//	https://[user:password@]host:port   the same, reached over TLS
//	socks5://[user:password@]host:port  a SOCKS5 proxy; names are resolved
//	                                    here and the server is sent addresses
//	socks5h://[user:password@]host:port a SOCKS5 proxy that is sent names,
//	                                    to resolve itself
//
// Credentials in proxy URLs never appear in the Dialer's errors.
//
// A [Proxy] checks every connection its Dialer makes with its
// [EgressPolicy], the egress proxies excepted; a Dialer used on its own
// checks nothing.
//
// The zero value, like a nil *Dialer, reads its proxy settings from the
// environment and resolves names with the system resolver. Fields must not
// be changed once the Dialer has been used.
type Dialer struct {
	// Proxy is the egress proxy for every connection, as a URL in one of
	// the forms above; "direct" or "none" means no proxy. If empty, the
	// proxy variables of Env are followed as the go command follows them,
	// with two additions from curl: HTTP_PROXY for http:// requests,
	// HTTPS_PROXY for https:// requests, else ALL_PROXY, else
	// SOCKS5_PROXY (a bare host:port there means socks5://). Lower-case
	// names are read too. Either way NO_PROXY from Env lists the hosts
	// reached directly, and loopback addresses always are.
	Proxy string

	// Resolver resolves host names. If nil, the system resolver does. With
	// socks5h:// proxies, it resolves only the proxy's own name.
	Resolver *Resolver

	// DialTimeout bounds making one connection: resolving the name,
	// connecting and any proxy handshake. Zero means 30 seconds.
	DialTimeout time.Duration

	// TLSHandshakeTimeout bounds one TLS handshake. Zero means 10 seconds.
	TLSHandshakeTimeout time.Duration

	// ResponseHeaderTimeout bounds the wait for a response's header once
	// a request is sent. Zero means 60 seconds: upstream proxies may build
	// a module's zip from its origin before they answer.
	ResponseHeaderTimeout time.Duration

	// IdleConnTimeout is how long an idle connection is kept for reuse.
	// Zero means 90 seconds.
	IdleConnTimeout time.Duration

	// TLSConfig configures TLS connections, to servers and to https://
	// proxies, chiefly which certificates are trusted. If nil, the system's
	// roots are (on Unix, SSL_CERT_FILE and SSL_CERT_DIR change them).
	TLSConfig *tls.Config

	// Env holds the proxy variables, in the form of [os.Environ]. If nil,
	// the process environment is read when the Dialer is first used; a
	// [Proxy] gives a Dialer without one its own Env instead.
	Env []string

	initOnce sync.Once
	initErr  error
	egress   *egress
	// policy, when set, checks every destination before it is dialled;
	// the Dialer's own egress proxies are exempt. A Proxy sets it on its
	// copy of the Dialer.
	policy *egressPolicy
}

// withPolicy returns a new Dialer with d's settings whose connections are
// checked by policy.
func (d *Dialer) withPolicy(policy *egressPolicy) *Dialer {
	if d == nil {
		d = &Dialer{}
	}
	return &Dialer{
		Proxy:                 d.Proxy,
		Resolver:              d.Resolver,
		DialTimeout:           d.DialTimeout,
		TLSHandshakeTimeout:   d.TLSHandshakeTimeout,
		ResponseHeaderTimeout: d.ResponseHeaderTimeout,
		IdleConnTimeout:       d.IdleConnTimeout,
		TLSConfig:             d.TLSConfig,
		Env:                   d.Env,
		policy:                policy,
	}
}

// Defaults of the Dialer's timeouts.
const (
	defaultDialTimeout           = 30 * time.Second
	defaultTLSHandshakeTimeout   = 10 * time.Second
	defaultResponseHeaderTimeout = 60 * time.Second
	defaultIdleConnTimeout       = 90 * time.Second
)

// egress is the Dialer's proxy configuration, validated.
type egress struct {
	// httpURL and httpsURL are the proxies for http:// and https://
	// requests, connURL the one for connections of no known protocol,
	// allURL the one for all protocols (ALL_PROXY, SOCKS5_PROXY or
	// Proxy); nil when there is none.
	httpURL, httpsURL, connURL, allURL *url.URL
	noProxy                            string
	// forRequest picks the proxy for a request's URL, honouring NO_PROXY;
	// forConn picks connURL for a host:port.
	forRequest, forConn func(*url.URL) (*url.URL, error)
	// proxyAddrs are the host:port of the HTTP proxies, which the
	// Transport dials directly.
	proxyAddrs map[string]bool
}

func (d *Dialer) init() error {
	d.initOnce.Do(func() { d.egress, d.initErr = d.readEgress() })
	return d.initErr
}

func (d *Dialer) readEgress() (*egress, error) {
	env := d.Env
	if env == nil {
		env = os.Environ()
	}
	get := func(keys ...string) (name, value string) {
		for _, key := range keys {
			// The last definition wins, as with os/exec.
			for i := len(env) - 1; i >= 0; i-- {
				if k, v, ok := strings.Cut(env[i], "="); ok && k == key && v != "" {
					return key, v
				}
			}
		}
		return "", ""
	}
	e := &egress{proxyAddrs: make(map[string]bool)}
	_, e.noProxy = get("NO_PROXY", "no_proxy")
	cgi := false
	parse := func(name, raw, defaultScheme string) (*url.URL, error) {
		if raw == "" {
			return nil, nil
		}
		return parseProxyURL(name, raw, defaultScheme)
	}
	var err error
	switch d.Proxy {
	case "direct", "none":
	case "":
		allName, all := get("ALL_PROXY", "all_proxy")
		socksName, socks := get("SOCKS5_PROXY", "socks5_proxy")
		fallback := func() (*url.URL, error) {
			if all != "" {
				return parse(allName, all, "http")
			}
			return parse(socksName, socks, "socks5")
		}
		if e.allURL, err = fallback(); err != nil {
			return nil, err
		}
		for _, p := range []struct {
			url  **url.URL
			keys []string
		}{
			{&e.httpURL, []string{"HTTP_PROXY", "http_proxy"}},
			{&e.httpsURL, []string{"HTTPS_PROXY", "https_proxy"}},
		} {
			if name, v := get(p.keys...); v != "" {
				*p.url, err = parse(name, v, "http")
				// A CGI program's HTTP_PROXY may come from a request's
				// Proxy header ("httpoxy"): net/http refuses it, and so
				// do we.
				if _, method := get("REQUEST_METHOD"); name == "HTTP_PROXY" && method != "" {
					cgi = true
				}
			} else {
				*p.url, err = fallback()
			}
			if err != nil {
				return nil, err
			}
		}
		// A connection of no known protocol goes where https:// requests
		// do when nothing is set for all protocols: where only
		// HTTPS_PROXY is set, it is usually the only way out.
		e.connURL = e.allURL
		if e.connURL == nil {
			e.connURL = e.httpsURL
		}
	default:
		u, err := parse("Dialer.Proxy", d.Proxy, "http")
		if err != nil {
			return nil, err
		}
		e.httpURL, e.httpsURL, e.connURL, e.allURL = u, u, u, u
	}
	str := func(u *url.URL) string {
		if u == nil {
			return ""
		}
		return u.String()
	}
	e.forRequest = (&httpproxy.Config{
		HTTPProxy:  str(e.httpURL),
		HTTPSProxy: str(e.httpsURL),
		NoProxy:    e.noProxy,
		CGI:        cgi,
	}).ProxyFunc()
	e.forConn = (&httpproxy.Config{
		HTTPProxy:  str(e.connURL),
		HTTPSProxy: str(e.connURL),
		NoProxy:    e.noProxy,
	}).ProxyFunc()
	for _, u := range []*url.URL{e.httpURL, e.httpsURL} {
		if u != nil && !isSOCKS(u) {
			e.proxyAddrs[proxyAddr(u)] = true
		}
	}
	return e, nil
}

// parseProxyURL parses and checks one proxy URL from the setting name.
func parseProxyURL(name, raw, defaultScheme string) (*url.URL, error) {
	s := raw
	if !strings.Contains(s, "://") {
		s = defaultScheme + "://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		// Not wrapped: the parser's error quotes the URL, password and all.
		return nil, fmt.Errorf("goproxy: %s: invalid proxy URL %s", name, redactURL(raw))
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return nil, fmt.Errorf("goproxy: %s: proxy URL %s: unknown scheme %q, want http, https, socks5 or socks5h", name, redactURL(u.String()), u.Scheme)
	}
	if u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("goproxy: %s: proxy URL %s: want scheme://[user:password@]host[:port]", name, redactURL(u.String()))
	}
	return u, nil
}

func isSOCKS(u *url.URL) bool { return u.Scheme == "socks5" || u.Scheme == "socks5h" }

// proxyAddr is the host:port that connects to the proxy u, as net/http
// names it when it dials.
func proxyAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
	}
	return strings.ToLower(net.JoinHostPort(u.Hostname(), port))
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// DialContext connects to addr on network through the proxy that applies to
// connections of no known protocol: Proxy, else ALL_PROXY, else
// SOCKS5_PROXY, else HTTPS_PROXY. An HTTP proxy is asked for a tunnel
// with CONNECT.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d == nil {
		d = &Dialer{}
	}
	if err := d.init(); err != nil {
		return nil, err
	}
	p, err := d.egress.forConn(&url.URL{Scheme: "https", Host: addr})
	if err != nil {
		return nil, err
	}
	if p != nil && !isSOCKS(p) {
		ctx, cancel := context.WithTimeout(ctx, orDefault(d.DialTimeout, defaultDialTimeout))
		defer cancel()
		return d.dialConnect(ctx, p, network, addr)
	}
	return d.dial(ctx, p, network, addr)
}

// dialConnect opens a tunnel to addr through the HTTP proxy p.
func (d *Dialer) dialConnect(ctx context.Context, p *url.URL, network, addr string) (net.Conn, error) {
	wrap := func(err error) error {
		return fmt.Errorf("goproxy: connecting to %s through HTTP proxy %s: %w", addr, redactURL(p.String()), err)
	}
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, wrap(fmt.Errorf("an HTTP proxy cannot carry %s", network))
	}
	if err := d.checkUnresolved(ctx, addr); err != nil {
		return nil, wrap(err)
	}
	c, err := d.dialNet(ctx, "tcp", proxyAddr(p), nil)
	if err != nil {
		return nil, wrap(err)
	}
	if p.Scheme == "https" {
		conf := clientTLSConfig(d.TLSConfig)
		conf.ServerName = p.Hostname()
		conf.NextProtos = nil // CONNECT is HTTP/1.1's
		hctx, cancel := context.WithTimeout(ctx, orDefault(d.TLSHandshakeTimeout, defaultTLSHandshakeTimeout))
		tc := tls.Client(c, conf)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, wrap(err)
		}
		c = tc
	}
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: make(http.Header),
	}
	if p.User != nil {
		password, _ := p.User.Password()
		req.SetBasicAuth(p.User.Username(), password)
		req.Header["Proxy-Authorization"] = req.Header["Authorization"]
		delete(req.Header, "Authorization")
	}
	stop := deadlineFromContext(ctx, c)
	br := bufio.NewReader(c)
	err = req.Write(c)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(br, req)
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		c.Close()
		return nil, wrap(ctxErr(ctx, err))
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, wrap(fmt.Errorf("the proxy answered %s", resp.Status))
	}
	c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		// The destination spoke first, and its bytes are in br.
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// bufferedConn is a connection whose first bytes were read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// dialFor connects to addr for a request of scheme made by the Transport:
// through the SOCKS proxy for that scheme, if any, and directly to HTTP
// proxies.
func (d *Dialer) dialFor(ctx context.Context, scheme, network, addr string) (net.Conn, error) {
	if d.egress.proxyAddrs[strings.ToLower(addr)] {
		// A proxy of the configuration: allowed whatever its address.
		ctx, cancel := context.WithTimeout(ctx, orDefault(d.DialTimeout, defaultDialTimeout))
		defer cancel()
		return d.dialNet(ctx, network, addr, nil)
	}
	p, err := d.egress.forRequest(&url.URL{Scheme: scheme, Host: addr})
	if err != nil {
		return nil, err
	}
	return d.dial(ctx, p, network, addr)
}

// dial connects to addr through p if it is a SOCKS proxy, else directly.
func (d *Dialer) dial(ctx context.Context, p *url.URL, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, orDefault(d.DialTimeout, defaultDialTimeout))
	defer cancel()
	if p != nil && isSOCKS(p) {
		return d.dialSOCKS(ctx, p, network, addr)
	}
	return d.dialDirect(ctx, network, addr)
}

// dialDirect connects to addr without a proxy, checking each address it
// tries with the Dialer's policy, if it has one.
func (d *Dialer) dialDirect(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.dialNet(ctx, network, addr, d.policy)
}

// dialNet connects to addr without a proxy. policy, unless nil, decides
// each address in the dialer's Control function, after the name is
// resolved and just before the address is connected to: no later answer
// of DNS can change the address that was checked.
func (d *Dialer) dialNet(ctx context.Context, network, addr string, policy *egressPolicy) (net.Conn, error) {
	var nd net.Dialer
	if policy != nil {
		host, _, _ := net.SplitHostPort(addr)
		nd.ControlContext = func(ctx context.Context, _, address string, _ syscall.RawConn) error {
			return policy.checkDialAddr(ctx, host, address)
		}
	}
	if d.Resolver == nil || len(d.Resolver.Servers) == 0 {
		// The system resolver: net.Dialer resolves and races families itself.
		return nd.DialContext(ctx, network, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	addrs, err := d.lookup(ctx, network, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return dialParallel(ctx, &nd, network, addrs, port)
}

// lookup resolves host for network (tcp, tcp4, tcp6, ...) with the
// Dialer's resolver, or the system's if it has none.
func (d *Dialer) lookup(ctx context.Context, network, host string) ([]netip.Addr, error) {
	addrs, err := d.Resolver.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	var want func(netip.Addr) bool
	switch {
	case strings.HasSuffix(network, "4"):
		want = func(a netip.Addr) bool { return a.Unmap().Is4() }
	case strings.HasSuffix(network, "6"):
		want = func(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }
	default:
		return addrs, nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if want(a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no suitable address", Name: host, IsNotFound: true}
	}
	return out, nil
}

// checkUnresolved checks addr (host:port), which an egress proxy is to
// connect to, with the Dialer's policy, if it has one.
func (d *Dialer) checkUnresolved(ctx context.Context, addr string) error {
	if d.policy == nil {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("bad port in %q", addr)
	}
	return d.policy.checkUnresolved(ctx, host, uint16(n))
}

// checkAddr checks a, resolved from host, at port, with the Dialer's
// policy, if it has one.
func (d *Dialer) checkAddr(ctx context.Context, host string, a netip.Addr, port string) error {
	if d.policy == nil {
		return nil
	}
	return d.policy.checkDialAddr(ctx, host, net.JoinHostPort(a.String(), port))
}

// socksForward connects the Dialer to a SOCKS server.
type socksForward struct{ d *Dialer }

func (f socksForward) Dial(network, addr string) (net.Conn, error) {
	return f.DialContext(context.Background(), network, addr)
}

func (f socksForward) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	// The SOCKS server is the configuration's: allowed whatever its address.
	return f.d.dialNet(ctx, network, addr, nil)
}

// dialSOCKS connects to addr through the SOCKS server p. With socks5 the
// target's name is resolved here and the server is asked for an address,
// each in turn until one connects; with socks5h the server is sent the
// name.
func (d *Dialer) dialSOCKS(ctx context.Context, p *url.URL, network, addr string) (net.Conn, error) {
	var auth *proxy.Auth
	if p.User != nil {
		auth = &proxy.Auth{User: p.User.Username()}
		auth.Password, _ = p.User.Password()
	}
	sd, err := proxy.SOCKS5("tcp", proxyAddr(p), auth, socksForward{d})
	if err != nil {
		return nil, fmt.Errorf("goproxy: SOCKS proxy %s: %w", redactURL(p.String()), err)
	}
	cd := sd.(proxy.ContextDialer)
	wrap := func(err error) error {
		return fmt.Errorf("goproxy: connecting to %s through SOCKS proxy %s: %w", addr, redactURL(p.String()), err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, wrap(err)
	}
	if p.Scheme == "socks5h" || isIPLiteral(host) {
		if err := d.checkUnresolved(ctx, addr); err != nil {
			return nil, wrap(err)
		}
		c, err := cd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, wrap(err)
		}
		return c, nil
	}
	addrs, err := d.lookup(ctx, network, host)
	if err != nil {
		return nil, wrap(err)
	}
	c, err := firstSuccess(ctx, len(addrs), func(i int) (net.Conn, error) {
		if err := d.checkAddr(ctx, host, addrs[i], port); err != nil {
			return nil, err
		}
		return cd.DialContext(ctx, network, net.JoinHostPort(addrs[i].String(), port))
	})
	if err != nil {
		return nil, wrap(err)
	}
	return c, nil
}

// Transport returns a new [http.Transport] that connects with the Dialer,
// through its egress proxy, with its timeouts, keeping idle connections
// per host for reuse, and speaking HTTP/2 where servers do. A nil or zero
// Dialer gives a transport configured by the environment. The error is
// that of an invalid configuration, its credentials redacted.
func (d *Dialer) Transport() (*http.Transport, error) {
	if d == nil {
		d = &Dialer{}
	}
	if err := d.init(); err != nil {
		return nil, err
	}
	if d.Resolver != nil && len(d.Resolver.Servers) > 0 {
		if err := d.Resolver.init(); err != nil {
			return nil, err
		}
	}
	return &http.Transport{
		// HTTP proxies are net/http's to speak to (CONNECT for https://,
		// absolute URLs for http://); SOCKS proxies are the dial
		// functions' own, since net/http sends SOCKS servers names even
		// for socks5://.
		Proxy: func(req *http.Request) (*url.URL, error) {
			p, err := d.egress.forRequest(req.URL)
			if err != nil || p == nil || isSOCKS(p) {
				return nil, err
			}
			// net/http dials the proxy, never the destination: check
			// what the proxy will be asked for.
			port := req.URL.Port()
			if port == "" {
				port = map[string]string{"http": "80", "https": "443"}[req.URL.Scheme]
			}
			if err := d.checkUnresolved(req.Context(), net.JoinHostPort(req.URL.Hostname(), port)); err != nil {
				return nil, err
			}
			return p, nil
		},
		// net/http calls DialContext for http:// requests and for HTTP
		// proxies, and DialTLSContext for https:// requests and for
		// https:// proxies, which tells the dial functions the scheme
		// whose proxy applies.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.dialFor(ctx, "http", network, addr)
		},
		DialTLSContext:        d.dialTLS,
		TLSClientConfig:       d.TLSConfig.Clone(),
		TLSHandshakeTimeout:   orDefault(d.TLSHandshakeTimeout, defaultTLSHandshakeTimeout),
		ResponseHeaderTimeout: orDefault(d.ResponseHeaderTimeout, defaultResponseHeaderTimeout),
		IdleConnTimeout:       orDefault(d.IdleConnTimeout, defaultIdleConnTimeout),
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		// Large files are fetched in parallel ranges from one host
		// (DownloadOptions.Connections), several files at once.
		MaxIdleConnsPerHost: 16,
	}, nil
}

// dialTLS connects to addr for an https:// request, or to an https://
// proxy, and makes the TLS handshake, offering HTTP/2.
func (d *Dialer) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.dialFor(ctx, "https", network, addr)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		c.Close()
		return nil, err
	}
	conf := clientTLSConfig(d.TLSConfig)
	if conf.ServerName == "" {
		conf.ServerName = host
	}
	if conf.NextProtos == nil {
		conf.NextProtos = []string{"h2", "http/1.1"}
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(d.TLSHandshakeTimeout, defaultTLSHandshakeTimeout))
	defer cancel()
	tc := tls.Client(c, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// Environ returns the variables that make a child go command (and the git
// it runs) use the Dialer's egress proxy, as KEY=value; append them to the
// child's environment, where they override any inherited. Every variable
// is present, empty when there is no proxy, in upper and lower case, since
// programs differ in which they read. The values carry the proxies'
// credentials.
//
// The go command resolves names with the system resolver: it cannot use
// the Dialer's Resolver. It also sends SOCKS servers names, even for
// socks5:// proxies. Environ returns nil if the configuration is invalid,
// as Transport reports.
func (d *Dialer) Environ() []string {
	if d == nil {
		d = &Dialer{}
	}
	if d.init() != nil {
		return nil
	}
	e := d.egress
	str := func(u *url.URL) string {
		if u == nil {
			return ""
		}
		return u.String()
	}
	var env []string
	for _, kv := range [][2]string{
		{"HTTP_PROXY", str(e.httpURL)},
		{"HTTPS_PROXY", str(e.httpsURL)},
		{"ALL_PROXY", str(e.allURL)},
		{"NO_PROXY", e.noProxy},
	} {
		env = append(env, kv[0]+"="+kv[1], strings.ToLower(kv[0])+"="+kv[1])
	}
	return env
}

// fallbackDelay is how long the first address family has to connect
// before the other one starts, as RFC 8305 §8 recommends.
const fallbackDelay = 300 * time.Millisecond

// dialParallel connects to one of addrs at port, in the manner of RFC 8305
// (Happy Eyeballs): the addresses of the first family are tried in turn,
// and those of the other family start, also in turn, after fallbackDelay
// or as soon as the first family has failed. The first connection wins.
func dialParallel(ctx context.Context, nd *net.Dialer, network string, addrs []netip.Addr, port string) (net.Conn, error) {
	if len(addrs) == 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("no address to dial")}
	}
	var primary, fallback []netip.Addr
	for _, a := range addrs {
		if a.Unmap().Is4() == addrs[0].Unmap().Is4() {
			primary = append(primary, a)
		} else {
			fallback = append(fallback, a)
		}
	}
	if len(fallback) == 0 {
		return dialSerial(ctx, nd, network, primary, port)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		conn net.Conn
		err  error
	}
	results := make(chan result, 2) // the loser never blocks
	race := func(addrs []netip.Addr) {
		go func() {
			c, err := dialSerial(ctx, nd, network, addrs, port)
			results <- result{c, err}
		}()
	}
	race(primary)
	timer := time.NewTimer(fallbackDelay)
	defer timer.Stop()
	running, fallbackStarted := 1, false
	var firstErr error
	for {
		select {
		case <-timer.C:
			if !fallbackStarted {
				race(fallback)
				running, fallbackStarted = running+1, true
			}
		case res := <-results:
			running--
			if res.err == nil {
				if running > 0 {
					// The other family may still connect: close it then.
					go func() {
						if late := <-results; late.conn != nil {
							late.conn.Close()
						}
					}()
				}
				return res.conn, nil
			}
			if firstErr == nil {
				firstErr = res.err
			}
			if !fallbackStarted {
				race(fallback)
				running, fallbackStarted = running+1, true
			} else if running == 0 {
				return nil, firstErr
			}
		}
	}
}

// dialSerial tries addrs in turn, giving each an equal share of the time
// left, but at least minDialShare, so that one address that does not
// answer leaves time for the others.
func dialSerial(ctx context.Context, nd *net.Dialer, network string, addrs []netip.Addr, port string) (net.Conn, error) {
	const minDialShare = 2 * time.Second
	return firstSuccess(ctx, len(addrs), func(i int) (net.Conn, error) {
		actx := ctx
		if dl, ok := ctx.Deadline(); ok && i < len(addrs)-1 {
			share := max(time.Until(dl)/time.Duration(len(addrs)-i), minDialShare)
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, share)
			// A connection made outlives its dial's context.
			defer cancel()
		}
		return nd.DialContext(actx, network, net.JoinHostPort(addrs[i].String(), port))
	})
}

// firstSuccess tries n candidates (addresses, mostly) in turn until one
// succeeds, and returns its result, or the first candidate's error when
// every one fails: the first is the preferred one, whose failure tells
// most. It stops early when ctx ends.
func firstSuccess[T any](ctx context.Context, n int, try func(i int) (T, error)) (T, error) {
	var first error
	for i := range n {
		v, err := try(i)
		if err == nil {
			return v, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	var zero T
	return zero, first
}

// clientTLSConfig returns a copy of conf to change, or a new one if conf is
// nil.
func clientTLSConfig(conf *tls.Config) *tls.Config {
	if conf == nil {
		return &tls.Config{}
	}
	return conf.Clone()
}
