package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/module"
)

// ScrubOptions configure the scrubs of the cache: a re-check of every cached
// .mod and .zip, as if it had just been fetched, for what went bad where
// it is kept (a disk's silent corruption, a file edited by hand, a store
// restored from a damaged backup). A zip must pass
// golang.org/x/mod/zip.CheckZip and the CRC-32 of each entry; a .mod must
// parse; and both must hash to what the checksum database (GOSUMDB)
// recorded, unless their module is exempt (GONOSUMDB, private routes). A
// file that fails is logged at error level, reported to Metrics.Scrub and
// removed from the cache (a copy kept in Quarantine, if set), so that the
// next request fetches it again. A file the database cannot vouch for
// (unreachable, or no record) is reported and kept. The published
// versions (Hosted) are checked with CheckZip only, since no database
// knows them, and are never removed.
//
// A scrub reads at most BytesPerSecond and keeps its place in the Cacher
// (the name goproxy-scrub/cursor), so that one interrupted (by Close, a
// cancelled context, a killed process) goes on from there the next time.
type ScrubOptions struct {
	// Interval is how often a scrub of the whole cache starts in the
	// background, from the Proxy's first use; an interrupted one resumes
	// at once then. Zero never starts one: [Proxy.ScrubNow] runs one on
	// demand.
	Interval time.Duration

	// BytesPerSecond caps how fast a scrub reads, so that the disk or the
	// object store is left to clients. Zero means
	// DefaultScrubBytesPerSecond; a negative value sets no cap.
	BytesPerSecond int64

	// Quarantine, if set, receives a copy of every file a scrub removes,
	// under its name, for inspection. If nil, removed files are gone.
	Quarantine Cacher
}

// DefaultScrubBytesPerSecond is ScrubOptions.BytesPerSecond's zero value.
const DefaultScrubBytesPerSecond = 32 << 20

func (s ScrubOptions) withDefaults() ScrubOptions {
	if s.BytesPerSecond == 0 {
		s.BytesPerSecond = DefaultScrubBytesPerSecond
	}
	return s
}

// ErrScrubRunning is returned by [Proxy.ScrubNow] when a scrub of the Proxy
// is already running.
var ErrScrubRunning = errors.New("a scrub of this cache is already running")

// ScrubReport is what a scrub did.
type ScrubReport struct {
	// Checked counts the .mod and .zip files checked, and Bytes what was
	// read of them.
	Checked int
	Bytes   int64
	// Resumed is set when the scrub went on from where an interrupted
	// one had stopped, rather than from the start.
	Resumed bool
	// Problems lists the files that failed a check, or could not be
	// checked against the checksum database.
	Problems []ScrubProblem
}

// ScrubProblem is a file a scrub found wanting.
type ScrubProblem struct {
	// Name is the file's name in the cache (or the published store).
	Name          string
	Path, Version string
	// Outcome is ScrubMismatch, ScrubInvalid or ScrubUnverifiable.
	Outcome ScrubOutcome
	// Published is set for a published version's file, which is never
	// removed.
	Published bool
	// Removed is set when the file was removed from the cache, and
	// Quarantined when a copy went to ScrubOptions.Quarantine first.
	Removed, Quarantined bool
	// Err says what is wrong, naming the module version.
	Err error
}

// scrubCursorName is where a scrub keeps its place in the Cacher: a name
// no request maps to, since it has no /@v/.
const scrubCursorName = "goproxy-scrub/cursor"

// scrubBatch is how many names a scrub takes from one walk of a store: it
// bounds the scrub's memory whatever the size of the cache, at the cost
// of a walk per batch.
const scrubBatch = 1 << 14

// The stores a scrub goes through, in order, as the cursor names them.
const (
	scrubCache     = "cache"
	scrubPublished = "published"
)

// ScrubNow checks every cached .mod and .zip (and the published versions'
// zips) now, as described at [ScrubOptions], and returns what it found. It
// resumes an interrupted scrub where it stopped. It returns
// ErrScrubRunning if one is running already (a scheduled one, or
// another call), and ctx's error, with the report so far, if ctx ends it:
// the next scrub goes on from there. The Cacher must be a [CacheWalker].
func (p *Proxy) ScrubNow(ctx context.Context) (*ScrubReport, error) {
	if err := p.ready(); err != nil {
		return nil, err
	}
	if !p.scrubbing.TryLock() {
		return nil, ErrScrubRunning
	}
	defer p.scrubbing.Unlock()
	return p.scrub(ctx)
}

