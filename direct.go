package goproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/module"

	"github.com/goproxy-team/goproxy/internal/procgroup"
)

// DirectOptions tunes how the proxy fetches modules from their origin
// repositories, by running the go command, when "direct" is reached in an
// upstream list or a module matches GONOPROXY. The zero value gives the
// defaults.
//
// The go command runs as the proxy's process does, with its environment:
// HOME, git's configuration (url.<base>.insteadOf, credential helpers,
// GIT_CONFIG_GLOBAL) and .netrc apply to it. Its own settings are the
// Proxy's: the GO variables of Proxy.Env when that is set (the process's GO
// variables then do not leak in), with GOPROXY=direct, the Proxy's
// GOPRIVATE, GONOSUMDB, GOSUMDB and GOINSECURE, GOFLAGS=-mod=mod
// -modcacherw, GOTOOLCHAIN=local and GOENV=off, so that a go env file of
// whoever runs the proxy cannot change what it does.
//
// The go command and git reach the network only through an HTTP proxy
// that each run gets for itself, on 127.0.0.1 with a credential of its own
// (their HTTPS_PROXY, HTTP_PROXY and ALL_PROXY, and git's http.proxy). It
// applies the Proxy's EgressPolicy to every destination, and leaves
// through the egress proxy of the Proxy's Dialer, as the proxy's own
// requests do (a Dialer without an Env of its own, or no Dialer, follows
// the proxy variables of Proxy.Env, else of the process). git may fetch
// over https and http only (git's protocol.allow settings), and ssh with
// EgressPolicy.AllowSSH; GOVCS is git only unless the environment sets it.
// Proxy.Transport does not apply.
type DirectOptions struct {
	// GoBin is the go command to run. Empty means "go" from PATH.
	GoBin string

	// Dir holds the proxy's own module cache and work directory for direct
	// fetches, never the user's. It belongs to one Proxy: two sharing it
	// would remove each other's files. It must not be inside a Go module,
	// which the go command would take for its own. Empty means
	// "goproxy-direct" in the Proxy's TempDir.
	Dir string

	// Timeout bounds one run of the go command. Zero means 5 minutes.
	Timeout time.Duration

	// MaxConcurrent bounds the go commands running at once. Zero means 4.
	MaxConcurrent int

	// MaxCacheBytes bounds what the go command keeps in Dir between runs:
	// clones of origin repositories, which spare refetching a whole
	// repository for each version, and checksum database tiles. Past it,
	// the least recently fetched clones are removed, checked at most once a
	// minute and only while no go command runs. Version files are never
	// kept: each run's are removed once served. Zero means 1 GiB; a
	// negative value keeps no clone, removing each after its run.
	MaxCacheBytes int64
}

// Limits on what one go command run may produce and on how it stops.
const (
	// maxGoStdout caps the -json output; the longest is a version list.
	maxGoStdout = maxListSize
	maxGoStderr = 64 << 10
	// goWaitDelay is how long the go command and its children have to
	// exit once asked to, and how long their output pipes may stay open
	// after the go command exits, before they are killed.
	goWaitDelay = 10 * time.Second
	// trimInterval spaces out the walks of the module cache that keep it
	// within MaxCacheBytes.
	trimInterval = time.Minute
)

// directRunner runs the go command for direct fetches: one per module at a
// time, at most MaxConcurrent at once, each in the proxy's own module
// cache, from which it removes what every run leaves.
type directRunner struct {
	p        *Proxy
	goBin    string
	goBinErr error // from looking GoBin up; reported by each fetch
	timeout  time.Duration
	maxCache int64
	tempDir  string // where zips go once out of the module cache

	// dialer and transport are the go command's way out, through each
	// run's egressProxy; egressErr, from setting them up, is reported by
	// each fetch.
	dialer    *Dialer
	transport *http.Transport
	egressErr error

	dir      string // DirectOptions.Dir, absolute
	work     string // the go command's working directory: empty, no go.mod
	modCache string // GOMODCACHE
	env      []string

	slots   chan struct{} // one token per running go command
	waiting atomic.Int64  // fetches waiting for a slot; tests watch it
	// modules serializes the runs for one module: each run removes the
	// module's files from the cache, which a concurrent run for another
	// of its versions might be reading.
	modules keyedMutex
	// runs is held shared by every run and exclusively by trim, which
	// must not remove a clone that a go command is using.
	runs     sync.RWMutex
	lastTrim atomic.Int64 // UnixNano of the last trim
}

