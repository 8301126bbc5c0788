package goproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// newAdmissionProxy returns a Proxy over a graph of modules whose
// Admission is decide.
func newAdmissionProxy(t *testing.T, decide func(context.Context, AdmissionCandidate) AdmissionDecision) (*Proxy, *moduletest.Server, *tally[AdmissionMetric]) {
	t.Helper()
	up := moduletest.NewServer(moduletest.Graph(10))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL)
	p.Admission = decide
	counts := &tally[AdmissionMetric]{}
	p.Metrics.Admission = counts.add
	return p, up, counts
}

func denying(rules ...AdmissionRule) func(context.Context, AdmissionCandidate) AdmissionDecision {
	policy := &AdmissionPolicy{Deny: rules}
	return policy.Decide
}

func infoVersion(t *testing.T, body []byte) string {
	t.Helper()
	var info struct{ Version string }
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatalf("not an .info: %q: %v", body, err)
	}
	return info.Version
}

func TestARefusedVersionAnswers403WithTheReasonAndIsNeverFetched(t *testing.T) {
	p, up, counts := newAdmissionProxy(t, denying(AdmissionRule{Match: "example.com/mod003@v1.2.0", Reason: "v1.2.0 corrupts data"}))
	for _, method := range []string{"GET", "HEAD"} {
		for _, ext := range []string{".info", ".mod", ".zip"} {
			w := do(p, method, "/example.com/mod003/@v/v1.2.0"+ext)
			if w.Code != http.StatusForbidden || w.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("%s %s: %d, Cache-Control %q; want 403, no-store", method, ext, w.Code, w.Header().Get("Cache-Control"))
			}
			if method == "GET" && (!strings.Contains(w.Body.String(), "example.com/mod003@v1.2.0") || !strings.Contains(w.Body.String(), "v1.2.0 corrupts data")) {
				t.Errorf("GET %s: %q; want the version and the reason", ext, w.Body)
			}
		}
	}
	for _, ext := range []string{".info", ".mod", ".zip"} {
		if n := up.Requests("/example.com/mod003/@v/v1.2.0" + ext); n != 0 {
			t.Errorf("the refused version's %s was fetched %d times", ext, n)
		}
	}
	// A refusal stands for a module that exists: its list says so.
	if n := up.Requests("/example.com/mod003/@v/list"); n != 1 {
		t.Errorf("the module's list was asked %d times, want 1 (then cached)", n)
	}
	if n := counts.get(AdmissionMetric{Rule: "deny", Verdict: Refuse, Use: AdmissionRequest}); n != 6 {
		t.Errorf("counted %d refusals, want 6", n)
	}
	// Its neighbours are served.
	if w := do(p, "GET", "/example.com/mod003/@v/v1.1.0.zip"); w.Code != http.StatusOK {
		t.Errorf("an admitted version: %d %s", w.Code, w.Body)
	}
}

func TestAVersionOfNoModuleIsNotFoundRatherThanRefused(t *testing.T) {
	// The go command asks for example.com/mod001/pkg@v1.2.0 and
	// example.com@v1.2.0 too when it looks for a package of
	// example.com/mod001: a 403 for those would end its search.
	p, _, _ := newAdmissionProxy(t, func(ctx context.Context, c AdmissionCandidate) AdmissionDecision {
		return AdmissionDecision{Verdict: Refuse, Rule: "cooldown", Reason: "too new"}
	})
	for _, path := range []string{"/example.com/mod001/pkg/@v/v1.2.0.info", "/example.com/@v/v1.2.0.info"} {
		if w := do(p, "GET", path); w.Code != http.StatusNotFound {
			t.Errorf("%s: %d %q; want 404", path, w.Code, w.Body)
		}
	}
	if w := do(p, "GET", "/example.com/mod001/@v/v1.2.0.info"); w.Code != http.StatusForbidden {
		t.Errorf("the module's version: %d %q; want 403", w.Code, w.Body)
	}
	// Without fetching, an uncached list says nothing: refused.
	if w := do(p, "GET", "/example.com/mod002/@v/v1.0.0.info", "Disable-Module-Fetch", "true"); w.Code != http.StatusForbidden {
		t.Errorf("with Disable-Module-Fetch: %d %q; want 403", w.Code, w.Body)
	}
}

