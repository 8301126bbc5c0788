package goproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"

	"github.com/goproxy-team/goproxy/internal/lru"
)

// firstSeenRecord is the Proxy's own record of when it first saw each
// module version: the FirstSeenSource a Cooldown uses without an index
// feed, and the one an IndexFeed consults for versions it does not list
// yet. A version is recorded when it first appears in an upstream's list,
// as the answer to @latest or a query, in a request, or before a fetch of
// the proxy's own, whether it is admitted or not: a version the cooldown
// refuses must start its clock, or it would be refused forever.
//
// It is kept in the Cacher, one entry per module (firstSeenName), so that
// it outlives restarts and is shared by the processes sharing a cache;
// eviction leaves these entries alone, since a version whose record is
// lost would be taken for new again. Each entry is rewritten whole when a
// module has new versions, merged with what another process may have
// written meanwhile (the earlier time wins), which is rare enough for a
// small file: most list requests find nothing new. The most recently used
// modules' records are kept in memory.
type firstSeenRecord struct {
	cacher Cacher
	logger *slog.Logger
	locks  keyedMutex // by module path: one rewrite at a time
	mem    *lru.Cache[*seenVersions]

	fullMu sync.Mutex
	full   map[string]bool // modules whose entry is full, logged once
}

// seenVersions is one module's record: first-seen times by version, in
// Unix nanoseconds. It is never modified once shared: a new version makes
// a new one.
type seenVersions struct {
	times map[string]int64
}

const (
	// maxSeenVersions bounds the versions of one module kept in the
	// Cacher (about 50 bytes each): the largest modules have a few
	// thousand releases, and a client asking for made-up versions must
	// not grow the entry without bound. Versions past it are recorded in
	// memory only.
	maxSeenVersions = 20000
	// maxSeenEntry bounds what is read of one module's entry.
	maxSeenEntry = 4 << 20
	// firstSeenMemory bounds the records kept in memory.
	firstSeenMemory = 16 << 20
	// firstSeenPutTimeout bounds the writing of a module's entry.
	firstSeenPutTimeout = 30 * time.Second
)

func newFirstSeenRecord(c Cacher, logger *slog.Logger) *firstSeenRecord {
	size := func(s *seenVersions) int64 { return int64(64 + 56*len(s.times)) }
	return &firstSeenRecord{cacher: c, logger: logger, mem: lru.New(firstSeenMemory, size), full: map[string]bool{}}
}

// firstSeenName is where a module's record is kept in the Cacher: under a
// tree of its own, since "firstseen" is no module path (those start with
// a domain name), and in a directory of its own, named with "@v", which
// no module path element holds, so that the entry of one module is never
// the directory of another (example.com/m and example.com/m/v2).
func firstSeenName(escPath string) string {
	return firstSeenPrefix + escPath + "/@v/seen"
}

// firstSeenPrefix starts the names of the record's entries.
const firstSeenPrefix = "firstseen/"

// get returns when path@version was first seen, or the zero time if it was
// not recorded. It fails only when the module's record cannot be read.
func (r *firstSeenRecord) get(ctx context.Context, path, version string) (time.Time, error) {
	s, err := r.module(ctx, path)
	if err != nil {
		return time.Time{}, err
	}
	if t, ok := s.times[version]; ok {
		return time.Unix(0, t), nil
	}
	return time.Time{}, nil
}

// module returns path's record, from memory or from the Cacher.
func (r *firstSeenRecord) module(ctx context.Context, path string) (*seenVersions, error) {
	if s, ok := r.mem.Get(path); ok {
		return s, nil
	}
	unlock, err := r.locks.lock(ctx, path)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if s, ok := r.mem.Get(path); ok {
		return s, nil // read by another request meanwhile
	}
	s, err := r.read(ctx, path)
	if err != nil {
		return nil, err
	}
	r.mem.Put(path, s)
	return s, nil
}

