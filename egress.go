package goproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// EgressPolicy decides where the proxy may connect: its own requests to
// upstreams and checksum databases, the redirects they answer with, and
// every connection of the go command and git it runs for direct fetches.
// Module paths are the client's words, and an origin's go-import tags and
// redirects are a stranger's: without a policy, any client could make the
// proxy connect to its own host, to its network's services or to a cloud
// metadata service.
//
// A destination is decided by the address actually dialled, after the name
// is resolved, so a name that resolves to a refused address is refused too
// and an answer that changes between two look-ups cannot slip through. By
// default the policy refuses:
//
//   - loopback addresses (127.0.0.0/8, ::1) and "localhost";
//   - link-local addresses (169.254.0.0/16, fe80::/10), the unspecified
//     address (0.0.0.0, ::, which reach the local host), multicast and
//     reserved addresses;
//   - cloud metadata services (169.254.169.254, 169.254.170.2, fd00:ec2::254,
//     100.100.100.200, 168.63.129.16, ...), which hand out credentials;
//   - private addresses (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16,
//     100.64.0.0/10, 198.18.0.0/15, fc00::/7), unless AllowPrivateNetworks
//     is set;
//   - git over ssh, unless AllowSSH is set, and version control tools other
//     than git (GOVCS defaults to git only).
//
// Every endpoint the configuration names is allowed whatever its address,
// on its own port: the upstreams of GOPROXY and Routes, the checksum
// databases (GOSUMDB, SumDBs), the Dialer's egress proxies and DNS
// servers. The go command run for direct fetches reaches only the checksum
// databases among them: a go-import tag must not point it at an internal
// upstream. A redirect to anywhere else is checked like any destination, so
// an upstream that sends its zips to a storage host on a private network
// needs that host allowed. An internal git server is allowed with Allow,
// or with AllowPrivateNetworks for all private addresses.
//
// A refusal answers 403 with its reason (never 404 or 410, on which a
// client would try its next proxy), naming the destination as it was asked
// for, and is logged at warning level with the module path and the refused
// address (which the client is not told: internal addresses are not its
// business).
//
// The policy is applied in the Proxy's dialer, so a Transport of your own
// is not checked, except for redirects to addresses written in the URL and
// to "localhost". Behind an egress proxy that resolves names itself (an
// HTTP proxy, or socks5h://), names are that proxy's to check; addresses
// (also in the forms resolvers read as addresses, such as 127.1,
// 2130706433 or 0177.0.0.1) and "localhost" are still checked here.
//
// The go command itself sends its HTTP requests to "localhost" and
// loopback addresses without a proxy, a rule of Go's net/http that no
// setting changes: the proxy refuses module paths that name them, but a
// go-import tag of kind "mod", or a redirect, from an origin can still send
// the go command's HTTPS request to a loopback port (where it checks the
// server's certificate, unless GOINSECURE covers the module). git, the go
// command's other connections and everything the proxy itself does go
// through the policy.
type EgressPolicy struct {
	// AllowPrivateNetworks lets connections reach private addresses (the
	// ranges listed above), such as an internal git server's. Loopback,
	// link-local and metadata addresses stay refused. The zero value
	// refuses private addresses.
	AllowPrivateNetworks bool

	// Allow lists destinations allowed whatever their address, each one
	// of:
	//
	//	10.1.2.3 or [fd00::3]     an IP address, on any port
	//	10.1.2.3:8443             an IP address and port
	//	10.1.0.0/16               a CIDR prefix
	//	git.corp.example          a host name, as asked for, on any port
	//	git.corp.example:8443     a host name and port
	//	*.corp.example            any name below corp.example
	//
	// A cloud metadata address is allowed only by an entry naming that very
	// address, never by a host name or a wider prefix. Nil allows nothing
	// beyond the configured endpoints.
	Allow []string

	// AllowSSH lets the go command fetch over ssh:// (and git's scp-like
	// user@host:path) for direct fetches. ssh makes its own connections,
	// which the policy does not see: restrict them in ssh's configuration.
	// The zero value refuses ssh, with a 403 that says how to allow it.
	AllowSSH bool
}

