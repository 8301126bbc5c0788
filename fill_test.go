package goproxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func testPlan(n int) *FillPlan {
	p := &FillPlan{Skipped: []FillSkip{{Entry: "pkg:golang/stdlib@go1.22.0", Reason: "not a module"}}}
	for i := range n {
		files := FillModule
		if i%4 == 3 {
			files = FillMod
		}
		p.Items = append(p.Items, FillItem{Path: fmt.Sprintf("example.com/m%03d", i), Version: "v1.0.0", Files: files})
	}
	return p
}

func TestFillReportsFetchedCachedAndFailedItems(t *testing.T) {
	plan := testPlan(12)
	var progress []FillProgress
	report, err := runFill(context.Background(), plan, func(ctx context.Context, it FillItem) (fillOutcome, error) {
		var i int
		fmt.Sscanf(it.Path, "example.com/m%d", &i)
		switch i % 3 {
		case 0:
			return fillFetched, nil
		case 1:
			return fillCached, nil
		}
		return 0, fmt.Errorf("%s: %w", it, fs.ErrNotExist)
	}, &FillOptions{Progress: func(p FillProgress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Fetched) != 4 || len(report.Cached) != 4 || len(report.Failed) != 4 || len(report.Resumed) != 0 || report.Interrupted != 0 {
		t.Errorf("report: %d fetched, %d cached, %d failed, %d resumed, %d interrupted; want 4, 4, 4, 0, 0",
			len(report.Fetched), len(report.Cached), len(report.Failed), len(report.Resumed), report.Interrupted)
	}
	for _, f := range report.Failed {
		if !errors.Is(f.Err, fs.ErrNotExist) || !strings.Contains(f.Err.Error(), f.Item.Path) {
			t.Errorf("failure of %s: %v", f.Item, f.Err)
		}
	}
	if len(report.Skipped) != 1 {
		t.Errorf("the plan's skipped entries are not reported: %v", report.Skipped)
	}
	if len(progress) != 12 {
		t.Fatalf("%d progress reports, want 12", len(progress))
	}
	last := progress[len(progress)-1]
	if last.Total != 12 || last.Fetched+last.Cached+last.Failed != 12 {
		t.Errorf("last progress report: %+v", last)
	}
}

func TestFillNeverRunsMoreThanConcurrencyAtOnce(t *testing.T) {
	var running, peak atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{}, 100)
	done := make(chan *FillReport)
	go func() {
		report, _ := runFill(context.Background(), testPlan(40), func(ctx context.Context, it FillItem) (fillOutcome, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			started <- struct{}{}
			<-release
			return fillFetched, nil
		}, &FillOptions{Concurrency: 3})
		done <- report
	}()
	// Three start; a fourth must wait for one of them.
	for range 3 {
		<-started
	}
	select {
	case <-started:
		t.Fatal("a fourth item started while three were running")
	default:
	}
	close(release)
	report := <-done
	if peak.Load() != 3 || len(report.Fetched) != 40 {
		t.Errorf("peak concurrency %d, %d fetched; want 3, 40", peak.Load(), len(report.Fetched))
	}
}

func TestFillCancelledMidwayResumesFromItsJournal(t *testing.T) {
	journal := filepath.Join(t.TempDir(), "fill.journal")
	plan := testPlan(30)

	// The first run is cancelled once ten items are done, as a kill would
	// stop it; items in flight then fail with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	var done atomic.Int32
	first, err := runFill(ctx, plan, func(ctx context.Context, it FillItem) (fillOutcome, error) {
		if done.Load() >= 10 {
			cancel()
			<-ctx.Done()
			return 0, ctx.Err()
		}
		done.Add(1)
		return fillFetched, nil
	}, &FillOptions{Journal: journal, Concurrency: 2})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fill returned %v, want context.Canceled", err)
	}
	finished := len(first.Fetched)
	if finished < 10 || finished+first.Interrupted != 30 || len(first.Failed) != 0 {
		t.Fatalf("first run: %d fetched, %d interrupted, %d failed; want >= 10 fetched, the rest interrupted",
			finished, first.Interrupted, len(first.Failed))
	}

	// The second run asks only about what the first did not finish.
	var asked sync.Map
	second, err := runFill(context.Background(), plan, func(ctx context.Context, it FillItem) (fillOutcome, error) {
		asked.Store(it.Path, true)
		return fillFetched, nil
	}, &FillOptions{Journal: journal})
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Resumed) != finished || len(second.Fetched) != 30-finished {
		t.Errorf("second run: %d resumed, %d fetched; want %d, %d", len(second.Resumed), len(second.Fetched), finished, 30-finished)
	}
	for _, it := range first.Fetched {
		if _, ok := asked.Load(it.Path); ok {
			t.Errorf("%s was finished by the first run but asked about again", it)
		}
	}

	// A third run has nothing left to do.
	third, err := runFill(context.Background(), plan, func(ctx context.Context, it FillItem) (fillOutcome, error) {
		t.Errorf("%s asked about after two runs finished it", it)
		return fillFetched, nil
	}, &FillOptions{Journal: journal})
	if err != nil || len(third.Resumed) != 30 {
		t.Errorf("third run: %d resumed, err %v; want 30, nil", len(third.Resumed), err)
	}
}

