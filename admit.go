package goproxy

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// The Proxy's use of its Admission hook. Cached answers are the
// upstreams' own, unfiltered: the decisions are applied as they are
// served, since a cooldown's change with time and a policy's with its
// files. A version's .info, .mod and .zip are decided before any source
// is asked (admitFile); lists, @latest and query answers once read
// (admitAnswer); the proxy's own fetches before they start (admitFetch).

// admitFile decides a request for a canonical version's .info, .mod or
// .zip: a refusal is an error that answers 403. A version hidden is
// served: it is asked for by name.
//
// The go command asks for a version under every prefix of a package
// path (example.com/m/pkg@v1.0.0 and example.com/m@v1.0.0), and takes a
// 403 for one that is no module as the answer, where a 404 lets it go on:
// so a refusal stands only for a module that exists, one published or
// with a version list upstream. A version of a module no upstream has is
// not found: there is nothing to refuse.
func (p *Proxy) admitFile(ctx context.Context, req *request, mayFetch bool) error {
	if p.conf.admission == nil || !req.canonical || (req.kind != kindInfo && req.kind != kindMod && req.kind != kindZip) {
		return nil
	}
	p.firstSeen.record(ctx, req.modPath, []string{req.version})
	d := p.decide(ctx, req.modPath, req.version, false)
	if !d.Refused() {
		p.noteAdmission(ctx, req.modPath, req.version, d, AdmissionRequest)
		return nil
	}
	// Only a refusal makes it worth asking the published store: being
	// published exempts from the cooldown, nothing else.
	published := p.conf.hosted != nil && p.isPublished(ctx, req.name[:strings.LastIndexByte(req.name, '.')])
	if published {
		d = p.decide(ctx, req.modPath, req.version, true)
	} else if err := p.moduleMissing(ctx, req, mayFetch); err != nil {
		return err
	}
	p.noteAdmission(ctx, req.modPath, req.version, d, AdmissionRequest)
	if d.Refused() {
		return admissionFailure(req.modPath, req.version, d)
	}
	return nil
}

// moduleMissing returns the upstreams' not-found answer for req's module
// version list, when they have no such module and nothing of it is
// published; nil otherwise, also when the list cannot be had.
func (p *Proxy) moduleMissing(ctx context.Context, req *request, mayFetch bool) error {
	escPath, _ := module.EscapePath(req.modPath)
	listReq, err := p.parseRequest(escPath + "/@v/list")
	if err != nil {
		return nil
	}
	c, err := p.openStored(ctx, listReq, mayFetch, p.hotGen())
	if err == nil {
		c.close()
		return nil
	}
	if !notFound(err) || kindOf(err) == failNotCached {
		return nil
	}
	if published, perr := p.hostedVersions(ctx, escPath); perr != nil || len(published) > 0 {
		return nil
	}
	return &failure{kind: failNotFound, msg: fmt.Sprintf("%s@%s: no upstream has the module: %v", req.modPath, req.version, err), err: err}
}

// admitFetch decides whether the proxy may fetch path@version for itself
// (a prefetch, a fill, an import), before it does: a refusal is an error
// wrapping an *AdmissionError (answering 403). A version hidden may be
// fetched: it is named. The version is recorded as seen, so that a
// cooldown's clock starts for it.
func (p *Proxy) admitFetch(ctx context.Context, path, version string) error {
	if err := p.Init(); err != nil {
		return err
	}
	if p.conf.admission == nil {
		return nil
	}
	p.firstSeen.record(ctx, path, []string{version})
	d := p.decide(ctx, path, version, false)
	p.noteAdmission(ctx, path, version, d, AdmissionFetch)
	if d.Refused() {
		return admissionFailure(path, version, d)
	}
	return nil
}

// decide asks the Admission hook about path@version.
func (p *Proxy) decide(ctx context.Context, path, version string, published bool) AdmissionDecision {
	return p.conf.admission(ctx, AdmissionCandidate{Path: path, Version: version, Published: published})
}

// admissionFailure is the error of a refused version.
func admissionFailure(path, version string, d AdmissionDecision) error {
	if d.Reason == "" {
		d.Reason = "no reason given"
		if d.Rule != "" {
			d.Reason = "rule " + d.Rule
		}
	}
	ae := &AdmissionError{Path: path, Version: version, Decision: d}
	return &failure{kind: failAdmission, msg: ae.Error(), err: ae}
}

// noteAdmission logs and counts a decision other than the zero one. What
// changes a client's answer (a refusal, a version left out of @latest) and
// reports are logged at info level; entries left out of lists, which every
// list request repeats, and exceptions at debug level.
func (p *Proxy) noteAdmission(ctx context.Context, path, version string, d AdmissionDecision, use AdmissionUse) {
	if d == (AdmissionDecision{}) {
		return
	}
	p.conf.metrics.admission(AdmissionMetric{Rule: d.Rule, Verdict: d.Verdict, ReportOnly: d.ReportOnly, Use: use})
	level := slog.LevelInfo
	if use == AdmissionList || d.Verdict == Admit {
		level = slog.LevelDebug
	}
	if log := p.logger(); log.Enabled(ctx, level) {
		log.LogAttrs(ctx, level, "admission", slog.String("module", path), slog.String("version", version),
			slog.String("use", string(use)), slog.Any("decision", d))
	}
}

