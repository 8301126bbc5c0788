package goproxy

import (
	"context"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/testwait"
)

// TestLateJoinerOfAnAbandonedFetchStartsItsOwn abandons a fetch that
// nobody waits for, whose download is slow to notice, and sends a new
// request for the file meanwhile: it must get a fetch of its own, not the
// abandoned one's failure.
func TestLateJoinerOfAnAbandonedFetchStartsItsOwn(t *testing.T) {
	g := &flightGroup{abandonAfter: 20 * time.Millisecond}
	cancelled, finish := make(chan struct{}), make(chan struct{})
	stalled := func(ctx context.Context) (*fetched, error) {
		<-ctx.Done()
		close(cancelled)
		<-finish // the download takes its time to stop
		return nil, context.Cause(ctx)
	}
	ctx, leave := context.WithCancel(context.Background())
	go g.do(ctx, "f", stalled, nil)
	testwait.For(t, func() bool { return g.users("f") == 1 })
	leave()
	<-cancelled
	type result struct {
		res     *fetched
		release func()
		err     error
	}
	got := make(chan result, 1)
	go func() {
		res, release, err := g.do(context.Background(), "f", func(context.Context) (*fetched, error) {
			return &fetched{data: []byte("fresh")}, nil
		}, nil)
		got <- result{res, release, err}
	}()
	select {
	case r := <-got:
		if r.err != nil || string(r.res.data) != "fresh" {
			t.Errorf("a client arriving after the abandonment got %v, %v; want a fetch of its own", r.res, r.err)
		} else {
			r.release()
		}
	case <-time.After(testwait.DefaultTimeout):
		t.Error("a client arriving after the abandonment waits for the abandoned fetch")
	}
	close(finish)
	testwait.For(t, g.idle)
}
