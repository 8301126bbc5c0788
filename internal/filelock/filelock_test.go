package filelock

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTryLockExcludesSecondHolder(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	a, _ := os.Create(name)
	b, _ := os.Open(name)
	defer b.Close()
	if ok, err := TryLock(a); !ok || err != nil {
		t.Fatalf("first TryLock = %v, %v", ok, err)
	}
	if ok, err := TryLock(b); ok || err != nil {
		t.Fatalf("second TryLock while held = %v, %v; want false, nil", ok, err)
	}
	a.Close()
	if ok, err := TryLock(b); !ok || err != nil {
		t.Fatalf("TryLock after the holder closed = %v, %v", ok, err)
	}
}