// admitAnswer applies the Admission hook to a list, @latest or query
// answer read for req (published, the module's published versions, are
// exempt from the cooldown), closing c when it returns another.
func (p *Proxy) admitAnswer(ctx context.Context, req *request, c *content, published []string, mayFetch bool) (*content, error) {
	if p.conf.admission == nil || c == nil {
		return c, nil
	}
	switch {
	case req.kind == kindList:
		return p.admitList(ctx, req, c, published), nil
	case req.kind == kindLatest, req.kind == kindInfo && !req.canonical:
		return p.admitResolved(ctx, req, c, published, mayFetch)
	}
	return c, nil
}

// admitList leaves out of a version list the versions that are not to be
// listed.
func (p *Proxy) admitList(ctx context.Context, req *request, c *content, published []string) *content {
	lines := strings.Split(string(c.data), "\n")
	var versions []string
	for _, line := range lines {
		if v := strings.TrimSpace(line); v != "" {
			versions = append(versions, v)
		}
	}
	p.firstSeen.record(ctx, req.modPath, versions)
	kept := make([]string, 0, len(lines))
	left := 0
	for _, line := range lines {
		v := strings.TrimSpace(line)
		if v != "" && semver.IsValid(v) && module.CanonicalVersion(v) == v {
			d := p.decide(ctx, req.modPath, v, slices.Contains(published, v))
			p.noteAdmission(ctx, req.modPath, v, d, AdmissionList)
			if !d.Listed() {
				left++
				continue
			}
		}
		if line != "" {
			kept = append(kept, line)
		}
	}
	if left == 0 {
		return c
	}
	body := ""
	if len(kept) > 0 {
		body = strings.Join(kept, "\n") + "\n"
	}
	filtered := memContent([]byte(body), c.modTime, c.from)
	c.close()
	return filtered
}

// admitResolved decides the version a @latest or query answer resolves
// to. For @latest and the queries "latest", "v1" and "v1.2", a version
// that is not to be listed gives way to the highest listed version that
// matches, as the go command would choose it from the list; with none,
// the answer is the version's refusal. Any other query (a branch, a
// commit) names its answer: it is refused only if the version is.
func (p *Proxy) admitResolved(ctx context.Context, req *request, c *content, published []string, mayFetch bool) (*content, error) {
	var info struct{ Version string }
	if json.Unmarshal(c.data, &info) != nil || !semver.IsValid(info.Version) || module.CanonicalVersion(info.Version) != info.Version {
		return c, nil // not a version: nothing to decide
	}
	v := info.Version
	p.firstSeen.record(ctx, req.modPath, []string{v})
	d := p.decide(ctx, req.modPath, v, slices.Contains(published, v))
	query, picksLatest := mergeQuery(req)
	if !picksLatest {
		p.noteAdmission(ctx, req.modPath, v, d, AdmissionRequest)
		if d.Refused() {
			c.close()
			return nil, admissionFailure(req.modPath, v, d)
		}
		return c, nil
	}
	p.noteAdmission(ctx, req.modPath, v, d, AdmissionList)
	if d.Listed() {
		return c, nil
	}
	c.close()
	best, err := p.latestListed(ctx, req.modPath, query, mayFetch)
	if err != nil && !notFound(err) {
		return nil, err
	}
	if best == "" {
		return nil, admissionFailure(req.modPath, v, d)
	}
	escPath, _ := module.EscapePath(req.modPath)
	escVersion, _ := module.EscapeVersion(best)
	infoReq, err := p.parseRequest(escPath + "/@v/" + escVersion + ".info")
	if err != nil {
		return nil, err
	}
	ic, err := p.open(ctx, infoReq, mayFetch)
	if err != nil {
		return nil, err
	}
	defer ic.close()
	p.logger().LogAttrs(ctx, slog.LevelInfo, "admission: answering an earlier version", slog.String("module", req.modPath),
		slog.String("query", cmp.Or(query, "latest")), slog.String("withheld", v), slog.String("answer", best))
	return memContent(ic.data, ic.modTime, ic.from), nil
}

// latestListed returns the version the go command would pick for query
// ("" or "latest", "v1", "v1.2") from the module's list as served, its
// versions not to be listed left out: a release over a pre-release over
// a pseudo-version, then the highest. "" when none matches.
func (p *Proxy) latestListed(ctx context.Context, modPath, query string, mayFetch bool) (string, error) {
	escPath, _ := module.EscapePath(modPath)
	listReq, err := p.parseRequest(escPath + "/@v/list")
	if err != nil {
		return "", err
	}
	lc, err := p.open(ctx, listReq, mayFetch)
	if err != nil {
		return "", err
	}
	defer lc.close()
	best := ""
	for _, v := range strings.Fields(string(lc.data)) {
		if semver.IsValid(v) && module.CanonicalVersion(v) == v && matchesQuery(v, query) && (best == "" || preferLatest(v, best)) {
			best = v
		}
	}
	return best, nil
}