// egressPolicy is an EgressPolicy prepared for checking connections.
type egressPolicy struct {
	allowPrivate bool
	prefixes     []netip.Prefix
	// addrs and names are Allow's single addresses and host names, each
	// with the port it is limited to, or 0 for any.
	addrs []allowedAddr
	names []allowedName
	// endpoints are the configured endpoints, as lower-case host:port.
	endpoints map[string]bool
	logger    *slog.Logger

	// observe, when set, learns of every check; tests set it to see
	// whether a destination was ever allowed or refused.
	observe func(host string, addr netip.AddrPort, err error)
}

type allowedAddr struct {
	addr netip.Addr
	port uint16
}

type allowedName struct {
	name     string // lower case; for a wildcard, the suffix with its dot
	wildcard bool
	port     uint16
}

// newEgressPolicy prepares ep, which logs its refusals to logger.
func newEgressPolicy(ep EgressPolicy, logger *slog.Logger) (*egressPolicy, error) {
	p := &egressPolicy{
		allowPrivate: ep.AllowPrivateNetworks,
		endpoints:    make(map[string]bool),
		logger:       logger,
	}
	for _, entry := range ep.Allow {
		if err := p.addAllowed(strings.TrimSpace(entry)); err != nil {
			return nil, fmt.Errorf("Egress.Allow: %q: %w", entry, err)
		}
	}
	return p, nil
}

// allowEndpoints allows the endpoints, URLs (scheme://host[:port]) or
// host:port, whatever their addresses. It must be called before the policy
// is used.
func (p *egressPolicy) allowEndpoints(endpoints ...string) {
	for _, e := range endpoints {
		if hp := endpointOf(e); hp != "" {
			p.endpoints[hp] = true
		}
	}
}

// forDirect returns a policy like p for the go command's direct fetches,
// without p's configured endpoints: a go-import tag must not be able to
// point the go command or git at an internal upstream proxy (with the
// .netrc credentials the go command would send it). Only the endpoints
// allowed on the result later (the checksum databases) are reachable
// whatever their addresses.
func (p *egressPolicy) forDirect() *egressPolicy {
	d := *p
	d.endpoints = make(map[string]bool)
	return &d
}

// configuredEndpoints lists the upstreams of every route and the checksum
// databases, which the egress policy allows whatever their addresses.
func (p *Proxy) configuredEndpoints() []string {
	var eps []string
	for _, r := range p.routes {
		for _, g := range r.groups {
			for _, up := range g.members {
				if up.URL != "direct" && up.URL != "off" {
					eps = append(eps, up.URL)
				}
			}
		}
	}
	for _, db := range p.sumdbs {
		eps = append(eps, db.url)
	}
	return eps
}

func (p *egressPolicy) addAllowed(entry string) error {
	if entry == "" {
		return errors.New("empty")
	}
	if strings.Contains(entry, "/") {
		prefix, err := netip.ParsePrefix(entry)
		if err != nil {
			return errors.New("not a CIDR prefix")
		}
		p.prefixes = append(p.prefixes, prefix.Masked())
		return nil
	}
	host, port := entry, uint16(0)
	if h, ps, err := net.SplitHostPort(entry); err == nil {
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return errors.New("bad port")
		}
		host, port = h, uint16(n)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(host); err == nil {
		p.addrs = append(p.addrs, allowedAddr{a.Unmap().WithZone(""), port})
		return nil
	}
	name := normalizeHost(host)
	wildcard := strings.HasPrefix(name, "*.")
	if wildcard {
		name = name[1:]
	}
	check := strings.TrimPrefix(name, ".")
	if check == "" || strings.ContainsAny(check, "*:[]@ \t") || strings.Contains(check, "..") {
		return errors.New("not an IP address, CIDR prefix or host name")
	}
	p.names = append(p.names, allowedName{name, wildcard, port})
	return nil
}

