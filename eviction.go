package goproxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/module"
)

// Eviction removes from the cache what nobody uses, and keeps it under a
// size. The zero value evicts nothing, as the go command's own module
// cache does not: set MaxAge, MaxBytes or both.
//
// "Used" means served to a client, from any tier; uses are recorded in the
// background through the Cacher's [CacheUsageRecorder], so they survive
// restarts and are shared by the proxies sharing the store. A run lists the
// cache with [CacheInfoWalker] and removes with [CacheUnchangedDeleter]
// (DirCacher and MemCacher have both). Runs never hold anything a request
// waits for. Of several proxies sharing a store that grants leases
// ([CacheLeaser], such as an object store), a run takes the lease
// "eviction" and gives it up at its end, so one runs at a time for all;
// the others' runs meanwhile do nothing.
//
// A module version's .info, .mod and .zip go together, as one entry whose
// last use is the latest of its files', the .zip first and the .info last:
// the .info is what lists a version, so a run that stops midway leaves a
// listed version whose other files are fetched again when asked for, never
// a listed version that cannot be. Version lists, @latest and query answers
// and checksum database files are entries of their own; the checksum
// databases' verified trees (sumdb/<db>/verified/) and the record of when
// versions were first seen (firstseen/, see Proxy.Admission) are never
// removed, nor are published versions, which live in the Hosted store.
type Eviction struct {
	// MaxAge removes what has not been used for this long. Zero means no
	// limit by age.
	MaxAge time.Duration

	// MaxBytes keeps the cache's total size under this many bytes: a run
	// that finds it over removes the least recently used entries until the
	// total is down to nine tenths of it, so that the next writes do not
	// start another run at once. Zero means no limit by size.
	MaxBytes int64

	// Interval is the time between runs, the first of which starts with
	// the proxy's first request. A run also starts when what was stored since the last one
	// takes the total over MaxBytes, at most once a minute. Zero means an
	// hour.
	Interval time.Duration
}

// enabled reports whether eviction does anything.
func (e Eviction) enabled() bool { return e.MaxAge > 0 || e.MaxBytes > 0 }

func (e Eviction) interval() time.Duration {
	if e.Interval > 0 {
		return e.Interval
	}
	return time.Hour
}

// evictionLowWater is the fraction of MaxBytes a run brings the cache down
// to, in tenths.
const evictionLowWater = 9

// minTriggerGap spaces the runs that writes start: a cache that cannot be
// brought under MaxBytes (everything recent, or protected) must not be
// walked after every write.
const minTriggerGap = time.Minute

// initEviction sets up eviction when it is on, failing when the Cacher
// lacks what it needs: a configuration error is reported by Init. The
// evictor and the usage recorder start with the Proxy's background work.
func (p *Proxy) initEviction() error {
	if !p.conf.eviction.enabled() {
		return nil
	}
	e, err := newEvictor(p.conf.eviction, p.conf.cacher, p.serving.has, p.conf.logger, p.conf.metrics)
	if err != nil {
		return err
	}
	// What is removed from the cache leaves the hot tier too, so that a
	// version goes whole, and the next request fetches it again.
	e.removed = func(name string) {
		if p.hot != nil {
			p.hot.Delete(name)
		}
	}
	p.evictor = e
	p.usage = newUsageRecorder(p.conf.cacher.(CacheUsageRecorder), p.conf.logger)
	return nil
}

// noteServed records, for eviction, that c (req's file) is being served:
// its use and, when the client reads the file from the store as it is
// served (a zip), that it is being read, so that no run removes it from
// under a store whose removals break readers. It reports whether it did
// the latter: then p.serving.done(req.name) must follow. Published files
// are not the cache's.
func (p *Proxy) noteServed(req *request, c *content) (reading bool) {
	if p.usage == nil || c.from == fromPublished {
		return false
	}
	if h := c.hot; h != nil {
		p.usage.recordOnce(req.name, &h.usedAt)
	} else {
		p.usage.record(req.name)
	}
	if c.data != nil || (c.from != fromCache && c.from != fromStale) {
		return false
	}
	p.serving.add(req.name)
	return true
}