// scrubStore is one store a scrub goes through.
type scrubStore struct {
	which     string
	store     Cacher
	published bool
}

func (p *Proxy) scrub(ctx context.Context) (*ScrubReport, error) {
	if _, ok := p.conf.cacher.(CacheWalker); !ok {
		return nil, errors.New("scrub: the cache cannot list its entries (not a CacheWalker)")
	}
	stores := []scrubStore{{scrubCache, p.conf.cacher, false}}
	if _, ok := p.conf.hosted.(CacheWalker); ok {
		stores = append(stores, scrubStore{scrubPublished, p.conf.hosted, true})
	}
	start := time.Now()
	s := &scrubber{p: p, report: &ScrubReport{}, pace: &pacer{rate: p.conf.scrub.BytesPerSecond, start: start}, saved: start}
	which, after := p.readScrubCursor(ctx)
	s.report.Resumed = which != ""
	p.logger().LogAttrs(ctx, slog.LevelInfo, "scrub started", slog.Bool("resumed", s.report.Resumed))
	first := slices.IndexFunc(stores, func(st scrubStore) bool { return st.which == which })
	if first < 0 {
		first, after = 0, ""
	}
	var err error
	for i, st := range stores[first:] {
		if i > 0 {
			after = ""
		}
		if err = s.store(ctx, st, after); err != nil {
			break
		}
	}
	if err != nil {
		// Where it stopped, for the next scrub (ctx may be over).
		p.writeScrubCursor(context.WithoutCancel(ctx), s.which, s.last)
		return s.report, err
	}
	p.clearScrubCursor(ctx)
	p.logger().LogAttrs(ctx, slog.LevelInfo, "scrub finished", slog.Int("checked", s.report.Checked),
		slog.Int64("bytes", s.report.Bytes), slog.Int("problems", len(s.report.Problems)),
		slog.Duration("duration", time.Since(start)))
	return s.report, nil
}

// scrubber is one scrub under way.
type scrubber struct {
	p      *Proxy
	report *ScrubReport
	pace   *pacer
	// where it is: the store and the last name checked
	which, last string
	saved       time.Time
}

// scrubCursorEvery is how often a scrub saves its place.
const scrubCursorEvery = 10 * time.Second

// store checks the files of one store with names after after, in
// batches of names in order.
func (s *scrubber) store(ctx context.Context, st scrubStore, after string) error {
	s.which, s.last = st.which, after
	for {
		names, err := scrubNames(ctx, st.store.(CacheWalker), after)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			return nil
		}
		for _, name := range names {
			if err := s.file(ctx, st, name); err != nil {
				return err
			}
			s.last = name
			if time.Since(s.saved) >= scrubCursorEvery {
				s.saved = time.Now()
				s.p.writeScrubCursor(context.WithoutCancel(ctx), s.which, s.last)
			}
		}
		after = names[len(names)-1]
	}
}

