package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// Progress modes (progress.mode).
const (
	progressAuto  = "auto"  // bars on a terminal, lines elsewhere
	progressBars  = "bars"  // bars, even where no terminal is detected
	progressLines = "lines" // throttled log lines
	progressOff   = "off"
)

// progressDisplay shows the downloads in flight while the server runs.
// stderr is where the logs go: a bar display routes them above its bars.
type progressDisplay interface {
	// start begins showing.
	start()
	// logWriter is where the logs that go to standard error are written.
	logWriter() io.Writer
	// setLogger gives the display the logger its lines go to.
	setLogger(*slog.Logger)
	// stop stops showing, flushing what the logs wrote.
	stop()
}

// isTerminal reports whether w is a terminal that understands cursor
// movement.
func isTerminal(w io.Writer, getenv func(string) string) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && getenv("TERM") != "dumb"
}

// newProgressDisplay chooses the display of cfg for stderr.
func newProgressDisplay(cfg ProgressConfig, stderr io.Writer, getenv func(string) string, source downloadSource) progressDisplay {
	mode := cfg.Mode
	if mode == progressAuto || mode == "" {
		mode = progressLines
		if isTerminal(stderr, getenv) {
			mode = progressBars
		}
	}
	switch mode {
	case progressBars:
		return newBarDisplay(stderr, source)
	case progressLines:
		return &lineDisplay{out: stderr, source: source, every: time.Duration(cfg.Interval),
			minSize: int64(cfg.MinSize), minDuration: time.Duration(cfg.MinDuration)}
	}
	return &lineDisplay{out: stderr} // off: no source, no lines
}

// barDisplay draws one bar per download in flight at the bottom of a
// terminal, with mpb, and writes the log lines above the bars: every
// write goes through mpb's container, which prints it before redrawing
// the bars, so that the log scrolls above them.
type barDisplay struct {
	out     io.Writer
	source  downloadSource
	p       *mpb.Progress
	refresh chan any
	bars    map[transferKey]*shownBar
	quit    chan struct{}
	done    chan struct{}

	// mu orders the log lines: held while one is handed to mpb, and
	// while the display stops, so that none is lost or overtaken.
	mu      sync.Mutex
	stopped bool
}

// shownBar is a bar and the state its decorators read.
type shownBar struct {
	bar *mpb.Bar
	mu  sync.Mutex
	t   transfer
}

func (b *shownBar) get() transfer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.t
}

// barRefresh is how often the bars are drawn again, and logs written
// meanwhile printed.
const barRefresh = 150 * time.Millisecond

func newBarDisplay(out io.Writer, source downloadSource) *barDisplay {
	d := &barDisplay{out: out, source: source, refresh: make(chan any),
		bars: map[transferKey]*shownBar{}, quit: make(chan struct{}), done: make(chan struct{})}
	// The display is refreshed by hand, so that stop can draw a last
	// time: with mpb's own ticker, lines written just before the end
	// would be lost.
	d.p = mpb.New(mpb.WithOutput(out), mpb.WithManualRefresh(d.refresh), mpb.ForceTTY())
	return d
}

func (d *barDisplay) logWriter() io.Writer   { return d }
func (d *barDisplay) setLogger(*slog.Logger) {}

// Write prints log lines above the bars, or straight to the terminal
// once the display has stopped.
func (d *barDisplay) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.stopped {
		if n, err := d.p.Write(b); err == nil {
			return n, nil
		}
		// mpb gave up (it could not draw): write plainly.
	}
	return d.out.Write(b)
}

func (d *barDisplay) start() {
	go func() {
		defer close(d.done)
		t := time.NewTicker(barRefresh)
		defer t.Stop()
		for {
			d.update()
			select {
			case d.refresh <- nil:
			case <-d.quit:
				return
			}
			select {
			case <-t.C:
			case <-d.quit:
				return
			}
		}
	}()
}

// barMinAge is how long a download runs before it gets a bar: most
// fetches (a .info, a small zip) end sooner, and bars that come and go
// at once would only flicker.
const barMinAge = time.Second