func TestAdmissionIsDecidedBeforeTheHotTierAndTheCache(t *testing.T) {
	var deny atomic.Bool
	p, up, _ := newAdmissionProxy(t, func(ctx context.Context, c AdmissionCandidate) AdmissionDecision {
		if deny.Load() && c.Version == "v1.1.0" {
			return AdmissionDecision{Verdict: Refuse, Rule: "deny", Reason: "withdrawn today"}
		}
		return AdmissionDecision{}
	})
	for _, ext := range []string{".info", ".mod", ".zip"} {
		if w := do(p, "GET", "/example.com/mod001/@v/v1.1.0"+ext); w.Code != http.StatusOK {
			t.Fatalf("%s before the refusal: %d %s", ext, w.Code, w.Body)
		}
	}
	deny.Store(true)
	for _, ext := range []string{".info", ".mod", ".zip"} {
		if w := do(p, "GET", "/example.com/mod001/@v/v1.1.0"+ext); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "withdrawn today") {
			t.Errorf("%s cached and hot, then refused: %d %q", ext, w.Code, w.Body)
		}
	}
	if n := up.Requests("/example.com/mod001/@v/v1.1.0.zip"); n != 1 {
		t.Errorf("the zip was fetched %d times", n)
	}
}

func TestListsAreCachedWholeAndFilteredWhenServed(t *testing.T) {
	var deny atomic.Bool
	deny.Store(true)
	p, up, counts := newAdmissionProxy(t, func(ctx context.Context, c AdmissionCandidate) AdmissionDecision {
		if deny.Load() && c.Version == "v1.2.0" {
			return AdmissionDecision{Verdict: Hide, Rule: "cooldown", Reason: "too new"}
		}
		return AdmissionDecision{}
	})
	w := do(p, "GET", "/example.com/mod001/@v/list")
	if w.Code != http.StatusOK || w.Body.String() != "v1.0.0\nv1.1.0\n" {
		t.Fatalf("filtered list: %d %q", w.Code, w.Body)
	}
	cf, err := p.Cacher.Get(context.Background(), "example.com/mod001/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	cached, _ := io.ReadAll(cf)
	cf.Close()
	if !bytes.Contains(cached, []byte("v1.2.0")) {
		t.Errorf("the cache holds %q: the upstream's list must be kept whole", cached)
	}
	if n := counts.get(AdmissionMetric{Rule: "cooldown", Verdict: Hide, Use: AdmissionList}); n != 1 {
		t.Errorf("counted %d hidden list entries, want 1", n)
	}
	// Hidden, not refused: served when asked for by name.
	if w := do(p, "GET", "/example.com/mod001/@v/v1.2.0.info"); w.Code != http.StatusOK {
		t.Errorf("a hidden version asked for by name: %d %s", w.Code, w.Body)
	}
	deny.Store(false)
	if w := do(p, "GET", "/example.com/mod001/@v/list"); !strings.Contains(w.Body.String(), "v1.2.0") {
		t.Errorf("list once admitted: %q", w.Body)
	}
	if n := up.Requests("/example.com/mod001/@v/list"); n != 1 {
		t.Errorf("the list was fetched %d times; the cached one serves both", n)
	}
}

func TestLatestAndQueriesFallBackOnTheHighestListedVersion(t *testing.T) {
	pre := []*moduletest.Version{
		{Path: "example.com/pre", Version: "v1.0.0", Time: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Path: "example.com/pre", Version: "v1.1.0-rc.1", Time: time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)},
		{Path: "example.com/pre", Version: "v1.2.0", Time: time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)},
	}
	p, up, _ := newAdmissionProxy(t, denying(
		AdmissionRule{Match: "example.com/mod001@v1.2.0", Reason: "broken"},
		AdmissionRule{Match: "example.com/pre@v1.2.0", Reason: "broken"},
		AdmissionRule{Match: "example.com/mod003", Reason: "every version is bad"},
		AdmissionRule{Match: moduletest.PseudoPath, Reason: "bad commits"},
	))
	for _, v := range pre {
		up.Add(v)
	}
	for _, tt := range []struct{ path, want string }{
		{"/example.com/mod001/@latest", "v1.1.0"},
		{"/example.com/mod001/@v/latest.info", "v1.1.0"},
		{"/example.com/mod001/@v/v1.info", "v1.1.0"},
		{"/example.com/mod001/@v/v1.2.info", ""}, // nothing listed matches v1.2
		{"/example.com/pre/@latest", "v1.0.0"},   // a release before a higher pre-release
		{"/example.com/mod003/@latest", ""},
		{"/" + moduletest.PseudoPath + "/@latest", ""},
		{"/example.com/mod005/@latest", "v1.2.0"}, // nothing withheld
	} {
		w := do(p, "GET", tt.path)
		switch {
		case tt.want == "" && (w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "refused by the proxy's admission policy")):
			t.Errorf("%s: %d %q; want 403 with the withheld version's refusal", tt.path, w.Code, w.Body)
		case tt.want != "" && w.Code != http.StatusOK:
			t.Errorf("%s: %d %q", tt.path, w.Code, w.Body)
		case tt.want != "" && infoVersion(t, w.Body.Bytes()) != tt.want:
			t.Errorf("%s: %s, want %s", tt.path, w.Body, tt.want)
		}
	}
}

