package s3cacher

import (
	"os/exec"
	"syscall"
)

// dieWithTest makes a replica die with the test process, should the test
// itself be killed before it can clean up.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
