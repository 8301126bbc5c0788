package goproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/testwait"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// feedServer serves an index feed as index.golang.org does: entries from
// since (inclusive), oldest first, at most limit of them.
type feedServer struct {
	*httptest.Server
	mu      sync.Mutex
	entries []IndexEntry // by Timestamp
	sinces  []string     // asked for, in order
	status  int          // answered instead, if set
	extra   string       // lines added to every page
}

func newFeedServer(t *testing.T) *feedServer {
	s := &feedServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *feedServer) add(path, version string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, IndexEntry{path, version, t.UTC()})
	slices.SortStableFunc(s.entries, func(a, b IndexEntry) int { return a.Timestamp.Compare(b.Timestamp) })
}

func (s *feedServer) setStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = code
}

func (s *feedServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.URL.Path != "/index" {
		http.NotFound(w, r)
		return
	}
	if s.status != 0 {
		http.Error(w, "feed unavailable", s.status)
		return
	}
	since, err := time.Parse(time.RFC3339, r.URL.Query().Get("since"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.sinces = append(s.sinces, r.URL.Query().Get("since"))
	n := 0
	w.Write([]byte(s.extra))
	for _, e := range s.entries {
		if e.Timestamp.Before(since) || n == limit {
			continue
		}
		line, _ := json.Marshal(e)
		fmt.Fprintf(w, "%s\n", line)
		n++
	}
}

func (s *feedServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sinces)
}

func TestIndexFeedReadsEveryPageThenOnlyWhatIsNew(t *testing.T) {
	srv := newFeedServer(t)
	now := time.Now()
	srv.add("example.com/ancient", "v1.0.0", now.Add(-30*24*time.Hour))
	for i := range 10 {
		srv.add(fmt.Sprintf("example.com/m%d", i), "v1.0.0", now.Add(-time.Duration(50-i)*time.Hour))
	}
	srv.add("example.com/m0", "v1.0.0", now.Add(-time.Hour)) // seen again: the first time counts
	f := &IndexFeed{URL: srv.URL + "/index", Logger: testLogger(t), pageSize: 4}
	if err := f.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.requests()); n < 3 {
		t.Errorf("%d requests for 11 entries in pages of 4", n)
	}
	for i := range 10 {
		got, err := f.FirstSeen(context.Background(), fmt.Sprintf("example.com/m%d", i), "v1.0.0")
		if want := now.Add(-time.Duration(50-i) * time.Hour); err != nil || !got.Equal(want) {
			t.Errorf("m%d: FirstSeen = %v, %v; want %v", i, got, err, want)
		}
	}
	st := f.Status()
	if st.Versions != 10 || st.Err != nil || st.CaughtUp.IsZero() {
		t.Errorf("status %+v, want 10 versions, caught up", st)
	}
	// Older than the window, or not in the feed: the start of the window.
	for _, pv := range []string{"example.com/ancient@v1.0.0", "example.com/unknown@v1.0.0"} {
		p, v, _ := strings.Cut(pv, "@")
		got, err := f.FirstSeen(context.Background(), p, v)
		if err != nil || !got.Equal(st.Since) || time.Since(got) < 7*24*time.Hour {
			t.Errorf("%s: FirstSeen = %v, %v; want the start of the window, 7 days ago (%v)", pv, got, err, st.Since)
		}
	}

	before := len(srv.requests())
	srv.add("example.com/new", "v0.1.0", now.Add(-time.Minute))
	if err := f.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	asked := srv.requests()[before:]
	if len(asked) != 1 || asked[0] != now.Add(-time.Hour).UTC().Format(time.RFC3339Nano) {
		t.Errorf("second read asked %v, want one page since the newest timestamp read", asked)
	}
	if got, err := f.FirstSeen(context.Background(), "example.com/new", "v0.1.0"); err != nil || !got.Equal(now.Add(-time.Minute)) {
		t.Errorf("new version: FirstSeen = %v, %v", got, err)
	}
}

