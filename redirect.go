package goproxy

import (
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// DownloadRedirect sends clients to the store for the zips it holds, so
// that the bytes flow from the store (an object store's own network, a CDN
// in front of it) rather than through the proxy, as Artifactory's direct
// cloud storage download does. It needs a Cacher that is a
// [CacheRedirector], such as s3cacher.Cacher.
//
// Only a plain GET of a zip in the cache is redirected. A request with a
// Range or a condition is answered by the proxy (a 304 costs less than a
// redirect), and so are published versions (in Hosted, which no URL
// exposes) and a zip just fetched (still being stored). The answer is 307
// Temporary Redirect with Cache-Control: no-store, its Location a URL that
// lets whoever holds it download that one zip until it expires. The go
// command follows it (leaving behind any credentials it sent the proxy:
// Go's HTTP client keeps them from other hosts) and checks the zip against
// go.sum and the checksum database as always; the store sends the bytes
// the proxy verified before it cached them (with the store's own entity
// tag, not the proxy's). The store must be reachable by the clients, at
// the address the Cacher uses, over https if they reach the proxy over
// https: the go command refuses a redirect from https to http, so a
// request that reached the proxy over TLS is then served by the proxy
// (behind a load balancer that terminates TLS, the proxy cannot tell).
type DownloadRedirect struct {
	// Enabled turns redirects on.
	Enabled bool

	// Expiry is how long a redirect's URL works. Zero means a minute: a
	// client follows a redirect at once.
	Expiry time.Duration

	// Allow decides, when the Proxy has Authorize, whether a zip that
	// Authorize let r read may be redirected. The URL lets anyone who sees
	// it (in a log, on a shared machine) download the zip until it
	// expires, and cannot be revoked sooner: that suits modules anyone may
	// read, not those that need access control. Nil means no redirects
	// when Authorize is set. Without Authorize every cached zip may be
	// redirected and Allow is not called.
	Allow func(r *http.Request, modulePath string) bool
}

// withDefaults returns d with its zero fields set to their defaults.
func (d DownloadRedirect) withDefaults() DownloadRedirect {
	if d.Expiry <= 0 {
		d.Expiry = time.Minute
	}
	return d
}

// check reports a redirect that c cannot give.
func (d DownloadRedirect) check(c Cacher) error {
	if _, ok := c.(CacheRedirector); d.Enabled && !ok {
		return errors.New("Redirect is enabled, but the Cacher cannot give URLs of its entries (it is not a CacheRedirector)")
	}
	return nil
}

// redirect answers r with a redirect to the store, if c, req's file, may
// be downloaded from there (see DownloadRedirect), and reports whether it
// did. A store that fails to give a URL is logged, and the proxy serves
// the file itself.
func (p *Proxy) redirect(w http.ResponseWriter, r *http.Request, req *request, c *content) bool {
	d := p.conf.redirect
	if !d.Enabled || c.from != fromCache || req.kind != kindZip || r.Method != http.MethodGet || conditional(r) {
		return false
	}
	if p.conf.authorize != nil && (d.Allow == nil || !d.Allow(r, req.modPath)) {
		return false
	}
	u, err := p.conf.cacher.(CacheRedirector).PresignGet(r.Context(), req.name, d.Expiry)
	if err != nil {
		p.logger().LogAttrs(r.Context(), slog.LevelWarn, "redirect to the store failed, serving the file",
			slog.String("file", req.name), slog.String("error", err.Error()))
		p.conf.metrics.storeError(StoreErrorMetric{Role: StoreCache, Op: StoreRedirect})
		return false
	}
	if r.TLS != nil && u.Scheme != "https" {
		// The go command refuses a redirect from https to http, and its
		// error would print the URL, signature and all: serve it here.
		p.logger().LogAttrs(r.Context(), slog.LevelDebug, "not redirecting an https request to the store's plain http endpoint, serving the file",
			slog.String("file", req.name))
		return false
	}
	if p.usage != nil {
		p.usage.record(req.name) // served, if from the store: eviction must know
	}
	h := w.Header()
	h.Set("Location", u.String())
	// The URL expires: neither the client nor a cache in between may
	// keep the redirect for longer.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true
}