// scrubNames returns, in order, the first scrubBatch names of .mod and
// .zip files of w that sort after after.
func scrubNames(ctx context.Context, w CacheWalker, after string) ([]string, error) {
	var names []string
	bound := "" // once the batch is full, names at or past it are not needed
	err := w.Walk(ctx, "", func(name string) error {
		if name <= after || bound != "" && name >= bound || !scrubbable(name) {
			return nil
		}
		names = append(names, name)
		if len(names) >= 2*scrubBatch {
			slices.Sort(names)
			names = names[:scrubBatch]
			bound = names[scrubBatch-1]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	if len(names) > scrubBatch {
		names = names[:scrubBatch]
	}
	return names, ctx.Err()
}

// scrubbable reports whether a scrub checks name: a .mod or .zip of a
// canonical module version.
func scrubbable(name string) bool {
	if !strings.HasSuffix(name, ".mod") && !strings.HasSuffix(name, ".zip") {
		return false
	}
	_, _, _, err := parseModuleFileName(name)
	return err == nil
}

// file checks one file, removing it from the cache if it is bad.
func (s *scrubber) file(ctx context.Context, st scrubStore, name string) error {
	p := s.p
	path, version, ext, _ := parseModuleFileName(name)
	m := module.Version{Path: path, Version: version}
	var cf CachedFile
	var err error
	if q, ok := st.store.(quietReader); ok {
		cf, err = q.getQuietly(ctx, name) // a scrub is no use
	} else {
		cf, err = st.store.Get(ctx, name)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed since the walk
	}
	if err != nil {
		return s.readFailed(ctx, name, err)
	}
	defer cf.Close()
	modTime := cf.ModTime()
	size, err := cf.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = cf.Seek(0, io.SeekStart)
	}
	if err != nil {
		return s.readFailed(ctx, name, err)
	}
	kind := RequestMod
	if ext == ".zip" {
		kind = RequestZip
	}

	// The file is read once, at the scrub's pace: a .mod into memory, a
	// zip into a temporary file that CheckZip and the hash read.
	var kept io.ReadSeeker
	var hash string
	var checkErr error
	r := &pacedReader{ctx: ctx, r: cf, pace: s.pace}
	if ext == ".mod" {
		data, err := io.ReadAll(io.LimitReader(r, maxModSize+1))
		if err != nil {
			return s.readFailed(ctx, name, err)
		}
		kept = bytes.NewReader(data)
		hash, checkErr = checkModFile(m, data)
	} else {
		tmp, err := os.CreateTemp(p.conf.tempDir, "goproxy-scrub-*.zip")
		if err != nil {
			return fmt.Errorf("scrub: %w", err)
		}
		defer func() {
			tmp.Close()
			os.Remove(tmp.Name())
		}()
		if _, err := io.Copy(tmp, io.LimitReader(r, maxZipSize+1)); err != nil {
			return s.readFailed(ctx, name, err)
		}
		kept = tmp
		hash, checkErr = checkZipFile(m, tmp.Name())
	}
	s.report.Checked++
	s.report.Bytes += size

	outcome := ScrubOK
	switch {
	case checkErr != nil:
		outcome = ScrubInvalid
	case !st.published && p.verifies(&request{kind: kindMod, modPath: path}):
		lookup := version
		if ext == ".mod" {
			lookup += "/go.mod"
		}
		lines, err := p.lookupSums(ctx, path, lookup)
		if err != nil {
			outcome, checkErr = ScrubUnverifiable, fmt.Errorf("%s@%s: cannot verify: %w", path, lookup, err)
			break
		}
		outcome, checkErr = compareSums(path, lookup, hash, lines)
	}
	problem := ScrubProblem{Name: name, Path: path, Version: version, Outcome: outcome, Published: st.published, Err: checkErr}
	if (outcome == ScrubMismatch || outcome == ScrubInvalid) && !st.published {
		problem.Removed, problem.Quarantined, err = p.scrubRemove(ctx, name, modTime, size, kept)
		if err != nil {
			problem.Err = fmt.Errorf("%w (not removed: %v)", checkErr, err)
		}
	}
	p.conf.metrics.scrub(ScrubMetric{Kind: kind, Outcome: outcome, Published: st.published, Removed: problem.Removed, Bytes: size})
	if outcome == ScrubOK {
		return nil
	}
	s.report.Problems = append(s.report.Problems, problem)
	level := slog.LevelError
	if outcome == ScrubUnverifiable {
		level = slog.LevelWarn
	}
	p.logger().LogAttrs(ctx, level, "scrub: "+string(outcome)+" file", slog.String("file", name),
		slog.Bool("published", st.published), slog.Bool("removed", problem.Removed),
		slog.Bool("quarantined", problem.Quarantined), slog.String("error", problem.Err.Error()))
	return nil
}

// readFailed handles a file that could not be read: ctx ending stops the
// scrub; a failure of the store is logged, and the scrub goes on.
func (s *scrubber) readFailed(ctx context.Context, name string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.p.logger().LogAttrs(ctx, slog.LevelError, "scrub: reading a file", slog.String("file", name), slog.String("error", err.Error()))
	return nil
}

// compareSums compares a file's hash with the go.sum lines a checksum
// database recorded for path@lookup (lookup ending in /go.mod for a
// go.mod).
func compareSums(path, lookup, hash string, lines []string) (ScrubOutcome, error) {
	prefix := path + " " + lookup + " "
	var want []string
	for _, line := range lines {
		if h, ok := strings.CutPrefix(line, prefix); ok {
			if h == hash {
				return ScrubOK, nil
			}
			want = append(want, h)
		}
	}
	if len(want) == 0 {
		return ScrubUnverifiable, fmt.Errorf("%s@%s: the checksum database has no hash for it", path, lookup)
	}
	return ScrubMismatch, fmt.Errorf("SECURITY ERROR: %s@%s: checksum mismatch: the cached file hashes to %s, the checksum database recorded %s",
		path, lookup, hash, strings.Join(want, ", "))
}

// scrubRemove removes a bad file from the cache, unless it changed since
// it was read (a good copy fetched meanwhile), putting kept (its content)
// in quarantine first if one is configured.
func (p *Proxy) scrubRemove(ctx context.Context, name string, modTime time.Time, size int64, kept io.ReadSeeker) (removed, quarantined bool, err error) {
	if q := p.conf.scrub.Quarantine; q != nil {
		if err := q.Put(ctx, name, kept); err != nil {
			return false, false, fmt.Errorf("quarantine: %w", err)
		}
		quarantined = true
	}
	switch c := p.conf.cacher.(type) {
	case CacheUnchangedDeleter:
		removed, err = c.DeleteUnchanged(ctx, CacheEntryInfo{Name: name, Size: size, ModTime: modTime})
	case CacheDeleter:
		err = c.Delete(ctx, name)
		removed = err == nil
	default:
		err = errors.New("the cache cannot remove entries")
	}
	if removed && p.hot != nil {
		p.hot.Delete(name)
	}
	return removed, quarantined, err
}

// readScrubCursor returns where an interrupted scrub stopped: the store
// and the last name checked; "" when the next scrub starts afresh.
func (p *Proxy) readScrubCursor(ctx context.Context) (which, last string) {
	cf, err := p.conf.cacher.Get(ctx, scrubCursorName)
	if err != nil {
		return "", ""
	}
	defer cf.Close()
	data, err := io.ReadAll(io.LimitReader(cf, maxPathLen+64))
	if err != nil {
		return "", ""
	}
	which, last, _ = strings.Cut(strings.TrimSuffix(string(data), "\n"), "\n")
	if which != scrubCache && which != scrubPublished {
		return "", ""
	}
	return which, last
}

func (p *Proxy) writeScrubCursor(ctx context.Context, which, last string) {
	if which == "" {
		return
	}
	if err := p.conf.cacher.Put(ctx, scrubCursorName, strings.NewReader(which+"\n"+last+"\n")); err != nil {
		p.logger().LogAttrs(ctx, slog.LevelWarn, "scrub: saving its place", slog.String("error", err.Error()))
	}
}

func (p *Proxy) clearScrubCursor(ctx context.Context) {
	if d, ok := p.conf.cacher.(CacheDeleter); ok {
		d.Delete(ctx, scrubCursorName)
		return
	}
	p.conf.cacher.Put(ctx, scrubCursorName, strings.NewReader(""))
}

// scrubOnSchedule runs a scrub every ScrubOptions.Interval until ctx ends, and
// one at once if an earlier one was interrupted.
func (p *Proxy) scrubOnSchedule(ctx context.Context) {
	run := func() {
		if !p.scrubbing.TryLock() {
			return // one asked for on demand is running
		}
		defer p.scrubbing.Unlock()
		if _, err := p.scrub(ctx); err != nil && ctx.Err() == nil {
			p.logger().LogAttrs(ctx, slog.LevelError, "scrub failed", slog.String("error", err.Error()))
		}
	}
	if which, _ := p.readScrubCursor(ctx); which != "" {
		run()
	}
	t := time.NewTicker(p.conf.scrub.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			run()
		}
	}
}

// pacer keeps reads under a rate, in bytes per second; a rate of zero or
// less does not wait.
type pacer struct {
	rate  int64
	start time.Time
	bytes int64
}

// wait accounts for n bytes read, and waits until they fit the rate.
func (pc *pacer) wait(ctx context.Context, n int) error {
	if pc.rate <= 0 {
		return nil
	}
	pc.bytes += int64(n)
	due := pc.start.Add(time.Duration(float64(pc.bytes) / float64(pc.rate) * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pacedReader reads at its pacer's rate, stopping when ctx ends.
type pacedReader struct {
	ctx  context.Context
	r    io.Reader
	pace *pacer
}

func (r *pacedReader) Read(b []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(b)
	if n > 0 {
		if werr := r.pace.wait(r.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}
