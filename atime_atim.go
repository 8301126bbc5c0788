//go:build linux || openbsd || dragonfly || solaris

package goproxy

import (
	"io/fs"
	"syscall"
	"time"
)

// accessTime returns when fi's file was last read or given an access time,
// which is how DirCacher keeps last uses.
func accessTime(fi fs.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Atim.Unix())
	}
	return fi.ModTime()
}
