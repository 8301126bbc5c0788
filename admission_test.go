package goproxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/semver"
)

// firstSeenMap is a FirstSeenSource holding "path@version" times, as the
// proxy's own record of the versions it has seen would.
type firstSeenMap map[string]time.Time

func (m firstSeenMap) FirstSeen(ctx context.Context, path, version string) (time.Time, error) {
	return m[path+"@"+version], nil
}

type failingFirstSeen struct{}

func (failingFirstSeen) FirstSeen(ctx context.Context, path, version string) (time.Time, error) {
	return time.Time{}, errors.New("the feed is not read yet")
}

func TestZeroAdmissionPolicyAdmitsEverything(t *testing.T) {
	var p AdmissionPolicy
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"example.com/m@v1.0.0", "example.com/m@v0.0.0-20990101000000-abcdefabcdef"} {
		if d := decide(&p, v); d != (AdmissionDecision{}) {
			t.Errorf("%s: decision %+v, want the zero decision", v, d)
		}
	}
}

func TestAdmissionPolicyPrecedence(t *testing.T) {
	now := time.Now()
	p := &AdmissionPolicy{
		Allow: []AdmissionRule{
			{Match: "example.com/trusted", Reason: "our own modules"},
			{Match: "example.com/m@v1.2.3", Reason: "reviewed by security"},
			{Match: "example.com/vulnerable"},
		},
		Deny: []AdmissionRule{
			{Match: "example.com/*@<v1.0.0", Reason: "too old"},
			{Match: "example.com/m@>=v1.2.0,<v1.3.0", Reason: "broken releases"},
			{Match: "example.com/m@v0.9.0", Reason: "never reached: an earlier entry matches"},
			{Match: "example.org/twice@v2.0.0", Reason: "known bad"},
		},
		Vulnerabilities: &VulnerabilityList{Logger: testLogger(t), Path: "testdata/vulndb"},
		Cooldown: Cooldown{Age: 72 * time.Hour, FirstSeen: firstSeenMap{
			"example.com/fresh@v2.0.0":   now.Add(-90 * time.Minute),
			"example.com/trusted@v1.1.0": now.Add(-time.Hour),
			"example.com/m@v1.2.3":       now.Add(-time.Hour),
			"example.com/old@v1.0.0":     now.Add(-30 * 24 * time.Hour),
		}},
	}
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, version string
		published     bool
		verdict       AdmissionVerdict
		rule          string
		reason        []string
	}{
		{"a deny entry refuses with its reason", "example.com/m@v1.2.0", false, Refuse, "deny", []string{"broken releases"}},
		{"the first matching deny entry wins", "example.com/m@v0.9.0", false, Refuse, "deny", []string{"too old"}},
		{"an allow entry overrides a deny entry", "example.com/trusted@v0.1.0", false, Admit, "allow", []string{"allowed by our own modules", "overriding: too old"}},
		{"an allow entry overrides the cooldown", "example.com/trusted@v1.1.0", false, Admit, "allow", []string{"our own modules", "first seen 1h ago"}},
		{"an allow entry for one version overrides deny and cooldown", "example.com/m@v1.2.3", false, Admit, "allow", []string{"reviewed by security", "broken releases"}},
		{"an allow entry does not override a vulnerability", "example.com/vulnerable@v1.2.0", false, Refuse, "vulnerable", []string{"GO-2099-0001"}},
		{"deny is decided before vulnerabilities", "example.org/twice@v2.0.0+incompatible", false, Refuse, "deny", []string{"known bad"}},
		{"an allow pattern covers the modules below it", "example.com/vulnerable/v2@v2.0.0-beta.1", false, Admit, "allow", []string{"allowed by example.com/vulnerable, overriding: first seen"}},
		{"a vulnerability is decided before the cooldown", "example.com/unfixed@v1.0.0", false, Refuse, "vulnerable", []string{"GO-2099-0003"}},
		{"the cooldown refuses a version first seen recently", "example.com/fresh@v2.0.0", false, Refuse, "cooldown", []string{"first seen 1h30m ago", "3 days after"}},
		{"a version never seen is being seen now", "example.com/fresh@v2.1.0", false, Refuse, "cooldown", []string{"first seen less than a minute ago"}},
		{"a published version is exempt from the cooldown", "example.com/fresh@v2.1.0", true, Admit, "", nil},
		{"a version past the cooldown is admitted", "example.com/old@v1.0.0", false, Admit, "", nil},
		{"a query is not a version", "example.com/old@latest", false, Refuse, "policy", []string{`"latest" is not a canonical version`}},
		{"a shortened version is not canonical", "example.com/old@v1.0", false, Refuse, "policy", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, version, _ := strings.Cut(tt.version, "@")
			d := p.Decide(context.Background(), AdmissionCandidate{Path: path, Version: version, Published: tt.published})
			if d.Verdict != tt.verdict || d.Rule != tt.rule || d.ReportOnly {
				t.Fatalf("decision %+v, want %v by %q", d, tt.verdict, tt.rule)
			}
			if d.Refused() != (tt.verdict == Refuse) || d.Listed() != (tt.verdict == Admit) {
				t.Errorf("Refused %v, Listed %v for %+v", d.Refused(), d.Listed(), d)
			}
			for _, r := range tt.reason {
				if !strings.Contains(d.Reason, r) {
					t.Errorf("reason %q lacks %q", d.Reason, r)
				}
			}
		})
	}
}