// newDirectRunner prepares direct fetching for p, after p's settings and
// routes. It checks Dir only if a route can reach "direct", so a proxy
// that never fetches directly does not depend on it; it creates nothing
// on disk until the first fetch.
func newDirectRunner(p *Proxy) (*directRunner, error) {
	o := p.conf.direct
	r := &directRunner{
		p:        p,
		timeout:  o.Timeout,
		maxCache: max(o.MaxCacheBytes, 0),
		tempDir:  p.conf.tempDir,
		slots:    make(chan struct{}, o.MaxConcurrent),
		dir:      o.Dir,
		work:     filepath.Join(o.Dir, "work"),
		modCache: filepath.Join(o.Dir, "mod"),
	}
	if p.usesDirect() {
		if mod := enclosingGoMod(r.work); mod != "" {
			return nil, fmt.Errorf("direct: DirectOptions.Dir %s is inside the module of %s, which the go command would use as its own: choose a directory outside any module", r.dir, mod)
		}
	}
	// A proxy may well run where no go command is installed and never
	// need one, so a failed look-up is reported by the fetches that do.
	r.goBin, r.goBinErr = exec.LookPath(o.GoBin)
	r.env = r.baseEnv(p.conf.proxyEnv)

	// The go command leaves as the Proxy does, through the Dialer's egress
	// proxy, checked by the egress policy.
	r.dialer = p.conf.dialer.withPolicy(p.directEgress)
	if r.transport, r.egressErr = r.dialer.Transport(); r.egressErr == nil {
		r.transport.DisableCompression = true // bodies pass as they come
	}
	return r, nil
}

// usesDirect reports whether any route can reach "direct".
func (p *Proxy) usesDirect() bool {
	for _, rt := range p.routes {
		for _, g := range rt.groups {
			for _, up := range g.members {
				if up.URL == "direct" {
					return true
				}
			}
		}
	}
	return false
}

// enclosingGoMod returns the go.mod file the go command would find from
// dir, as it looks: in dir and then in each parent, except the system
// temporary directory, which it ignores.
func enclosingGoMod(dir string) string {
	tmp := filepath.Clean(os.TempDir())
	for {
		if dir != tmp {
			name := filepath.Join(dir, "go.mod")
			if fi, err := os.Stat(name); err == nil && !fi.IsDir() {
				return name
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// baseEnv builds the go command's environment: the process's, with the
// GO variables of proxyEnv (when set) in place of the process's own, and
// the settings direct fetching needs on top.
func (r *directRunner) baseEnv(proxyEnv []string) []string {
	var env []string
	if proxyEnv == nil {
		env = os.Environ()
	} else {
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "GO") || k == "GOROOT" {
				env = append(env, kv)
			}
		}
		env = append(env, proxyEnv...)
	}
	s := r.p.conf.goEnv
	// git may fetch over https and http, both through the egress proxy;
	// over ssh only when allowed, since it connects by itself; never over
	// git://, file://, ext:: and the like, which go-import tags or
	// insteadOf may name. This is said in git's protocol.allow settings,
	// not in GIT_ALLOW_PROTOCOL, whose every scheme the go command counts
	// as secure: given "http" there, it goes on to plain http:// when
	// https:// fails for a path ending in ".git", GOINSECURE or not.
	env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GIT_ALLOW_PROTOCOL=") })
	ssh := "never"
	if r.p.conf.egress.AllowSSH {
		ssh = "always"
	}
	env = addGitConfig(env,
		[2]string{"protocol.allow", "never"},
		[2]string{"protocol.https.allow", "always"},
		[2]string{"protocol.http.allow", "always"},
		[2]string{"protocol.ssh.allow", ssh},
		// Named too, to override any "always" of git's configuration files.
		[2]string{"protocol.git.allow", "never"},
		[2]string{"protocol.file.allow", "never"},
		[2]string{"protocol.ext.allow", "never"},
		[2]string{"protocol.fd.allow", "never"},
	)
	// Other tools than git do not all honour the proxy variables (svn
	// ignores them, hg skips them for localhost): only git, unless the
	// environment says otherwise.
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GOVCS=") && kv != "GOVCS=" }) {
		env = setEnv(env, "GOVCS", "public:git,private:git")
	}
	for _, kv := range [][2]string{
		{"GOPROXY", "direct"},
		{"GONOPROXY", ""},
		{"GOPRIVATE", s.private},
		{"GONOSUMDB", s.noSumDB},
		{"GOSUMDB", s.sumDB}, // empty means sum.golang.org, as for the proxy
		{"GOINSECURE", s.insecure},
		// -modcacherw leaves the cache writable, so that what each run
		// extracts can be removed.
		{"GOFLAGS", "-mod=mod -modcacherw"},
		{"GOTOOLCHAIN", "local"},
		{"GO111MODULE", "on"},
		{"GOWORK", "off"},
		{"GOENV", "off"},
		{"GOPATH", filepath.Join(r.dir, "gopath")},
		{"GOMODCACHE", r.modCache},
		{"GOCACHE", filepath.Join(r.dir, "gocache")},
		// Nobody is there to answer a prompt.
		{"GIT_TERMINAL_PROMPT", "0"},
		{"GCM_INTERACTIVE", "never"},
	} {
		env = setEnv(env, kv[0], kv[1])
	}
	return env
}

// setEnv sets key in env, removing earlier definitions.
func setEnv(env []string, key, value string) []string {
	env = slices.DeleteFunc(env, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == key
	})
	return append(env, key+"="+value)
}

