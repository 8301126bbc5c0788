// Package procgroup makes cancelling a command stop the processes it
// started too. The go command runs git, and git runs its remote helpers;
// killing only the go command would leave them fetching, holding the
// locks of the module cache, until the network gives up.
package procgroup

import "os/exec"

// Set arranges for cmd to run in a process group of its own, where the
// platform has them, and for its Cancel (called when the context of
// exec.CommandContext ends) to ask the whole group to stop. Processes that
// outlive cmd.WaitDelay after that are killed as exec.Cmd always does.
// Call Set before cmd.Start.
func Set(cmd *exec.Cmd) { set(cmd) }