func TestAdmissionPolicyReportOnlyReportsWhatItWouldRefuse(t *testing.T) {
	p := &AdmissionPolicy{Deny: []AdmissionRule{{Match: "example.com/m", Reason: "trying it out"}}, ReportOnly: true}
	d := decide(p, "example.com/m@v1.0.0")
	if d.Verdict != Refuse || !d.ReportOnly || d.Refused() || !d.Listed() || d.Reason != "trying it out" {
		t.Fatalf("decision %+v, want a reported refusal", d)
	}
	if d := decide(p, "example.com/other@v1.0.0"); d != (AdmissionDecision{}) {
		t.Fatalf("decision %+v, want the zero decision", d)
	}
}

func TestAReportDoesNotHideALaterRefusal(t *testing.T) {
	p := &AdmissionPolicy{
		Vulnerabilities: &VulnerabilityList{Logger: testLogger(t), Path: "testdata/vulndb", ReportOnly: true},
		Cooldown:        Cooldown{Age: time.Hour, FirstSeen: firstSeenMap{"example.com/vulnerable@v1.0.0": time.Now().Add(-24 * time.Hour)}},
	}
	if d := decide(p, "example.com/vulnerable@v1.1.0"); !d.Refused() || d.Rule != "cooldown" {
		t.Errorf("decision %+v, want the cooldown's refusal", d)
	}
	if d := decide(p, "example.com/vulnerable@v1.0.0"); d.Refused() || !d.ReportOnly || d.Rule != "vulnerable" {
		t.Errorf("decision %+v, want the vulnerability reported", d)
	}
}

func TestAnAllowedVersionIsNotReportedByAReportOnlyCooldown(t *testing.T) {
	p := &AdmissionPolicy{
		Allow:    []AdmissionRule{{Match: "corp.example.com"}},
		Cooldown: Cooldown{Age: time.Hour, FirstSeen: firstSeenMap{}, ReportOnly: true},
	}
	if d := decide(p, "corp.example.com/lib@v1.0.0"); d.ReportOnly || d.Rule != "allow" {
		t.Errorf("decision %+v, want admitted by the allow entry", d)
	}
	if d := decide(p, "example.com/lib@v1.0.0"); !d.ReportOnly || d.Rule != "cooldown" {
		t.Errorf("decision %+v, want the cooldown reported", d)
	}
}

