// Package filelock takes advisory locks on open files, so that two processes
// sharing a directory never resume the same partial download at once. The
// operating system drops the lock when its holder dies, which is what lets a
// restarted process take over a killed one's partial files.
package filelock

import "os"

// TryLock takes an exclusive lock on f without waiting. It reports false,
// with a nil error, when another holder has the lock. The lock lasts until
// f is closed.
func TryLock(f *os.File) (bool, error) { return tryLock(f) }

// Lock takes an exclusive lock on f, waiting for other holders to let go.
// The lock lasts until Unlock or until f is closed.
func Lock(f *os.File) error { return lock(f) }

// Unlock drops the lock taken by Lock or TryLock.
func Unlock(f *os.File) error { return unlock(f) }