// evictor runs an Eviction over a Cacher.
type evictor struct {
	cfg     Eviction
	walker  CacheInfoWalker
	delete  func(context.Context, CacheEntryInfo) (bool, error)
	inUse   func(name string) bool // entries being served; nil when removal cannot hurt their readers
	removed func(name string)      // told of each file removed, if set
	logger  *slog.Logger
	metrics *Metrics
	now     func() time.Time
	minGap  time.Duration // minTriggerGap, shorter in tests

	// lease takes the eviction lease of a store shared with other
	// proxies (a CacheLeaser), nil for others. It is taken for each run
	// and given up at its end, never kept from run to run: a proxy cut
	// off from the store longer than the lease lasts cannot tell that
	// another took it over, and would go on evicting beside it.
	lease func(ctx context.Context, name string) (func(), error)

	total   atomic.Int64 // the last run's total, -1 before the first
	stored  atomic.Int64 // bytes stored since the last run began
	trigger chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

// newEvictor prepares cfg over c. inUse, if not nil, names the entries
// being served, which a run leaves alone: set it for stores where a removal
// breaks a reader.
func newEvictor(cfg Eviction, c Cacher, inUse func(string) bool, logger *slog.Logger, metrics *Metrics) (*evictor, error) {
	walker, ok := c.(CacheInfoWalker)
	if !ok {
		return nil, fmt.Errorf("eviction needs a Cacher that lists its entries with their times (CacheInfoWalker); %T does not", c)
	}
	if _, ok := c.(CacheUsageRecorder); !ok {
		return nil, fmt.Errorf("eviction needs a Cacher that records last uses (CacheUsageRecorder); %T does not", c)
	}
	e := &evictor{cfg: cfg, walker: walker, inUse: inUse, logger: logger, metrics: metrics,
		now: time.Now, minGap: minTriggerGap, trigger: make(chan struct{}, 1)}
	e.total.Store(-1)
	if l, ok := c.(CacheLeaser); ok {
		e.lease = l.HoldLease
	}
	switch d := c.(type) {
	case CacheUnchangedDeleter:
		e.delete = d.DeleteUnchanged
	case CacheDeleter:
		// Checked, then removed: a file stored in the short time between
		// is lost, which costs a fetch, never a wrong answer.
		stater, _ := c.(CacheStater)
		e.delete = func(ctx context.Context, info CacheEntryInfo) (bool, error) {
			if stater != nil {
				fi, err := stater.Stat(ctx, info.Name)
				if err != nil || fi.Size() != info.Size || !fi.ModTime().Equal(info.ModTime) {
					return false, nil
				}
			}
			return true, d.Delete(ctx, info.Name)
		}
	default:
		return nil, fmt.Errorf("eviction needs a Cacher that removes entries (CacheUnchangedDeleter or CacheDeleter); %T does not", c)
	}
	return e, nil
}

// start runs at once, then every Interval and when writes take the cache
// over MaxBytes, until stop.
func (e *evictor) start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		timer := time.NewTimer(0)
		defer timer.Stop()
		var last, next time.Time // the last run's start, the next run by Interval
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			case <-e.trigger:
				if wait := time.Until(last.Add(e.minGap)); wait > 0 {
					// Not before the gap, but never after the run
					// Interval asks for: it may be the shorter.
					timer.Reset(min(wait, time.Until(next)))
					continue
				}
			}
			last = time.Now()
			if _, err := e.run(ctx); err != nil && ctx.Err() == nil {
				e.logger.LogAttrs(ctx, slog.LevelError, "eviction failed", slog.String("error", err.Error()))
			}
			next = time.Now().Add(e.cfg.interval())
			timer.Reset(e.cfg.interval())
		}
	}()
}

// stop ends the runs, interrupting one under way (which gives the
// eviction lease up).
func (e *evictor) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
	}
}

// ourTurn reports whether this proxy is to evict: always, unless the
// store is shared with other proxies and another has the eviction lease.
// When it is, release gives the lease up at the end of the run.
func (e *evictor) ourTurn(ctx context.Context) (ours bool, release func(), err error) {
	if e.lease == nil {
		return true, func() {}, nil
	}
	release, err = e.lease(ctx, "eviction")
	if errors.Is(err, ErrLeaseHeld) {
		e.logger.LogAttrs(ctx, slog.LevelDebug, "eviction left to another proxy sharing the cache", slog.String("lease", err.Error()))
		return false, nil, nil
	}
	if err != nil {
		return false, nil, fmt.Errorf("taking the eviction lease: %w", err)
	}
	return true, release, nil
}

