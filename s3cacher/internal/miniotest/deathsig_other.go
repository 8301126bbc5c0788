//go:build !linux

package miniotest

import "os/exec"

// dieWithParent does nothing where the kernel cannot tie a child's life to
// its parent's; Close and test cleanups stop the server.
func dieWithParent(cmd *exec.Cmd) {}