func TestABranchQueryNamesItsAnswer(t *testing.T) {
	var verdict atomic.Int32
	p, _, _ := newAdmissionProxy(t, func(ctx context.Context, c AdmissionCandidate) AdmissionDecision {
		if c.Version == "v1.2.0" {
			return AdmissionDecision{Verdict: AdmissionVerdict(verdict.Load()), Rule: "deny", Reason: "not this one"}
		}
		return AdmissionDecision{}
	})
	verdict.Store(int32(Hide))
	// The test upstream resolves a branch name to the newest version.
	if w := do(p, "GET", "/example.com/mod001/@v/main.info"); w.Code != http.StatusOK || infoVersion(t, w.Body.Bytes()) != "v1.2.0" {
		t.Errorf("a branch resolving to a hidden version: %d %q; want it served", w.Code, w.Body)
	}
	verdict.Store(int32(Refuse))
	if w := do(p, "GET", "/example.com/mod001/@v/dev.info"); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "example.com/mod001@v1.2.0") {
		t.Errorf("a branch resolving to a refused version: %d %q; want 403 naming it", w.Code, w.Body)
	}
}

func TestReportOnlyAdmitsButIsCounted(t *testing.T) {
	policy := &AdmissionPolicy{Deny: []AdmissionRule{{Match: "example.com/mod001@v1.2.0", Reason: "trying it out"}}, ReportOnly: true}
	p, _, counts := newAdmissionProxy(t, policy.Decide)
	if w := do(p, "GET", "/example.com/mod001/@v/list"); !strings.Contains(w.Body.String(), "v1.2.0") {
		t.Errorf("report-only list: %q", w.Body)
	}
	if w := do(p, "GET", "/example.com/mod001/@v/v1.2.0.zip"); w.Code != http.StatusOK {
		t.Errorf("report-only zip: %d %s", w.Code, w.Body)
	}
	if n := counts.get(AdmissionMetric{Rule: "deny", Verdict: Refuse, ReportOnly: true, Use: AdmissionRequest}); n != 1 {
		t.Errorf("counted %d report-only request decisions, want 1", n)
	}
	if n := counts.get(AdmissionMetric{Rule: "deny", Verdict: Refuse, ReportOnly: true, Use: AdmissionList}); n != 1 {
		t.Errorf("counted %d report-only list decisions, want 1", n)
	}
}

