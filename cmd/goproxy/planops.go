package main

import (
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/goproxy-team/goproxy"
)

// The operations settings of a plan: each repository's eviction, and
// the metrics endpoint.

// resolveEviction checks a repository's eviction settings and makes its
// goproxy.Eviction. Whether its cache can evict (list, record uses,
// remove) is the library's to say, when the Proxy is made.
func resolveEviction(e EvictionConfig, key string, p *problems) goproxy.Eviction {
	for field, v := range map[string]int64{"max_age": int64(e.MaxAge), "max_bytes": int64(e.MaxBytes), "interval": int64(e.Interval)} {
		if v < 0 {
			p.add(join(key, "eviction."+field), "must not be negative (0 turns it off)")
		}
	}
	if e.Interval > 0 && e.MaxAge == 0 && e.MaxBytes == 0 {
		p.add(join(key, "eviction.interval"), "is set, but neither max_age nor max_bytes: nothing would be removed")
	}
	return goproxy.Eviction{MaxAge: time.Duration(e.MaxAge), MaxBytes: int64(e.MaxBytes), Interval: time.Duration(e.Interval)}
}

// metricsPathPattern is what a metrics path looks like: path elements
// of letters, digits and - _ . ~.
var metricsPathPattern = regexp.MustCompile(`^(/[A-Za-z0-9_.~-]+)+$`)

// checkMetrics checks the metrics settings that need no repository.
func checkMetrics(cfg *Config, ids *identities, p *problems) {
	m := cfg.Metrics
	switch m.Access {
	case metricsOpen:
	case metricsAdmin:
		admin := false
		for _, u := range ids.users {
			admin = admin || u.admin
		}
		for _, t := range ids.tokens {
			admin = admin || t.admin
		}
		if !admin && m.Enabled {
			p.add("metrics.access", "is admin, but no user or token has admin: true: nobody could read the metrics")
		}
	default:
		p.add("metrics.access", "%q is not open or admin", m.Access)
	}
	if !metricsPathPattern.MatchString(m.Path) {
		p.add("metrics.path", "%q is not a path such as /metrics", m.Path)
	} else if first, _, _ := strings.Cut(m.Path[1:], "/"); strings.Contains(first, ".") {
		// A repository served at / answers paths whose first element
		// has a dot: they are module paths.
		p.add("metrics.path", "%q: its first element must not have a dot, as module paths do", m.Path)
	} else if first == "-" || first == "sumdb" || first == "index" || first == "healthz" || first == "readyz" {
		p.add("metrics.path", "%s is the server's own, or a repository's", "/"+first)
	}
	if m.Addr != "" {
		if _, port, err := net.SplitHostPort(m.Addr); err != nil {
			p.add("metrics.addr", "%q is not a listen address (host:port, or :port): %v", m.Addr, err)
		} else if m.Addr == cfg.Addr && port != "0" { // port 0: any free port
			p.add("metrics.addr", "is addr: leave it empty to serve the metrics there")
		}
	}
}

// checkMetricsPath checks that no repository is served under the
// metrics' path, or the metrics under a repository's prefix, where they
// are served beside the repositories.
func checkMetricsPath(cfg *Config, repos []*repoPlan, p *problems) {
	m := cfg.Metrics
	if !m.Enabled || m.Addr != "" {
		return
	}
	for _, r := range repos {
		if r.Prefix == "/" {
			continue
		}
		if r.Prefix == m.Path || strings.HasPrefix(r.Prefix, m.Path+"/") || strings.HasPrefix(m.Path, r.Prefix+"/") {
			p.add(join(r.key, "prefix"), "%q and metrics.path %q nest: one would hide the other", r.Prefix, m.Path)
		}
	}
}
