package goproxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// FirstSeenSource tells a [Cooldown] when module versions were first
// seen. [IndexFeed] is one, reading a feed in index.golang.org's format.
type FirstSeenSource interface {
	// FirstSeen returns when path@version was first seen, or the zero
	// time if it never was (it is being seen for the first time now). A
	// source with a bounded memory may answer, for a version older than
	// what it remembers, the start of its memory: a time by which the
	// version had been seen. An error means that the source cannot tell
	// now (it has not been read yet, or cannot be); the cooldown then
	// refuses the version. FirstSeen is called for every version of every
	// list, and must be cheap.
	FirstSeen(ctx context.Context, path, version string) (time.Time, error)
}

// Cooldown hides and refuses the module versions first seen less than Age
// ago, the defence against a freshly compromised release that package
// registries have adopted: most are found out and withdrawn within days.
// A version's own time (in its .info) is set by its author and does not
// count. Published versions are exempt. The zero value has no cooldown.
type Cooldown struct {
	// Age is how long after a version is first seen the proxy starts
	// serving and listing it. Zero means no cooldown.
	Age time.Duration

	// FirstSeen tells when versions were first seen: an [IndexFeed], or
	// the proxy's own record of the versions it has seen. It must be set
	// when Age is.
	FirstSeen FirstSeenSource

	// ReportOnly logs and counts the versions the cooldown would refuse,
	// but admits them.
	ReportOnly bool
}

// check reports a cooldown that cannot work.
func (cd *Cooldown) check() error {
	switch {
	case cd.Age < 0:
		return fmt.Errorf("cooldown: negative Age %v", cd.Age)
	case cd.Age > 0 && cd.FirstSeen == nil:
		return errors.New("cooldown: Age is set but there is no FirstSeen source")
	}
	// A feed dates what it does not list at the start of its Window: with
	// a Window shorter than Age, every old version would be refused.
	if feed, ok := cd.FirstSeen.(*IndexFeed); ok && feed != nil && cd.Age > feed.window() {
		return fmt.Errorf("cooldown: Age %v is longer than the index feed's Window %v (7 days when not set): the versions the feed does not list, the old ones, would all be refused", cd.Age, feed.window())
	}
	return nil
}

// Decide refuses c, hiding it from lists, if it was first seen less than
// Age ago. It has the signature of the Proxy's admission hook, for a
// cooldown alone; AdmissionPolicy combines it with other rules.
func (cd *Cooldown) Decide(ctx context.Context, c AdmissionCandidate) AdmissionDecision {
	if cd.Age <= 0 || c.Published {
		return AdmissionDecision{}
	}
	refuse := func(reason string) AdmissionDecision {
		return AdmissionDecision{Verdict: Refuse, Rule: "cooldown", Reason: reason, ReportOnly: cd.ReportOnly}
	}
	if cd.FirstSeen == nil {
		return refuse("the cooldown has no source of first-seen times")
	}
	now := time.Now()
	seen, err := cd.FirstSeen.FirstSeen(ctx, c.Path, c.Version)
	if err != nil {
		return refuse("cannot tell yet when the version was first seen (" + err.Error() + "); the cooldown holds it back meanwhile")
	}
	if seen.IsZero() || seen.After(now) {
		seen = now
	}
	age := now.Sub(seen)
	if age >= cd.Age {
		return AdmissionDecision{}
	}
	return refuse(fmt.Sprintf("first seen %s ago; this proxy admits versions %s after they are first seen, this one from %s",
		roughDuration(age), roughDuration(cd.Age), seen.Add(cd.Age).UTC().Format("2006-01-02 15:04 MST")))
}

// roughDuration writes d for people: "3 days", "2h13m", "less than a
// minute".
func roughDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	case d < time.Minute:
		return "less than a minute"
	}
	s := strings.TrimSuffix(d.Truncate(time.Minute).String(), "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