func TestPublishedVersionsAreExemptFromTheCooldown(t *testing.T) {
	p, _, _ := newAdmissionProxy(t, nil)
	p.Hosted = &MemCacher{}
	policy := &AdmissionPolicy{Cooldown: Cooldown{Age: 72 * time.Hour, FirstSeen: p}}
	p.Admission = policy.Decide
	zip := makeZip(t, "example.com/mod001@v1.3.0/go.mod", "module example.com/mod001\n", "example.com/mod001@v1.3.0/a.go", "package mod001\n")
	if err := p.Publish(context.Background(), "example.com/mod001", "v1.3.0", bytes.NewReader(zip)); err != nil {
		t.Fatal(err)
	}
	if w := do(p, "GET", "/example.com/mod001/@v/v1.3.0.zip"); w.Code != http.StatusOK {
		t.Errorf("a version published now: %d %s", w.Code, w.Body)
	}
	if w := do(p, "GET", "/example.com/mod001/@v/list"); w.Body.String() != "v1.3.0\n" {
		t.Errorf("list: %q; want the published version alone, the upstream's all first seen now", w.Body)
	}
	if w := do(p, "GET", "/example.com/mod001/@latest"); w.Code != http.StatusOK || infoVersion(t, w.Body.Bytes()) != "v1.3.0" {
		t.Errorf("@latest: %d %s", w.Code, w.Body)
	}
	w := do(p, "GET", "/example.com/mod001/@v/v1.0.0.info")
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "first seen less than a minute ago") {
		t.Errorf("an upstream version first seen now: %d %q", w.Code, w.Body)
	}
}

