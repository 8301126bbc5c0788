package goproxy

import "net/http"

// Client returns an HTTP client whose requests leave as the Proxy's own
// requests to upstreams do: through Transport, or the one built from
// Dialer (its egress proxy, resolvers and timeouts) under the Egress
// policy, with the credentials of .netrc (NETRC) for the hosts it names,
// refusing redirects from https to http. An [IndexFeed] of the admission
// policy takes it as its Client, so that the feed is reached the way the
// upstreams are; a feed on a loopback or private address must then be
// allowed by Egress.Allow, as any destination the configuration does not
// name. Client initializes the Proxy: it returns nil when the
// configuration is invalid (see Init).
func (p *Proxy) Client() *http.Client {
	if p.Init() != nil {
		return nil
	}
	return p.client
}
