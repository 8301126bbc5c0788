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
// With [Proxy.Redirect] enabled, a plain GET of a zip in the cache may be
// answered 307 Temporary Redirect to a short-lived URL of the store
// itself, which the go command follows.
//
// A request with the header "Disable-Module-Fetch: true" is answered only
// from what is cached or published, as proxy.golang.org does: a file that
// is not answers 404, which shared caches are told not to keep.
//
// Failures answer in plain text, which the go command shows its user: 404
// or 410 when the upstreams have no such module or version (the go command
// then tries its next GOPROXY entry), 403 when the egress policy or
// GOPROXY=off refuses the fetch or the admission policy the version, 502
// when the upstreams fail or send what
// does not validate (a checksum mismatch says SECURITY ERROR) and when the
// egress proxy refuses the proxy's own credentials, 504 when they do not
// answer in time, 400 for a path the go command never sends, 503 once the
// Proxy is closed.
//
// # Admission
//
// With [Proxy.Admission] set (an [AdmissionPolicy], say), version lists
// leave out the versions it hides or refuses, @latest and the queries
// latest, v1 and v1.2 answer the highest version it lists, and a refused
// version's .info, .mod and .zip answer 403 Forbidden with the reason,
// never from the cache and never fetched. Go toolchains
// (golang.org/toolchain) are always verified against the checksum
// database, whatever GONOSUMDB says, as the go command verifies them.
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
//   - POST /-/fill fills the cache from its body, a go.mod, go.sum, list
//     of module versions or SBOM (?input= says which, else its name is
//     guessed from its content), as [Proxy.Fill] does, answering the
//     report as JSON: fetched, cached, failed with reasons, skipped.
//   - POST /-/export answers a bundle (application/gzip, see
//     [Proxy.ExportBundle]) of what its body names, like a fill's, or of
//     everything cached with ?all=1.
//   - POST /-/import imports the bundle in its body ([Proxy.ImportBundle]),
//     answering what it stored as JSON, or 400 with every problem when the
//     bundle is refused.
//   - POST /-/scrub runs a scrub now ([Proxy.ScrubNow]) and answers its
//     report as JSON; 409 if one is running.
//
// # Operations
//
// With [Proxy.Eviction] set, what nobody uses leaves the cache; see
// [Eviction]. [Proxy.Metrics] reports what the proxy does to hooks of the
// embedder's, and [Proxy.LiveView] shows the downloads in flight. A Proxy
// works in the background from its first request (eviction, the probes of
// upstreams that are down, fetches that clients left, scheduled scrubs,
// stale lists being refreshed): [Proxy.Close] ends that work once the
// server has stopped serving.
//
// [Proxy.Fill] brings into the cache what a build needs, planned by
// [Proxy.PlanFill] from a go.mod, a go.sum, a list or an SBOM.
// [Proxy.ExportBundle] carries module versions with the checksum database
// tiles proving them across an air gap, where [Proxy.ImportBundle] checks
// and stores them; [Proxy.ImportModuleDir] imports a module cache.
// [Proxy.ScrubNow] (and [Proxy.Scrub], on a schedule) re-checks what is
// cached. With [Proxy.Offline] set, the proxy serves what it has and
// connects nowhere; [Proxy.StaleWhileRevalidate] answers lists and
// @latest slightly past their time at once while refreshing them.
//
// # Access control
//
// Without Authorize, everything may be read, published (with Hosted) and
// administered. [StaticAuth] grants bearer tokens and basic-auth users
// what they may read, publish and administer; [Proxy.Authorize] takes any
// other decision of yours. A refusal wrapping [ErrUnauthenticated] answers
// 401 with a challenge, any other 403.
package goproxy
