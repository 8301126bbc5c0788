package goproxy

import (
	"context"
	"io"
	"io/fs"
	"time"
)

// Cacher stores the files the proxy serves, under names that are slash-separated
// paths in the module proxy protocol's escaped form, such as
// "golang.org/x/text/@v/v0.3.0.zip" or "github.com/!burnt!sushi/toml/@v/list".
// Names never start with a slash, never contain "." or ".." elements, and no
// element starts with a dot, so an implementation may use them as file or
// object names directly.
//
// Implementations must be safe for concurrent use. [DirCacher] and
// [MemCacher] are provided; object stores for multi-replica deployments fit
// the same interface.
//
// Optional capabilities are separate interfaces ([CacheStater],
// [CacheDeleter], [CacheWalker]) discovered by type assertion.
type Cacher interface {
	// Get returns the content stored under name. A miss is an error for which
	// errors.Is(err, fs.ErrNotExist) is true; any other error is a failure of
	// the cache, which the proxy logs at error level before asking the
	// upstreams as it would after a miss.
	Get(ctx context.Context, name string) (CachedFile, error)

	// Put stores content under name, replacing what was there. It must be
	// atomic: a concurrent or later Get sees either the old content or all of
	// the new, never a part, even if the process dies during Put.
	//
	// When content has a ModTime() time.Time method, as what the proxy
	// stores after a fetch has, Put should keep that time as the entry's
	// ModTime ([DirCacher] and [MemCacher] do): it is when the file was
	// fetched, and the Last-Modified and entity tag of the answer that
	// fetched it then hold for the answers from the cache.
	Put(ctx context.Context, name string, content io.ReadSeeker) error
}

// CachedFile is what [Cacher.Get] returns. It seeks so that the proxy can
// answer Range and conditional requests with http.ServeContent and learn the
// size without reading the content; ModTime reports when the content was
// stored (or fetched, see Cacher.Put), which is what mutable entries
// (version lists, @latest) expire by.
//
// A CachedFile may also have an ETag() string method returning a strong
// entity tag, quoted as in the ETag header, which the proxy sends for a
// zip; without one it derives a tag from the size and modification time.
// Other files, which the proxy reads whole, are tagged by a digest of
// their content, the same whichever store holds them.
type CachedFile interface {
	io.ReadSeekCloser
	ModTime() time.Time
}

// CacheStater is a [Cacher] that can describe an entry without opening
// it, which makes listing many entries cheaper. A miss is fs.ErrNotExist.
type CacheStater interface {
	Stat(ctx context.Context, name string) (fs.FileInfo, error)
}

// CacheDeleter is a [Cacher] that can remove entries. Deleting a name that is
// not stored is not an error.
type CacheDeleter interface {
	Delete(ctx context.Context, name string) error
}

// CacheWalker is a [Cacher] that can enumerate its entries. Walk calls fn for
// every stored name that starts with prefix, in no particular order, and stops
// at the first error fn returns, returning it.
type CacheWalker interface {
	Walk(ctx context.Context, prefix string, fn func(name string) error) error
}
