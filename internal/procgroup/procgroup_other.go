//go:build !unix

package procgroup

import "os/exec"

// set keeps exec.Cmd's default, killing the process alone: without
// process groups there is no portable way to reach its children.
func set(cmd *exec.Cmd) {}
