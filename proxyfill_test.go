package goproxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// fillMain is a program importing packages of three graph modules, for
// the go build of a filled cache.
const fillMain = "package main\n\nimport (\n\tmod \"" + moduletest.UpperCasePath + "\"\n\t\"example.com/mod000\"\n\t\"example.com/mod005\"\n)\n\n" +
	"func main() { println(mod000.Version, mod005.Version, mod.Version) }\n"

// TestFillFromGoModThenTheGoCommandBuildsWithTheUpstreamStopped fills a
// proxy from a go.mod requiring a whole graph, verifying everything
// against a checksum database, then stops the upstream: go mod download
// all and go build succeed through the proxy, the go command verifying
// through the proxy's /sumdb/.
func TestFillFromGoModThenTheGoCommandBuildsWithTheUpstreamStopped(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(20)
	up := moduletest.NewServer(vs)
	defer up.Close()
	db := newTestSumDB(t, vs)
	p := newTestProxy(t, up.URL, "GOSUMDB="+db.vkey+" "+db.URL)
	p.Cacher = DirCacher(t.TempDir())
	var fetched, verified atomic.Int64
	p.Metrics.UpstreamFetch = func(m UpstreamFetchMetric) {
		if m.Outcome == FetchOK && m.Kind != RequestSumDB {
			fetched.Add(1)
		}
	}
	p.Metrics.Verification = func(m VerificationMetric) {
		if m.Outcome == VerifyOK {
			verified.Add(1)
		}
	}
	ctx := context.Background()
	gomod := moduletest.RootGoMod(vs)
	plan, err := p.PlanFill(ctx, "go.mod", gomod)
	if err != nil {
		t.Fatal(err)
	}
	var progress []FillProgress
	rep, err := p.Fill(ctx, plan, &FillOptions{Concurrency: 4, Progress: func(fp FillProgress) { progress = append(progress, fp) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep.Summary())
	for _, f := range rep.Failed {
		t.Errorf("%s: %v", f.Item, f.Err)
	}
	if len(rep.Fetched) == 0 || len(rep.Fetched)+len(rep.Cached) != len(plan.Items) {
		t.Errorf("fetched %d, cached %d of %d items", len(rep.Fetched), len(rep.Cached), len(plan.Items))
	}
	if len(progress) != len(plan.Items) || progress[len(progress)-1].Total != len(plan.Items) {
		t.Errorf("%d progress reports for %d items", len(progress), len(plan.Items))
	}
	if fetched.Load() == 0 || verified.Load() == 0 {
		t.Errorf("the metrics counted %d upstream fetches and %d verifications", fetched.Load(), verified.Load())
	}
	// Filled a second time, everything is cached.
	again, err := p.Fill(ctx, plan, nil)
	if err != nil || len(again.Cached) != len(plan.Items) {
		t.Errorf("a second fill: %s, %v", again.Summary(), err)
	}

	up.Close()
	srv := httptest.NewServer(p)
	defer srv.Close()
	e := gocmdtest.New(t)
	e.Set("GOPROXY", srv.URL)
	e.Set("GOSUMDB", db.vkey) // no URL: through the proxy
	e.WriteGoMod(gomod)
	if err := os.WriteFile(filepath.Join(e.Dir, "main.go"), []byte(fillMain), 0o666); err != nil {
		t.Fatal(err)
	}
	e.MustRun(t, "mod", "download", "all")
	e.MustRun(t, "build", "-o", "app", ".")
	if lookups, _ := filepath.Glob(filepath.Join(e.GOMODCACHE, "cache", "download", "sumdb", db.name, "lookup", "example.com", "*")); len(lookups) == 0 {
		t.Error("the go command looked up no record: it verified nothing")
	}
}

// TestFillFromGoSumThenTheGoCommandDownloadsWithTheUpstreamStopped fills
// a proxy from the go.sum the go command wrote for a graph.
func TestFillFromGoSumThenTheGoCommandDownloadsWithTheUpstreamStopped(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	gomod := moduletest.RootGoMod(vs)
	e := gocmdtest.New(t)
	e.Set("GOPROXY", up.URL)
	e.WriteGoMod(gomod)
	e.MustRun(t, "mod", "download", "all")
	gosum, err := os.ReadFile(filepath.Join(e.Dir, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}

	p := newTestProxy(t, up.URL)
	plan, err := p.PlanFill(context.Background(), "go.sum", gosum)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := p.Fill(context.Background(), plan, nil)
	if err != nil || len(rep.Failed) > 0 || len(rep.Fetched) != len(plan.Items) {
		t.Fatalf("%s, %v: %v", rep.Summary(), err, rep.Failed)
	}
	up.Close()
	srv := httptest.NewServer(p)
	defer srv.Close()
	e.FreshModCache(t)
	e.Set("GOPROXY", srv.URL)
	e.Set("GOFLAGS", "-mod=readonly -modcacherw") // go.sum must do
	e.MustRun(t, "mod", "download", "all")
	e.MustRun(t, "mod", "verify")
}

// TestFillFromSBOMsThenTheGoCommandBuilds fills proxies from the SBOMs
// real generators write for a module (CycloneDX from cyclonedx-gomod,
// SPDX 2.3 from syft), then loads that module's packages through each
// proxy with the upstream stopped.
func TestFillFromSBOMsThenTheGoCommandLoadsThePackages(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and SBOM generators")
	}
	cyclonedx := sbomTool(t, "cyclonedx-gomod", cyclonedxGomodVar)
	syft := sbomTool(t, "syft", syftVar)
	e, _ := sbomModule(t)
	for _, tc := range []struct {
		name, out string
		args      []string
	}{
		{"CycloneDX of cyclonedx-gomod", "mod.cdx.json", []string{cyclonedx, "mod", "-json", "-licenses=false", "-output", "mod.cdx.json", "."}},
		{"SPDX of syft", "dir.spdx.json", []string{syft, "scan", "dir:.", "-q", "-o", "spdx-json=dir.spdx.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sbom := runTool(t, e, tc.out, tc.args[0], tc.args[1:]...)
			vs := moduletest.Graph(12)
			up := moduletest.NewServer(vs)
			defer up.Close()
			p := newTestProxy(t, up.URL)
			plan, err := p.PlanFill(context.Background(), tc.out, sbom)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := p.Fill(context.Background(), plan, nil)
			if err != nil || len(rep.Failed) > 0 || len(rep.Fetched) == 0 {
				t.Fatalf("%s, %v: %v", rep.Summary(), err, rep.Failed)
			}
			t.Logf("%s; skipped %v", rep.Summary(), rep.Skipped)
			up.Close()
			srv := httptest.NewServer(p)
			defer srv.Close()
			g := gocmdtest.New(t)
			g.Set("GOPROXY", srv.URL)
			g.Set("GOFLAGS", "-mod=readonly -modcacherw")
			for _, name := range []string{"go.mod", "go.sum", "main.go"} {
				data, err := os.ReadFile(filepath.Join(e.Dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(g.Dir, name), data, 0o666); err != nil {
					t.Fatal(err)
				}
			}
			// Loading the packages needs every module the build needs,
			// extracted; compiling them would add nothing.
			if out := g.MustRun(t, "list", "-deps", "."); !strings.Contains(out, moduletest.UpperCasePath) {
				t.Errorf("go list -deps: %s", out)
			}
		})
	}
}

// TestFillShowsInTheLiveViewCountsAsUseAndResumes follows a fill: its
// downloads are in the live view while they run, the files it finds
// cached count as used now for eviction, and a fill cancelled midway and
// started again with its journal does only what was left.
func TestFillShowsInTheLiveViewCountsAsUseAndResumes(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	cache := DirCacher(t.TempDir())
	p := newTestProxy(t, up.URL)
	p.Cacher = cache
	p.Eviction = Eviction{MaxAge: 365 * 24 * time.Hour}
	ctx := context.Background()
	var items []string
	for _, v := range vs {
		items = append(items, v.Path+"@"+v.Version)
	}
	plan, err := FillPlanFromList([]byte(strings.Join(items, "\n")))
	if err != nil {
		t.Fatal(err)
	}

	// One version is cached already, stored long ago.
	old := time.Now().Add(-100 * 24 * time.Hour)
	first := plan.Items[0]
	for _, f := range moduleFileExts {
		name, _ := moduleFileName(first.Path, first.Version, f.ext)
		var data []byte
		for _, v := range vs {
			if v.Path == first.Path && v.Version == first.Version {
				data = map[string][]byte{".info": v.Info(), ".mod": v.Mod, ".zip": v.Zip}[f.ext]
			}
		}
		if err := cache.Put(ctx, name, timedReader{strings.NewReader(string(data)), old}); err != nil {
			t.Fatal(err)
		}
	}

	// The zip of the second item is held at the upstream until the live
	// view has shown it.
	held := plan.Items[1]
	heldZip, _ := moduleFileName(held.Path, held.Version, ".zip")
	release := make(chan struct{})
	up.SetHandlerHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.TrimPrefix(r.URL.Path, "/") == heldZip {
			<-release
		}
		return false
	})
	// The fill is cancelled once half the items are done.
	fctx, cancel := context.WithCancel(ctx)
	journal := filepath.Join(t.TempDir(), "fill.journal")
	type result struct {
		rep *FillReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := p.Fill(fctx, plan, &FillOptions{Concurrency: 2, Journal: journal, Progress: func(fp FillProgress) {
			if fp.Fetched+fp.Cached == len(plan.Items)/2 {
				cancel()
			}
		}})
		done <- result{rep, err}
	}()
	testwait.For(t, func() bool {
		return slices.ContainsFunc(p.LiveView().Downloads, func(d DownloadStatus) bool {
			return d.Module == held.Path && d.Version == held.Version && d.Kind == RequestZip
		})
	})
	close(release)
	r := <-done
	if r.err != context.Canceled || r.rep.Interrupted == 0 {
		t.Fatalf("the cancelled fill: %s, %v", r.rep.Summary(), r.err)
	}
	finished := len(r.rep.Fetched) + len(r.rep.Cached)
	if !slices.Contains(r.rep.Cached, first) {
		t.Errorf("the version cached before was not counted as cached: %s", r.rep.Summary())
	}
	rep, err := p.Fill(ctx, plan, &FillOptions{Journal: journal})
	if err != nil || len(rep.Resumed) != finished || len(rep.Resumed)+len(rep.Fetched)+len(rep.Cached) != len(plan.Items) || len(rep.Failed) > 0 {
		t.Errorf("the resumed fill: %s, %v; the first had finished %d", rep.Summary(), err, finished)
	}

	// The cached version's files were used by the fill: eviction sees
	// them as used today, not 100 days ago.
	p.usage.flush(ctx)
	err = cache.WalkInfo(ctx, "", func(e CacheEntryInfo) error {
		if path, version, _, err := parseModuleFileName(e.Name); err == nil && path == first.Path && version == first.Version {
			if time.Since(e.LastUse) > time.Hour {
				t.Errorf("%s: last use %v, before the fill", e.Name, e.LastUse)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestFillAndImportAskTheAdmissionPolicy fills and imports with a policy
// refusing one module: its versions fail with the policy's reason and
// are neither fetched nor stored; the rest come in.
func TestFillAndImportAskTheAdmissionPolicy(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	denied := moduletest.GraphPath(3)
	policy := &AdmissionPolicy{Deny: []AdmissionRule{{Match: denied, Reason: "not in this building"}}}
	p := newTestProxy(t, up.URL)
	p.Admission = policy.Decide
	var items []string
	for _, v := range vs {
		items = append(items, v.Path+"@"+v.Version)
	}
	plan, err := FillPlanFromList([]byte(strings.Join(items, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := p.Fill(context.Background(), plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) == 0 || len(rep.Fetched)+len(rep.Failed) != len(plan.Items) {
		t.Errorf("%s", rep.Summary())
	}
	for _, f := range rep.Failed {
		if f.Item.Path != denied || !strings.Contains(f.Err.Error(), "not in this building") {
			t.Errorf("%s: %v", f.Item, f.Err)
		}
	}
	for _, v := range vs {
		if v.Path == denied && up.Requests("/"+v.Path+"/@v/"+v.Version+".zip") != 0 {
			t.Errorf("%s@%s was fetched", v.Path, v.Version)
		}
	}

	dir := t.TempDir()
	if err := moduletest.WriteDir(dir, vs); err != nil {
		t.Fatal(err)
	}
	q := newTestProxy(t, "off")
	q.Admission = policy.Decide
	imp, err := q.ImportModuleDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(imp.Refused) == 0 || len(imp.Imported)+len(imp.Refused) != len(vs) {
		t.Errorf("imported %d, refused %v", len(imp.Imported), imp.Refused)
	}
	for _, r := range imp.Refused {
		if r.Item.Path != denied {
			t.Errorf("refused %s: %v", r.Item, r.Err)
		}
	}
}
