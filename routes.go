package goproxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/mod/module"
)

// Upstream is one source of modules: a module proxy, "direct" (the
// modules' origin repositories, fetched by the go command) or "off" (a
// refusal).
type Upstream struct {
	// URL is a module proxy's base URL, "direct" or "off". A URL may carry
	// basic-auth credentials in its user information, as in GOPROXY.
	URL string

	// Priority orders the upstreams of a list: higher is tried first.
	// Upstreams of equal priority share the load, each request starting
	// with the next one in turn and falling through to the others when
	// it fails.
	Priority int

	// FallBackOnError lets the walk continue to lower priorities after any
	// error, as '|' does in GOPROXY; otherwise it continues only when the
	// upstream has no such file (404 or 410), as after ','.
	FallBackOnError bool

	// Credentials sent to this upstream and nowhere else (not across a
	// redirect to another host): basic auth, a bearer token, or headers
	// such as an API key. Without them, a .netrc entry for the host is
	// used, as the go command does.
	Username, Password string
	Token              string
	Header             http.Header
}

// Route sends the modules matching Pattern to upstreams of their own. The
// first matching route wins; modules matching none use GOPROXY.
type Route struct {
	// Pattern lists module path patterns, comma-separated, in GOPRIVATE
	// syntax (golang.org/x/mod/module.MatchPrefixPatterns).
	Pattern string

	// Upstreams are the route's sources, tried by priority. ParseUpstreams
	// builds them from a GOPROXY-syntax list.
	Upstreams []Upstream

	// Private keeps the matching modules away from checksum databases, as
	// GONOSUMDB does: their paths are never sent to one, and they are not
	// verified.
	Private bool
}

// ParseUpstreams turns a list in GOPROXY syntax into Upstreams of
// decreasing priority, the way the go command reads GOPROXY: entries
// separated by ',' or '|', "direct" and "off" ending the list, and host
// names without a scheme taken as https.
func ParseUpstreams(list string) ([]Upstream, error) {
	var ups []Upstream
	for list != "" {
		entry := list
		fallBack := false
		list = ""
		if i := strings.IndexAny(entry, ",|"); i >= 0 {
			fallBack = entry[i] == '|'
			entry, list = entry[:i], entry[i+1:]
		}
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		if entry == "off" || entry == "direct" {
			// The go command ignores what follows these, reserving it for
			// future use; so do we.
			ups = append(ups, Upstream{URL: entry})
			break
		}
		if strings.ContainsAny(entry, ".:/") && !strings.Contains(entry, ":/") && !filepath.IsAbs(entry) {
			entry = "https://" + entry
		}
		if err := checkUpstreamURL(entry); err != nil {
			return nil, err
		}
		ups = append(ups, Upstream{URL: entry, FallBackOnError: fallBack})
	}
	if len(ups) == 0 {
		return nil, errors.New("the upstream list is empty")
	}
	for i := range ups {
		ups[i].Priority = len(ups) - i
	}
	return ups, nil
}

func checkUpstreamURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// Not err itself: url.Parse's errors quote the URL, password and all.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("invalid upstream %q: %v", redactURL(raw), err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("invalid upstream %q: scheme must be http or https", redactURL(raw))
	}
	return nil
}

// route is a Route prepared for walking: upstreams grouped by priority.
type route struct {
	patterns string // "" matches everything (the GOPROXY route)
	private  bool
	groups   []*upstreamGroup
}

// upstreamGroup holds upstreams of equal priority, which share the load.
type upstreamGroup struct {
	members []Upstream
	next    atomic.Uint32 // where the next request starts
}

func newRoute(patterns string, ups []Upstream, private bool) (*route, error) {
	if len(ups) == 0 {
		return nil, fmt.Errorf("route %q has no upstreams", patterns)
	}
	for _, up := range ups {
		if up.URL != "direct" && up.URL != "off" {
			if err := checkUpstreamURL(up.URL); err != nil {
				return nil, err
			}
		}
	}
	sorted := slices.Clone(ups)
	slices.SortStableFunc(sorted, func(a, b Upstream) int { return b.Priority - a.Priority })
	r := &route{patterns: patterns, private: private}
	for i, up := range sorted {
		up.URL = strings.TrimSuffix(up.URL, "/")
		if i == 0 || up.Priority != sorted[i-1].Priority {
			r.groups = append(r.groups, &upstreamGroup{})
		}
		g := r.groups[len(r.groups)-1]
		g.members = append(g.members, up)
	}
	return r, nil
}

// initRoutes prepares the routes: the configured ones in order, then
// GONOPROXY's modules to "direct", then GOPROXY for the rest.
func (p *Proxy) initRoutes() error {
	p.routes = nil
	for _, rt := range p.conf.routes {
		r, err := newRoute(rt.Pattern, rt.Upstreams, rt.Private)
		if err != nil {
			return err
		}
		if rt.Pattern == "" {
			return errors.New("a route has an empty Pattern")
		}
		p.routes = append(p.routes, r)
	}
	if p.conf.goEnv.noProxy != "" {
		r, _ := newRoute(p.conf.goEnv.noProxy, []Upstream{{URL: "direct"}}, false)
		p.routes = append(p.routes, r)
	}
	r, err := newRoute("", p.conf.goEnv.upstreams, false)
	if err != nil {
		return err
	}
	p.routes = append(p.routes, r)
	return nil
}

// triesDirectFirst reports whether a fetch on r may start with the go
// command: "direct" is among its first upstreams.
func (r *route) triesDirectFirst() bool {
	return slices.ContainsFunc(r.groups[0].members, func(up Upstream) bool { return up.URL == "direct" })
}

// routeFor returns the route a module path takes.
func (p *Proxy) routeFor(modPath string) *route {
	for _, r := range p.routes {
		if r.patterns == "" || module.MatchPrefixPatterns(r.patterns, modPath) {
			return r
		}
	}
	return p.routes[len(p.routes)-1]
}
