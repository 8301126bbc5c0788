package goproxy

import (
	"context"
	"os"
	"time"
)

// quietReader is a Cacher that can be read without the read counting as a
// use: DirCacher keeps last uses in access times, which the kernel also
// moves when a file is read (with relatime, once a day), so a scrub
// reading every file would otherwise make everything look used to
// eviction.
type quietReader interface {
	getQuietly(ctx context.Context, name string) (CachedFile, error)
}

// getQuietly is Get, except that closing the file puts its access time
// back as it was before, unless the file was replaced meanwhile.
func (d DirCacher) getQuietly(ctx context.Context, name string) (CachedFile, error) {
	root, err := d.openRoot(name)
	if err != nil {
		return nil, err
	}
	fi, err := root.Stat(name)
	root.Close()
	if err != nil {
		return nil, err
	}
	cf, err := d.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	return &quietFile{CachedFile: cf, d: d, name: name, before: fi}, nil
}

// quietFile is a DirCacher file read without counting as a use.
type quietFile struct {
	CachedFile
	d      DirCacher
	name   string
	before os.FileInfo
}

func (f *quietFile) Close() error {
	err := f.CachedFile.Close()
	root, rerr := f.d.openRoot(f.name)
	if rerr != nil {
		return err
	}
	defer root.Close()
	if fi, serr := root.Stat(f.name); serr == nil && os.SameFile(fi, f.before) && fi.ModTime().Equal(f.before.ModTime()) {
		root.Chtimes(f.name, accessTime(f.before), time.Time{})
	}
	return err
}