// endpointOf returns the lower-case host:port of a URL or host:port.
func endpointOf(s string) string {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Hostname() == "" {
			return ""
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		if port == "" {
			return ""
		}
		return net.JoinHostPort(normalizeHost(u.Hostname()), port)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return ""
	}
	return net.JoinHostPort(normalizeHost(host), port)
}

func normalizeHost(host string) string {
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

// isLocalhostName reports whether host is "localhost" or a name below it,
// which RFC 6761 keeps on the loopback interface.
func isLocalhostName(host string) bool {
	host = normalizeHost(host)
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// check decides a connection to addr, asked for as host (a name or an
// address) on addr's port. ctx says which module it is for, for the log.
func (p *egressPolicy) check(ctx context.Context, host string, addr netip.AddrPort) error {
	// An IPv4-mapped IPv6 address reaches the IPv4 address.
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	err := p.decide(host, addr)
	if p.observe != nil {
		p.observe(host, addr, err)
	}
	if err != nil {
		p.logRefusal(ctx, err)
	}
	return err
}

// checkUnresolved decides a connection to host:port that an egress proxy
// resolves, not this process: an address (in any form a resolver reads as
// one), or "localhost", is checked as the address it is; any other name
// is the egress proxy's to check.
func (p *egressPolicy) checkUnresolved(ctx context.Context, host string, port uint16) error {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(host); err == nil {
		return p.check(ctx, host, netip.AddrPortFrom(a, port))
	}
	if a, ok := parseNumericIPv4(host); ok {
		return p.check(ctx, host, netip.AddrPortFrom(a, port))
	}
	if isLocalhostName(host) {
		return p.check(ctx, host, netip.AddrPortFrom(netip.IPv6Loopback(), port))
	}
	return nil
}

// parseNumericIPv4 reads host as inet_aton(3), and so getaddrinfo, curl,
// browsers and the HTTP and SOCKS proxies built on them, read an IPv4
// address: one to four parts, each decimal, octal (a leading 0) or hex
// (0x), the last one filling the bytes left, and an optional final dot.
// Go reads none of these forms ("127.1", "2130706433", "0177.0.0.1",
// "0x7f.1") as an address, but an egress proxy would connect to one.
func parseNumericIPv4(host string) (netip.Addr, bool) {
	parts := strings.Split(strings.TrimSuffix(host, "."), ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var addr uint64
	for i, part := range parts {
		base := 10
		switch {
		case len(part) >= 2 && (part[:2] == "0x" || part[:2] == "0X"):
			base, part = 16, part[2:]
			if part == "" {
				part = "0" // "0x" alone is 0, to inet_aton as to browsers
			}
		case len(part) >= 2 && part[0] == '0':
			base, part = 8, part[1:]
		}
		if part == "" || part[0] == '+' || part[0] == '-' {
			return netip.Addr{}, false
		}
		n, err := strconv.ParseUint(part, base, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		// Every part but the last is one byte; the last fills the rest.
		bits := uint(8)
		if i == len(parts)-1 {
			bits = uint(8 * (4 - i))
		}
		if n >= 1<<bits {
			return netip.Addr{}, false
		}
		addr = addr<<bits | n
	}
	return netip.AddrFrom4([4]byte{byte(addr >> 24), byte(addr >> 16), byte(addr >> 8), byte(addr)}), true
}

// checkDialAddr is check for a net.Dialer's Control function, which is
// given the address about to be connected to as a string.
func (p *egressPolicy) checkDialAddr(ctx context.Context, host, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// Fail closed: an address that cannot be read cannot be allowed.
		return &egressRefusedError{host: host, what: "an address that cannot be checked (" + address + ")"}
	}
	return p.check(ctx, host, ap)
}

func (p *egressPolicy) decide(host string, ap netip.AddrPort) error {
	host = normalizeHost(host)
	port := ap.Port()
	a := ap.Addr().Unmap()
	ps := strconv.Itoa(int(port))
	// Configured endpoints are matched as they are asked for, not by
	// address: a stranger's name for the same address is not configured.
	if p.endpoints[net.JoinHostPort(host, ps)] {
		return nil
	}
	class, what := classifyAddr(a)
	if class == addrPublic {
		return nil
	}
	if p.allowedByEntry(host, a, port, class == addrMetadata) {
		return nil
	}
	if class == addrPrivate && p.allowPrivate {
		return nil
	}
	return &egressRefusedError{host: host, addr: netip.AddrPortFrom(a, port), what: what, class: class}
}

// allowedByEntry reports whether an Allow entry covers the destination.
func (p *egressPolicy) allowedByEntry(host string, a netip.Addr, port uint16, metadata bool) bool {
	bare := a.WithZone("")
	for _, e := range p.addrs {
		if e.addr == bare && (e.port == 0 || e.port == port) {
			return true
		}
	}
	for _, prefix := range p.prefixes {
		if prefix.Contains(bare) && (!metadata || prefix.IsSingleIP()) {
			return true
		}
	}
	if metadata {
		return false
	}
	for _, e := range p.names {
		if e.port != 0 && e.port != port {
			continue
		}
		if e.wildcard && strings.HasSuffix(host, e.name) || !e.wildcard && host == e.name {
			return true
		}
	}
	return false
}

func (p *egressPolicy) logRefusal(ctx context.Context, err error) {
	var re *egressRefusedError
	if !errors.As(err, &re) || p.logger == nil {
		return
	}
	attrs := []slog.Attr{slog.String("module", egressModule(ctx)), slog.String("host", re.host)}
	if re.addr.IsValid() {
		attrs = append(attrs, slog.String("address", re.addr.String()))
	}
	attrs = append(attrs, slog.String("reason", re.what))
	p.logger.LogAttrs(ctx, slog.LevelWarn, "egress refused", attrs...)
}

// egressModuleKey carries the module a connection is made for, so that the
// policy's log lines name it.
type egressModuleKey struct{}

func withEgressModule(ctx context.Context, modPath string) context.Context {
	return context.WithValue(ctx, egressModuleKey{}, modPath)
}

func egressModule(ctx context.Context) string {
	s, _ := ctx.Value(egressModuleKey{}).(string)
	return s
}

// checkRedirect wraps a redirect policy: the redirect is refused first if
// its URL names a refused address or "localhost". Names are checked when
// they are dialled, which a Transport of the caller's own does not do.
func (p *egressPolicy) checkRedirect(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if err := next(req, via); err != nil {
			return err
		}
		port := req.URL.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[req.URL.Scheme]
		}
		n, _ := strconv.ParseUint(port, 10, 16)
		return p.checkUnresolved(req.Context(), req.URL.Hostname(), uint16(n))
	}
}

// addrClass sorts addresses for the policy.
type addrClass int

const (
	addrPublic addrClass = iota
	addrPrivate
	addrLocal // loopback, link-local, unspecified, multicast, reserved
	addrMetadata
)

// metadataAddrs are the cloud metadata and host agent services: AWS
// (IMDS, ECS and EKS credentials), GCP, Azure (IMDS and WireServer),
// Alibaba, Oracle, Tencent, OpenStack and most others.
var metadataAddrs = map[netip.Addr]bool{
	netip.MustParseAddr("169.254.169.254"): true,
	netip.MustParseAddr("169.254.170.2"):   true,
	netip.MustParseAddr("169.254.170.23"):  true,
	netip.MustParseAddr("169.254.169.123"): true,
	netip.MustParseAddr("169.254.0.23"):    true,
	netip.MustParseAddr("fd00:ec2::254"):   true,
	netip.MustParseAddr("fd00:ec2::23"):    true,
	netip.MustParseAddr("fd00:ec2::123"):   true,
	netip.MustParseAddr("100.100.100.200"): true,
	netip.MustParseAddr("168.63.129.16"):   true,
	netip.MustParseAddr("192.0.0.192"):     true,
}

var (
	// privatePrefixes are ranges of internal networks: RFC 1918, shared
	// address space (RFC 6598), benchmarking (RFC 2544), IETF protocol
	// assignments, unique local IPv6 (RFC 4193), deprecated site-local
	// IPv6 and local-use NAT64 (RFC 8215).
	privatePrefixes = mustParsePrefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
		"100.64.0.0/10", "198.18.0.0/15", "192.0.0.0/24", "fc00::/7", "fec0::/10", "64:ff9b:1::/48")
	// localPrefixes are reserved IPv4 ranges that reach this host or
	// nowhere: "this network" (0.0.0.0/8, which Linux sends to the local
	// host) and the former class E with the broadcast address.
	localPrefixes = mustParsePrefixes("0.0.0.0/8", "240.0.0.0/4")
	// nat64 and sixToFour embed an IPv4 address in an IPv6 one (RFC 6052,
	// RFC 3056): the IPv4 address is what is reached.
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
	// globalUnicast is where every public IPv6 address is.
	globalUnicast = netip.MustParsePrefix("2000::/3")
)

func mustParsePrefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// classifyAddr says what a is, for the policy and its messages.
func classifyAddr(a netip.Addr) (addrClass, string) {
	a = a.Unmap().WithZone("")
	if metadataAddrs[a] {
		return addrMetadata, "a cloud metadata address"
	}
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return classifyEmbedded(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case sixToFour.Contains(a):
			return classifyEmbedded(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	switch {
	case a.IsLoopback():
		return addrLocal, "a loopback address"
	case a.IsUnspecified():
		return addrLocal, "the unspecified address, which reaches this host"
	case a.IsLinkLocalUnicast():
		return addrLocal, "a link-local address"
	case a.IsMulticast():
		return addrLocal, "a multicast address"
	}
	for _, p := range localPrefixes {
		if p.Contains(a) {
			return addrLocal, "a reserved address"
		}
	}
	for _, p := range privatePrefixes {
		if p.Contains(a) {
			return addrPrivate, "a private address"
		}
	}
	if a.Is6() && !globalUnicast.Contains(a) {
		return addrLocal, "a reserved address"
	}
	return addrPublic, ""
}

func classifyEmbedded(v4 netip.Addr) (addrClass, string) {
	class, what := classifyAddr(v4)
	if class == addrPublic {
		return class, what
	}
	return class, what + " (" + v4.String() + ", embedded in an IPv6 address)"
}

// egressRefusedError is a connection the egress policy refused. Clients
// get 403 with its message: a refusal is no reason to try another proxy.
type egressRefusedError struct {
	host  string         // as asked for
	addr  netip.AddrPort // the refused address; invalid if none was resolved
	what  string         // what the address is
	class addrClass
}

func (e *egressRefusedError) Error() string {
	// A name is reported as asked for, not with the address it resolved
	// to: clients read this, and must not learn the internal addresses
	// behind names (the warning logged names the address).
	dest := e.host
	if dest == "" && e.addr.IsValid() {
		dest = e.addr.String()
	}
	var how string
	switch e.class {
	case addrMetadata:
		how = "only an Egress.Allow entry naming this very address allows it"
	case addrPrivate:
		how = "allow it with Egress.Allow, or private networks with Egress.AllowPrivateNetworks"
	default:
		how = "allow it with Egress.Allow"
	}
	return fmt.Sprintf("the egress policy refuses to connect to %s: %s; %s", dest, e.what, how)
}

// Refusals of the limits the egress policy sets on the go command's tools.
var (
	errSSHRefused         = errors.New("the egress policy refuses git over ssh, which connects by itself, outside the policy; allow it with Egress.AllowSSH")
	errGitProtocolRefused = errors.New("the egress policy lets git fetch over https and http only (and ssh with Egress.AllowSSH)")
	errVCSRefused         = errors.New("the egress policy lets the go command use git only, the one tool it confines; GOVCS in Proxy.Env allows others, outside the policy")
)

// egressRefusal returns the policy's refusal that err wraps, if any.
func egressRefusal(err error) *egressRefusedError {
	var re *egressRefusedError
	if errors.As(err, &re) {
		return re
	}
	return nil
}