func TestFillJournalDropsALineCutShortByAKill(t *testing.T) {
	journal := filepath.Join(t.TempDir(), "fill.journal")
	content := fillJournalHeader +
		"done example.com/m000 v1.0.0 imz\n" +
		"done example.com/m003 v1.0.0 m\n" +
		"done example.com/m001 v1.0.0 im" // killed before "z\n"
	if err := os.WriteFile(journal, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	report, err := runFill(context.Background(), testPlan(4), func(ctx context.Context, it FillItem) (fillOutcome, error) {
		return fillFetched, nil
	}, &FillOptions{Journal: journal})
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Resumed) != 2 || len(report.Fetched) != 2 {
		t.Errorf("%d resumed, %d fetched; want 2, 2", len(report.Resumed), len(report.Fetched))
	}
	data, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 5 || strings.Contains(string(data), "imdone") {
		t.Errorf("journal after the resumed run:\n%s", data)
	}
}

func TestFillJournalRecordsFilesSoAWiderItemIsFilledAgain(t *testing.T) {
	journal := filepath.Join(t.TempDir(), "fill.journal")
	if err := os.WriteFile(journal, []byte(fillJournalHeader+"done example.com/m000 v1.0.0 m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	report, err := runFill(context.Background(), testPlan(1), func(ctx context.Context, it FillItem) (fillOutcome, error) {
		return fillCached, nil
	}, &FillOptions{Journal: journal})
	if err != nil || len(report.Cached) != 1 {
		t.Errorf("a .mod-only record resumed a whole module version: %+v, %v", report, err)
	}
}

func TestFillJournalRefusesAFileThatIsNoJournal(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"another file", "package main\n"},
		{"a malformed line", fillJournalHeader + "done example.com/m000\n"},
		{"a bad module path", fillJournalHeader + "done -bad v1.0.0 imz\n"},
		{"unknown files", fillJournalHeader + "done example.com/m000 v1.0.0 x\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			journal := filepath.Join(t.TempDir(), "fill.journal")
			if err := os.WriteFile(journal, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := runFill(context.Background(), testPlan(1), func(ctx context.Context, it FillItem) (fillOutcome, error) {
				t.Error("filled with a bad journal")
				return fillFetched, nil
			}, &FillOptions{Journal: journal})
			if err == nil || !strings.Contains(err.Error(), journal) {
				t.Errorf("error = %v, want one naming the journal", err)
			}
			if data, _ := os.ReadFile(journal); string(data) != tc.content {
				t.Errorf("the file was changed to %q", data)
			}
		})
	}
}

// TestTwoFillsSharingAJournalLeaveItReadable: two fills of one plan with
// the same journal at once (two POSTs of one go.mod, a fill started twice
// by hand) each append whole lines; neither writes over the other's, which
// would leave lines that a third run cannot read.
func TestTwoFillsSharingAJournalLeaveItReadable(t *testing.T) {
	journal := filepath.Join(t.TempDir(), "fill.journal")
	plan := &FillPlan{}
	for i := range 200 {
		// Lines of different lengths, so that one written over another
		// leaves a piece of it.
		plan.Items = append(plan.Items, FillItem{Path: "example.com/" + strings.Repeat("m", 1+i%17), Version: fmt.Sprintf("v1.0.%d", i), Files: FillModule})
	}
	// Both journals are opened before either writes, as by two processes.
	j1, err := openFillJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	j2, err := openFillJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range plan.Items {
		j := j1
		if i%2 == 1 {
			j = j2
		}
		if err := j.record(it); err != nil {
			t.Fatal(err)
		}
	}
	j1.Close()
	j2.Close()

	rep, err := runFill(context.Background(), plan, func(ctx context.Context, it FillItem) (fillOutcome, error) {
		t.Errorf("%s asked about again: both fills recorded it", it)
		return fillFetched, nil
	}, &FillOptions{Journal: journal})
	if err != nil {
		t.Fatalf("third run: %v", err)
	}
	if len(rep.Resumed) != len(plan.Items) {
		t.Errorf("third run: %d resumed, want all %d", len(rep.Resumed), len(plan.Items))
	}
}