// seedFirstSeen stores a first-seen record for the versions of vs, as
// if the proxy had seen them at t.
func seedFirstSeen(t *testing.T, c Cacher, vs []*moduletest.Version, at time.Time, except ...string) {
	t.Helper()
	byPath := map[string]*strings.Builder{}
	for _, v := range vs {
		if strings.Contains(strings.Join(except, " "), v.Path+"@"+v.Version) {
			continue
		}
		b := byPath[v.Path]
		if b == nil {
			b = &strings.Builder{}
			byPath[v.Path] = b
		}
		fmt.Fprintf(b, "%s %s\n", v.Version, at.UTC().Format(time.RFC3339Nano))
	}
	for path, b := range byPath {
		if err := c.Put(context.Background(), firstSeenName(path), strings.NewReader(b.String())); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTheProxyRecordsWhenItFirstSawEachVersion(t *testing.T) {
	cache := &MemCacher{}
	up := moduletest.NewServer(moduletest.Graph(10))
	defer up.Close()
	newProxy := func() *Proxy {
		p := newTestProxy(t, up.URL)
		p.Cacher = cache
		policy := &AdmissionPolicy{Cooldown: Cooldown{Age: 72 * time.Hour, FirstSeen: p}}
		p.Admission = policy.Decide
		return p
	}
	monthAgo := time.Now().Add(-30 * 24 * time.Hour)
	seedFirstSeen(t, cache, moduletest.Graph(10), monthAgo, "example.com/mod001@v1.2.0", moduletest.PseudoPath+"@"+moduletest.PseudoVersion)

	p := newProxy()
	before := time.Now()
	if w := do(p, "GET", "/example.com/mod001/@v/list"); w.Body.String() != "v1.0.0\nv1.1.0\n" {
		t.Errorf("list: %q; want v1.2.0, first seen now, left out", w.Body)
	}
	w := do(p, "GET", "/example.com/mod001/@v/v1.2.0.info")
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "first seen less than a minute ago") {
		t.Errorf("a version in its cooldown: %d %q", w.Code, w.Body)
	}
	// Asked for by name, never listed: its clock starts too.
	if w := do(p, "GET", "/"+moduletest.PseudoPath+"/@v/"+moduletest.PseudoVersion+".info"); w.Code != http.StatusForbidden {
		t.Errorf("a version first asked for by name: %d %q", w.Code, w.Body)
	}
	ctx := context.Background()
	for _, tt := range []struct {
		version     string
		from, until time.Time
	}{
		{"example.com/mod001@v1.0.0", monthAgo, monthAgo},
		{"example.com/mod001@v1.2.0", before, time.Now()},
		{moduletest.PseudoPath + "@" + moduletest.PseudoVersion, before, time.Now()},
	} {
		// A restarted proxy reads the record the first one kept.
		for i, q := range []*Proxy{p, newProxy()} {
			path, version, _ := strings.Cut(tt.version, "@")
			seen, err := q.FirstSeen(ctx, path, version)
			if err != nil || seen.Before(tt.from.Truncate(time.Microsecond)) || seen.After(tt.until) {
				t.Errorf("proxy %d: %s first seen %v, %v; want between %v and %v", i, tt.version, seen, err, tt.from, tt.until)
			}
		}
	}
	if seen, err := p.FirstSeen(ctx, "example.com/mod007", "v1.0.0"); err != nil || !seen.Equal(monthAgo) {
		t.Errorf("a version seeded, never asked about: %v, %v", seen, err)
	}
	if seen, err := p.FirstSeen(ctx, "example.com/never", "v1.0.0"); err != nil || !seen.IsZero() {
		t.Errorf("a version never seen: %v, %v; want the zero time", seen, err)
	}
	if _, _, protected := evictionKey(firstSeenName("example.com/mod001")); !protected {
		t.Error("eviction may remove the first-seen record")
	}
}

func TestAFillDecidesBeforeFetching(t *testing.T) {
	// The fill's wiring into the Proxy is another change: this is the
	// method it calls for each item, run as a fill runs items.
	p, up, counts := newAdmissionProxy(t, denying(AdmissionRule{Match: "example.com/mod003@v1.2.0", Reason: "v1.2.0 corrupts data"}))
	plan, err := FillPlanFromList([]byte("example.com/mod003 v1.2.0\nexample.com/mod001 v1.0.0\n"))
	if err != nil {
		t.Fatal(err)
	}
	report, err := runFill(context.Background(), plan, func(ctx context.Context, it FillItem) (fillOutcome, error) {
		if err := p.admitFetch(ctx, it.Path, it.Version); err != nil {
			return 0, err
		}
		if w := do(p, "GET", "/"+it.Path+"/@v/"+it.Version+".zip"); w.Code != http.StatusOK {
			return 0, fmt.Errorf("%d %s", w.Code, w.Body)
		}
		return fillFetched, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Failed) != 1 || report.Failed[0].Item.Path != "example.com/mod003" || len(report.Fetched) != 1 {
		t.Fatalf("report: %+v", report)
	}
	var ae *AdmissionError
	if err := report.Failed[0].Err; !errors.As(err, &ae) || ae.Decision.Reason != "v1.2.0 corrupts data" || !strings.Contains(err.Error(), "v1.2.0 corrupts data") {
		t.Errorf("the fill's failure: %v; want an AdmissionError with the reason", err)
	}
	if status, _ := answerFor(report.Failed[0].Err); status != http.StatusForbidden {
		t.Errorf("answered %d, want 403", status)
	}
	if n := up.Requests("/example.com/mod003/@v/v1.2.0.zip") + up.Requests("/example.com/mod003/@v/v1.2.0.info"); n != 0 {
		t.Errorf("the refused version was fetched %d times", n)
	}
	if n := counts.get(AdmissionMetric{Rule: "deny", Verdict: Refuse, Use: AdmissionFetch}); n != 1 {
		t.Errorf("counted %d refused fetches, want 1", n)
	}
}

func TestIndexFeedHoldsBackAVersionSeenAfterItsNewestEntry(t *testing.T) {
	fs := newFeedServer(t)
	now := time.Now()
	fs.add("example.com/old", "v1.0.0", now.Add(-3*24*time.Hour))
	fs.add("example.com/listed", "v1.0.0", now.Add(-2*24*time.Hour))
	fs.add("example.com/other", "v1.0.0", now.Add(-time.Hour)) // the newest entry
	local := firstSeenMap{
		"example.com/fresh@v1.0.0":  now.Add(-time.Minute),               // after the newest entry
		"example.com/lagged@v1.0.0": now.Add(-time.Hour - 5*time.Minute), // within the feed's lag
		"example.com/before@v1.0.0": now.Add(-5 * time.Hour),             // the feed moved past it
		"example.com/listed@v1.0.0": now.Add(-4 * 24 * time.Hour),        // seen here before the feed
	}
	feed := &IndexFeed{URL: fs.URL + "/index", Logger: testLogger(t), Local: local}
	if err := feed.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	start := feed.Status().Since
	for _, tt := range []struct {
		version string
		want    time.Time // zero: cannot tell yet
	}{
		{"example.com/fresh@v1.0.0", time.Time{}},
		{"example.com/lagged@v1.0.0", time.Time{}},
		{"example.com/before@v1.0.0", start},
		{"example.com/unknown@v1.0.0", start},
		{"example.com/listed@v1.0.0", local["example.com/listed@v1.0.0"]},
		{"example.com/old@v1.0.0", now.Add(-3 * 24 * time.Hour)},
	} {
		path, version, _ := strings.Cut(tt.version, "@")
		got, err := feed.FirstSeen(context.Background(), path, version)
		switch {
		case tt.want.IsZero() && (err == nil || !strings.Contains(err.Error(), "not in the index feed yet")):
			t.Errorf("%s: %v, %v; want it held back until the feed tells", tt.version, got, err)
		case !tt.want.IsZero() && (err != nil || !got.Equal(tt.want)):
			t.Errorf("%s: %v, %v; want %v", tt.version, got, err, tt.want)
		}
	}
}

func TestAnUnreadIndexFeedLetsTheProxysOwnRecordsDateWhatItHasSeen(t *testing.T) {
	fs := newFeedServer(t)
	fs.setStatus(http.StatusServiceUnavailable) // as after a restart, before the first read ends
	old := time.Now().Add(-30 * 24 * time.Hour)
	local := firstSeenMap{"example.com/cached@v1.0.0": old}
	feed := &IndexFeed{URL: fs.URL + "/index", Logger: testLogger(t), Local: local, PollInterval: time.Hour}
	defer feed.bg.Wait()
	if got, err := feed.FirstSeen(context.Background(), "example.com/cached", "v1.0.0"); err != nil || !got.Equal(old) {
		t.Errorf("a version this proxy saw a month ago: %v, %v; want its own record", got, err)
	}
	if _, err := feed.FirstSeen(context.Background(), "example.com/unseen", "v1.0.0"); err == nil || !strings.Contains(err.Error(), "not been read yet") {
		t.Errorf("a version never seen here: %v; want it held back until the feed is read", err)
	}
}

func TestAnIndexFeedReadThroughTheProxysClientMeetsItsEgressPolicy(t *testing.T) {
	fs := newFeedServer(t)
	fs.add("example.com/m", "v1.0.0", time.Now().Add(-time.Hour))
	for _, tt := range []struct {
		name    string
		allow   []string
		refused bool
	}{
		{"loopback refused by default", nil, true},
		{"allowed", []string{strings.TrimPrefix(fs.URL, "http://")}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &Proxy{Cacher: &MemCacher{}, Env: []string{"GOPROXY=off"}, TempDir: t.TempDir(), Egress: EgressPolicy{Allow: tt.allow}, Logger: testLogger(t)}
			defer p.Close()
			feed := &IndexFeed{URL: fs.URL + "/index", Client: p.Client(), Logger: testLogger(t)}
			err := feed.Update(context.Background())
			if tt.refused != (err != nil) || tt.refused && !strings.Contains(err.Error(), "loopback") {
				t.Errorf("Update: %v", err)
			}
		})
	}
}

// failingGetCacher fails every Get of the names with a prefix while fail
// is set.
type failingGetCacher struct {
	*MemCacher
	prefix string
	fail   atomic.Bool
}

func (c *failingGetCacher) Get(ctx context.Context, name string) (CachedFile, error) {
	if c.fail.Load() && strings.HasPrefix(name, c.prefix) {
		return nil, errors.New("the store is down")
	}
	return c.MemCacher.Get(ctx, name)
}

func TestAFirstSeenRecordThatCannotBeReadIsNotOverwritten(t *testing.T) {
	cache := &failingGetCacher{MemCacher: &MemCacher{}, prefix: firstSeenPrefix}
	monthAgo := time.Now().Add(-30 * 24 * time.Hour)
	seedFirstSeen(t, cache, moduletest.Graph(10), monthAgo)
	p, _, _ := newAdmissionProxy(t, nil)
	p.Cacher = cache
	policy := &AdmissionPolicy{Cooldown: Cooldown{Age: 72 * time.Hour, FirstSeen: p}}
	p.Admission = policy.Decide
	cache.fail.Store(true)
	if w := do(p, "GET", "/example.com/mod001/@v/list"); w.Code != http.StatusOK || w.Body.String() != "" {
		t.Errorf("list with the record unreadable: %d %q; want every version held back", w.Code, w.Body)
	}
	cache.fail.Store(false)
	seen, err := p.FirstSeen(context.Background(), "example.com/mod001", "v1.0.0")
	if err != nil || !seen.Equal(monthAgo) {
		t.Errorf("first seen %v, %v; want the stored %v, not overwritten", seen, err, monthAgo)
	}
}

func TestAVersionNamedBeforeItExistsDoesNotStartItsCooldown(t *testing.T) {
	// Someone who foresees a release (its author, say) asks for it, or
	// writes a go.mod requiring it that a build or a fill reads, before
	// it is published. Were the name recorded, the release would be
	// admitted on publication once the cooldown's age had passed since.
	cache := &MemCacher{}
	up := moduletest.NewServer(moduletest.Graph(10))
	defer up.Close()
	p := newTestProxy(t, up.URL)
	p.Cacher = cache
	policy := &AdmissionPolicy{Cooldown: Cooldown{Age: 72 * time.Hour, FirstSeen: p}}
	p.Admission = policy.Decide
	seedFirstSeen(t, cache, moduletest.Graph(10), time.Now().Add(-30*24*time.Hour))
	ctx := context.Background()

	for _, ext := range []string{".info", ".mod", ".zip"} {
		if w := do(p, "GET", "/example.com/mod001/@v/v1.9.0"+ext); w.Code != http.StatusNotFound {
			t.Errorf("%s of a version that does not exist: %d %q; want 404", ext, w.Code, w.Body)
		}
	}
	if err := p.admitFetch(ctx, "example.com/mod002", "v1.9.0"); !notFound(err) {
		t.Errorf("a fill of a version that does not exist: %v; want not found", err)
	}
	for _, m := range []string{"example.com/mod001", "example.com/mod002", "example.com/nosuchmodule"} {
		if seen, err := p.FirstSeen(ctx, m, "v1.9.0"); err != nil || !seen.IsZero() {
			t.Errorf("%s@v1.9.0, named before it exists, recorded as first seen %v, %v", m, seen, err)
		}
	}
	if w := do(p, "GET", "/example.com/nosuchmodule/@v/v1.0.0.info"); w.Code != http.StatusNotFound {
		t.Errorf("a module no upstream has: %d %q", w.Code, w.Body)
	}
	if _, err := cache.Get(ctx, firstSeenName("example.com/nosuchmodule")); err == nil {
		t.Error("a module no upstream has got a first-seen entry in the cache")
	}

	// Published later, the version starts its cooldown then.
	up.Add(&moduletest.Version{Path: "example.com/mod001", Version: "v1.9.0", Time: time.Now().Add(-365 * 24 * time.Hour)})
	p.notFound.forget("example.com/mod001/@v/v1.9.0.info")
	w := do(p, "GET", "/example.com/mod001/@v/v1.9.0.info")
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "first seen less than a minute ago") {
		t.Errorf("the version once published: %d %q; want it held back by the cooldown", w.Code, w.Body)
	}
}

