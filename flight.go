package goproxy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// flightGroup makes concurrent requests for one file share one download.
// Unlike golang.org/x/sync/singleflight it counts the callers still using
// the result, because a zip result is an open file that must stay open until
// the last of them has served it, and it runs the download detached from any
// one caller, so a client that goes away does not fail the others. A
// download may hand its result to the callers before it ends (a zip they
// read while it arrives, see zipstream.go): callers then return with it,
// and so do those who join until the download ends.
type flightGroup struct {
	// abandonAfter, if positive, is the window over which a download that
	// every caller has left must make progress (abandonedMinBytes, or a
	// step) to go on.
	abandonAfter time.Duration

	mu      sync.Mutex
	flights map[string]*flight
	// active counts the flights whose download or background work has
	// not ended, the abandoned ones included, which left flights.
	active  int
	closed  bool           // close was called: no new flights
	running sync.WaitGroup // run and background goroutines
}

// abandonedMinBytes is the least a download nobody waits for must bring
// in per abandonAfter to go on: a large file still gets cached, a stalling
// one ends.
const abandonedMinBytes = 64 << 10

// errAbandoned ends a download that nobody waits for and that stopped
// making progress.
var errAbandoned = errors.New("every client left and the download stopped making progress")

type flight struct {
	key string
	// ready is closed once res is handed over (published) or the call
	// ended; done once the call ended.
	ready, done chan struct{}
	res         *fetched
	err         error
	users       int  // callers holding or waiting for res; guarded by flightGroup.mu
	ended       bool // guarded by flightGroup.mu
	published   bool // res was handed over before the end; guarded by flightGroup.mu
	watched     bool // a watch runs; guarded by flightGroup.mu
	meter       *progressMeter
	cancel      context.CancelCauseFunc
	// settled is closed once the flight has left the group, its
	// background work (storing the result) done.
	settled chan struct{}
}

// do returns the result of fn for key, starting fn unless a call for key is
// already running. fn runs with a context detached from ctx, from which
// publisherFrom gets the way to hand the result over before fn returns;
// waiting stops when ctx ends. The caller must call release once done with
// the result.
//
// background, if not nil, runs after a successful fn while callers are
// served, typically to store the result: until it ends, the result stays
// open and new callers for key join the finished call instead of starting
// another.
func (g *flightGroup) do(ctx context.Context, key string, fn func(context.Context) (*fetched, error), background func(context.Context, *fetched)) (*fetched, func(), error) {
	g.mu.Lock()
	if g.flights == nil {
		g.flights = make(map[string]*flight)
	}
	fl, ok := g.flights[key]
	if !ok && g.closed {
		g.mu.Unlock()
		return nil, func() {}, errClosed
	}
	if !ok {
		g.running.Add(1)
		fl = &flight{key: key, ready: make(chan struct{}), done: make(chan struct{}), settled: make(chan struct{})}
		g.flights[key] = fl
		g.active++
		fctx, meter := withProgressMeter(context.WithoutCancel(ctx))
		fctx, fl.cancel = context.WithCancelCause(fctx)
		fctx = context.WithValue(fctx, publisherKey{}, &publisher{g: g, fl: fl})
		fl.meter = meter
		go g.run(fctx, fl, fn, background)
	}
	fl.users++
	g.mu.Unlock()

	release := func() { g.release(fl) }
	select {
	case <-fl.ready:
		// res, once set, is never changed; err is set before ready is
		// closed when res is not.
		if fl.res == nil {
			release()
			return nil, func() {}, fl.err
		}
		return fl.res, release, nil
	case <-ctx.Done():
		release()
		return nil, func() {}, ctx.Err()
	}
}

// publisher hands a flight's result to its callers before the call ends.
type publisher struct {
	g  *flightGroup
	fl *flight
}

type publisherKey struct{}

// publisherFrom returns the publisher of the flight whose call ctx is
// for, or nil.
func publisherFrom(ctx context.Context) *publisher {
	p, _ := ctx.Value(publisherKey{}).(*publisher)
	return p
}

// publish hands res to the callers waiting and to those who join until the
// call ends. If the call then fails, res must fail its readers.
func (p *publisher) publish(res *fetched) {
	g, fl := p.g, p.fl
	g.mu.Lock()
	defer g.mu.Unlock()
	if fl.ended || fl.published {
		return
	}
	fl.res, fl.published = res, true
	close(fl.ready)
}

// published reports whether the result was handed over: a failure of the
// call then reaches the callers through it, and nothing else may stand in.
func (p *publisher) published() bool {
	if p == nil {
		return false
	}
	p.g.mu.Lock()
	defer p.g.mu.Unlock()
	return p.fl.published
}

// release drops one user of fl, closing the result after the last, or
// watching the download when the last leaves before it ends.
func (g *flightGroup) release(fl *flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	fl.users--
	if fl.users == 0 && fl.ended && fl.res != nil {
		fl.res.close()
	}
	if fl.users == 0 && !fl.ended && !fl.watched && g.abandonAfter > 0 {
		fl.watched = true
		go g.watch(fl)
	}
}