func TestIndexFeedFailsUntilReadToItsEnd(t *testing.T) {
	srv := newFeedServer(t)
	srv.setStatus(http.StatusServiceUnavailable)
	f := &IndexFeed{URL: srv.URL + "/index", Logger: testLogger(t), PollInterval: time.Hour}
	defer f.bg.Wait()
	_, err := f.FirstSeen(context.Background(), "example.com/m", "v1.0.0")
	if err == nil || !strings.Contains(err.Error(), "not been read yet") {
		t.Fatalf("FirstSeen before any read: %v", err)
	}
	f.bg.Wait()
	if err := f.Update(context.Background()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Update: %v, want the status", err)
	}
	cd := &Cooldown{Age: time.Hour, FirstSeen: f}
	if d := decide(cd, "example.com/m@v1.0.0"); !d.Refused() || !strings.Contains(d.Reason, "503") {
		t.Errorf("decision %+v, want a refusal saying why", d)
	}
	srv.setStatus(0)
	if err := f.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := decide(cd, "example.com/m@v1.0.0"); d != (AdmissionDecision{}) {
		t.Errorf("decision %+v, want admitted once read", d)
	}
}

func TestIndexFeedFailsWhenItCannotBeReadForTenPolls(t *testing.T) {
	srv := newFeedServer(t)
	f := &IndexFeed{URL: srv.URL + "/index", Logger: testLogger(t), PollInterval: time.Millisecond}
	defer f.bg.Wait()
	if err := f.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.add("example.com/m", "v1.0.0", time.Now().Add(-time.Hour))
	testwait.For(t, func() bool {
		seen, err := f.FirstSeen(context.Background(), "example.com/m", "v1.0.0")
		return err == nil && time.Since(seen) < 2*time.Hour
	})
	srv.setStatus(http.StatusInternalServerError)
	testwait.For(t, func() bool {
		_, err := f.FirstSeen(context.Background(), "example.com/unknown", "v1.0.0")
		return err != nil && strings.Contains(err.Error(), "has not been read since")
	})
	// What the feed said stays true.
	if _, err := f.FirstSeen(context.Background(), "example.com/m", "v1.0.0"); err != nil {
		t.Errorf("known version: %v", err)
	}
}

func TestIndexFeedWithACooldown(t *testing.T) {
	srv := newFeedServer(t)
	now := time.Now()
	srv.add("example.com/m", "v1.0.0", now.Add(-72*time.Hour))
	srv.add("example.com/m", "v1.1.0", now.Add(-2*time.Hour))
	f := &IndexFeed{URL: srv.URL + "/index", Logger: testLogger(t)}
	if err := f.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	cd := &Cooldown{Age: 48 * time.Hour, FirstSeen: f}
	for version, refused := range map[string]bool{"v1.0.0": false, "v1.1.0": true, "v0.9.0": false} {
		if d := decide(cd, "example.com/m@"+version); d.Refused() != refused {
			t.Errorf("%s: decision %+v, want refused %v", version, d, refused)
		}
	}
}

func TestIndexFeedForgetsTheOldestPastMaxEntries(t *testing.T) {
	srv := newFeedServer(t)
	now := time.Now()
	for i := range 25 {
		srv.add(fmt.Sprintf("example.com/m%d", i), "v1.0.0", now.Add(-time.Duration(25-i)*time.Hour))
	}
	f := &IndexFeed{URL: srv.URL + "/index", Logger: testLogger(t), MaxEntries: 10, pageSize: 7}
	if err := f.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := f.Status()
	if st.Versions > 10 || !st.Since.After(now.Add(-16*time.Hour)) {
		t.Fatalf("status %+v, want at most 10 versions, since less than 16h ago", st)
	}
	old, _ := f.FirstSeen(context.Background(), "example.com/m0", "v1.0.0")
	if !old.Equal(st.Since) {
		t.Errorf("a forgotten version: FirstSeen = %v, want the start of memory %v", old, st.Since)
	}
	newest, _ := f.FirstSeen(context.Background(), "example.com/m24", "v1.0.0")
	if !newest.Equal(now.Add(-time.Hour)) {
		t.Errorf("the newest version: FirstSeen = %v", newest)
	}
}