// update makes the bars match the downloads in flight.
func (d *barDisplay) update() {
	seen := map[transferKey]bool{}
	now := time.Now()
	for _, t := range d.source.downloads() {
		key := t.key()
		if d.bars[key] == nil && now.Sub(t.Started) < barMinAge {
			continue
		}
		seen[key] = true
		sb := d.bars[key]
		if sb == nil {
			sb = &shownBar{t: t}
			// The total is set apart (SetTotal) so that the bar never
			// completes by itself: it goes when the download does.
			bar, err := d.p.Add(0, mpb.BarStyle().Build(),
				mpb.PrependDecorators(
					decor.Any(func(decor.Statistics) string { return sb.get().Label() }, decor.WCSyncSpaceR),
					decor.Any(func(decor.Statistics) string { return formatPercent(sb.get()) }, decor.WC{W: 5}),
				),
				mpb.AppendDecorators(
					decor.Any(func(decor.Statistics) string { return formatRate(sb.get().Rate) }, decor.WC{W: 12}),
					decor.Any(func(decor.Statistics) string { return formatETA(sb.get()) }, decor.WC{W: 10}),
					decor.Any(func(decor.Statistics) string { return formatWaiting(sb.get()) }, decor.WC{W: 12}),
				),
			)
			if err != nil {
				return // stopped
			}
			sb.bar = bar
			d.bars[key] = sb
		}
		sb.mu.Lock()
		sb.t = t
		sb.mu.Unlock()
		if t.Total > 0 {
			sb.bar.SetTotal(t.Total, false)
		}
		sb.bar.SetCurrent(t.Done)
	}
	for key, sb := range d.bars {
		if !seen[key] {
			sb.bar.Abort(true)
			delete(d.bars, key)
		}
	}
}

// stop removes the bars, prints what the logs wrote last, and lets the
// logs write to the terminal directly from then on.
func (d *barDisplay) stop() {
	close(d.quit)
	<-d.done
	for key, sb := range d.bars {
		sb.bar.Abort(true)
		delete(d.bars, key)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	// Draw once more, the pending lines and no bars, before the
	// container ends (Shutdown waits for that drawing). mpb stops
	// listening if it failed to draw: then there is nothing to wait for.
	select {
	case d.refresh <- nil:
	case <-time.After(time.Second):
	}
	d.p.Shutdown()
}

// lineDisplay logs a line now and then for each large or long download,
// where there is no terminal to draw bars on (a log file, journald, a
// container's log): at most one per download every every, only for
// downloads of at least minSize bytes or that have lasted minDuration.
type lineDisplay struct {
	out         io.Writer
	source      downloadSource // nil: off
	every       time.Duration
	minSize     int64
	minDuration time.Duration

	logger *slog.Logger
	quit   chan struct{}
	done   chan struct{}
	last   map[transferKey]time.Time
}

// lineCheck is how often the downloads are looked at.
const lineCheck = time.Second

func (l *lineDisplay) logWriter() io.Writer      { return l.out }
func (l *lineDisplay) setLogger(lg *slog.Logger) { l.logger = lg }

func (l *lineDisplay) start() {
	if l.source == nil || l.logger == nil {
		return
	}
	l.quit, l.done, l.last = make(chan struct{}), make(chan struct{}), map[transferKey]time.Time{}
	go func() {
		defer close(l.done)
		t := time.NewTicker(min(lineCheck, l.every))
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				l.report(context.Background(), now)
			case <-l.quit:
				return
			}
		}
	}()
}

// report logs the downloads due for a line at now.
func (l *lineDisplay) report(ctx context.Context, now time.Time) {
	seen := map[transferKey]bool{}
	for _, t := range l.source.downloads() {
		key := t.key()
		seen[key] = true
		large := t.Total >= l.minSize || now.Sub(t.Started) >= l.minDuration
		if last, ok := l.last[key]; !large || ok && now.Sub(last) < l.every {
			continue
		}
		l.last[key] = now
		attrs := []slog.Attr{slog.String("repository", t.Repo), slog.String("module", t.Label()),
			slog.String("upstream", t.Upstream), slog.Int64("done", t.Done)}
		if t.Total >= 0 {
			attrs = append(attrs, slog.Int64("total", t.Total), slog.Int("percent", t.Percent()))
		}
		attrs = append(attrs, slog.String("rate", formatRate(t.Rate)), slog.Int("waiting", t.Waiting))
		if eta := t.ETA(); eta >= 0 {
			attrs = append(attrs, slog.Duration("eta", eta.Round(time.Second)))
		}
		l.logger.LogAttrs(ctx, slog.LevelInfo, "download progress", attrs...)
	}
	for key := range l.last {
		if !seen[key] {
			delete(l.last, key)
		}
	}
}

func (l *lineDisplay) stop() {
	if l.quit != nil {
		close(l.quit)
		<-l.done
	}
}

func formatPercent(t transfer) string {
	if p := t.Percent(); p >= 0 {
		return fmt.Sprintf("%d %%", p)
	}
	return "? %"
}

func formatRate(rate float64) string {
	if rate <= 0 {
		return "- B/s"
	}
	return formatBytes(int64(rate)) + "/s"
}

func formatETA(t transfer) string {
	eta := t.ETA()
	if eta < 0 {
		return "ETA -"
	}
	return "ETA " + eta.Round(time.Second).String()
}

// formatWaiting says how many clients wait for a download, when more
// than one does (the one that started it is the rule).
func formatWaiting(t transfer) string {
	if t.Waiting <= 1 {
		return ""
	}
	return fmt.Sprintf(" %d clients", t.Waiting)
}
