package goproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/mod/module"
)

// AdmissionCandidate is a module version the proxy is about to list,
// serve, or fetch into its cache (for a client, a prefetch, a fill or an
// import), as an admission hook sees it.
type AdmissionCandidate struct {
	// Path is the module path.
	Path string
	// Version is a canonical version (a release, pre-release or
	// pseudo-version, never a query such as "latest" or a branch name:
	// queries are resolved first, and the version they resolve to is
	// decided).
	Version string
	// Published is true when the version was published to the proxy's
	// Hosted store rather than fetched from an upstream.
	Published bool
}

// AdmissionVerdict is what the proxy does with a module version.
type AdmissionVerdict int

const (
	// Admit serves the version and lists it. It is the zero value.
	Admit AdmissionVerdict = iota
	// Hide serves the version when it is asked for by name but leaves it
	// out of the version list and @latest, so that the go command does not
	// pick it by itself.
	Hide
	// Refuse answers 403 Forbidden, with the decision's reason, to every
	// request for the version's .info, .mod and .zip, never fetches its
	// .mod and .zip (its list or .info may be, to learn that it exists),
	// and leaves it out of the version list and @latest. It is never 404
	// or 410, which would send the go command on to the next GOPROXY
	// entry or to direct.
	Refuse
)

// String names the verdict in logs and metrics: admit, hide or refuse.
func (v AdmissionVerdict) String() string {
	switch v {
	case Admit:
		return "admit"
	case Hide:
		return "hide"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("AdmissionVerdict(%d)", int(v))
}

// AdmissionDecision is an admission hook's answer. The zero value admits
// the version and is neither logged nor counted.
type AdmissionDecision struct {
	// Verdict is what to do with the version.
	Verdict AdmissionVerdict

	// Rule names the kind of rule that decided, in a few constant words
	// fit for a metrics label (never a module path): the ready-made
	// deciders use "deny", "allow", "vulnerable", "cooldown" and
	// "policy" (an invalid policy or version).
	Rule string

	// Reason says why, in one short line: the go command prints it when
	// the version is refused, and the proxy logs it. A decision that
	// admits may carry a reason too, when an exception admitted what
	// another rule would have refused; the proxy then logs and counts it
	// at debug level.
	Reason string

	// ReportOnly makes the proxy log and count the decision as if it were
	// applied, but admit the version: a way to try a policy out before
	// enforcing it.
	ReportOnly bool
}

// Refused reports whether the proxy must answer 403 for the version.
func (d AdmissionDecision) Refused() bool {
	return d.Verdict == Refuse && !d.ReportOnly
}

// Listed reports whether the version belongs in the version list and may
// be the answer to @latest.
func (d AdmissionDecision) Listed() bool {
	return d.Verdict == Admit || d.ReportOnly
}

// LogValue implements [slog.LogValuer]: the decision as a group of its
// verdict, rule, reason and report-only flag.
func (d AdmissionDecision) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("verdict", d.Verdict.String()),
		slog.String("rule", d.Rule),
		slog.String("reason", d.Reason),
		slog.Bool("report_only", d.ReportOnly))
}

// AdmissionError is the error for a module version the admission policy
// refuses: the proxy answers it with 403 Forbidden and its message, which
// the go command prints.
type AdmissionError struct {
	// Path and Version name the module version refused.
	Path, Version string
	// Decision is the refusal, with its reason.
	Decision AdmissionDecision
}

// Error names the version and gives the reason.
func (e *AdmissionError) Error() string {
	return e.Path + "@" + e.Version + ": refused by the proxy's admission policy: " + e.Decision.Reason
}

// AdmissionPolicy combines the ready-made admission deciders. Its Decide
// method is meant for the Proxy's admission hook. The zero value admits
// everything. Set the fields before calling Init or Decide; changes made
// afterwards are not seen.
//
// Precedence, for each version:
//
//  1. Deny: the first entry matching the version refuses it with the
//     entry's reason, unless an Allow entry matches the version too.
//  2. Vulnerabilities: a version affected by a known vulnerability is
//     refused (or only reported). Allow entries do not exempt a version
//     from it: accept a vulnerability with VulnerabilityList.Ignore.
//  3. Cooldown: a version first seen less than Cooldown.Age ago is hidden
//     and refused, unless an Allow entry matches it or it is published.
//
// The first refusal wins and its reason is the one given; rules are
// evaluated in this order until one refuses. A report-only finding does
// not stop the evaluation: it is returned when nothing refuses. When an
// Allow entry admits a version that Deny or Cooldown would have refused,
// the decision admits it with Rule "allow" and a reason naming both.
type AdmissionPolicy struct {
	// Allow lists exceptions: versions that Deny and Cooldown do not
	// refuse. An entry's reason is logged when it overrides a refusal.
	Allow []AdmissionRule

	// Deny lists the versions refused, each with the reason the go
	// command prints.
	Deny []AdmissionRule

	// Vulnerabilities refuses, or only reports, the versions affected by
	// the vulnerabilities of an OSV database copy. If nil, none are.
	Vulnerabilities *VulnerabilityList

	// Cooldown hides and refuses the versions first seen too recently.
	// The zero value (Age zero) has no cooldown.
	Cooldown Cooldown

	// ReportOnly turns every refusal of the policy into a report: logged
	// and counted, but admitted.
	ReportOnly bool

	initOnce    sync.Once
	initErr     error // what Init returns
	invalid     error // what makes Decide refuse everything
	allow, deny []*moduleRule
}