// runEnv is the environment of a run fetching modPath: envFor's, leaving
// through egress. git's http.proxy setting is overridden too, since it
// would take precedence over the proxy variables.
func (r *directRunner) runEnv(modPath string, egress *egressProxy) []string {
	env := slices.Clone(r.envFor(modPath))
	for _, kv := range egress.environ() {
		env = setEnv(env, kv[0], kv[1])
	}
	return addGitConfig(env, [2]string{"http.proxy", egress.url}, [2]string{"http.proxyAuthMethod", "basic"})
}

// addGitConfig adds settings to git's configuration in env, after those it
// already has (GIT_CONFIG_COUNT, GIT_CONFIG_KEY_n, GIT_CONFIG_VALUE_n):
// they take precedence over git's configuration files.
func addGitConfig(env []string, settings ...[2]string) []string {
	n := 0
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GIT_CONFIG_COUNT="); ok {
			n, _ = strconv.Atoi(v)
		}
	}
	n = max(n, 0)
	for _, kv := range settings {
		i := strconv.Itoa(n)
		env = setEnv(env, "GIT_CONFIG_KEY_"+i, kv[0])
		env = setEnv(env, "GIT_CONFIG_VALUE_"+i, kv[1])
		n++
	}
	return setEnv(env, "GIT_CONFIG_COUNT", strconv.Itoa(n))
}

// checkOrigin refuses, before any go command runs, a module path whose
// host is an address or "localhost" that the egress policy refuses: the go
// command would reach some of them without going through the egress
// proxy, and what it does send there ("127.1") is refused anyway.
func (r *directRunner) checkOrigin(ctx context.Context, modPath string) error {
	host, _, _ := strings.Cut(modPath, "/")
	return r.p.egress.checkUnresolved(ctx, host, 443)
}

// envFor is the environment for a run fetching modPath. A route marked
// Private keeps the module away from checksum databases in the go
// command too.
func (r *directRunner) envFor(modPath string) []string {
	if !r.p.routeFor(modPath).private {
		return r.env
	}
	noSumDB := modPath
	if s := r.p.conf.goEnv.noSumDB; s != "" {
		noSumDB = s + "," + modPath
	}
	return setEnv(slices.Clone(r.env), "GONOSUMDB", noSumDB)
}

// fetchDirect fetches req's file from the module's origin repository, by
// running the go command.
func (p *Proxy) fetchDirect(ctx context.Context, req *request) (*fetched, error) {
	if p.direct == nil {
		return nil, failed(failUnavailable, "direct fetching is not initialized: call Proxy.Init")
	}
	return p.direct.fetch(ctx, req)
}

