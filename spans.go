package goproxy

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Adaptive parallelism. A file starts on one connection, the first
// answer bringing all of it. While it arrives, a controller measures its
// rate; when the rest would take long enough at that rate that another
// connection, paying a round trip before it brings anything, would finish
// it at least splitMinGain sooner, the span the first connection reads is
// cut short and a second connection takes over the rest with a Range
// request. If the two together bring more than one did (the upstream
// paces each connection, or the path is long), the remaining bytes are
// shared among Connections; if not (the link is the limit), no more join.
// On a fast link a file is one request; on a paced or distant one it gets
// parallel ranges all the same.

// Constants of the controller.
const (
	// controlInterval is how often the controller looks at the rates.
	controlInterval = 50 * time.Millisecond
	// measureWindow is the least time over which a rate is measured, after
	// the connections changed (and their answers came).
	measureWindow = 100 * time.Millisecond
	// splitMinGain is the least time more connections must save for
	// the file to be split: below it, a second for a file, extra
	// requests are not worth the upstream's load.
	splitMinGain = time.Second
	// scaledRatio is how much more two connections must bring than one
	// for the rest to be shared among all of them.
	scaledRatio = 1.5
	// maxRequestsPerConnection bounds a file's requests, as a multiple
	// of Connections: spans taken over from slow ones cost requests too.
	maxRequestsPerConnection = 4
)

// span is a range of the file fetched by one connection at a time: [start,
// end), of which done bytes are on disk. end moves down when another
// connection takes over the rest.
type span struct {
	start int64
	done  atomic.Int64

	mu sync.Mutex
	// end is where the span stops; claimed counts the bytes from start
	// that a write has taken on (done, and the write under way), below
	// which end never moves. Guarded by mu.
	end, claimed int64
	// busy is set while a connection works on the span; guarded by
	// fileDownload.mu.
	busy bool
}

// limit returns the span's current end.
func (s *span) limit() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end
}

// left returns how many bytes the span still lacks.
func (s *span) left() int64 { return s.limit() - s.start - s.done.Load() }

func (s *span) finished() bool { return s.left() <= 0 }

// cut moves the span's end down to at, or to what is claimed if that is
// further, and returns the old end; ok is false when that leaves nothing
// to take over.
func (s *span) cut(at int64) (from, to int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at = max(at, s.start+s.claimed)
	if at >= s.end {
		return 0, 0, false
	}
	from, to = at, s.end
	s.end = at
	return from, to, true
}

// fetchSpans fetches what the spans lack, first is the answer that brings
// the first span (nil when resuming), and more connections join as the
// controller decides. Each span is retried on its own from where it
// stopped. The first span to meet another version of the file (or a
// whole-file answer) stops the others.
func (dl *fileDownload) fetchSpans(ctx context.Context, first *http.Response) error {
	pctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	exited := make(chan error)
	active := 0
	start := func(s *span, body io.ReadCloser) {
		active++
		go func() { exited <- dl.work(ctx, pctx, stop, s, body) }()
	}
	if first != nil {
		dl.mu.Lock()
		s := dl.spans[0]
		s.busy = true
		dl.mu.Unlock()
		start(s, first.Body)
	} else {
		// Resuming: the spans were cut when more connections paid.
		for range dl.d.opts.Connections {
			s := dl.next(nil)
			if s == nil {
				break
			}
			start(s, nil)
		}
	}
	var tick <-chan time.Time
	if dl.splittable() {
		t := time.NewTicker(controlInterval)
		defer t.Stop()
		tick = t.C
	}
	var g growth
	for active > 0 {
		select {
		case err := <-exited:
			active--
			if err != nil {
				stop(err)
			}
		case now := <-tick:
			if pctx.Err() != nil {
				continue
			}
			for _, s := range dl.plan(&g, now, active) {
				start(s, nil)
			}
		}
	}
	if pctx.Err() != nil {
		return context.Cause(pctx)
	}
	return nil
}

// splittable reports whether more connections may share the file: the
// upstream answers ranges, validators tie the parts to one version, and
// Connections allows.
func (dl *fileDownload) splittable() bool {
	return dl.d.opts.Connections > 1 && dl.rangesOK && (dl.state.ETag != "" || dl.state.LastModified != "") &&
		dl.state.Size >= 2*dl.d.opts.RangeThreshold
}

// work fetches span s, reading body first if given, then the spans that
// are left, until none is.
func (dl *fileDownload) work(ctx, pctx context.Context, stop context.CancelCauseFunc, s *span, body io.ReadCloser) error {
	return recovering(func() error {
		for s != nil {
			if body != nil {
				err := dl.copySpan(s, body)
				body.Close()
				body = nil
				if err != nil && !retryableErr(err) {
					return err
				}
				// A cut answer: the span goes on below, from where it
				// stopped.
			}
			if !s.finished() {
				err := dl.d.retry(pctx, dl.url, func() error { return dl.fetchSpan(ctx, pctx, stop, s) })
				if err != nil {
					return err
				}
			}
			s = dl.next(s)
		}
		return nil
	})
}

// retryableErr reports whether err is a failure another attempt may cure.
func retryableErr(err error) bool {
	var fe *failure
	return errors.As(err, &fe) && fe.retry && !isDiskError(err)
}