// Init checks the entries and the cooldown and reads the vulnerability
// database. Calling it is optional: Decide calls it. Call it at start-up to
// learn of a bad configuration before serving. A policy with an invalid
// entry refuses every version; a vulnerability database that cannot be
// read is retried, and refuses every version until it has been read.
func (p *AdmissionPolicy) Init() error {
	p.initOnce.Do(func() {
		var errs []error
		compile := func(list string, rules []AdmissionRule) []*moduleRule {
			var out []*moduleRule
			for _, r := range rules {
				mr, err := r.compile()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s %w", list, err))
					continue
				}
				out = append(out, mr)
			}
			return out
		}
		p.allow = compile("allow", p.Allow)
		p.deny = compile("deny", p.Deny)
		if err := p.Cooldown.check(); err != nil {
			errs = append(errs, err)
		}
		p.invalid = errors.Join(errs...)
		if p.Vulnerabilities != nil {
			if err := p.Vulnerabilities.Load(); err != nil {
				errs = append(errs, fmt.Errorf("vulnerability list: %w", err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			p.initErr = fmt.Errorf("admission policy: %w", err)
		}
	})
	return p.initErr
}

// Decide decides whether the proxy admits c, by the precedence of the
// policy. It is cheap: a few pattern matches and map look-ups, made for
// every version of every list.
func (p *AdmissionPolicy) Decide(ctx context.Context, c AdmissionCandidate) AdmissionDecision {
	p.Init()
	if p.invalid != nil {
		return AdmissionDecision{Verdict: Refuse, Rule: "policy", Reason: "the proxy's admission policy is invalid"}
	}
	if c.Version == "" || module.CanonicalVersion(c.Version) != c.Version {
		return AdmissionDecision{Verdict: Refuse, Rule: "policy", Reason: fmt.Sprintf("%q is not a canonical version", c.Version)}
	}
	var allowedBy *moduleRule
	for _, r := range p.allow {
		if r.matches(c.Path, c.Version) {
			allowedBy = r
			break
		}
	}
	var found admissionFindings
	overridden := ""
	// allowable decisions give way to an Allow entry.
	consider := func(d AdmissionDecision, allowable bool) {
		switch {
		case d.Verdict == Admit:
		case allowable && allowedBy != nil:
			if overridden == "" {
				overridden = d.Reason
			}
		default:
			found.add(d)
		}
	}
	for _, r := range p.deny {
		if r.matches(c.Path, c.Version) {
			consider(AdmissionDecision{Verdict: Refuse, Rule: "deny", Reason: r.reason}, true)
			break
		}
	}
	if !found.refused() && p.Vulnerabilities != nil {
		consider(p.Vulnerabilities.Decide(ctx, c), false)
	}
	if !found.refused() {
		consider(p.Cooldown.Decide(ctx, c), true)
	}
	d := found.decision()
	if d.Verdict == Admit && !d.ReportOnly && overridden != "" {
		d = AdmissionDecision{Rule: "allow", Reason: "allowed by " + allowedBy.reason + ", overriding: " + overridden}
	}
	if p.ReportOnly && d.Verdict != Admit {
		d.ReportOnly = true
	}
	return d
}

// admissionFindings keeps, of the decisions of several rules, the one
// that wins: the first refusal, else the first report. (The ready-made
// rules never only hide.)
type admissionFindings struct {
	refusal, report *AdmissionDecision
}

func (f *admissionFindings) add(d AdmissionDecision) {
	switch {
	case d.ReportOnly:
		if f.report == nil {
			f.report = &d
		}
	case f.refusal == nil:
		f.refusal = &d
	}
}

func (f *admissionFindings) refused() bool { return f.refusal != nil }

func (f *admissionFindings) decision() AdmissionDecision {
	switch {
	case f.refusal != nil:
		return *f.refusal
	case f.report != nil:
		return *f.report
	}
	return AdmissionDecision{}
}
