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

func TestLockWaitsForTheHolder(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	a, _ := os.Create(name)
	defer a.Close()
	b, _ := os.Open(name)
	defer b.Close()
	if err := Lock(a); err != nil {
		t.Fatal(err)
	}
	locked := make(chan error)
	go func() { locked <- Lock(b) }()
	if ok, _ := TryLock(b); ok {
		t.Fatal("TryLock succeeded while Lock held")
	}
	if err := Unlock(a); err != nil {
		t.Fatal(err)
	}
	if err := <-locked; err != nil {
		t.Fatalf("Lock after the holder unlocked: %v", err)
	}
}
