package goproxy

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// usageFlushInterval is how often recorded uses reach the cacher. Eviction
// goes by days or by the order of uses, so a minute's precision is plenty,
// and a busy entry costs the store one write a minute at most.
const usageFlushInterval = time.Minute

// maxPendingUses bounds the distinct names held between two flushes. Past
// it a flush starts at once, and uses of further names are dropped until it
// has taken the batch: an entry then looks older than it is, which costs at
// worst an early eviction, never a wait.
const maxPendingUses = 100_000

// usageRecorder gathers the uses of cached entries in memory and hands them
// to the cacher's [CacheUsageRecorder] in the background, so that a hit
// never waits for a write: recording is a map assignment under a mutex
// that nothing else holds for longer than swapping the map.
type usageRecorder struct {
	store    CacheUsageRecorder
	logger   *slog.Logger
	interval time.Duration

	// clock is the time (UnixNano) to the second, kept by the flushing
	// goroutine: reading the clock costs more than the rest of recording
	// on some virtual machines, and a use's second is precise enough.
	clock atomic.Int64

	mu      sync.Mutex
	pending map[string]int64 // name → UnixNano of its latest use
	dropped int64

	flushMu sync.Mutex // one flush at a time
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// newUsageRecorder returns a recorder for store; start begins its flushes.
func newUsageRecorder(store CacheUsageRecorder, logger *slog.Logger) *usageRecorder {
	return &usageRecorder{
		store: store, logger: logger, interval: usageFlushInterval,
		pending: make(map[string]int64),
		wake:    make(chan struct{}, 1),
	}
}

// record notes that name was served now, reporting whether the use was
// kept (false: dropped, too many names pending). It never blocks and, once
// name has been seen since the last flush, never allocates. The name is
// kept until the flush: pass a string the request holds anyway.
func (u *usageRecorder) record(name string) bool {
	now := u.clock.Load()
	if now == 0 { // not started
		now = time.Now().UnixNano()
	}
	u.mu.Lock()
	if len(u.pending) >= maxPendingUses {
		if _, ok := u.pending[name]; !ok {
			u.dropped++
			u.mu.Unlock()
			select {
			case u.wake <- struct{}{}:
			default:
			}
			return false
		}
	}
	u.pending[name] = now
	u.mu.Unlock()
	return true
}

// recordOnce is record for a file that keeps the time of its last use
// recorded in last (a hot file): a use in the second of the last one is
// not recorded again, since it would record the same time, so that a file
// answered thousands of times a second costs the map one assignment a
// second, and the others two atomic loads. (A batch the store fails to
// take loses the uses of that second, as it loses every other use in it.)
func (u *usageRecorder) recordOnce(name string, last *atomic.Int64) {
	now := u.clock.Load()
	if now != 0 && last.Load() == now {
		return
	}
	// A use dropped is not one recorded: the next use of the second,
	// once the flush it started has made room, tries again.
	if u.record(name) && now != 0 {
		last.Store(now)
	}
}

// start flushes every interval until close.
func (u *usageRecorder) start() {
	u.stop, u.done = make(chan struct{}), make(chan struct{})
	u.clock.Store(time.Now().UnixNano())
	go func() {
		defer close(u.done)
		flushes := time.NewTicker(u.interval)
		defer flushes.Stop()
		seconds := time.NewTicker(time.Second)
		defer seconds.Stop()
		for {
			select {
			case <-u.stop:
				return
			case now := <-seconds.C:
				u.clock.Store(now.UnixNano())
				continue
			case <-flushes.C:
			case <-u.wake:
			}
			u.flush(context.Background())
		}
	}()
}

// close stops the flushes and hands over what is left.
func (u *usageRecorder) close() {
	if u.stop != nil {
		close(u.stop)
		<-u.done
	}
	u.flush(context.Background())
}

// flush hands the uses gathered so far to the store, sorted by name (which
// keeps a directory's or a listing's neighbours together).
func (u *usageRecorder) flush(ctx context.Context) error {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	u.mu.Lock()
	pending, dropped := u.pending, u.dropped
	// Sized as the last batch, so that recording does not grow the map
	// (and allocate) while the set of busy names stays the same.
	u.pending, u.dropped = make(map[string]int64, len(pending)), 0
	u.mu.Unlock()
	if dropped > 0 {
		u.logger.LogAttrs(ctx, slog.LevelWarn, "uses of cached files were not recorded: too many at once",
			slog.Int64("dropped", dropped))
	}
	if len(pending) == 0 {
		return nil
	}
	uses := make([]CacheUse, 0, len(pending))
	for name, t := range pending {
		uses = append(uses, CacheUse{Name: name, Time: time.Unix(0, t)})
	}
	slices.SortFunc(uses, func(a, b CacheUse) int { return strings.Compare(a.Name, b.Name) })
	if err := u.store.RecordUses(ctx, uses); err != nil {
		u.logger.LogAttrs(ctx, slog.LevelWarn, "recording uses of cached files failed",
			slog.Int("uses", len(uses)), slog.String("error", err.Error()))
		return err
	}
	return nil
}