// fetch runs the go command for req and returns the file it yields, as a
// module proxy would serve it.
func (r *directRunner) fetch(ctx context.Context, req *request) (*fetched, error) {
	if err := checkDirectArgs(req.modPath, req.version); err != nil {
		return nil, failed(failBadRequest, "%w", err)
	}
	if r.goBinErr != nil {
		return nil, failed(failUnavailable, "%s: direct fetching needs the go command: %w", req, r.goBinErr)
	}
	if r.egressErr != nil {
		return nil, failed(failUnavailable, "%s: direct fetching: %w", req, r.egressErr)
	}
	ctx = withEgressModule(ctx, req.modPath)
	if err := r.checkOrigin(ctx, req.modPath); err != nil {
		return nil, failed(failRefused, "%s: %w", req, err)
	}
	// "--" ends the flags, so that no argument is ever taken for one; both
	// subcommands accept it.
	var args []string
	switch req.kind {
	case kindList:
		// -retracted, since a proxy's list names every version.
		args = []string{"list", "-e", "-m", "-json", "-versions", "-retracted", "--", req.modPath}
	case kindLatest:
		args = []string{"list", "-e", "-m", "-json", "--", req.modPath + "@latest"}
	case kindInfo, kindMod:
		// Not "go mod download": it would also build the zip.
		args = []string{"list", "-e", "-m", "-json", "--", req.modPath + "@" + req.version}
	case kindZip:
		args = []string{"mod", "download", "-json", "--", req.modPath + "@" + req.version}
	default:
		return nil, fmt.Errorf("%s: not a module file", req)
	}

	release, err := r.acquire(ctx, req.modPath)
	if err != nil {
		return nil, fmt.Errorf("%s: waiting to run the go command: %w", req, err)
	}
	res, err := r.run(ctx, req, args)
	var f *fetched
	if err == nil {
		f, err = r.collect(req, res)
	}
	r.removeModuleFiles(ctx, req.modPath)
	release()
	// With no budget, every run's clone goes at once (when nothing else
	// runs); otherwise walking the cache once a minute is enough.
	if r.maxCache == 0 || time.Since(time.Unix(0, r.lastTrim.Load())) >= trimInterval {
		r.trim(ctx, r.maxCache)
	}
	return f, err
}

// acquire waits for the module's turn, then for a free slot, giving up
// when ctx ends. The module comes first, so that runs waiting for their
// module do not hold slots others could use.
func (r *directRunner) acquire(ctx context.Context, modPath string) (release func(), err error) {
	unlock, err := r.modules.lock(ctx, modPath)
	if err != nil {
		return nil, err
	}
	r.waiting.Add(1)
	select {
	case r.slots <- struct{}{}:
		r.waiting.Add(-1)
	case <-ctx.Done():
		r.waiting.Add(-1)
		unlock()
		return nil, ctx.Err()
	}
	r.runs.RLock()
	return func() {
		r.runs.RUnlock()
		<-r.slots
		unlock()
	}, nil
}

// goModule is what "go list -m -json" and "go mod download -json" print
// about a module.
type goModule struct {
	Path     string
	Version  string
	Versions []string
	Time     *time.Time
	GoMod    string
	Zip      string
	Origin   json.RawMessage
	// Error is a string from go mod download, an object from go list.
	Error json.RawMessage
}

// errorText returns the module's error message, if it has one.
func (m *goModule) errorText() string {
	if len(m.Error) == 0 || string(m.Error) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(m.Error, &s) == nil {
		return s
	}
	var e struct{ Err string }
	if json.Unmarshal(m.Error, &e) == nil && e.Err != "" {
		return e.Err
	}
	return string(m.Error)
}

