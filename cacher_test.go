package goproxy_test

import (
	"path/filepath"
	"testing"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/cachertest"
)

// The Cacher contract, shared with every other implementation.

func TestDirCacherContract(t *testing.T) {
	cachertest.Run(t, func(t *testing.T) goproxy.Cacher {
		return goproxy.DirCacher(filepath.Join(t.TempDir(), "cache"))
	})
}

func TestMemCacherContract(t *testing.T) {
	cachertest.Run(t, func(t *testing.T) goproxy.Cacher { return &goproxy.MemCacher{} })
}