func TestAListLineIsDecidedByItsFirstFieldAsTheGoCommandReadsIt(t *testing.T) {
	// The go command takes the first field of each line of a list: an
	// upstream may add the version's time after it, which the proxy
	// keeps. A refused version left in the list would be picked by go
	// get m@latest, then refused.
	p, up, _ := newAdmissionProxy(t, denying(AdmissionRule{Match: "example.com/mod001@v1.2.0", Reason: "broken"}))
	up.SetFile("/example.com/mod001/@v/list", []byte("v1.0.0 2024-01-01T00:00:00Z\nv1.1.0\t2024-01-02T00:00:00Z\nv1.2.0 2024-01-03T00:00:00Z\nv1.2.0+build.1\n"))
	w := do(p, "GET", "/example.com/mod001/@v/list")
	if w.Code != http.StatusOK || w.Body.String() != "v1.0.0 2024-01-01T00:00:00Z\nv1.1.0 2024-01-02T00:00:00Z\n" {
		t.Errorf("list: %d %q; want v1.2.0 left out", w.Code, w.Body)
	}
}

func TestARefusedVersionOfAModuleWithoutAListIsStill403(t *testing.T) {
	// Some upstreams (a static tree, a mirror) have a version's files but
	// no list. A 404 for the refused version would send the go command on
	// to its next GOPROXY entry or direct, which would serve it.
	p, up, _ := newAdmissionProxy(t, denying(AdmissionRule{Match: "example.com/mod001@v1.1.0", Reason: "broken"}))
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/@v/list") {
			http.NotFound(w, r)
			return true
		}
		return false
	})
	for _, ext := range []string{".info", ".mod", ".zip"} {
		if w := do(p, "GET", "/example.com/mod001/@v/v1.1.0"+ext); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "broken") {
			t.Errorf("%s: %d %q; want 403 with the reason", ext, w.Code, w.Body)
		}
	}
	// A path that is no module is still not found.
	if w := do(p, "GET", "/example.com/mod001/pkg/@v/v1.1.0.info"); w.Code != http.StatusNotFound {
		t.Errorf("a package path: %d %q; want 404", w.Code, w.Body)
	}
	if n := up.Requests("/example.com/mod001/@v/v1.1.0.zip") + up.Requests("/example.com/mod001/@v/v1.1.0.mod"); n != 0 {
		t.Errorf("the refused version's .mod and .zip were fetched %d times", n)
	}
}

