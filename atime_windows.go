package goproxy

import (
	"io/fs"
	"syscall"
	"time"
)

// accessTime returns when fi's file was last read or given an access time,
// which is how DirCacher keeps last uses.
func accessTime(fi fs.FileInfo) time.Time {
	if d, ok := fi.Sys().(*syscall.Win32FileAttributeData); ok {
		return time.Unix(0, d.LastAccessTime.Nanoseconds())
	}
	return fi.ModTime()
}
