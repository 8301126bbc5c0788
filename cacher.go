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
// [CacheDeleter], [CacheWalker]; for eviction [CacheUsageRecorder],
// [CacheInfoWalker] and [CacheUnchangedDeleter]; for the index feed
// [CacheIndexLog]; for stores shared by several proxies [CacheCreator],
// [CacheLeaser] and [CacheRedirector]) discovered by type assertion.
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

// CacheUse is one use of a cached entry: a client was served it, from any
// tier (the proxy's memory included).
type CacheUse struct {
	Name string
	Time time.Time
}

// CacheUsageRecorder is a [Cacher] that keeps when its entries were last
// used, so that [Eviction] removes what nobody uses. Last uses must last as
// long as the entries (a restart of the proxy included) and be seen by every
// proxy sharing the store.
//
// The proxy never calls RecordUses on a request's path: it gathers uses in
// memory and hands them over in the background, in batches of distinct
// names, each with its latest use, every minute or so. Names that are not
// stored are skipped without error. An implementation may keep times at a
// coarser precision (a minute, an hour) and skip writes that would not
// change them.
type CacheUsageRecorder interface {
	RecordUses(ctx context.Context, uses []CacheUse) error
}

// CacheEntryInfo describes a stored entry, as [CacheInfoWalker] lists it.
type CacheEntryInfo struct {
	// Name is the entry's name.
	Name string
	// Size is its length in bytes.
	Size int64
	// ModTime is when it was stored.
	ModTime time.Time
	// LastUse is its latest recorded use, or ModTime if that is later or
	// no use was recorded.
	LastUse time.Time
	// ETag, when the store's listing gives one (an object store's does),
	// names the entry's content, changing whenever it does: a
	// CacheUnchangedDeleter then removes the entry only while it still has
	// it. Empty when unknown.
	ETag string
}

// CacheInfoWalker is a [Cacher] that lists its entries with their sizes and
// times, from a listing of the store rather than a request per entry where
// the store allows. WalkInfo calls fn for every stored name that starts with
// prefix and stops at the first error fn returns, returning it.
//
// The entries of one directory (a version's .info, .mod and .zip) should
// come one after the other, as a sorted listing gives them: eviction
// removes a version's files together, and a version whose files come apart
// is removed in parts, by each part's own last use.
type CacheInfoWalker interface {
	WalkInfo(ctx context.Context, prefix string, fn func(CacheEntryInfo) error) error
}

// CacheUnchangedDeleter is a [Cacher] that removes an entry only while it
// is the one a walk described (same ModTime and Size), so that eviction
// never removes what another process has just stored in its place.
// DeleteUnchanged reports whether it removed the entry; false with a nil
// error means the entry was gone or had changed.
//
// Eviction removes entries that clients may be reading. A store where a
// removal breaks a reader that has the entry open (unlike a file on Unix,
// which lives while open) should say so in its documentation, so that the
// proxy skips the entries it is serving.
type CacheUnchangedDeleter interface {
	DeleteUnchanged(ctx context.Context, e CacheEntryInfo) (bool, error)
}

// IndexEntry is one line of a module index feed, in the format of
// index.golang.org: a module version and when it was listed.
type IndexEntry struct {
	Path      string
	Version   string
	Timestamp time.Time
}

// CacheIndexLog is a [Cacher] that keeps the proxy's module index feed
// (/index): the module versions in the order they entered the cache or were
// published. Kept on the store, the feed is ready at start, survives
// restarts, is shared by the proxies sharing the store, and is paged from
// the store rather than from memory.
//
// Timestamps strictly increase in feed order, also when several processes
// append, so that a reader paging with since=<last timestamp seen> never
// misses an entry nor stalls on a run of equal ones.
type CacheIndexLog interface {
	// AppendIndex adds entries at the end of the feed, in order. Each is
	// listed at the later of its Timestamp and one nanosecond past the
	// feed's last entry. If the feed was never created, AppendIndex adds
	// nothing and returns an error for which errors.Is(err, fs.ErrNotExist)
	// is true.
	AppendIndex(ctx context.Context, entries []IndexEntry) error

	// ReadIndex returns up to limit entries listed at or after since,
	// oldest first. If the feed was never created, it returns an error for
	// which errors.Is(err, fs.ErrNotExist) is true.
	ReadIndex(ctx context.Context, since time.Time, limit int) ([]IndexEntry, error)

	// CreateIndex creates the feed with entries, ordered by Timestamp (ties
	// are spread a nanosecond apart), unless the feed exists: then it
	// changes nothing and returns an error for which
	// errors.Is(err, fs.ErrExist) is true. The proxy creates it once, from
	// a walk of its stores, when ReadIndex reports it missing.
	CreateIndex(ctx context.Context, entries []IndexEntry) error
}
