//go:build !linux

package miniotest

import (
	"os/exec"
	"testing"
)

// dieWithParent does nothing where the kernel cannot tie a child's life to
// its parent's; Close and test cleanups stop the server.
func dieWithParent(cmd *exec.Cmd) {}

// Freeze skips t: stopping a process without ending it is tested on Linux.
func (s *Server) Freeze(t testing.TB) { t.Skip("miniotest: Freeze needs Linux") }

// Thaw does nothing where Freeze cannot happen.
func (s *Server) Thaw(t testing.TB) {}
