//go:build unix

package procgroup_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/procgroup"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// TestCancelStopsChildren cancels a command whose child holds its output
// open: Wait returns as soon as the group is stopped, not after WaitDelay.
func TestCancelStopsChildren(t *testing.T) {
	started := filepath.Join(t.TempDir(), "started")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", "sleep 60 & touch '"+started+"'; wait")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.WaitDelay = 20 * time.Second
	procgroup.Set(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, func() bool {
		_, err := os.Stat(started)
		return err == nil
	}, "the command to start its child")
	cancel()
	start := time.Now()
	if err := cmd.Wait(); err == nil {
		t.Error("a cancelled command succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Wait took %v: the child outlived the cancellation", d)
	}
}