// noteStored counts a write of size bytes, starting a run if it takes the
// cache over MaxBytes. It never blocks; a nil evictor does nothing.
func (e *evictor) noteStored(size int64) {
	if e == nil || e.cfg.MaxBytes <= 0 {
		return
	}
	stored := e.stored.Add(size)
	if total := e.total.Load(); total >= 0 && total+stored > e.cfg.MaxBytes {
		select {
		case e.trigger <- struct{}{}:
		default:
		}
	}
}

// evictionRun is what a run did.
type evictionRun struct {
	Entries      int   // entries left
	Bytes        int64 // their total size
	Removed      int   // files removed
	RemovedBytes int64
}

// evictionUnit is what a run removes at once: a module version's files, or
// one other entry.
type evictionUnit struct {
	key       string
	version   bool             // a module version's files, key its name without extension
	files     []CacheEntryInfo // in the order of removal
	lastUse   time.Time
	size      int64
	protected bool
}

// run removes what is unused past MaxAge, then, if the cache is still over
// MaxBytes, the least recently used down to the low-water mark.
//
// The first pass removes by age as it lists and keeps, of the rest, only
// each unit's last use and size (16 bytes, whatever its name's length);
// sorting those finds the last use below which units must go, and a second
// pass removes them. Memory thus stays small with millions of entries, and
// anything used between the passes is spared.
//
// Of several proxies sharing a store with leases, only the one holding
// the eviction lease runs; the others' runs do nothing.
func (e *evictor) run(ctx context.Context) (evictionRun, error) {
	var res evictionRun
	ours, release, err := e.ourTurn(ctx)
	if !ours {
		return res, err
	}
	defer release()
	e.stored.Store(0)
	now := e.now()
	type usage struct {
		lastUse int64
		size    int64
	}
	var usages []usage
	var total int64
	var entries int
	err = e.walkUnits(ctx, func(u *evictionUnit) error {
		var files int
		var bytes int64
		if !u.protected && e.cfg.MaxAge > 0 && now.Sub(u.lastUse) > e.cfg.MaxAge {
			files, bytes = e.remove(ctx, u, EvictedByAge)
			res.Removed, res.RemovedBytes = res.Removed+files, res.RemovedBytes+bytes
			if files == len(u.files) {
				return nil
			}
		}
		total += u.size - bytes
		entries += len(u.files) - files
		if !u.protected && e.cfg.MaxBytes > 0 {
			usages = append(usages, usage{u.lastUse.UnixNano(), u.size - bytes})
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if e.cfg.MaxBytes > 0 && total > e.cfg.MaxBytes {
		need := total - e.cfg.MaxBytes/10*evictionLowWater
		slices.SortFunc(usages, func(a, b usage) int { return cmp.Compare(a.lastUse, b.lastUse) })
		var freed, cutoff int64
		for _, u := range usages {
			freed += u.size
			cutoff = u.lastUse
			if freed >= need {
				break
			}
		}
		usages = nil
		err = e.walkUnits(ctx, func(u *evictionUnit) error {
			t := u.lastUse.UnixNano()
			// Units are met in listing order, not by last use: those
			// below the cutoff are all needed, unless the cache shrank
			// meanwhile (another process evicting too).
			if u.protected || t > cutoff || need <= 0 {
				return nil
			}
			files, bytes := e.remove(ctx, u, EvictedBySize)
			res.Removed, res.RemovedBytes = res.Removed+files, res.RemovedBytes+bytes
			need -= bytes
			total -= bytes
			entries -= files
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	res.Entries, res.Bytes = entries, total
	e.total.Store(total)
	e.metrics.cacheSize(CacheSizeMetric{Bytes: total, Entries: entries})
	level := slog.LevelDebug
	if res.Removed > 0 {
		level = slog.LevelInfo
	}
	e.logger.LogAttrs(ctx, level, "eviction run", slog.Int("removed", res.Removed), slog.Int64("removed_bytes", res.RemovedBytes),
		slog.Int("entries", res.Entries), slog.Int64("bytes", res.Bytes), slog.Duration("took", time.Since(now)))
	return res, nil
}

// walkUnits lists the cache as units: a version's files, which a sorted
// listing gives one after the other, are gathered into one. The unit
// passed to fn is reused: fn must not keep it.
func (e *evictor) walkUnits(ctx context.Context, fn func(*evictionUnit) error) error {
	var cur evictionUnit
	have := false
	err := e.walker.WalkInfo(ctx, "", func(info CacheEntryInfo) error {
		// Another file of the version just listed needs no more checking.
		if rank := versionFileRank(info.Name); have && cur.version && rank >= 0 &&
			cur.key == info.Name[:strings.LastIndexByte(info.Name, '.')] {
			cur.add(info, rank)
			return nil
		}
		key, rank, protected := evictionKey(info.Name)
		if have {
			if err := fn(&cur); err != nil {
				return err
			}
		}
		cur = evictionUnit{key: key, version: rank >= 0, protected: protected, files: cur.files[:0]}
		cur.add(info, rank)
		have = true
		return nil
	})
	if err == nil && have {
		err = fn(&cur)
	}
	return err
}

// add puts a file into the unit, keeping the files in the order of removal
// (rank: .zip, .mod, .info).
func (u *evictionUnit) add(info CacheEntryInfo, rank int) {
	i, _ := slices.BinarySearchFunc(u.files, rank, func(f CacheEntryInfo, rank int) int { return versionFileRank(f.Name) - rank })
	u.files = slices.Insert(u.files, i, info)
	u.size += info.Size
	lastUse := info.LastUse
	if info.ModTime.After(lastUse) {
		lastUse = info.ModTime
	}
	if lastUse.After(u.lastUse) {
		u.lastUse = lastUse
	}
}

// evictionKey returns what unit name belongs to: a canonical version's
// file belongs to its version ("<module>/@v/<version>", with rank giving
// the order of removal), anything else is a unit of its own (rank -1).
// Files of the checksum databases' verified trees and the first-seen
// record of the admission policy are protected.
func evictionKey(name string) (key string, rank int, protected bool) {
	if strings.HasPrefix(name, firstSeenPrefix) {
		// The admission record of first sightings: lost, its versions
		// would be taken for new again.
		return name, -1, true
	}
	if rest, ok := strings.CutPrefix(name, "sumdb/"); ok {
		_, rest, _ = strings.Cut(rest, "/")
		return name, -1, strings.HasPrefix(rest, "verified/")
	}
	rank = versionFileRank(name)
	if rank < 0 {
		return name, -1, false
	}
	base := name[:strings.LastIndexByte(name, '.')]
	_, escVersion, ok := strings.Cut(base, "/@v/")
	if !ok {
		return name, -1, false
	}
	if v, err := module.UnescapeVersion(escVersion); err != nil || module.CanonicalVersion(v) != v {
		return name, -1, false // a query answer
	}
	return base, rank, false
}

// versionFileRank orders a version's files for removal.
func versionFileRank(name string) int {
	switch {
	case strings.HasSuffix(name, ".zip"):
		return 0
	case strings.HasSuffix(name, ".mod"):
		return 1
	case strings.HasSuffix(name, ".info"):
		return 2
	}
	return -1
}

// remove removes a unit's files in order, stopping at the first that
// changed since it was listed (stored again: used after all) or is gone
// (another process is removing it). A unit with a file being served is
// left whole.
func (e *evictor) remove(ctx context.Context, u *evictionUnit, reason EvictionReason) (files int, bytes int64) {
	if e.inUse != nil {
		for _, f := range u.files {
			if e.inUse(f.Name) {
				return 0, 0
			}
		}
	}
	for _, f := range u.files {
		removed, err := e.delete(ctx, f)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				e.logger.LogAttrs(ctx, slog.LevelWarn, "evicting failed", slog.String("file", f.Name), slog.String("error", err.Error()))
			}
			break
		}
		if !removed {
			break
		}
		if e.removed != nil {
			e.removed(f.Name)
		}
		files++
		bytes += f.Size
	}
	if files > 0 {
		e.metrics.eviction(EvictionMetric{Reason: reason, Files: files, Bytes: bytes})
	}
	return files, bytes
}

// servingSet counts the clients being served each entry, for stores where
// removing an entry breaks its readers: eviction asks it before removing.
type servingSet struct {
	mu      sync.Mutex
	serving map[string]int
}

// add notes a client starting to read name; done must follow.
func (s *servingSet) add(name string) {
	s.mu.Lock()
	if s.serving == nil {
		s.serving = make(map[string]int)
	}
	s.serving[name]++
	s.mu.Unlock()
}

// done notes a client having finished reading name.
func (s *servingSet) done(name string) {
	s.mu.Lock()
	if s.serving[name] <= 1 {
		delete(s.serving, name)
	} else {
		s.serving[name]--
	}
	s.mu.Unlock()
}

// has reports whether name is being served.
func (s *servingSet) has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving[name] > 0
}
