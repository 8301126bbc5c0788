package goproxy

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// AdmissionRule is one entry of an allow or deny list of an
// [AdmissionPolicy].
type AdmissionRule struct {
	// Match is a module path pattern, optionally followed by "@" and a
	// version range:
	//
	//	github.com/foo/*                   every version of every module under github.com/foo
	//	github.com/foo/*@<v1.2.3           versions before v1.2.3
	//	example.com/m@>=v1.0.0,<v1.4.2     v1.0.0 up to, not including, v1.4.2
	//	example.com/m@v1.2.3               that version only
	//
	// The pattern is one GOPRIVATE pattern: it matches a module path when
	// it matches, as [path.Match] does, the path's leading elements, so
	// "example.com/m" also matches the modules under it
	// (example.com/m/v2, example.com/m/tools) and "*" matches every
	// module ([module.MatchPrefixPatterns] with a single pattern).
	//
	// The range is one or more comma-separated constraints that must all
	// hold: <v, <=v, >v, >=v, or v (exactly v). Versions are canonical
	// (v1.2.0, not v1.2) and compared as semantic versions by
	// [semver.Compare]: a pre-release comes before its release, so
	// "<v1.2.3" includes v1.2.3-rc.1 and the pseudo-versions of commits
	// after v1.2.2 (v1.2.3-0.20240101000000-abcdef123456); "+incompatible"
	// is ignored, so v2.0.0 and v2.0.0+incompatible are the same version.
	// An empty Match is an error.
	Match string

	// Reason says why, in the go command's output when a deny entry
	// refuses a version and in the log when an allow entry overrides a
	// refusal. If empty, the entry's Match is given instead.
	Reason string
}

// moduleRule is an AdmissionRule checked and ready to match.
type moduleRule struct {
	pattern string
	literal string // how every path the pattern matches starts
	r       versionRange
	reason  string
	match   string // the entry as written, for messages
}

// versionRange is the versions between two bounds. The constraints of a
// range are half-lines or points, so their intersection is always one
// interval; an empty bound is no bound.
type versionRange struct {
	lo, hi                   string
	loInclusive, hiInclusive bool
}

// compile checks r and prepares it for matching. Its errors name the entry.
func (r AdmissionRule) compile() (*moduleRule, error) {
	mr, err := parseModuleRule(r.Match)
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", r.Match, err)
	}
	mr.reason = r.Reason
	if mr.reason == "" {
		mr.reason = r.Match
	}
	return mr, nil
}

