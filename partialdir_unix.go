//go:build unix

package goproxy

import (
	"fmt"
	"os"
	"syscall"
)

// checkPrivateDir returns nil when dir is a directory (not a symbolic
// link) that only this process's user owns and may write to: what a
// download resumes from must not be another local user's to plant.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("cannot tell who owns %s", dir)
	}
	if euid := os.Geteuid(); int(st.Uid) != euid {
		return fmt.Errorf("%s belongs to user %d, not to this process's user %d", dir, st.Uid, euid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("others may write to %s (mode %v)", dir, fi.Mode().Perm())
	}
	return nil
}
