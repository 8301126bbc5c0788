package goproxy

import (
	"context"
	"errors"
	"io"
	"net/url"
	"time"
)

// Several proxies (replicas behind one load balancer, proxies in several
// regions) may share one store, typically an object store. These optional
// capabilities let them coordinate through the store itself, with no other
// service: a conditional create, so that of two proxies publishing one
// version only one wins; leases, so that one proxy fetches a file all of
// them miss while the others wait for it to be stored, and one at a time
// runs eviction; and redirects, so that clients download large files from
// the store rather than through the proxy.

// CacheCreator is a [Cacher] that can store an entry only if nothing is
// stored under its name yet. Of several Creates of one name, by one
// process or several sharing the store, exactly one succeeds; the others
// fail with an error for which errors.Is(err, fs.ErrExist) is true and
// change nothing. Like Put, Create is atomic.
//
// Publishing uses it on the Hosted store, so that two proxies publishing
// different bytes for one version cannot both succeed: the second is told
// of the conflict. Without it, publishing is checked only among the
// requests of one Proxy.
type CacheCreator interface {
	Create(ctx context.Context, name string, content io.ReadSeeker) error
}

// ErrLeaseHeld is what a [CacheLeaser] returns (wrapped) when another
// holder has the lease asked for.
var ErrLeaseHeld = errors.New("lease held by another")

// CacheLeaser is a [Cacher] shared by several proxies that grants leases:
// a claim on a name held by one proxy at a time, kept while its holder
// lives and lapsing by itself (after a time the implementation chooses)
// when its holder dies without releasing it.
//
// The proxy takes a lease named "fetch/" + the entry's name before it
// fetches an immutable file that is not cached, so that of several proxies
// missing the file at once one fetches it and the others wait for it to
// appear in the store (or take the lease over when its holder dies), and a
// lease named "eviction" before each eviction run, so that the proxies take
// turns.
//
// HoldLease returns a release function, which the holder calls when
// done; until then the implementation keeps the lease alive, however long
// that takes. When another holds the lease, the error wraps ErrLeaseHeld;
// any other error means the store failed, and the proxy goes on without
// the lease (a fetch then costs an upstream request per proxy, never a
// wrong answer). release must be safe to call more than once.
type CacheLeaser interface {
	HoldLease(ctx context.Context, name string) (release func(), err error)
}

// CacheRedirector is a [Cacher] whose entries clients can download from
// the store itself, with a URL that grants reading one entry for a short
// time (an S3 presigned URL). With [Proxy.Redirect] enabled, a request for
// a cached zip is answered with a redirect to such a URL.
//
// PresignGet returns a URL from which a plain GET (Range requests
// included) reads name's content, and that stops working after expiry. It
// need not check that name is stored.
type CacheRedirector interface {
	PresignGet(ctx context.Context, name string, expiry time.Duration) (*url.URL, error)
}
