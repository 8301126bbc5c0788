package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/goproxy-team/goproxy"
)

// AdmissionConfig is a repository's admission policy
// (goproxy.AdmissionPolicy): which module versions it serves, lists and
// fetches. The zero value admits everything.
type AdmissionConfig struct {
	// Allow lists exceptions to Deny and the cooldown.
	Allow []AdmissionRuleConfig `yaml:"allow,omitempty" json:"allow,omitempty"`
	// Deny lists the versions refused, each with the reason the go
	// command prints.
	Deny []AdmissionRuleConfig `yaml:"deny,omitempty" json:"deny,omitempty"`
	// ReportOnly logs and counts every refusal, but admits.
	ReportOnly bool `yaml:"report_only" json:"report_only"`
	// Cooldown hides and refuses the versions first seen too recently.
	Cooldown CooldownConfig `yaml:"cooldown" json:"cooldown"`
	// Vulnerabilities refuses the versions a local OSV database says
	// are affected.
	Vulnerabilities VulnerabilitiesConfig `yaml:"vulnerabilities" json:"vulnerabilities"`
}

// AdmissionRuleConfig is a goproxy.AdmissionRule: a module path pattern
// with an optional version range ("github.com/foo/*@<v1.2.3"), and why.
type AdmissionRuleConfig struct {
	Match  string `yaml:"match" json:"match"`
	Reason string `yaml:"reason" json:"reason"`
}

// CooldownConfig is a goproxy.Cooldown.
type CooldownConfig struct {
	// Age is how long after a version is first seen it is admitted;
	// 0, no cooldown.
	Age Duration `yaml:"age" json:"age"`
	// IndexFeed is the URL of a feed in index.golang.org's format
	// (https://index.golang.org/index) telling when versions were first
	// seen, with the repository's own record for what it does not list
	// yet. Empty: the repository's own record alone.
	IndexFeed string `yaml:"index_feed" json:"index_feed"`
	// Window is how far back the feed is remembered: at least Age. 0
	// means 7 days.
	Window Duration `yaml:"window" json:"window"`
	// PollInterval is how often, at most, the feed is read. 0 means a
	// minute.
	PollInterval Duration `yaml:"poll_interval" json:"poll_interval"`
	// ReportOnly logs and counts what the cooldown would refuse, but
	// admits.
	ReportOnly bool `yaml:"report_only" json:"report_only"`
}

// VulnerabilitiesConfig is a goproxy.VulnerabilityList.
type VulnerabilitiesConfig struct {
	// Path is a local copy of an OSV database: a directory, a .zip
	// (vuln.go.dev's vulndb.zip) or a .json file. Empty: none.
	Path       string `yaml:"path" json:"path"`
	ReportOnly bool   `yaml:"report_only" json:"report_only"`
	// Ignore lists the vulnerabilities accepted, by ID or alias.
	Ignore []string `yaml:"ignore,omitempty" json:"ignore,omitempty"`
	// CheckInterval is how often, at most, the files are checked for
	// changes. 0 means a minute.
	CheckInterval Duration `yaml:"check_interval" json:"check_interval"`
}

func (c *AdmissionConfig) isZero() bool {
	return len(c.Allow) == 0 && len(c.Deny) == 0 && !c.ReportOnly && c.Cooldown == (CooldownConfig{}) &&
		c.Vulnerabilities.Path == "" && !c.Vulnerabilities.ReportOnly && len(c.Vulnerabilities.Ignore) == 0 &&
		c.Vulnerabilities.CheckInterval == 0
}