// read reads path's entry from the Cacher; a missing one is an empty
// record.
func (r *firstSeenRecord) read(ctx context.Context, path string) (*seenVersions, error) {
	escPath, err := module.EscapePath(path)
	if err != nil {
		return nil, err
	}
	s := &seenVersions{times: map[string]int64{}}
	cf, err := r.cacher.Get(ctx, firstSeenName(escPath))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	defer cf.Close()
	sc := bufio.NewScanner(io.LimitReader(cf, maxSeenEntry))
	for sc.Scan() {
		// "version time": a line that does not parse (a cut write of an
		// older version of this format, say) is passed over.
		v, ts, ok := strings.Cut(sc.Text(), " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if ok && err == nil && semver.IsValid(v) && module.CanonicalVersion(v) == v {
			if old, ok := s.times[v]; !ok || t.UnixNano() < old {
				s.times[v] = t.UnixNano()
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// record notes the versions of path not recorded yet as first seen now.
// A record that cannot be read is logged and left alone; one that cannot
// be written is logged, the versions kept in memory.
func (r *firstSeenRecord) record(ctx context.Context, path string, versions []string) {
	if r == nil || len(versions) == 0 {
		return
	}
	if s, ok := r.mem.Get(path); ok && !r.hasNew(s, versions) {
		return // the usual case: nothing new, nothing allocated
	}
	// Not the request's context: a client leaving must not lose the
	// record of what it made the proxy see.
	ctx = context.WithoutCancel(ctx)
	s, err := r.module(ctx, path)
	if err != nil {
		r.logger.LogAttrs(ctx, slog.LevelError, "reading the first-seen record failed", slog.String("module", path), slog.String("error", err.Error()))
		s = &seenVersions{times: map[string]int64{}}
	}
	if !r.hasNew(s, versions) {
		return
	}
	unlock, err := r.locks.lock(ctx, path)
	if err != nil {
		return
	}
	defer unlock()
	now := time.Now().UnixNano()
	// Read again: another process sharing the cache may have recorded
	// some of them, earlier. If the entry cannot be read, nothing is
	// recorded: writing would replace what it holds, and remembering
	// would shadow it. The versions are recorded once it can be read
	// (meanwhile FirstSeen fails, and the cooldown holds them back).
	merged, err := r.read(ctx, path)
	if err != nil {
		r.logger.LogAttrs(ctx, slog.LevelError, "reading the first-seen record failed", slog.String("module", path), slog.String("error", err.Error()))
		return
	}
	if cur, ok := r.mem.Peek(path); ok {
		for v, t := range cur.times {
			if old, ok := merged.times[v]; !ok || t < old {
				merged.times[v] = t
			}
		}
	}
	added := false
	for _, v := range versions {
		if _, ok := merged.times[v]; !ok && module.CanonicalVersion(v) == v {
			merged.times[v] = now
			added = true
		}
	}
	r.mem.Put(path, merged)
	if added {
		r.write(ctx, path, merged)
	}
}

// hasNew reports whether a canonical version of versions is not in s.
func (r *firstSeenRecord) hasNew(s *seenVersions, versions []string) bool {
	for _, v := range versions {
		if _, ok := s.times[v]; !ok && module.CanonicalVersion(v) == v {
			return true
		}
	}
	return false
}

// write stores path's record, oldest versions first, up to
// maxSeenVersions of them.
func (r *firstSeenRecord) write(ctx context.Context, path string, s *seenVersions) {
	escPath, err := module.EscapePath(path)
	if err != nil {
		return
	}
	versions := slices.SortedFunc(maps.Keys(s.times), func(a, b string) int {
		if c := s.times[a] - s.times[b]; c != 0 {
			return int(max(-1, min(1, c)))
		}
		return semver.Compare(a, b)
	})
	if len(versions) > maxSeenVersions {
		versions = versions[:maxSeenVersions]
		r.fullMu.Lock()
		first := !r.full[path]
		r.full[path] = true
		r.fullMu.Unlock()
		if first {
			r.logger.LogAttrs(ctx, slog.LevelWarn, "the first-seen record of a module is full: newer versions are recorded in memory only",
				slog.String("module", path), slog.Int("versions", maxSeenVersions))
		}
	}
	var b bytes.Buffer
	for _, v := range versions {
		b.WriteString(v)
		b.WriteByte(' ')
		b.WriteString(time.Unix(0, s.times[v]).UTC().Format(time.RFC3339Nano))
		b.WriteByte('\n')
	}
	ctx, cancel := context.WithTimeout(ctx, firstSeenPutTimeout)
	defer cancel()
	if err := r.cacher.Put(ctx, firstSeenName(escPath), bytes.NewReader(b.Bytes())); err != nil {
		r.logger.LogAttrs(ctx, slog.LevelError, "storing the first-seen record failed", slog.String("module", path), slog.String("error", err.Error()))
	}
}

// FirstSeen implements [FirstSeenSource] with the Proxy's own record:
// when the Proxy first saw path@version (in an upstream's list, as the
// answer to @latest or a query, asked for by name, or before fetching it
// for a prefetch, fill or import), or the zero time if it has not. The
// record is kept only while [Proxy.Admission] is set: give the Proxy as
// the FirstSeen of the Cooldown of the policy its Admission decides with.
// It fails when the Proxy's configuration is invalid, or when the record
// cannot be read from the Cacher (the cooldown then refuses the version).
func (p *Proxy) FirstSeen(ctx context.Context, path, version string) (time.Time, error) {
	if err := p.Init(); err != nil {
		return time.Time{}, err
	}
	if p.firstSeen == nil {
		return time.Time{}, nil
	}
	return p.firstSeen.get(ctx, path, version)
}