// run runs the go command with args and decodes what it says about the
// module, turning its failures into the errors the client will see.
func (r *directRunner) run(ctx context.Context, req *request, args []string) (*goModule, error) {
	runCtx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	egress, err := startEgressProxy(ctx, r.dialer, r.transport)
	if err != nil {
		return nil, failed(failInternal, "%s: starting the go command's egress proxy: %w", req, err)
	}
	defer egress.close()
	cmd := exec.CommandContext(runCtx, r.goBin, args...)
	cmd.Dir = r.work
	cmd.Env = r.runEnv(req.modPath, egress)
	stdout, stderr := &cappedBuffer{max: maxGoStdout}, &cappedBuffer{max: maxGoStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = goWaitDelay
	procgroup.Set(cmd)
	subcommand := strings.Join(args[:slices.Index(args, "--")], " ")
	target := args[len(args)-1]

	start := time.Now()
	var runErr error
	if runErr = r.prepareDirs(); runErr == nil {
		runErr = cmd.Run()
	}
	var res goModule
	decodeErr := json.NewDecoder(bytes.NewReader(stdout.Bytes())).Decode(&res)
	var exitErr *exec.ExitError
	unsuccessful := runErr != nil || decodeErr == nil && res.errorText() != ""
	switch refused := egress.refusal(); {
	case runErr != nil && ctx.Err() != nil:
		err = fmt.Errorf("go %s %s: %w", subcommand, target, ctx.Err())
	case unsuccessful && refused != nil:
		// Whatever the go command made of it, the policy's refusal is
		// the reason, and no reason for a client to try elsewhere.
		err = failed(failRefused, "%s: %w", target, refused)
	case runErr != nil && runCtx.Err() != nil:
		err = &failure{kind: failTimedOut, msg: fmt.Sprintf("%s: the go command timed out after %v", target, r.timeout), err: runCtx.Err()}
	case runErr != nil && !errors.As(runErr, &exitErr):
		err = failed(failUnavailable, "%s: running the go command: %w", target, runErr)
	case stdout.truncated:
		err = failed(failTooLarge, "%s: the go command's output exceeds %d bytes", target, maxGoStdout)
	case decodeErr == nil && res.errorText() != "":
		err = r.goError(req, target, res.errorText())
	case runErr != nil:
		msg := strings.TrimSpace(string(stderr.Bytes()))
		if msg == "" {
			msg = "go " + subcommand + ": " + runErr.Error()
		}
		err = r.goError(req, target, msg)
	case decodeErr != nil:
		err = failed(failInvalidContent, "%s: unreadable output from the go command: %w", target, decodeErr)
	}
	outcome := "ok"
	if err != nil {
		outcome = err.Error()
	}
	r.p.logger().LogAttrs(ctx, levelFor(err), "go command",
		slog.String("module", req.modPath), slog.String("version", req.version),
		slog.String("command", "go "+subcommand), slog.Duration("duration", time.Since(start)),
		slog.String("outcome", outcome))
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// prepareDirs creates the go command's directories, again for each run so
// that a Dir removed while the proxy runs comes back.
func (r *directRunner) prepareDirs() error {
	for _, d := range []string{r.work, r.modCache} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// goError turns a failure the go command reported into the client's error:
// not found (or gone, when an origin said so), a refusal of the egress
// policy, or the origin's failure, with the go command's message.
func (r *directRunner) goError(req *request, target, msg string) error {
	msg = r.cleanMessage(msg)
	if !strings.Contains(msg, req.modPath) {
		msg = target + ": " + msg
	}
	// The module path and version are the client's words: leave them out
	// of what decides the status.
	words := msg
	for _, s := range []string{req.modPath, req.version} {
		if s != "" {
			words = strings.ReplaceAll(words, s, "")
		}
	}
	if refusal := gitRefusal(words); refusal != nil {
		return &failure{kind: failRefused, msg: target + ": " + refusal.Error() + "\n" + msg, err: refusal}
	}
	return &failure{kind: directFailKind(words), msg: msg}
}

// gitRefusal returns the egress policy's reason when a failure comes from
// the limits it sets on git (protocol.allow) and on the version control
// tools (GOVCS), or nil.
func gitRefusal(msg string) error {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "transport 'ssh' not allowed"):
		return errSSHRefused
	case strings.Contains(m, "transport '") && strings.Contains(m, "' not allowed"):
		return errGitProtocolRefused
	case strings.Contains(m, "govcs disallows"):
		return errVCSRefused
	}
	return nil
}

// Phrases of the go command's and git's messages, lower case, that decide
// the status of a failure. Each has a space or a colon, so that none can
// come from a module path.
var (
	// directFailures say the origin could not be asked, refused the
	// proxy's credentials, or gave an answer that cannot be trusted: the
	// module may well exist. They are looked for first, since the go
	// command wraps them in words such as "invalid version".
	directFailures = []string{
		"no such host", "could not resolve host", "server misbehaving", "temporary failure in name resolution",
		"connection refused", "failed to connect", "connection reset", "connection timed out",
		"operation timed out", "i/o timeout", "network is unreachable", "no route to host",
		"tls handshake", "x509: ", "ssl certificate problem", "certificate verify failed", "gnutls_handshake() failed",
		"early eof", "hung up unexpectedly",
		"returned error: 5", "500 internal server error", "502 bad gateway", "503 service unavailable", "504 gateway timeout",
		"authentication failed", "permission denied",
		"verifying ", "security error", "checksum mismatch",
		"executable file not found", "command not found",
		"no space left on device", "too many open files",
	}
	// directNotFound say the origin has no such module or version. As for
	// proxy.golang.org, that includes a repository that asks for
	// credentials the proxy does not have: hosts answer so for
	// repositories that do not exist, so as not to reveal private ones.
	directNotFound = []string{
		"unknown revision", "invalid version", "no matching versions", "invalid pseudo-version",
		"not found", "no secure protocol found", "does not appear to be a git repository",
		"no go-import meta tags", "module declares its path as",
		"terminal prompts disabled", "could not read username",
		"returned error: 404",
	}
	directGone = []string{"410 gone", "returned error: 410"}
)

// directFailKind classifies a go command failure by its message.
func directFailKind(msg string) failKind {
	m := strings.ToLower(msg)
	has := func(phrases []string) bool {
		return slices.ContainsFunc(phrases, func(s string) bool { return strings.Contains(m, s) })
	}
	switch {
	case has(directFailures):
		return failUnavailable
	case has(directGone):
		return failGone
	case has(directNotFound):
		return failNotFound
	}
	return failUnavailable
}

// cleanMessage readies a go command message for clients and logs: without
// the "go: " prefixes, with credentials in URLs and the module cache's
// location hidden, and bounded.
func (r *directRunner) cleanMessage(msg string) string {
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "go: ")
	}
	msg = strings.Join(lines, "\n")
	msg = strings.ReplaceAll(msg, r.modCache, "$GOMODCACHE")
	msg = redactURLsIn(msg)
	if len(msg) > maxErrorBody {
		n := maxErrorBody
		for n > 0 && !utf8.RuneStart(msg[n]) {
			n--
		}
		msg = msg[:n] + " …"
	}
	return msg
}