// checkAdmission reports the problems of a repository's admission
// section, each under its key; the vulnerability database is read.
func checkAdmission(c *AdmissionConfig, key string, p *problems) {
	key = join(key, "admission")
	for _, list := range []struct {
		name  string
		rules []AdmissionRuleConfig
	}{{"allow", c.Allow}, {"deny", c.Deny}} {
		for i, r := range list.rules {
			rkey := fmt.Sprintf("%s.%s[%d]", key, list.name, i)
			policy := goproxy.AdmissionPolicy{Deny: []goproxy.AdmissionRule{{Match: r.Match, Reason: r.Reason}}}
			if err := policy.Init(); err != nil {
				_, msg, _ := strings.Cut(err.Error(), "deny entry ")
				p.add(join(rkey, "match"), "%s", cmp.Or(msg, err.Error()))
			}
		}
	}
	cd := c.Cooldown
	ckey := join(key, "cooldown")
	for k, d := range map[string]Duration{"age": cd.Age, "window": cd.Window, "poll_interval": cd.PollInterval} {
		if d < 0 {
			p.add(join(ckey, k), "must not be negative")
		}
	}
	if cd.Window > 0 && cd.Window < cd.Age {
		p.add(join(ckey, "window"), "%v is shorter than the cooldown's age %v: versions older than the window would be taken for old enough", time.Duration(cd.Window), time.Duration(cd.Age))
	}
	if cd.IndexFeed != "" {
		if u, err := url.Parse(cd.IndexFeed); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.add(join(ckey, "index_feed"), "not an http or https URL")
		} else if cd.Age == 0 {
			p.add(join(ckey, "index_feed"), "set without an age: there is no cooldown to read it for")
		}
	}
	v := c.Vulnerabilities
	vkey := join(key, "vulnerabilities")
	if v.CheckInterval < 0 {
		p.add(join(vkey, "check_interval"), "must not be negative")
	}
	if v.Path == "" {
		if len(v.Ignore) > 0 || v.ReportOnly || v.CheckInterval != 0 {
			p.add(join(vkey, "path"), "must name the OSV database the other settings are for")
		}
		return
	}
	if _, err := os.Stat(v.Path); err != nil {
		p.add(join(vkey, "path"), "%v", err)
		return
	}
	list := &goproxy.VulnerabilityList{Path: v.Path, Logger: slog.New(slog.DiscardHandler)}
	if err := list.Load(); err != nil {
		p.add(join(vkey, "path"), "%v", err)
	}
}

// admission is a repository's admission policy as made for its Proxy:
// the policy, and the feed and vulnerability list the status page shows.
type admission struct {
	cfg    AdmissionConfig
	policy *goproxy.AdmissionPolicy
	feed   *goproxy.IndexFeed         // nil without an index feed
	vulns  *goproxy.VulnerabilityList // nil without a database

	stop context.CancelFunc
	bg   sync.WaitGroup
}

