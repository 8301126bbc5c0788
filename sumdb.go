package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
)

// sumGolangOrgKey is the verifier key of sum.golang.org, as the go command
// has it built in.
const sumGolangOrgKey = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"

// maxSumDBSize caps what a checksum database sends: notes, records and
// tiles are a few kilobytes.
const maxSumDBSize = 1 << 20

// sumDB is a checksum database the proxy serves at /sumdb/<name>/ and, for
// the one GOSUMDB names, verifies downloads against.
type sumDB struct {
	name string
	url  string // the database's own base URL, no trailing slash

	// explicit is set when the configuration gave the URL: it is then
	// used as is, bypassing the upstream proxies, as the go command does.
	explicit bool
	// base is where requests go once found: an upstream proxy that
	// serves the database, or url. Guarded by baseMu.
	baseMu sync.Mutex
	base   string

	// For the verifying database only:
	key      string
	clientMu sync.Mutex
	client   *sumdb.Client // see lookup
	// newClient makes a client like the first.
	newClient func() *sumdb.Client
	// broken holds the report of the database's misbehaviour (a forked
	// log) once seen; from then on nothing is verified against it.
	broken atomic.Pointer[string]

	mu     sync.Mutex
	latest []byte // the newest verified tree note

	lookups recordLookups // of the verifying database
}

// parseGOSUMDB reads GOSUMDB as the go command does: "off", a known name,
// or "name+key" optionally followed by the database's URL.
func parseGOSUMDB(v string) (*sumDB, error) {
	v = strings.TrimSpace(v)
	switch v {
	case "off":
		return nil, nil
	case "", "sum.golang.org":
		return &sumDB{name: "sum.golang.org", url: "https://sum.golang.org", key: sumGolangOrgKey}, nil
	case "sum.golang.google.cn":
		return &sumDB{name: "sum.golang.org", url: "https://sum.golang.google.cn", key: sumGolangOrgKey, explicit: true}, nil
	}
	key, rawURL, _ := strings.Cut(v, " ")
	verifier, err := note.NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("invalid GOSUMDB %q: %w", v, err)
	}
	db := &sumDB{name: verifier.Name(), key: key, url: "https://" + verifier.Name()}
	if rawURL = strings.TrimSpace(rawURL); rawURL != "" {
		db.explicit = true
		if db.url, err = sumDBURL(rawURL); err != nil {
			return nil, fmt.Errorf("invalid GOSUMDB %q: %w", v, err)
		}
	}
	return db, nil
}

// parseSumDBEntry reads one SumDBs entry: "name" or "name URL".
func parseSumDBEntry(v string) (*sumDB, error) {
	name, rawURL, _ := strings.Cut(strings.TrimSpace(v), " ")
	if name == "" || strings.ContainsAny(name, "/+") {
		return nil, fmt.Errorf("invalid checksum database entry %q: want \"name\" or \"name URL\"", v)
	}
	db := &sumDB{name: name, url: "https://" + name}
	if rawURL = strings.TrimSpace(rawURL); rawURL != "" {
		db.explicit = true
		var err error
		if db.url, err = sumDBURL(rawURL); err != nil {
			return nil, fmt.Errorf("invalid checksum database entry %q: %w", v, err)
		}
	}
	return db, nil
}

func sumDBURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("URL scheme must be http or https")
	}
	return strings.TrimSuffix(raw, "/"), nil
}

// initSumDBs sets up the served checksum databases and the verifier.
func (p *Proxy) initSumDBs() error {
	p.sumdbs = map[string]*sumDB{}
	verifier, err := parseGOSUMDB(p.conf.goEnv.sumDB)
	if err != nil {
		return err
	}
	if verifier != nil {
		verifier.client = sumdb.NewClient(&sumDBOps{p: p, db: verifier})
		verifier.newClient = func() *sumdb.Client { return sumdb.NewClient(&sumDBOps{p: p, db: verifier}) }
		p.verifier = verifier
		p.sumdbs[verifier.name] = verifier
	}
	if p.sumdbs["sum.golang.org"] == nil {
		p.sumdbs["sum.golang.org"] = &sumDB{name: "sum.golang.org", url: "https://sum.golang.org"}
	}
	for _, entry := range p.conf.sumDBs {
		db, err := parseSumDBEntry(entry)
		if err != nil {
			return err
		}
		if p.sumdbs[db.name] == nil || p.sumdbs[db.name] != p.verifier {
			p.sumdbs[db.name] = db
		}
	}
	return nil
}

