package goproxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"time"

	"github.com/goproxy-team/goproxy/internal/filelock"
)

// The index journal is the module index feed as a file: one JSON line per
// version, exactly as /index serves it, in increasing timestamp order. It
// is only ever appended to, one write per batch under a file lock, so a
// crash can leave at most a torn last line, which readers skip and the next
// append ends. Sorted lines make a page a binary search by timestamp over
// byte offsets (a few small reads) followed by one sequential read: nothing
// is loaded at start and no memory grows with the feed.

// maxIndexLine bounds one line of the journal: module paths and versions
// are far shorter, so a longer line is damage, skipped like a torn one.
const maxIndexLine = 8 << 10

// indexLine encodes one entry as a line of the journal.
func indexLine(buf []byte, e IndexEntry) []byte {
	line, _ := json.Marshal(IndexEntry{e.Path, e.Version, e.Timestamp.UTC()})
	return append(append(buf, line...), '\n')
}

// parseIndexLine decodes a line without its newline; ok is false for a
// damaged line.
func parseIndexLine(line []byte) (IndexEntry, bool) {
	var e IndexEntry
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil || e.Path == "" || e.Version == "" || e.Timestamp.IsZero() {
		return IndexEntry{}, false
	}
	return e, true
}

// spreadTimestamps makes timestamps strictly increase from after last,
// moving each that does not by the least amount: the order is the feed's,
// and a reader paging by timestamp must never see two entries alike.
func spreadTimestamps(entries []IndexEntry, last time.Time) {
	for i := range entries {
		t := entries[i].Timestamp.UTC()
		if !t.After(last) {
			t = last.Add(time.Nanosecond)
		}
		entries[i].Timestamp, last = t, t
	}
}

// appendIndexJournal adds entries at the end of the journal name, which
// must exist.
func appendIndexJournal(root *os.Root, name string, entries []IndexEntry) error {
	if len(entries) == 0 {
		return nil
	}
	f, err := root.OpenFile(name, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("appending to the index feed: %w", err)
	}
	defer f.Close()
	if err := filelock.Lock(f); err != nil {
		return fmt.Errorf("appending to the index feed: %w", err)
	}
	last, clean, err := journalTail(f)
	if err != nil {
		return fmt.Errorf("appending to the index feed: %w", err)
	}
	entries = slices.Clone(entries)
	spreadTimestamps(entries, last)
	var buf []byte
	if !clean {
		buf = append(buf, '\n') // end the line a crash tore
	}
	for _, e := range entries {
		buf = indexLine(buf, e)
	}
	if _, err := f.Write(buf); err != nil {
		return fmt.Errorf("appending to the index feed: %w", err)
	}
	// Synced like the cached files themselves: an entry lost in a power
	// cut would leave its version out of the feed for good.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("appending to the index feed: %w", err)
	}
	return nil
}

// journalTail returns the timestamp of the journal's last whole entry and
// whether the file ends with a newline, reading backwards from the end only
// as far as it must.
func journalTail(f *os.File) (last time.Time, clean bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return time.Time{}, false, err
	}
	size := fi.Size()
	if size == 0 {
		return time.Time{}, true, nil
	}
	for chunk := int64(4 << 10); ; chunk *= 4 {
		start := max(size-chunk, 0)
		buf := make([]byte, size-start)
		if _, err := f.ReadAt(buf, start); err != nil && err != io.EOF {
			return time.Time{}, false, err
		}
		clean = buf[len(buf)-1] == '\n'
		lines := bytes.Split(buf, []byte{'\n'})
		// The last piece is empty (a clean end) or torn; the first may be
		// cut by the chunk's start unless it starts the file.
		first := 1
		if start == 0 {
			first = 0
		}
		for i := len(lines) - 2; i >= first; i-- {
			if e, ok := parseIndexLine(lines[i]); ok {
				return e.Timestamp, clean, nil
			}
		}
		if start == 0 {
			return time.Time{}, clean, nil
		}
	}
}