// With an Admission policy, a file in the hot tier is still answered from
// memory, and still decided first: a version refused once it was hot
// answers 403.
func TestAHotFileIsDecidedBeforeItIsServed(t *testing.T) {
	var refuse atomic.Bool
	p, _, _ := newAdmissionProxy(t, func(_ context.Context, c AdmissionCandidate) AdmissionDecision {
		if refuse.Load() && c.Path == "example.com/mod003" {
			return AdmissionDecision{Verdict: Refuse, Rule: "deny", Reason: "refused by the test"}
		}
		return AdmissionDecision{}
	})
	var answers []string
	p.Metrics.Request = func(m RequestMetric) { answers = append(answers, string(m.Cache)) }
	const mod = "/example.com/mod003/@v/v1.2.0.mod"
	for range 2 {
		if w := do(p, "GET", mod); w.Code != 200 {
			t.Fatalf("GET %s: %d %s", mod, w.Code, w.Body)
		}
		testwait.For(t, p.flights.idle)
	}
	if len(answers) != 2 || answers[1] != string(CacheHot) {
		t.Errorf("answers came from %q, want the second from the hot tier", answers)
	}
	refuse.Store(true)
	if w := do(p, "GET", mod); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "refused by the test") {
		t.Errorf("GET of the hot go.mod of a version refused since: %d %q", w.Code, w.Body)
	}
}