// fetchFromSumDB downloads a checksum database file for a client or for
// the proxy's own verification.
func (p *Proxy) fetchFromSumDB(ctx context.Context, req *request) (*fetched, error) {
	start := time.Now()
	base, err := p.sumDBBase(untracked(ctx), req.db)
	if err != nil {
		return nil, err
	}
	ctx, tracked := p.trackFetch(ctx, req, "sumdb/"+req.db.name)
	f, err := p.downloader.get(ctx, base+"/"+escapeURLPath(req.dbPath), target{module: req.modPath, version: req.version, limit: maxSumDBSize,
		probe: base + "/latest"})
	tracked(f, err)
	var size int64
	outcome := "ok"
	if err != nil {
		outcome = err.Error()
	} else {
		size = f.size
	}
	p.logger().LogAttrs(ctx, levelFor(err), "checksum database fetch",
		slog.String("db", req.db.name), slog.String("file", req.dbPath), slog.Int64("bytes", size),
		slog.Duration("duration", time.Since(start)), slog.String("outcome", outcome))
	return f, err
}

// sumDBBase finds how to reach a database, as the go command does: unless
// the configuration gave its URL, through the first upstream proxy (in
// GOPROXY order) that answers /sumdb/<name>/supported, falling through
// after 404 or 410 (or any error after '|'); after "direct" or "off", or
// when no proxy serves it, directly. A proxy failing otherwise makes the
// database unavailable for now; the next request looks again.
func (p *Proxy) sumDBBase(ctx context.Context, db *sumDB) (string, error) {
	if db.explicit {
		return db.url, nil
	}
	db.baseMu.Lock()
	defer db.baseMu.Unlock()
	if db.base != "" {
		return db.base, nil
	}
	base := db.url
walk:
	for _, g := range p.routes[len(p.routes)-1].groups {
		for _, up := range g.members {
			if up.URL == "direct" || up.URL == "off" {
				break walk
			}
			f, err := p.downloader.get(ctx, up.URL+"/sumdb/"+db.name+"/supported", target{limit: maxSumDBSize})
			if err == nil {
				f.close()
				base = up.URL + "/sumdb/" + db.name
				break walk
			}
			if !notFound(err) && !up.FallBackOnError {
				return "", err
			}
		}
	}
	db.base = base
	p.logger().Info("checksum database reached through", "db", db.name, "base", redactURL(base))
	return base, nil
}

// errUnverified marks content that could not be checked because the
// checksum database was out of reach and AllowUnverified let it through:
// it is served but not cached.
var errUnverified = errors.New("not verified: the checksum database could not be reached")

// verifies reports whether req's file is checked against the checksum
// database before it is cached: Go toolchains always are (see
// sumDBExempt).
func (p *Proxy) verifies(req *request) bool {
	return (req.kind == kindMod || req.kind == kindZip) && p.verifiesModule(req.modPath)
}

// verifiesModule reports whether the .mod and .zip files of modPath are
// checked against the checksum database: a Go toolchain's always, even
// without a database (when they fail), others unless exempt.
func (p *Proxy) verifiesModule(modPath string) bool {
	return isToolchain(modPath) || p.verifier != nil && !p.sumDBExempt(modPath)
}

// sumDBExempt reports whether GONOSUMDB (or GOPRIVATE) or a Private
// route keeps modPath away from checksum databases. A Go toolchain never
// is: the go command checks golang.org/toolchain against the checksum
// database whatever GONOSUMDB says (toolchains cannot be listed in go.sum;
// cmd/go/internal/modfetch.useSumDB), and so does the proxy.
func (p *Proxy) sumDBExempt(modPath string) bool {
	if isToolchain(modPath) {
		return false
	}
	return module.MatchPrefixPatterns(p.conf.goEnv.noSumDB, modPath) || p.routeFor(modPath).private
}

// toolchainModule is the module of Go toolchains, which the go command
// downloads through GOPROXY for GOTOOLCHAIN switches: versions such as
// v0.0.1-go1.22.0.linux-amd64, a zip of a whole Go distribution.
const toolchainModule = "golang.org/toolchain"

func isToolchain(modPath string) bool { return modPath == toolchainModule }

