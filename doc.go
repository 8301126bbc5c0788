// Package goproxy is a Go module proxy as an embeddable [http.Handler].
//
// A [Proxy] serves the module proxy protocol the go command speaks
// (https://go.dev/ref/mod#goproxy-protocol) from a [Cacher], fetching what it
// lacks from the upstreams named in GOPROXY syntax, validating everything
// before it is cached. Its zero value works and reads its upstream settings
// from the same environment variables as the go command. Mount it at the
// root of a server, or under a prefix with [http.StripPrefix], next to other
// routes.
//
// # Reading
//
// GET and HEAD of $module/@v/list, $module/@latest and
// $module/@v/$version.info, .mod and .zip answer as the protocol says, and
// /sumdb/$name/... answers for the checksum databases the proxy is
// configured for, so that the go command can verify through it. Every file
// is served with an entity tag naming its content, Last-Modified, and the
// answers http.ServeContent gives to Range and conditional requests; text
// is gzip-compressed for clients that take it.
//
// A request with the header "Disable-Module-Fetch: true" is answered only
// from what is cached or published, as proxy.golang.org does: a file that
// is not answers 404, which shared caches are told not to keep.
//
// Failures answer in plain text, which the go command shows its user: 404
// or 410 when the upstreams have no such module or version (the go command
// then tries its next GOPROXY entry), 403 when the egress policy or
// GOPROXY=off refuses the fetch, 502 when the upstreams fail or send what
// does not validate (a checksum mismatch says SECURITY ERROR) and when the
// egress proxy refuses the proxy's own credentials, 504 when they do not
// answer in time, 400 for a path the go command never sends, 503 once the
// Proxy is closed.
//
// # Publishing
//
// With a Hosted store, PUT of $module/@v/$version.zip publishes a module
// version, as [Proxy.Publish] does. It answers 201 when the version is
// published (also when the same bytes are published again), 409 for other
// bytes of a published version ([ErrVersionConflict]), 400 for an invalid
// module ([ErrInvalidModule]), and 405 for a .mod or .info, or without a
// Hosted store ([ErrPublishingDisabled]).
//
// # Administration
//
// These requests are decided by Authorize as [OpAdminister]:
//
//   - DELETE $module/@v/$version.zip (or .info, or .mod) removes the
//     version's three files from the cache, so that the next request
//     fetches them again; DELETE $module/@v/list (or $module/@latest)
//     removes the module's mutable entries: its list, @latest and version
//     query answers. Published versions are never removed. It answers 200
//     saying how many files went, or 501 when the Cacher is not a
//     [CacheDeleter].
//   - GET /-/cached/$module (the module path escaped as in the protocol)
//     answers a JSON object: Path, the module path; Cached and Published,
//     the names stored for the module in the Cacher and in Hosted, for
//     stores that are [CacheWalker]s.
//   - GET /index?since=$time&limit=$n answers the module versions in the
//     order they entered the cache or were published, oldest first, as
//     newline-delimited JSON objects with Path, Version and Timestamp, the
//     format of index.golang.org. since is an RFC 3339 time (the
//     beginning, if absent), limit at most 2000, the default. The feed
//     only grows: a version removed from the cache stays listed, and is
//     listed again when it is fetched again. It is kept on the Cacher when
//     the Cacher is a [CacheIndexLog] (DirCacher keeps a journal), so that
//     a page is read from there whatever the size of the feed.
//
// # Operations
//
// With [Proxy.Eviction] set, what nobody uses leaves the cache; see
// [Eviction]. [Proxy.Metrics] reports what the proxy does to hooks of the
// embedder's, and [Proxy.LiveView] shows the downloads in flight. A Proxy
// works in the background from its first request (eviction, the probes of
// upstreams that are down, fetches that clients left): [Proxy.Close] ends
// that work once the server has stopped serving.
//
// # Access control
//
// Without Authorize, everything may be read, published (with Hosted) and
// administered. [StaticAuth] grants bearer tokens and basic-auth users
// what they may read, publish and administer; [Proxy.Authorize] takes any
// other decision of yours. A refusal wrapping [ErrUnauthenticated] answers
// 401 with a challenge, any other 403.
package goproxy