// next frees span done (if not nil) and returns another span for its
// connection: the first that nobody works on, or half of the slowest
// one's when taking it over pays; nil when there is none.
func (dl *fileDownload) next(done *span) *span {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if done != nil {
		done.busy = false
	}
	for _, s := range dl.spans {
		if !s.busy && s.left() > 0 {
			s.busy = true
			return s
		}
	}
	if done == nil || !dl.splittable() {
		return nil
	}
	return dl.stealLocked()
}

// stealLocked cuts the busy span with the most left in two and returns its
// second half, busy, when the first connection alone would take long
// enough over it; dl.mu is held.
func (dl *fileDownload) stealLocked() *span {
	rate := math.Float64frombits(dl.connRate.Load())
	if rate <= 0 || dl.requests >= maxRequestsPerConnection*dl.d.opts.Connections {
		return nil
	}
	var victim *span
	var most int64
	for _, s := range dl.spans {
		if l := s.left(); s.busy && l > most {
			victim, most = s, l
		}
	}
	minPart := dl.d.opts.RangeThreshold
	if victim == nil || most < 2*minPart || float64(most)/rate < (dl.d.minGain+2*dl.rtt).Seconds() {
		return nil
	}
	victim.mu.Lock()
	at := victim.start + victim.claimed + (victim.end-victim.start-victim.claimed)/2
	victim.mu.Unlock()
	from, to, ok := victim.cut(at)
	if !ok {
		return nil
	}
	s := &span{start: from, end: to, busy: true}
	dl.insertLocked(s)
	return s
}

// insertLocked adds spans to dl.spans, keeping them in file order; dl.mu
// is held.
func (dl *fileDownload) insertLocked(spans ...*span) {
	dl.spans = append(dl.spans, spans...)
	slices.SortFunc(dl.spans, func(a, b *span) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
}

// growth is what the controller measured of a download.
type growth struct {
	conns    int       // connections over the measurement
	since    time.Time // when it began (the connections changed)
	samples  []sample  // since then
	prevRate float64   // aggregate rate before more connections joined
	done     bool      // more connections would not help
}

type sample struct {
	at    time.Time
	bytes int64
}

// plan measures the download's rate and returns the spans to start new
// connections on, busy, when more connections pay (see the top of this
// file).
func (dl *fileDownload) plan(g *growth, now time.Time, active int) []*span {
	total := dl.total.Load()
	if active != g.conns {
		// The connections changed: measure afresh, from when the new
		// ones have had their round trip.
		g.conns, g.since = active, now.Add(dl.rtt)
		g.samples = g.samples[:0]
		return nil
	}
	if now.Before(g.since) {
		return nil
	}
	g.samples = append(g.samples, sample{now, total})
	// The rate over the latest window: from the newest sample at least
	// measureWindow old.
	i := -1
	for j, s := range g.samples {
		if now.Sub(s.at) >= measureWindow {
			i = j
		}
	}
	if i < 0 {
		return nil
	}
	g.samples = g.samples[i:]
	from := g.samples[0]
	rate := float64(total-from.bytes) / now.Sub(from.at).Seconds()
	if rate <= 0 {
		return nil
	}
	dl.connRate.Store(math.Float64bits(rate / float64(active)))
	maxConns := dl.d.opts.Connections
	if g.done || active >= maxConns {
		return nil
	}
	want := 2 * active
	if g.prevRate > 0 {
		if rate < scaledRatio*g.prevRate {
			// More connections brought no more: the link is the
			// limit, not the connection.
			g.done = true
			return nil
		}
		want = maxConns
	}
	want = min(want, maxConns)
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.requests >= maxRequestsPerConnection*maxConns {
		g.done = true
		return nil
	}
	var left int64
	for _, s := range dl.spans {
		left += s.left()
	}
	// Time to finish at the current rate, against a round trip and the
	// rest shared by want connections.
	rest := float64(left) / rate
	gain := rest - (dl.rtt.Seconds() + rest*float64(active)/float64(want))
	if gain < dl.d.minGain.Seconds() {
		return nil
	}
	g.prevRate = rate
	return dl.rebalanceLocked(want, left)
}

// rebalanceLocked cuts the busy spans so that want connections share the
// left bytes about equally, and returns the spans to start connections
// on, marked busy; dl.mu is held.
func (dl *fileDownload) rebalanceLocked(want int, left int64) []*span {
	minPart := dl.d.opts.RangeThreshold
	share := max(left/int64(want), minPart)
	var pieces []*span
	for _, s := range dl.spans {
		if !s.busy {
			continue
		}
		s.mu.Lock()
		at := s.start + s.claimed + share
		ok := s.end-at >= minPart
		s.mu.Unlock()
		if !ok {
			continue
		}
		from, to, ok := s.cut(at)
		if !ok {
			continue
		}
		n := max(1, (to-from+share/2)/share)
		size := (to - from + n - 1) / n
		for p := from; p < to; p += size {
			pieces = append(pieces, &span{start: p, end: min(p+size, to)})
		}
	}
	dl.insertLocked(pieces...)
	busy := 0
	for _, s := range dl.spans {
		if s.busy {
			busy++
		}
	}
	var start []*span
	for _, s := range dl.spans {
		if busy+len(start) >= want {
			break
		}
		if !s.busy && s.left() > 0 {
			s.busy = true
			start = append(start, s)
		}
	}
	return start
}