// verify checks a downloaded .mod or .zip against the checksum database
// named by GOSUMDB, unless verification is off or GONOSUMDB exempts the
// module (whose path is then never sent to the database). The version's
// lookup runs already, most of the time (see sumlookup.go): the file is
// hashed meanwhile.
func (p *Proxy) verify(ctx context.Context, req *request, f *fetched) (err error) {
	if !p.verifies(req) {
		return nil
	}
	defer func() { p.reportVerification(req, err) }()
	if err := p.cannotVerify(req); err != nil {
		return err
	}
	db := p.verifier
	l := p.lookupOf(ctx, req.modPath, req.version)

	var got, lookup string
	switch req.kind {
	case kindZip:
		got, err = zipHash(ctx, f)
		lookup = req.version
	case kindMod:
		got, err = dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(f.data)), nil
		})
		lookup = req.version + "/go.mod"
	}
	if err != nil {
		return failed(failInvalidContent, "hashing %s: %w", req, err)
	}
	if err := l.wait(ctx); err != nil {
		return failed(failUnverifiable, "verifying %s@%s: checksum database %s: %v", req.modPath, req.version, db.name, err)
	}
	// The record was fetched through the proxy's own cache first: a
	// failure there says whether the database is unreachable or lacks
	// the module, which the client's flattened errors no longer tell
	// apart.
	if err := l.fetchErr; err != nil {
		if !notFound(err) && p.conf.allowUnverified && !isToolchain(req.modPath) {
			p.logger().LogAttrs(ctx, slog.LevelWarn, "serving unverified", slog.String("module", req.modPath),
				slog.String("version", req.version), slog.String("error", err.Error()))
			return errUnverified
		}
		// No err: a database's 404 must not pass for the module's.
		return failed(failUnverifiable, "verifying %s@%s: checksum database %s: %v", req.modPath, req.version, db.name, err)
	}
	if l.err != nil {
		if report := db.broken.Load(); report != nil {
			return failed(failUnverifiable, "SECURITY ERROR: %s", *report)
		}
		return failed(failUnverifiable, "verifying %s: %w", req, l.err)
	}
	lines := l.zip
	if req.kind == kindMod {
		lines = l.mod
	}
	want := req.modPath + " " + lookup + " " + got
	for _, line := range lines {
		if line == want {
			return nil
		}
	}
	expected := "(no hash)"
	if len(lines) > 0 {
		expected = lines[0][strings.LastIndexByte(lines[0], ' ')+1:]
	}
	msg := fmt.Sprintf("SECURITY ERROR: %s@%s: checksum mismatch\n\tdownloaded: %s\n\t%s: %s\n"+
		"The upstream served content that does NOT match what the checksum database recorded; it was refused and not cached.",
		req.modPath, lookup, got, db.name, expected)
	p.logger().LogAttrs(ctx, slog.LevelError, "checksum mismatch", slog.String("module", req.modPath),
		slog.String("version", lookup), slog.String("downloaded", got), slog.String("expected", expected), slog.String("db", db.name))
	return &failure{kind: failChecksumMismatch, msg: msg}
}

// cannotVerify returns the failure of any verification of req's file
// known before it is downloaded: a toolchain without a checksum database,
// or a database that served inconsistent data. The fetch then fails at
// once, rather than stream a zip that could only be aborted.
func (p *Proxy) cannotVerify(req *request) error {
	if !p.verifies(req) {
		return nil
	}
	db := p.verifier
	if db == nil {
		// A toolchain with GOSUMDB=off: the go command refuses it too.
		return failed(failUnverifiable, "%s@%s: Go toolchains are always verified against a checksum database, and GOSUMDB=off names none", req.modPath, req.version)
	}
	if report := db.broken.Load(); report != nil {
		return failed(failUnverifiable,
			"SECURITY ERROR: checksum database %s served inconsistent data earlier, so nothing is verified against it any more; %s@%s cannot be verified:\n%s",
			db.name, req.modPath, req.version, *report)
	}
	return nil
}

// zipHash returns a fetched zip's dirhash.Hash1: the one its scan took as
// it arrived, if the scan could follow it; else read from the file.
func zipHash(ctx context.Context, f *fetched) (string, error) {
	if scan := f.verifiedScan(ctx); scan != nil {
		return scan.hash1()
	}
	return dirhash.HashZip(f.file.Name(), dirhash.Hash1)
}

// reportVerification reports the Verification metric of a check of req's
// file that ended with err.
func (p *Proxy) reportVerification(req *request, err error) {
	outcome := VerifyOK
	switch {
	case err == nil:
	case errors.Is(err, errUnverified):
		outcome = VerifyUnverified
	case kindOf(err) == failChecksumMismatch:
		outcome = VerifyMismatch
	case kindOf(err) == failUnverifiable:
		outcome = VerifyUnreachable
	default:
		return // the file could not be hashed: no check was made
	}
	db := "off" // a toolchain with GOSUMDB=off
	if p.verifier != nil {
		db = p.verifier.name
	}
	p.conf.metrics.verification(VerificationMetric{DB: db, Kind: req.metricKind(), Outcome: outcome})
}