// watch ends fl's download if, while nobody waits for it, it makes no
// progress over a window of abandonAfter. An abandoned flight leaves the
// group at once, under the lock that callers join under, so that a caller
// arriving then starts a download of its own rather than share the
// cancelled one's failure.
func (g *flightGroup) watch(fl *flight) {
	bytes, steps := fl.meter.bytes.Load(), fl.meter.steps.Load()
	t := time.NewTicker(g.abandonAfter)
	defer t.Stop()
	for {
		select {
		case <-fl.done:
			return
		case <-t.C:
		}
		b, s := fl.meter.bytes.Load(), fl.meter.steps.Load()
		g.mu.Lock()
		if fl.users > 0 {
			fl.watched = false
			g.mu.Unlock()
			return
		}
		if b-bytes < abandonedMinBytes && s == steps {
			if g.flights[fl.key] == fl {
				delete(g.flights, fl.key)
			}
			g.mu.Unlock()
			fl.cancel(errAbandoned)
			return
		}
		g.mu.Unlock()
		bytes, steps = b, s
	}
}

func (g *flightGroup) run(ctx context.Context, fl *flight, fn func(context.Context) (*fetched, error), background func(context.Context, *fetched)) {
	defer g.running.Done()
	// fn runs on a goroutine of its own, where a panic would end the
	// whole process.
	var res *fetched
	err := recovering(func() (err error) {
		res, err = fn(ctx)
		return err
	})
	fl.cancel(nil)
	ctx = context.WithoutCancel(ctx)
	g.mu.Lock()
	if !fl.published {
		fl.res = res
	} else if err == nil && res != fl.res {
		// The call succeeded with another result than the one handed
		// over: nobody may read that one.
		res.close()
	}
	fl.err, fl.ended = err, true
	if err == nil && background != nil {
		fl.users++ // held by the background work
		g.running.Add(1)
		go func() {
			defer g.running.Done()
			background(ctx, fl.res)
			g.mu.Lock()
			g.leave(fl)
			g.mu.Unlock()
			g.release(fl)
		}()
	} else {
		g.leave(fl)
		if fl.users == 0 && fl.res != nil {
			fl.res.close()
		}
	}
	published := fl.published
	g.mu.Unlock()
	if !published {
		close(fl.ready)
	}
	close(fl.done)
}

// leave takes fl out of the group, if it is still there, and tells
// settle's waiters; g.mu is held. It runs once per flight, when its
// background work is done.
func (g *flightGroup) leave(fl *flight) {
	if g.flights[fl.key] == fl {
		delete(g.flights, fl.key)
	}
	g.active--
	close(fl.settled)
}

// close cancels the calls running, refuses new ones, and waits for the
// running ones and for their background work to end.
func (g *flightGroup) close() {
	g.mu.Lock()
	g.closed = true
	for _, fl := range g.flights {
		fl.cancel(errClosed)
	}
	g.mu.Unlock()
	g.running.Wait()
}

// settle returns once no flight for key is running, its background work
// included, or when ctx ends: a fill waits so, after a fetch, for the
// file to be stored before it counts it as done.
func (g *flightGroup) settle(ctx context.Context, key string) error {
	g.mu.Lock()
	fl := g.flights[key]
	g.mu.Unlock()
	if fl == nil {
		return nil
	}
	select {
	case <-fl.settled:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// users reports how many callers share the running flight for key; tests
// use it to wait for callers without sleeping.
func (g *flightGroup) users(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if fl, ok := g.flights[key]; ok {
		return fl.users
	}
	return 0
}

// idle reports whether no call is running, background work included.
func (g *flightGroup) idle() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.active == 0
}

// progressMeter counts what a fetch has done: bytes received, and steps
// (such as validation) that take time without bringing any. A meter adds
// to its parent's too, so that the fetches one fetch starts (a checksum
// database lookup for a zip) count as its progress.
type progressMeter struct {
	bytes, steps atomic.Int64
	parent       *progressMeter
}

type progressMeterKey struct{}

// withProgressMeter returns a context carrying a new meter, child of ctx's.
func withProgressMeter(ctx context.Context) (context.Context, *progressMeter) {
	m := &progressMeter{parent: meterFrom(ctx)}
	return context.WithValue(ctx, progressMeterKey{}, m), m
}

// meterFrom returns ctx's meter, or nil; a nil meter counts nothing.
func meterFrom(ctx context.Context) *progressMeter {
	m, _ := ctx.Value(progressMeterKey{}).(*progressMeter)
	return m
}

func (m *progressMeter) add(n int64) {
	for ; m != nil; m = m.parent {
		m.bytes.Add(n)
	}
}

func (m *progressMeter) step() {
	for ; m != nil; m = m.parent {
		m.steps.Add(1)
	}
}
