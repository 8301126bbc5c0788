package goproxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
)

// Fill brings into the cache every file plan names, fetching what the
// cache (or the published store) lacks through the proxy's usual path: the
// same upstreams, validation, checksum verification and sharing of
// fetches with clients, so that a fill's downloads appear in the live view
// and the metrics as any other. opts.Concurrency items are filled at once;
// an item counts as done once its files are stored, and each file filled
// counts as used now for eviction. One item failing does not stop the
// others: the report lists each failure with its reason. With
// opts.Journal, a fill that was interrupted (its process killed, its
// context cancelled) and is started again with the same journal skips the
// items it finished. Offline, a fill only counts what is cached.
//
// The error is ctx's when it ends the fill (the report then counts the
// items left as interrupted), or the journal's.
func (p *Proxy) Fill(ctx context.Context, plan *FillPlan, opts *FillOptions) (*FillReport, error) {
	if err := p.ready(); err != nil {
		return nil, err
	}
	return runFill(ctx, plan, p.fillItem, opts)
}

// PlanFill plans a fill from a file as [FillPlanFromFile] reads it (a
// go.mod, a go.sum, a list of module versions or an SBOM, told apart by
// name, then content), reading the .mod files of a go.mod's module graph
// through the proxy, which caches them on the way.
func (p *Proxy) PlanFill(ctx context.Context, name string, data []byte) (*FillPlan, error) {
	if err := p.ready(); err != nil {
		return nil, err
	}
	return FillPlanFromFile(ctx, name, data, p.readMod)
}

// ready initializes the Proxy and starts its background work, for the
// methods that act on it outside requests; a closed Proxy is refused.
func (p *Proxy) ready() error {
	if err := p.Init(); err != nil {
		return err
	}
	if p.closed.Load() {
		return errClosed
	}
	p.start()
	return nil
}

// readMod returns a module version's go.mod as the proxy serves its .mod
// file: from the hot tier, the published store or the cache, else fetched
// (and verified, and cached).
func (p *Proxy) readMod(ctx context.Context, path, version string) ([]byte, error) {
	name, err := moduleFileName(path, version, ".mod")
	if err != nil {
		return nil, err
	}
	req, err := p.parseRequest(name)
	if err != nil {
		return nil, err
	}
	c, err := p.open(ctx, req, true)
	if err != nil {
		return nil, err
	}
	defer c.close()
	return c.data, nil // a .mod is read whole; data is never modified
}

// fillItem brings one module version's files into the cache, reporting
// whether it fetched any. A file fetched counts once it is stored: the
// journal may then record the item as done.
func (p *Proxy) fillItem(ctx context.Context, it FillItem) (fillOutcome, error) {
	if err := p.admitFetch(ctx, it.Path, it.Version); err != nil {
		return 0, err
	}
	outcome := fillCached
	for _, f := range moduleFileExts {
		if it.Files&f.files == 0 {
			continue
		}
		name, err := moduleFileName(it.Path, it.Version, f.ext)
		if err != nil {
			return 0, err
		}
		req, err := p.parseRequest(name)
		if err != nil {
			return 0, err
		}
		c, err := p.open(ctx, req, true)
		if err != nil {
			return 0, err
		}
		from := c.from
		c.close()
		if from == fromUpstream {
			outcome = fillFetched
			// The fetch stores the file while its clients are served.
			if err := p.flights.settle(ctx, req.name); err != nil {
				return 0, err
			}
			if !p.cached(ctx, req) {
				return 0, fmt.Errorf("%s was fetched but is not in the cache: it could not be verified (AllowUnverified), or the cache failed (see the log)", req)
			}
		}
		if p.usage != nil {
			p.usage.record(req.name)
		}
	}
	return outcome, nil
}

// PlanCached plans a fill (or an export) of everything the cache holds: a
// module version's files as they are, the versions sorted. It needs a
// Cacher that is a [CacheWalker].
func (p *Proxy) PlanCached(ctx context.Context) (*FillPlan, error) {
	if err := p.Init(); err != nil {
		return nil, err
	}
	walker, ok := p.conf.cacher.(CacheWalker)
	if !ok {
		return nil, errors.New("the cache cannot list its entries (not a CacheWalker)")
	}
	var b planBuilder
	err := walker.Walk(ctx, "", func(name string) error {
		path, version, ext, err := parseModuleFileName(name)
		if err != nil {
			return nil // a list, a query answer, a checksum database file
		}
		for _, f := range moduleFileExts {
			if f.ext == ext {
				b.add(path, version, f.files)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return b.plan(), nil
}