// lookup asks the database's client for the go.sum lines of path@version.
// The client remembers a failed read of a record or tile for as long as it
// lives, so a failure that is not the database's misbehaviour replaces it
// with a fresh one, which the next verification uses: an unreachable
// moment of the database must not fail that module for good. The verified
// tree lives in sumDBOps, not in the client, so a fresh client cannot be
// rolled back.
func (db *sumDB) lookup(path, version string) ([]string, error) {
	db.clientMu.Lock()
	c := db.client
	db.clientMu.Unlock()
	lines, err := c.Lookup(path, version)
	if err != nil && db.broken.Load() == nil {
		db.clientMu.Lock()
		if db.client == c {
			db.client = db.newClient()
		}
		db.clientMu.Unlock()
	}
	return lines, err
}

// sumDBFile is the verifier's way to a checksum database file: through
// the hot tier and the cache, else from the database (sharing the fetch
// with clients asking for the same file), as a client asking
// /sumdb/<name>/<path> would get it, but never through open: nothing
// published or merged is a database's.
func (p *Proxy) sumDBFile(ctx context.Context, db *sumDB, path string) ([]byte, error) {
	req, err := p.parseSumDBRequest(db.name + "/" + path)
	if err != nil {
		return nil, err
	}
	c, ok := p.openHot(req)
	if !ok {
		if c, err = p.openStored(ctx, req, true, p.hotGen()); err != nil {
			return nil, err
		}
	}
	c.close()
	return c.data, nil // never a zip: in memory
}

// sumDBOps gives the checksum database client the proxy's cache for tiles
// and records, and the proxy's memory for the verified tree.
type sumDBOps struct {
	p  *Proxy
	db *sumDB
}

func (o *sumDBOps) ReadRemote(path string) ([]byte, error) {
	// The client's paths start with a slash and match the served layout.
	return o.p.sumDBFile(context.Background(), o.db, strings.TrimPrefix(path, "/"))
}

func (o *sumDBOps) ReadConfig(file string) ([]byte, error) {
	if file == "key" {
		return []byte(o.db.key), nil
	}
	if file != o.db.name+"/latest" {
		return nil, fmt.Errorf("unknown checksum database config file %q", file)
	}
	o.db.mu.Lock()
	defer o.db.mu.Unlock()
	if o.db.latest == nil {
		// A restarted proxy resumes from the tree it verified before, so
		// that a database cannot roll back or fork across restarts.
		if cf, err := o.p.conf.cacher.Get(context.Background(), o.latestName()); err == nil {
			o.db.latest, _ = io.ReadAll(io.LimitReader(cf, maxSumDBSize))
			cf.Close()
		}
	}
	return o.db.latest, nil
}

func (o *sumDBOps) WriteConfig(file string, old, new []byte) error {
	if file != o.db.name+"/latest" {
		return fmt.Errorf("unknown checksum database config file %q", file)
	}
	o.db.mu.Lock()
	defer o.db.mu.Unlock()
	if !bytes.Equal(o.db.latest, old) {
		return sumdb.ErrWriteConflict
	}
	o.db.latest = bytes.Clone(new)
	if err := o.p.conf.cacher.Put(context.Background(), o.latestName(), bytes.NewReader(new)); err != nil {
		o.p.logger().Warn("storing the verified checksum tree failed", "db", o.db.name, "error", err)
	}
	return nil
}

// latestName is where the newest verified tree is kept, beside the
// database's served files but under a name no client request maps to.
func (o *sumDBOps) latestName() string { return "sumdb/" + o.db.name + "/verified/latest" }

// ReadCache serves the client's records and tiles from the proxy's cache,
// where sumDBFile stored them; the client checks them before use.
func (o *sumDBOps) ReadCache(file string) ([]byte, error) {
	cf, err := o.p.conf.cacher.Get(context.Background(), "sumdb/"+file)
	if err != nil {
		return nil, err
	}
	defer cf.Close()
	return io.ReadAll(io.LimitReader(cf, maxSumDBSize))
}

// WriteCache does nothing: ReadRemote already cached what it fetched.
func (o *sumDBOps) WriteCache(file string, data []byte) {}

func (o *sumDBOps) Log(msg string) {
	o.p.logger().Debug("checksum database client", "db", o.db.name, "msg", msg)
}

// SecurityError stops verification against the database: it has shown
// two different logs, so nothing it says can be trusted.
func (o *sumDBOps) SecurityError(msg string) {
	o.db.broken.Store(&msg)
	o.p.logger().Error("SECURITY ERROR: checksum database served inconsistent data; verification against it is stopped",
		"db", o.db.name, "report", msg)
}
