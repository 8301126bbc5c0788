package miniotest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBinaryComesFromTheEnvironmentFirst(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "minio-somewhere")
	os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755)
	t.Setenv(EnvBinary, fake)
	if got, err := Binary(); err != nil || got != fake {
		t.Errorf("Binary() = %q, %v; want %s from %s", got, err, fake, EnvBinary)
	}
	t.Setenv(EnvBinary, filepath.Join(dir, "missing"))
	if _, err := Binary(); err == nil || !strings.Contains(err.Error(), EnvBinary) {
		t.Errorf("Binary() with %s naming a missing file: %v", EnvBinary, err)
	}
	t.Setenv(EnvBinary, "")
	t.Setenv("PATH", dir) // holds no "minio"
	_, err := Binary()
	if err == nil || !strings.Contains(err.Error(), Install) {
		t.Errorf("Binary() with none installed: %v, want a message saying %q", err, Install)
	}
}
