//go:build !unix

package filelock

import "os"

// tryLock always succeeds where advisory locks are not implemented: the
// partial downloads of processes sharing a directory are then not protected
// from each other.
func tryLock(f *os.File) (bool, error) { return true, nil }

// lock always succeeds where advisory locks are not implemented: writers
// sharing a file are then not kept apart.
func lock(f *os.File) error { return nil }

func unlock(f *os.File) error { return nil }
