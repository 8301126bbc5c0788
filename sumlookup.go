package goproxy

import (
	"context"
	"sync"
	"time"

	"golang.org/x/mod/module"
)

// Checksum lookups off the critical path. The checksum database's record
// for a module version holds the hashes of both its .mod and its .zip, and
// the go command asks for a version's files one after the other (.info,
// .mod, .zip). The lookup (the record, then the tiles proving it is in the
// log) starts with the first of those requests that misses the cache, in
// the background, beside that file's download, and is shared: the .mod
// and the .zip each wait only for whatever of it is left when they are
// downloaded and hashed.

// lookupKept is how long a finished lookup stays for the files that come
// after the one that started it; a failed one goes at once, so that the
// next request asks again.
const lookupKept = time.Minute

// recordLookup is one version's lookup in the verifying database.
type recordLookup struct {
	done chan struct{}
	// fetchErr is the failure to fetch the record, which tells a
	// database that lacks the module from one that cannot be reached;
	// err the failure of the client's verified lookup.
	fetchErr, err error
	zip, mod      []string // the go.sum lines of the version's zip and go.mod
}

// recordLookups holds the lookups running or just done.
type recordLookups struct {
	mu      sync.Mutex
	m       map[string]*recordLookup
	running int // guarded by mu
	// ended is broadcast when a lookup ends; its L is mu, once set.
	ended sync.Cond
}

// idle reports whether no lookup runs.
func (ls *recordLookups) idle() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.running == 0
}

// wait waits until no lookup runs.
func (ls *recordLookups) wait() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for ls.running > 0 {
		ls.ended.Wait()
	}
}

// startLookup starts the lookup of req's module version, unless it runs or
// has just run, when req is a file of a version that will be verified.
func (p *Proxy) startLookup(ctx context.Context, req *request) {
	if !req.canonical || (req.kind != kindInfo && req.kind != kindMod && req.kind != kindZip) ||
		p.verifier == nil || !p.verifiesModule(req.modPath) || p.verifier.broken.Load() != nil {
		return
	}
	p.lookupOf(ctx, req.modPath, req.version)
}

// lookupOf returns the lookup of path@version, starting it if need be.
func (p *Proxy) lookupOf(ctx context.Context, path, version string) *recordLookup {
	db := p.verifier
	key := path + "@" + version
	db.lookups.mu.Lock()
	defer db.lookups.mu.Unlock()
	if l := db.lookups.m[key]; l != nil {
		return l
	}
	if db.lookups.m == nil {
		db.lookups.m = make(map[string]*recordLookup)
		db.lookups.ended.L = &db.lookups.mu
	}
	l := &recordLookup{done: make(chan struct{})}
	db.lookups.m[key] = l
	db.lookups.running++
	// Detached from the request that happened to start it, which the
	// others do not wait for; its values (the egress decision's module)
	// stay. On the clients' download slots even when a prefetch started
	// it: a client's .mod or .zip may come to wait for it.
	lctx, cancel := context.WithTimeout(withClientSlots(context.WithoutCancel(ctx)), p.conf.download.Timeout)
	go func() {
		defer cancel()
		p.runLookup(lctx, l, path, version)
		forget := func() {
			db.lookups.mu.Lock()
			if db.lookups.m[key] == l {
				delete(db.lookups.m, key)
			}
			db.lookups.mu.Unlock()
		}
		if l.fetchErr != nil || l.err != nil {
			forget()
		} else {
			time.AfterFunc(lookupKept, forget)
		}
		db.lookups.mu.Lock()
		db.lookups.running--
		db.lookups.ended.Broadcast()
		db.lookups.mu.Unlock()
	}()
	return l
}

func (p *Proxy) runLookup(ctx context.Context, l *recordLookup, path, version string) {
	defer close(l.done)
	db := p.verifier
	// Through the proxy's own cache first: see verify.
	escPath, _ := module.EscapePath(path)
	escVersion, _ := module.EscapeVersion(version)
	if _, l.fetchErr = p.sumDBFile(ctx, db, "lookup/"+escPath+"@"+escVersion); l.fetchErr != nil {
		return
	}
	// The client verifies the record once for both: the second lookup
	// is answered from its memory.
	if l.zip, l.err = db.lookup(path, version); l.err == nil {
		l.mod, l.err = db.lookup(path, version+"/go.mod")
	}
}

// wait waits for the lookup to end.
func (l *recordLookup) wait(ctx context.Context) error {
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
