package goproxy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/goproxy-team/goproxy/internal/filelock"
)

// The files of PartialDir. A download in progress holds a lock on its
// file, which the operating system drops when the process dies; a file
// nobody holds is either kept for resuming (a .part with its state) or
// left by a dead process.
const (
	partSuffix    = ".part" // a resumable download, named after its URL's hash
	stateSuffix   = ".json" // the partialState of the .part of the same name
	privateSuffix = ".tmp"  // a download of its own, or a state being written
)

// partialDir returns the directory for a download's file, and whether
// downloads may be resumed from it: PartialDir when its files can be
// trusted (a state marking every part done is believed, and only the CRCs
// check the bytes of a module the checksum database does not know), that
// is when no other local user could have put them there, as one who
// created the directory first could. Otherwise, said once in the log, a
// directory of this process's own in TempDir, whose files are private
// and never resumed.
func (d *downloader) partialDir() (dir string, resumable bool, err error) {
	if err := os.MkdirAll(d.opts.PartialDir, 0o700); err != nil {
		return "", false, err
	}
	err = checkPrivateDir(d.opts.PartialDir)
	if err == nil {
		return d.opts.PartialDir, true, nil
	}
	d.ownDirOnce.Do(func() {
		d.logger.Warn("not using PartialDir, which is not private to this user: downloads are not resumed; set DownloadOptions.PartialDir to a directory of your own",
			"dir", d.opts.PartialDir, "error", err)
		d.ownDir, d.ownDirErr = os.MkdirTemp(d.tempDir, "goproxy-partial-")
	})
	return d.ownDir, false, d.ownDirErr
}

// trimPartials keeps at most budget bytes of interrupted downloads in
// PartialDir, removing the oldest first, and removes what dead processes
// left: private files nobody holds, .part files without a state and states
// without a .part. Downloads in progress are never touched.
func (d *downloader) trimPartials(budget int64) {
	dir := d.opts.PartialDir
	if checkPrivateDir(dir) != nil {
		return // not ours to tidy
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type kept struct {
		f       *os.File // locked: nobody takes it over while it goes
		size    int64
		modTime time.Time
		state   string
	}
	var keep []kept
	defer func() {
		for _, k := range keep {
			k.f.Close()
		}
	}()
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	// lockFree opens name and locks it, or returns nil if it is in use.
	lockFree := func(name string) *os.File {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil
		}
		if ok, err := filelock.TryLock(f); err != nil || !ok {
			f.Close()
			return nil
		}
		return f
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, partSuffix):
			state := strings.TrimSuffix(name, partSuffix) + stateSuffix
			f := lockFree(name)
			if f == nil {
				continue // in use
			}
			fi, err := f.Stat()
			if err != nil || !names[state] {
				os.Remove(f.Name())
				f.Close()
				continue
			}
			keep = append(keep, kept{f: f, size: fi.Size(), modTime: fi.ModTime(), state: filepath.Join(dir, state)})
		case strings.HasSuffix(name, privateSuffix):
			if f := lockFree(name); f != nil {
				os.Remove(f.Name())
				f.Close()
			}
		case strings.HasSuffix(name, stateSuffix):
			if !names[strings.TrimSuffix(name, stateSuffix)+partSuffix] {
				os.Remove(filepath.Join(dir, name))
			}
		}
	}
	slices.SortFunc(keep, func(a, b kept) int { return a.modTime.Compare(b.modTime) })
	var total int64
	for _, k := range keep {
		total += k.size
	}
	for _, k := range keep {
		if total <= max(budget, 0) {
			break
		}
		os.Remove(k.state)
		os.Remove(k.f.Name())
		total -= k.size
	}
}