// collect builds the file req asks for from what the go command reported.
func (r *directRunner) collect(req *request, res *goModule) (*fetched, error) {
	bad := func(format string, args ...any) error {
		return &failure{kind: failInvalidContent, msg: req.String() + ": " + fmt.Sprintf(format, args...)}
	}
	if res.Path != req.modPath {
		return nil, bad("the go command reported module %q", res.Path)
	}
	if (req.kind != kindList && res.Version == "") || (req.canonical && res.Version != req.version) {
		return nil, bad("the go command reported version %q", res.Version)
	}
	small := func(data []byte) *fetched {
		return &fetched{data: data, size: int64(len(data)), modTime: time.Now()}
	}
	switch req.kind {
	case kindList:
		var b strings.Builder
		for _, v := range res.Versions {
			// Like proxy.golang.org: tagged versions only.
			if module.CanonicalVersion(v) == v && !module.IsPseudoVersion(v) && module.Check(req.modPath, v) == nil {
				b.WriteString(v + "\n")
			}
		}
		return small([]byte(b.String())), nil
	case kindLatest, kindInfo:
		info := struct {
			Version string
			Time    *time.Time      `json:",omitempty"`
			Origin  json.RawMessage `json:",omitempty"`
		}{Version: res.Version, Time: res.Time}
		if originSafe(res.Origin) {
			info.Origin = res.Origin
		}
		data, err := json.Marshal(info)
		if err != nil {
			return nil, bad("%v", err)
		}
		return small(data), nil
	case kindMod:
		path, err := r.cachePath(res.GoMod)
		if err != nil {
			return nil, bad("go.mod: %v", err)
		}
		data, err := readCapped(path, maxModSize)
		if err != nil {
			return nil, bad("%v", err)
		}
		return small(data), nil
	case kindZip:
		path, err := r.cachePath(res.Zip)
		if err != nil {
			return nil, bad("zip: %v", err)
		}
		f, size, err := moveOut(path, r.tempDir)
		if err != nil {
			return nil, bad("%v", err)
		}
		if size > maxZipSize {
			(&fetched{file: f}).close()
			return nil, bad("zip is larger than %d bytes", maxZipSize)
		}
		return &fetched{file: f, size: size, modTime: time.Now()}, nil
	}
	return nil, bad("not a module file")
}

