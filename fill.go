package goproxy

import (
	"context"
	"errors"
	"sync"

	"golang.org/x/sync/errgroup"
)

// FillOptions tune a fill. The zero value (or nil) fills 8 items at a time
// with no journal and no progress reports.
type FillOptions struct {
	// Concurrency is how many items are fetched at once; zero means 8.
	Concurrency int
	// Journal names a file recording the items finished, so that a fill
	// interrupted (killed, cancelled) and started again with the same
	// journal skips them; it is created if missing. Empty: no journal,
	// and a fill started again asks the cache about every item.
	Journal string
	// Progress, if not nil, is called after each item, one call at a
	// time, with the counts so far.
	Progress func(FillProgress)
}

// DefaultFillConcurrency is FillOptions.Concurrency's zero value.
const DefaultFillConcurrency = 8

// fillOutcome says what a fill did for one item.
type fillOutcome int

const (
	// fillFetched: at least one of the item's files was fetched from an
	// upstream and stored.
	fillFetched fillOutcome = iota
	// fillCached: every file was in the cache already.
	fillCached
)

// FillProgress is a fill's state after one more item.
type FillProgress struct {
	// Total is the number of items in the plan.
	Total int
	// Fetched, Cached, Resumed and Failed count the items so far, as in
	// FillReport.
	Fetched, Cached, Resumed, Failed int
	// Item is the item just finished, and Err its error if it failed.
	Item FillItem
	Err  error
}

// FillReport is a fill's summary.
type FillReport struct {
	// Fetched lists the items fetched from an upstream, Cached those found
	// in the cache, Resumed those an earlier run recorded in the journal
	// as finished (not asked about again).
	Fetched, Cached, Resumed []FillItem
	// Failed lists the items that could not be filled, with why.
	Failed []FillFailure
	// Skipped is the plan's: entries of the input naming nothing to fetch.
	Skipped []FillSkip
	// Interrupted counts the items not finished because the fill was
	// cancelled; run it again with the same journal to finish them.
	Interrupted int
}

// FillFailure is an item a fill could not bring into the cache.
type FillFailure struct {
	Item FillItem
	// Err carries the module path and version and the reason, such as the
	// upstream's "not found" or a checksum mismatch.
	Err error
}

// fillFunc brings one item into the cache, telling whether it fetched
// anything.
type fillFunc func(ctx context.Context, it FillItem) (fillOutcome, error)

// runFill fills every item of plan with fill, opts.Concurrency at a time.
// One item failing does not stop the others; ctx ending does, and then the
// report counts the items left as interrupted and runFill returns
// ctx.Err() with it. Only a journal that cannot be opened or written
// fails the whole fill.
func runFill(ctx context.Context, plan *FillPlan, fill fillFunc, opts *FillOptions) (*FillReport, error) {
	if opts == nil {
		opts = &FillOptions{}
	}
	limit := opts.Concurrency
	if limit <= 0 {
		limit = DefaultFillConcurrency
	}
	var journal *fillJournal
	if opts.Journal != "" {
		var err error
		if journal, err = openFillJournal(opts.Journal); err != nil {
			return nil, err
		}
	}

	report := &FillReport{Skipped: plan.Skipped}
	var mu sync.Mutex // guards report and the progress calls
	var journalErr error
	finish := func(it FillItem, outcome fillOutcome, err error, resumed bool) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case resumed:
			report.Resumed = append(report.Resumed, it)
		case err != nil && ctx.Err() != nil:
			// Cancelled midway: neither done nor failed.
			report.Interrupted++
			return
		case err != nil:
			report.Failed = append(report.Failed, FillFailure{Item: it, Err: err})
		case outcome == fillCached:
			report.Cached = append(report.Cached, it)
		default:
			report.Fetched = append(report.Fetched, it)
		}
		if err == nil && !resumed && journal != nil && journalErr == nil {
			journalErr = journal.record(it)
		}
		if opts.Progress != nil {
			opts.Progress(FillProgress{
				Total:   len(plan.Items),
				Fetched: len(report.Fetched), Cached: len(report.Cached),
				Resumed: len(report.Resumed), Failed: len(report.Failed),
				Item: it, Err: err,
			})
		}
	}

	var g errgroup.Group
	g.SetLimit(limit)
	for i, it := range plan.Items {
		if ctx.Err() != nil {
			mu.Lock()
			report.Interrupted += len(plan.Items) - i
			mu.Unlock()
			break
		}
		if journal != nil && journal.has(it) {
			finish(it, 0, nil, true)
			continue
		}
		g.Go(func() error {
			if ctx.Err() != nil {
				finish(it, 0, ctx.Err(), false)
				return nil
			}
			outcome, err := fill(ctx, it)
			finish(it, outcome, err, false)
			return nil
		})
	}
	g.Wait()
	var err error
	if journal != nil {
		err = errors.Join(journalErr, journal.Close())
	}
	if err == nil {
		err = ctx.Err()
	}
	return report, err
}