// newAdmission makes the policy of c for p, setting p's Admission (and
// an egress exception for the feed's own address), before p.Init. Call
// connect after Init. It returns nil for the zero config.
func newAdmission(c AdmissionConfig, p *goproxy.Proxy, logger *slog.Logger) *admission {
	if c.isZero() {
		return nil
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &admission{cfg: c, policy: &goproxy.AdmissionPolicy{ReportOnly: c.ReportOnly}}
	for _, r := range c.Allow {
		a.policy.Allow = append(a.policy.Allow, goproxy.AdmissionRule{Match: r.Match, Reason: r.Reason})
	}
	for _, r := range c.Deny {
		a.policy.Deny = append(a.policy.Deny, goproxy.AdmissionRule{Match: r.Match, Reason: r.Reason})
	}
	if v := c.Vulnerabilities; v.Path != "" {
		a.vulns = &goproxy.VulnerabilityList{Path: v.Path, ReportOnly: v.ReportOnly, Ignore: slices.Clone(v.Ignore),
			CheckInterval: time.Duration(v.CheckInterval), Logger: logger}
		a.policy.Vulnerabilities = a.vulns
	}
	if cd := c.Cooldown; cd.Age > 0 {
		a.policy.Cooldown = goproxy.Cooldown{Age: time.Duration(cd.Age), ReportOnly: cd.ReportOnly, FirstSeen: p}
		if cd.IndexFeed != "" {
			a.feed = &goproxy.IndexFeed{URL: cd.IndexFeed, Window: time.Duration(cd.Window),
				PollInterval: time.Duration(cd.PollInterval), Logger: logger, Local: p}
			a.policy.Cooldown.FirstSeen = a.feed
			// An endpoint the configuration names is allowed whatever its
			// address, as the upstreams are.
			if hp := hostPort(cd.IndexFeed); hp != "" {
				p.Egress.Allow = append(slices.Clip(p.Egress.Allow), hp)
			}
		}
	}
	p.Admission = a.policy.Decide
	return a
}

// hostPort is the host and port a URL connects to.
func hostPort(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// connect gives the feed the Proxy's way out (its transport and egress
// policy), once Init has built it, and checks the policy.
func (a *admission) connect(p *goproxy.Proxy) error {
	if a == nil {
		return nil
	}
	if a.feed != nil {
		a.feed.Client = p.Client()
	}
	return a.policy.Init()
}

// start reads the feed a first time in the background, so that the
// cooldown can date versions by the time clients ask; stop ends it.
func (a *admission) start() {
	if a == nil || a.feed == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	a.bg.Go(func() { a.feed.Update(ctx) })
}

// close ends the first read of the feed, if it is still going on.
func (a *admission) close() {
	if a == nil || a.stop == nil {
		return
	}
	a.stop()
	a.bg.Wait()
}

// admissionCounters counts the admission decisions of each repository,
// across reloads.
type admissionCounters struct {
	mu     sync.Mutex
	counts map[string]map[goproxy.AdmissionMetric]int64 // by repository
}

func newAdmissionCounters() *admissionCounters {
	return &admissionCounters{counts: map[string]map[goproxy.AdmissionMetric]int64{}}
}

// hook is the Admission metric of repo's Proxy.
func (c *admissionCounters) hook(repo string) func(goproxy.AdmissionMetric) {
	return func(m goproxy.AdmissionMetric) {
		c.mu.Lock()
		defer c.mu.Unlock()
		byMetric := c.counts[repo]
		if byMetric == nil {
			byMetric = map[goproxy.AdmissionMetric]int64{}
			c.counts[repo] = byMetric
		}
		byMetric[m]++
	}
}

// admissionCount is a count of decisions as the status page shows it.
type admissionCount struct {
	Rule, Verdict, Use string
	ReportOnly         bool
	N                  int64
}

// of returns repo's counts, the most frequent first.
func (c *admissionCounters) of(repo string) []admissionCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []admissionCount
	for m, n := range c.counts[repo] {
		out = append(out, admissionCount{Rule: m.Rule, Verdict: m.Verdict.String(), Use: string(m.Use), ReportOnly: m.ReportOnly, N: n})
	}
	slices.SortFunc(out, func(a, b admissionCount) int {
		return cmp.Or(cmp.Compare(b.N, a.N), cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Verdict, b.Verdict), cmp.Compare(a.Use, b.Use))
	})
	return out
}

// admissionStatus is a repository's admission policy as the status page
// shows it.
type admissionStatus struct {
	Allow, Deny int
	ReportOnly  bool
	Cooldown    time.Duration
	FeedURL     string
	Feed        *goproxy.IndexFeedStatus
	VulnPath    string
	Vulns       *goproxy.VulnerabilityListStatus
	Counts      []admissionCount
}

func (a *admission) status(counts []admissionCount) *admissionStatus {
	if a == nil {
		if len(counts) == 0 {
			return nil
		}
		return &admissionStatus{Counts: counts} // of a policy since removed
	}
	s := &admissionStatus{Allow: len(a.cfg.Allow), Deny: len(a.cfg.Deny), ReportOnly: a.cfg.ReportOnly,
		Cooldown: time.Duration(a.cfg.Cooldown.Age), Counts: counts}
	if a.feed != nil {
		st := a.feed.Status()
		s.Feed, s.FeedURL = &st, redactURL(a.cfg.Cooldown.IndexFeed)
	}
	if a.vulns != nil {
		st := a.vulns.Status()
		s.Vulns, s.VulnPath = &st, a.cfg.Vulnerabilities.Path
	}
	return s
}
