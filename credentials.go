package goproxy

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/goproxy-team/goproxy/internal/netrc"
)

// credentialsTransport adds each upstream's credentials to the requests for
// that upstream only: matched by scheme, host and path prefix on every
// request, including each hop of a redirect, so they never follow a
// redirect to another host. Hosts with a .netrc entry get its basic auth.
type credentialsTransport struct {
	base      http.RoundTripper
	upstreams []Upstream // with credentials, longest URL first
	netrc     []netrc.Line
}

func newCredentialsTransport(base http.RoundTripper, routes []*route, lines []netrc.Line) http.RoundTripper {
	t := &credentialsTransport{base: base, netrc: lines}
	for _, r := range routes {
		for _, g := range r.groups {
			for _, up := range g.members {
				if up.Username != "" || up.Token != "" || len(up.Header) > 0 {
					t.upstreams = append(t.upstreams, up)
				}
			}
		}
	}
	slices.SortFunc(t.upstreams, func(a, b Upstream) int { return len(b.URL) - len(a.URL) })
	return t
}

func (t *credentialsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") != "" {
		return t.base.RoundTrip(r) // from the URL's user information
	}
	target := r.URL.Scheme + "://" + r.URL.Host + r.URL.Path
	for _, up := range t.upstreams {
		u, err := url.Parse(up.URL)
		if err != nil || u.Scheme != r.URL.Scheme || u.Host != r.URL.Host || !strings.HasPrefix(target, strings.TrimSuffix(up.URL, "/")+"/") {
			continue
		}
		r = r.Clone(r.Context())
		switch {
		case up.Token != "":
			r.Header.Set("Authorization", "Bearer "+up.Token)
		case up.Username != "":
			r.SetBasicAuth(up.Username, up.Password)
		}
		for k, vs := range up.Header {
			r.Header[http.CanonicalHeaderKey(k)] = vs
		}
		return t.base.RoundTrip(r)
	}
	// As the go command: .netrc credentials go over https only.
	if line, ok := netrc.Find(t.netrc, r.URL.Hostname()); ok && r.URL.Scheme == "https" {
		r = r.Clone(r.Context())
		r.SetBasicAuth(line.Login, line.Password)
	}
	return t.base.RoundTrip(r)
}
