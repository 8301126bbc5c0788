//go:build !unix

package filelock

import "os"

// tryLock always succeeds where advisory locks are not implemented: the
// partial downloads of processes sharing a directory are then not protected
// from each other.
func tryLock(f *os.File) (bool, error) { return true, nil }