// readIndexJournal returns up to limit entries of the journal name listed
// at or after since.
func readIndexJournal(root *os.Root, name string, since time.Time, limit int) ([]IndexEntry, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading the index feed: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading the index feed: %w", err)
	}
	// Reading stops at the size seen now: a line another process is
	// appending is either whole within it or left for the next page.
	j := journalReader{f: f, size: fi.Size()}
	// The smallest offset whose next whole entry is at or after since (or
	// that has none) leads to the page's first entry; offsets only move
	// entries later, so the search is a binary one.
	lo, hi := int64(0), j.size
	for lo < hi {
		mid := lo + (hi-lo)/2
		_, e, ok, err := j.entryFrom(mid)
		if err != nil {
			return nil, fmt.Errorf("reading the index feed: %w", err)
		}
		if !ok || !e.Timestamp.Before(since) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	start, _, ok, err := j.entryFrom(lo)
	if err != nil || !ok {
		return nil, err
	}
	var page []IndexEntry
	r := bufio.NewReaderSize(io.NewSectionReader(f, start, j.size-start), 64<<10)
	for len(page) < limit {
		line, err := readJournalLine(r)
		if err != nil {
			if err == io.EOF {
				break
			}
			return nil, fmt.Errorf("reading the index feed: %w", err)
		}
		if e, ok := parseIndexLine(line); ok && !e.Timestamp.Before(since) {
			page = append(page, e)
		}
	}
	return page, nil
}

// journalReader reads a journal up to size.
type journalReader struct {
	f    *os.File
	size int64
}

// entryFrom finds the first whole, undamaged entry whose line starts at or
// after off, returning where its line starts.
func (j journalReader) entryFrom(off int64) (int64, IndexEntry, bool, error) {
	pos := off
	if off > 0 {
		pos = off - 1 // a line starts at off if the byte before is a newline
	}
	r := bufio.NewReaderSize(io.NewSectionReader(j.f, pos, j.size-pos), 4<<10)
	if off > 0 {
		skipped, err := r.ReadSlice('\n')
		for err == bufio.ErrBufferFull {
			pos += int64(len(skipped))
			skipped, err = r.ReadSlice('\n')
		}
		if err != nil {
			return 0, IndexEntry{}, false, eofIsNone(err)
		}
		pos += int64(len(skipped))
	}
	for {
		line, err := r.ReadSlice('\n')
		n := int64(len(line))
		for err == bufio.ErrBufferFull { // longer than any entry: damage
			var more []byte
			more, err = r.ReadSlice('\n')
			n += int64(len(more))
			line = nil
		}
		if err != nil {
			return 0, IndexEntry{}, false, eofIsNone(err)
		}
		if e, ok := parseIndexLine(line[:max(len(line)-1, 0)]); ok {
			return pos, e, true, nil
		}
		pos += n
	}
}

// readJournalLine returns the next whole line without its newline, or nil
// for one too long to be an entry; io.EOF at the end, a torn last line
// included.
func readJournalLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == nil {
		return line[:len(line)-1], nil
	}
	if err == bufio.ErrBufferFull {
		for err == bufio.ErrBufferFull {
			_, err = r.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return nil, nil
	}
	return nil, err
}

func eofIsNone(err error) error {
	if err == io.EOF {
		return nil
	}
	return err
}

// createIndexJournal writes the journal name with entries unless it exists,
// reporting fs.ErrExist then.
func createIndexJournal(root *os.Root, name string, entries []IndexEntry) (err error) {
	if _, err := root.Stat(name); err == nil {
		return fmt.Errorf("creating the index feed: %w", fs.ErrExist)
	}
	dir, base := path.Split(name)
	if err := root.MkdirAll(path.Clean(dir), 0o755); err != nil {
		return fmt.Errorf("creating the index feed: %w", err)
	}
	entries = slices.Clone(entries)
	slices.SortStableFunc(entries, func(a, b IndexEntry) int { return a.Timestamp.Compare(b.Timestamp) })
	spreadTimestamps(entries, time.Time{})
	var suffix [8]byte
	rand.Read(suffix[:])
	tmp := dir + "." + base + ".tmp-" + hex.EncodeToString(suffix[:])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("creating the index feed: %w", err)
	}
	defer root.Remove(tmp)
	w := bufio.NewWriterSize(f, 64<<10)
	var line []byte
	for _, e := range entries {
		line = indexLine(line[:0], e)
		w.Write(line)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("creating the index feed: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("creating the index feed: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("creating the index feed: %w", err)
	}
	// A link, unlike a rename, never replaces a journal another process
	// created meanwhile, which it may already be appending to.
	if err := root.Link(tmp, name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating the index feed: %w", fs.ErrExist)
		}
		return fmt.Errorf("creating the index feed: %w", err)
	}
	return nil
}