func TestAnInvalidAdmissionPolicyRefusesEverything(t *testing.T) {
	p := &AdmissionPolicy{
		Allow: []AdmissionRule{{Match: "example.com/ok"}},
		Deny:  []AdmissionRule{{Match: "example.com/m@<v1.2"}, {Match: "example.com/a,example.com/b"}},
	}
	err := p.Init()
	for _, want := range []string{`deny entry "example.com/m@<v1.2": version "v1.2" is not canonical`, `deny entry "example.com/a,example.com/b"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Init: %v, want it to say %q", err, want)
		}
	}
	if d := decide(p, "example.com/ok@v1.0.0"); !d.Refused() || d.Rule != "policy" {
		t.Errorf("decision %+v, want a refusal", d)
	}
}

func TestAdmissionPolicyInitReportsACooldownWithoutSource(t *testing.T) {
	p := &AdmissionPolicy{Cooldown: Cooldown{Age: time.Hour}}
	if err := p.Init(); err == nil || !strings.Contains(err.Error(), "no FirstSeen source") {
		t.Fatalf("Init: %v", err)
	}
	if err := (&AdmissionPolicy{Cooldown: Cooldown{Age: -time.Hour}}).Init(); err == nil {
		t.Fatal("a negative Age passed")
	}
}

func TestAnUnreadableVulnerabilityListIsReportedButRetried(t *testing.T) {
	dir := t.TempDir()
	p := &AdmissionPolicy{Vulnerabilities: &VulnerabilityList{Logger: testLogger(t), Path: dir}}
	if err := p.Init(); err == nil {
		t.Fatal("Init succeeded with an empty database directory")
	}
	if d := decide(p, "example.com/m@v1.0.0"); !d.Refused() || d.Rule != "vulnerable" {
		t.Fatalf("decision %+v, want a refusal until the list is read", d)
	}
	p.Vulnerabilities.Path = "testdata/vulndb" // as if the copy had arrived
	if err := p.Vulnerabilities.Load(); err != nil {
		t.Fatal(err)
	}
	if d := decide(p, "example.com/m@v1.0.0"); d != (AdmissionDecision{}) {
		t.Fatalf("decision %+v, want admitted", d)
	}
}

func TestCooldown(t *testing.T) {
	now := time.Now()
	seen := firstSeenMap{"example.com/m@v1.0.0": now.Add(-47 * time.Hour), "example.com/m@v0.9.0": now.Add(-49 * time.Hour)}
	t.Run("no Age, no cooldown", func(t *testing.T) {
		if d := decide(&Cooldown{FirstSeen: seen}, "example.com/m@v1.0.0"); d != (AdmissionDecision{}) {
			t.Errorf("decision %+v", d)
		}
	})
	t.Run("refused until Age has passed, saying when it will be admitted", func(t *testing.T) {
		cd := &Cooldown{Age: 48 * time.Hour, FirstSeen: seen}
		d := decide(cd, "example.com/m@v1.0.0")
		want := "first seen 47h ago; this proxy admits versions 2 days after they are first seen, this one from " + now.Add(time.Hour).UTC().Format("2006-01-02 15:04")
		if !d.Refused() || !strings.HasPrefix(d.Reason, want) {
			t.Errorf("decision %+v, want reason %q", d, want)
		}
		if d := decide(cd, "example.com/m@v0.9.0"); d != (AdmissionDecision{}) {
			t.Errorf("decision %+v, want admitted", d)
		}
	})
	t.Run("a source that cannot tell holds versions back", func(t *testing.T) {
		d := decide(&Cooldown{Age: time.Hour, FirstSeen: failingFirstSeen{}}, "example.com/m@v1.0.0")
		if !d.Refused() || !strings.Contains(d.Reason, "the feed is not read yet") {
			t.Errorf("decision %+v", d)
		}
	})
	t.Run("no source holds every version back", func(t *testing.T) {
		if d := decide(&Cooldown{Age: time.Hour}, "example.com/m@v1.0.0"); !d.Refused() {
			t.Errorf("decision %+v", d)
		}
	})
	t.Run("report only", func(t *testing.T) {
		d := decide(&Cooldown{Age: 48 * time.Hour, FirstSeen: seen, ReportOnly: true}, "example.com/m@v1.0.0")
		if d.Refused() || !d.ReportOnly || d.Rule != "cooldown" {
			t.Errorf("decision %+v", d)
		}
	})
}

func TestRoughDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Second:              "less than a minute",
		90 * time.Second:              "1m",
		2 * time.Hour:                 "2h",
		2*time.Hour + 13*time.Minute:  "2h13m",
		47*time.Hour + 59*time.Minute: "47h59m",
		7 * 24 * time.Hour:            "7 days",
		50 * time.Hour:                "2 days",
	} {
		if got := roughDuration(d); got != want {
			t.Errorf("roughDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestAdmissionErrorNamesTheVersionAndTheReason(t *testing.T) {
	err := &AdmissionError{Path: "example.com/m", Version: "v1.2.0", Decision: AdmissionDecision{Verdict: Refuse, Rule: "deny", Reason: "broken releases"}}
	if got, want := err.Error(), "example.com/m@v1.2.0: refused by the proxy's admission policy: broken releases"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("admission", "decision", err.Decision)
	if !strings.Contains(b.String(), `decision.verdict=refuse decision.rule=deny decision.reason="broken releases" decision.report_only=false`) {
		t.Errorf("logged %q", b.String())
	}
}

// BenchmarkAdmissionOfAList measures deciding every version of a list of
// 300, as the proxy will for each list it serves, under a policy of
// realistic size: 20 allow and 50 deny entries that all have to be tried,
// a vulnerability database of 4,000 entries, and a cooldown over an index
// feed remembering 200,000 versions. The baseline is sorting the same
// list with semver.Sort, which serving a list costs anyway.
func BenchmarkAdmissionOfAList(b *testing.B) {
	const modPath = "github.com/foo/bar"
	var versions []string
	for i := range 300 {
		versions = append(versions, fmt.Sprintf("v1.%d.%d", i/10, i%10))
	}
	dir := b.TempDir()
	for i := range 4000 {
		entry := fmt.Sprintf(`{"id":"GO-2099-%04d","aliases":["CVE-2099-%05d"],"summary":"s","affected":[{"package":{"name":"example.com/m%d","ecosystem":"Go"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.%d.0"}]}]}]}`, i, i, i, i%30)
		if i == 0 {
			entry = strings.Replace(entry, "example.com/m0", modPath, 1)
		}
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("GO-2099-%04d.json", i)), []byte(entry), 0o644)
	}
	feed := &IndexFeed{Logger: slog.New(slog.DiscardHandler)}
	feed.init()
	now := time.Now()
	feed.start = now.Add(-feed.window())
	for batch := range 100 {
		var page []IndexEntry
		for i := range 2000 {
			n := batch*2000 + i
			page = append(page, IndexEntry{fmt.Sprintf("example.com/n%d", n), "v1.0.0", now.Add(-time.Duration(200000-n) * time.Second)})
		}
		feed.remember(page)
	}
	// Fresh for the whole run: no read is due.
	feed.caughtUp, feed.lastStart, feed.PollInterval = now.Add(time.Hour), now, time.Hour
	full := &AdmissionPolicy{
		Vulnerabilities: &VulnerabilityList{Logger: slog.New(slog.DiscardHandler), Path: dir, CheckInterval: time.Hour},
		Cooldown:        Cooldown{Age: 72 * time.Hour, FirstSeen: feed},
	}
	for i := range 20 {
		full.Allow = append(full.Allow, AdmissionRule{Match: fmt.Sprintf("example.com/team%d/*", i)})
	}
	for i := range 50 {
		full.Deny = append(full.Deny, AdmissionRule{Match: fmt.Sprintf("github.com/evil%d/*@<v1.%d.0", i, i)})
	}
	if err := full.Init(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("baseline semver.Sort", func(b *testing.B) {
		list := make([]string, len(versions))
		for b.Loop() {
			copy(list, versions)
			semver.Sort(list)
		}
	})
	for name, p := range map[string]*AdmissionPolicy{"zero policy": {}, "full policy": full} {
		b.Run(name, func(b *testing.B) {
			refused := 0
			for b.Loop() {
				refused = 0
				for _, v := range versions {
					if !p.Decide(ctx, AdmissionCandidate{Path: modPath, Version: v}).Listed() {
						refused++
					}
				}
			}
			b.ReportMetric(float64(refused), "refused/list")
		})
	}
}

// A policy refusing two ranges of versions, exempting the organization's
// own modules from the cooldown, refusing known-vulnerable versions, and
// holding back for three days the versions index.golang.org has listed
// for less than that, applied by a Proxy.
func ExampleAdmissionPolicy() {
	ctx := context.Background()
	proxy := &Proxy{Cacher: DirCacher("/var/cache/goproxy")}
	// Local: the versions the feed does not list yet are dated by the
	// proxy's own record of when it first saw them.
	feed := &IndexFeed{URL: "https://index.golang.org/index", Local: proxy}
	policy := &AdmissionPolicy{
		Deny: []AdmissionRule{
			{Match: "github.com/foo/*@<v1.2.3", Reason: "versions before v1.2.3 leak tokens"},
			{Match: "example.com/m@>=v1.0.0,<v1.4.2", Reason: "broken releases"},
		},
		Allow:           []AdmissionRule{{Match: "corp.example.com", Reason: "our own modules"}},
		Vulnerabilities: &VulnerabilityList{Path: "/var/lib/vulndb.zip"},
		Cooldown:        Cooldown{Age: 72 * time.Hour, FirstSeen: feed},
	}
	proxy.Admission = policy.Decide
	if err := proxy.Init(); err != nil {
		log.Fatal(err)
	}
	// The feed is reached as the upstreams are: egress policy, dialer.
	feed.Client = proxy.Client()
	if err := errors.Join(policy.Init(), feed.Update(ctx)); err != nil {
		log.Fatal(err)
	}
	d := policy.Decide(ctx, AdmissionCandidate{Path: "github.com/foo/bar", Version: "v1.2.0"})
	fmt.Println(d.Refused(), d.Reason)
	http.Handle("/", proxy)
}