// parseModuleRule parses "pattern" or "pattern@range".
func parseModuleRule(s string) (*moduleRule, error) {
	match := strings.TrimSpace(s)
	pattern, rangeText, hasRange := strings.Cut(match, "@")
	if err := checkModulePattern(pattern); err != nil {
		return nil, err
	}
	literal := pattern
	if i := strings.IndexAny(pattern, `*?[\`); i >= 0 {
		literal = pattern[:i]
	}
	mr := &moduleRule{pattern: pattern, literal: literal, match: match}
	if hasRange {
		r, err := parseVersionRange(rangeText)
		if err != nil {
			return nil, err
		}
		mr.r = r
	}
	return mr, nil
}

// checkModulePattern accepts what module.MatchPrefixPatterns would match
// with: one pattern (a comma would make it a list) whose elements are
// valid path.Match patterns. MatchPrefixPatterns quietly never matches a
// malformed pattern, which would make a deny entry silently useless.
func checkModulePattern(pattern string) error {
	switch {
	case pattern == "":
		return errors.New("no module path pattern")
	case strings.Contains(pattern, ","):
		return errors.New("a pattern cannot hold a comma: write one entry per pattern")
	case strings.IndexFunc(pattern, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return fmt.Errorf("pattern %q holds a space or an unprintable character", pattern)
	}
	for elem := range strings.SplitSeq(pattern, "/") {
		if elem == "" {
			return fmt.Errorf("pattern %q has an empty path element", pattern)
		}
		if _, err := path.Match(elem, ""); err != nil {
			return fmt.Errorf("pattern %q: element %q: %w", pattern, elem, err)
		}
	}
	return nil
}

// parseVersionRange parses comma-separated constraints into one interval.
func parseVersionRange(s string) (versionRange, error) {
	var r versionRange
	if strings.TrimSpace(s) == "" {
		return r, errors.New("nothing after @: write a version or a range, or no @")
	}
	for c := range strings.SplitSeq(s, ",") {
		c = strings.TrimSpace(c)
		op := c[:len(c)-len(strings.TrimLeft(c, "<>="))]
		v := strings.TrimSpace(c[len(op):])
		if v == "" {
			return r, fmt.Errorf("constraint %q has no version", c)
		}
		if !semver.IsValid(v) || module.CanonicalVersion(v) != v {
			if canon := module.CanonicalVersion(v); canon != "" {
				return r, fmt.Errorf("version %q is not canonical: write %s", v, canon)
			}
			return r, fmt.Errorf("%q is not a semantic version (vMAJOR.MINOR.PATCH)", v)
		}
		switch op {
		case "", "=":
			r.raiseLow(v, true)
			r.lowerHigh(v, true)
		case ">":
			r.raiseLow(v, false)
		case ">=":
			r.raiseLow(v, true)
		case "<":
			r.lowerHigh(v, false)
		case "<=":
			r.lowerHigh(v, true)
		default:
			return r, fmt.Errorf("constraint %q: unknown operator %q (use <, <=, >, >= or none)", c, op)
		}
	}
	if r.empty() {
		return r, fmt.Errorf("range %q matches no version", s)
	}
	return r, nil
}

// raiseLow intersects r with the versions above v (or at v if inclusive).
func (r *versionRange) raiseLow(v string, inclusive bool) {
	if r.lo == "" {
		r.lo, r.loInclusive = v, inclusive
		return
	}
	switch c := semver.Compare(v, r.lo); {
	case c > 0:
		r.lo, r.loInclusive = v, inclusive
	case c == 0:
		r.loInclusive = r.loInclusive && inclusive
	}
}

// lowerHigh intersects r with the versions below v (or at v if inclusive).
func (r *versionRange) lowerHigh(v string, inclusive bool) {
	if r.hi == "" {
		r.hi, r.hiInclusive = v, inclusive
		return
	}
	switch c := semver.Compare(v, r.hi); {
	case c < 0:
		r.hi, r.hiInclusive = v, inclusive
	case c == 0:
		r.hiInclusive = r.hiInclusive && inclusive
	}
}

func (r versionRange) empty() bool {
	if r.lo == "" || r.hi == "" {
		return false
	}
	c := semver.Compare(r.lo, r.hi)
	return c > 0 || c == 0 && !(r.loInclusive && r.hiInclusive)
}

// contains reports whether version, a valid semantic version, is in r.
func (r versionRange) contains(version string) bool {
	if r.lo != "" {
		c := semver.Compare(version, r.lo)
		if c < 0 || c == 0 && !r.loInclusive {
			return false
		}
	}
	if r.hi != "" {
		c := semver.Compare(version, r.hi)
		if c > 0 || c == 0 && !r.hiInclusive {
			return false
		}
	}
	return true
}

// String writes r in the syntax parseVersionRange reads; "" for every
// version.
func (r versionRange) String() string {
	if r.lo != "" && r.lo == r.hi {
		return r.lo
	}
	var parts []string
	if r.lo != "" {
		op := ">"
		if r.loInclusive {
			op = ">="
		}
		parts = append(parts, op+r.lo)
	}
	if r.hi != "" {
		op := "<"
		if r.hiInclusive {
			op = "<="
		}
		parts = append(parts, op+r.hi)
	}
	return strings.Join(parts, ",")
}

// String writes the rule in the syntax parseModuleRule reads.
func (mr *moduleRule) String() string {
	if rs := mr.r.String(); rs != "" {
		return mr.pattern + "@" + rs
	}
	return mr.pattern
}

// matches reports whether the rule covers modPath at version.
func (mr *moduleRule) matches(modPath, version string) bool {
	// Most entries are about other modules: the literal prefix turns them
	// down without a glob match.
	return strings.HasPrefix(modPath, mr.literal) && module.MatchPrefixPatterns(mr.pattern, modPath) && mr.r.contains(version)
}