// originSafe reports whether an Origin may be passed on: only without
// credentials in its URL.
func originSafe(raw json.RawMessage) bool {
	var o struct{ URL string }
	if len(raw) == 0 || json.Unmarshal(raw, &o) != nil {
		return false
	}
	u, err := url.Parse(o.URL)
	return o.URL == "" || err == nil && u.User == nil
}

// cachePath checks that a file the go command named is in the proxy's
// module cache, the only place the proxy reads from.
func (r *directRunner) cachePath(path string) (string, error) {
	if path == "" {
		return "", errors.New("the go command named no file")
	}
	rel, err := filepath.Rel(r.modCache, path)
	if err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("the go command named a file outside the module cache: %s", path)
	}
	return path, nil
}

// readCapped reads a small file, refusing one over limit bytes.
func readCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", filepath.Base(path), limit)
	}
	return data, nil
}

// moveOut moves a zip out of the module cache into a temporary file of
// dir, renaming it where it can and copying it otherwise, and opens it.
// The file is private to the proxy's user: it may hold a private module.
func moveOut(src, dir string) (*os.File, int64, error) {
	tmp, err := os.CreateTemp(dir, "goproxy-direct-*.zip")
	if err != nil {
		return nil, 0, err
	}
	name := tmp.Name()
	tmp.Close()
	fail := func(err error) (*os.File, int64, error) {
		os.Remove(name)
		return nil, 0, err
	}
	if err := os.Chmod(src, 0o600); err != nil {
		return fail(err)
	}
	var f *os.File
	if os.Rename(src, name) == nil {
		if f, err = os.Open(name); err != nil {
			return fail(err)
		}
	} else {
		// Another file system: copy, streaming, within the zip size cap.
		if f, err = os.OpenFile(name, os.O_RDWR|os.O_TRUNC, 0o600); err != nil {
			return fail(err)
		}
		in, err := os.Open(src)
		if err == nil {
			_, err = io.Copy(f, io.LimitReader(in, maxZipSize+1))
			in.Close()
		}
		if err != nil {
			f.Close()
			return fail(err)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fail(err)
	}
	return f, fi.Size(), nil
}

// removeModuleFiles removes what a run left of modPath in the module
// cache: the version files of cache/download and the extracted trees.
// The clones in cache/vcs stay, for the next run.
func (r *directRunner) removeModuleFiles(ctx context.Context, modPath string) {
	esc, err := module.EscapePath(modPath)
	if err != nil {
		return
	}
	var errs []error
	errs = append(errs, removeAll(filepath.Join(r.modCache, "cache", "download", filepath.FromSlash(esc), "@v")))
	parent, base := filepath.Split(filepath.Join(r.modCache, filepath.FromSlash(esc)))
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), base+"@") {
			errs = append(errs, removeAll(filepath.Join(parent, e.Name())))
		}
	}
	if err := errors.Join(errs...); err != nil {
		r.p.logger().LogAttrs(ctx, slog.LevelWarn, "cleaning the direct module cache", slog.String("module", modPath), slog.String("error", err.Error()))
	}
}

// removeAll removes path, making its directories writable first if
// needed: without -modcacherw the go command leaves them read-only.
func removeAll(path string) error {
	if os.RemoveAll(path) == nil {
		return nil
	}
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(path)
}