func TestIndexFeedSkipsBadLines(t *testing.T) {
	srv := newFeedServer(t)
	now := time.Now()
	srv.extra = "not json\n" +
		`{"Path":"../evil","Version":"v1.0.0","Timestamp":"` + now.Add(-time.Hour).UTC().Format(time.RFC3339Nano) + `"}` + "\n" +
		`{"Path":"example.com/future","Version":"v1.0.0","Timestamp":"` + now.Add(24*time.Hour).UTC().Format(time.RFC3339Nano) + `"}` + "\n" +
		`{"Path":"example.com/m","Version":"master","Timestamp":"` + now.Add(-time.Hour).UTC().Format(time.RFC3339Nano) + `"}` + "\n" +
		"\n"
	srv.add("example.com/good", "v1.0.0", now.Add(-time.Hour))
	f := &IndexFeed{URL: srv.URL + "/index", Logger: testLogger(t), pageSize: 10}
	if err := f.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := f.Status(); st.Versions != 1 || !st.Newest.Equal(now.Add(-time.Hour)) {
		t.Errorf("status %+v, want the one good version, and the future not believed", st)
	}
}

func TestIndexFeedMovesPastAFullPageOfOneTimestamp(t *testing.T) {
	srv := newFeedServer(t)
	now := time.Now()
	same := now.Add(-2 * time.Hour)
	for i := range 5 {
		srv.add(fmt.Sprintf("example.com/same%d", i), "v1.0.0", same)
	}
	srv.add("example.com/after", "v1.0.0", now.Add(-time.Hour))
	f := &IndexFeed{URL: srv.URL + "/index", Logger: testLogger(t), pageSize: 3}
	if err := f.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.FirstSeen(context.Background(), "example.com/after", "v1.0.0"); !got.Equal(now.Add(-time.Hour)) {
		t.Errorf("the entry after the stuck page: FirstSeen = %v", got)
	}
}

func TestIndexFeedReadsAProxysOwnIndex(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	for name, age := range map[string]time.Duration{
		"example.com/m/@v/v1.0.0.info": 72 * time.Hour,
		"example.com/m/@v/v1.1.0.info": time.Hour,
	} {
		file := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(file), 0o755)
		os.WriteFile(file, []byte(`{"Version":"`+strings.TrimSuffix(filepath.Base(name), ".info")+`"}`), 0o644)
		os.Chtimes(file, now.Add(-age), now.Add(-age))
	}
	p := newTestProxy(t, "off")
	p.Cacher = DirCacher(dir)
	srv := httptest.NewServer(p)
	defer srv.Close()
	f := &IndexFeed{URL: srv.URL + "/index", Logger: testLogger(t)}
	if err := f.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := f.FirstSeen(context.Background(), "example.com/m", "v1.1.0")
	if err != nil || got.Sub(now.Add(-time.Hour)).Abs() > time.Second {
		t.Errorf("FirstSeen = %v, %v; want an hour ago", got, err)
	}
}

// A token given as the feed URL's lone user name is kept out of the logs
// and errors of reading it, as the library does for every URL it logs
// (net/url's Redacted would keep it).
func TestIndexFeedLogsNoTokenOfItsURL(t *testing.T) {
	srv := newFeedServer(t)
	srv.setStatus(http.StatusServiceUnavailable)
	var logs syncBuffer
	const token = "s3cr3t-t0ken"
	f := &IndexFeed{URL: strings.Replace(srv.URL, "://", "://"+token+"@", 1) + "/index", Logger: newBufferLogger(&logs), PollInterval: time.Hour}
	defer f.bg.Wait()
	err := f.Update(context.Background())
	if err == nil {
		t.Fatal("Update of a failing feed passed")
	}
	f.bg.Wait()
	if strings.Contains(logs.String()+err.Error(), token) {
		t.Errorf("the token shows:\n%s\n%v", logs.String(), err)
	}
	if !strings.Contains(logs.String(), "reading the index feed failed") {
		t.Errorf("no warning logged:\n%s", logs.String())
	}
}
