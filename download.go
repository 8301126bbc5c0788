package goproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// maxErrorBody caps how much of an upstream's error answer is read and passed on.
const maxErrorBody = 4 << 10

// fetched is a file downloaded from an upstream: small files in memory, zips
// in an unlinked temporary file that lives as long as someone reads it.
type fetched struct {
	data    []byte
	file    *os.File
	size    int64
	modTime time.Time
}

// reader returns an independent reader over the content, so that every
// request sharing one download reads it at its own pace.
func (f *fetched) reader() io.ReadSeeker {
	if f.file != nil {
		return io.NewSectionReader(f.file, 0, f.size)
	}
	return bytes.NewReader(f.data)
}

func (f *fetched) close() {
	if f.file != nil {
		f.file.Close()
		os.Remove(f.file.Name())
	}
}

// download GETs rawURL. A zip (toFile) goes to a temporary file, anything else
// to memory; either way at most limit bytes are accepted.
func (p *Proxy) download(ctx context.Context, rawURL string, toFile bool, limit int64) (*fetched, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("invalid upstream URL %s", redactURL(rawURL)), err: err}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("fetching %s: %v", redactURL(rawURL), err), err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		msg := strings.TrimSpace(string(body))
		switch resp.StatusCode {
		case http.StatusNotFound, http.StatusGone:
			if msg == "" {
				msg = "not found: " + redactURL(rawURL)
			}
			return nil, &fetchError{status: resp.StatusCode, msg: msg}
		}
		if msg != "" {
			msg = ": " + msg
		}
		return nil, &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream %s answered %s%s", redactURL(rawURL), resp.Status, msg)}
	}
	if resp.ContentLength > limit {
		return nil, &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream %s declares %d bytes, more than the limit of %d", redactURL(rawURL), resp.ContentLength, limit)}
	}
	tooLarge := &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream %s sent more than the limit of %d bytes", redactURL(rawURL), limit)}
	f := &fetched{modTime: time.Now()}
	body := io.LimitReader(resp.Body, limit+1)
	if toFile {
		if f.file, err = os.CreateTemp(p.TempDir, "goproxy-download-*"); err != nil {
			return nil, &fetchError{status: http.StatusInternalServerError, msg: "creating a temporary file for the download failed", err: err}
		}
		f.size, err = io.Copy(f.file, body)
	} else {
		var buf bytes.Buffer
		if resp.ContentLength > 0 {
			buf.Grow(int(resp.ContentLength))
		}
		f.size, err = buf.ReadFrom(body)
		f.data = buf.Bytes()
	}
	switch {
	case err != nil:
		err = &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("reading %s: %v", redactURL(rawURL), err), err: err}
	case f.size > limit:
		err = tooLarge
	case resp.ContentLength >= 0 && f.size != resp.ContentLength:
		err = &fetchError{status: http.StatusBadGateway, msg: fmt.Sprintf("upstream %s sent %d of %d bytes", redactURL(rawURL), f.size, resp.ContentLength)}
	}
	if err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// flightGroup makes concurrent requests for one file share one download.
// Unlike golang.org/x/sync/singleflight it counts the callers still using
// the result, because a zip result is an open file that must stay open until
// the last of them has served it, and it runs the download detached from any
// one caller, so a client that goes away does not fail the others.
type flightGroup struct {
	mu      sync.Mutex
	flights map[string]*flight
}

type flight struct {
	done  chan struct{}
	res   *fetched
	err   error
	users int // callers holding or waiting for res; guarded by flightGroup.mu
	ended bool
}

// do returns the result of fn for key, starting fn unless a call for key is
// already running. fn runs with a context detached from ctx; waiting stops
// when ctx ends. The caller must call release once done with the result.
func (g *flightGroup) do(ctx context.Context, key string, fn func(context.Context) (*fetched, error)) (*fetched, func(), error) {
	g.mu.Lock()
	if g.flights == nil {
		g.flights = make(map[string]*flight)
	}
	fl, ok := g.flights[key]
	if !ok {
		fl = &flight{done: make(chan struct{})}
		g.flights[key] = fl
		go g.run(context.WithoutCancel(ctx), key, fl, fn)
	}
	fl.users++
	g.mu.Unlock()

	release := func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		fl.users--
		if fl.users == 0 && fl.ended && fl.res != nil {
			fl.res.close()
		}
	}
	select {
	case <-fl.done:
		if fl.err != nil {
			release()
			return nil, func() {}, fl.err
		}
		return fl.res, release, nil
	case <-ctx.Done():
		release()
		return nil, func() {}, ctx.Err()
	}
}

func (g *flightGroup) run(ctx context.Context, key string, fl *flight, fn func(context.Context) (*fetched, error)) {
	res, err := fn(ctx)
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.flights, key)
	fl.res, fl.err, fl.ended = res, err, true
	if fl.users == 0 && res != nil {
		res.close()
	}
	close(fl.done)
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