// trim keeps the module cache within budget bytes, if no go command runs:
// it removes what interrupted runs left, then the least recently fetched
// clones (and the checksum database tiles) until the rest fits. It
// reports whether it ran.
func (r *directRunner) trim(ctx context.Context, budget int64) bool {
	if !r.runs.TryLock() {
		return false // tried again after the next run
	}
	defer r.runs.Unlock()
	r.lastTrim.Store(time.Now().UnixNano())
	start := time.Now()

	download := filepath.Join(r.modCache, "cache", "download")
	vcs := filepath.Join(r.modCache, "cache", "vcs")
	var errs []error
	entries, _ := os.ReadDir(r.modCache)
	for _, e := range entries {
		if e.Name() != "cache" {
			errs = append(errs, removeAll(filepath.Join(r.modCache, e.Name())))
		}
	}
	entries, _ = os.ReadDir(download)
	for _, e := range entries {
		if e.Name() != "sumdb" {
			errs = append(errs, removeAll(filepath.Join(download, e.Name())))
		}
	}

	// Each clone <hash> comes with <hash>.info and <hash>.lock; the
	// .info goes first, so that a half-removed clone is never reused.
	type kept struct {
		paths []string
		size  int64
		used  time.Time
	}
	var all []kept
	var total int64
	add := func(paths ...string) {
		size, used := diskUse(paths[len(paths)-1])
		all = append(all, kept{paths, size, used})
		total += size
	}
	entries, _ = os.ReadDir(vcs)
	for _, e := range entries {
		path := filepath.Join(vcs, e.Name())
		switch {
		case e.IsDir():
			add(path+".info", path+".lock", path)
		case !isDir(strings.TrimSuffix(strings.TrimSuffix(path, ".info"), ".lock")):
			errs = append(errs, os.Remove(path)) // left by an interrupted clone
		}
	}
	if isDir(filepath.Join(download, "sumdb")) {
		add(filepath.Join(download, "sumdb"))
	}
	slices.SortFunc(all, func(a, b kept) int { return a.used.Compare(b.used) })
	removed := 0
	for _, k := range all {
		if total <= budget {
			break
		}
		for _, p := range k.paths {
			if err := removeAll(p); err != nil {
				errs = append(errs, err)
			}
		}
		total -= k.size
		removed++
	}
	attrs := []slog.Attr{slog.Int("removed", removed), slog.Int64("bytes", total), slog.Duration("duration", time.Since(start))}
	if err := errors.Join(errs...); err != nil {
		r.p.logger().LogAttrs(ctx, slog.LevelWarn, "trimming the direct module cache", append(attrs, slog.String("error", err.Error()))...)
	} else {
		r.p.logger().LogAttrs(ctx, slog.LevelDebug, "trimmed the direct module cache", attrs...)
	}
	return true
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// diskUse returns the bytes of the files below dir and when it was last
// changed at its top level: git rewrites FETCH_HEAD at each fetch, which
// makes that the time the go command last fetched into a clone.
func diskUse(dir string) (size int64, used time.Time) {
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			size += fi.Size()
		}
		if depth := strings.Count(strings.TrimPrefix(path, dir), string(filepath.Separator)); depth <= 1 && fi.ModTime().After(used) {
			used = fi.ModTime()
		}
		return nil
	})
	return size, used
}

// checkDirectArgs refuses a module path or version that could be taken
// for anything but a module query on the go command's command line. Both
// have been validated with golang.org/x/mod already; this holds even if
// that validation changes, for the characters that do harm in arguments,
// shells or git revisions.
func checkDirectArgs(modPath, version string) error {
	if err := module.CheckPath(modPath); err != nil {
		return fmt.Errorf("refusing to run the go command for module path %q: %w", modPath, err)
	}
	if err := checkArg(modPath, ""); err != nil {
		return fmt.Errorf("refusing to run the go command for module path %q: %v", modPath, err)
	}
	if slices.Contains(strings.Split(modPath, "/"), "..") {
		return fmt.Errorf("refusing to run the go command for module path %q: \"..\" element", modPath)
	}
	if version == "" {
		return nil
	}
	if err := checkArg(version, "~^"); err != nil {
		return fmt.Errorf("refusing to run the go command for %s@%q: %v", modPath, version, err)
	}
	if strings.Contains(version, "..") || strings.Contains(version, "@") {
		return fmt.Errorf("refusing to run the go command for %s@%q: not a version or query", modPath, version)
	}
	if module.CanonicalVersion(version) == version {
		if err := module.Check(modPath, version); err != nil {
			return fmt.Errorf("refusing to run the go command: %w", err)
		}
	}
	return nil
}

// checkArg refuses a leading dash (a flag), white space and control
// characters (which split or end lines), shell, quoting and git revision
// syntax characters, and those of also.
func checkArg(s, also string) error {
	if s == "" {
		return errors.New("empty")
	}
	if s[0] == '-' {
		return errors.New("leading dash")
	}
	for _, c := range s {
		if unicode.IsSpace(c) || unicode.IsControl(c) || !unicode.IsPrint(c) || strings.ContainsRune(";|&$`'\"\\<>*?!(){}[]:", c) || strings.ContainsRune(also, c) {
			return fmt.Errorf("character %q is not allowed", c)
		}
	}
	return nil
}
