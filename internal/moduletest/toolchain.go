package moduletest

import (
	"fmt"
	"time"

	"golang.org/x/mod/module"
)

// ToolchainPath is the module of Go toolchains, which the go command
// downloads through GOPROXY to switch to the version GOTOOLCHAIN names.
const ToolchainPath = "golang.org/toolchain"

// ToolchainVersion writes to dir a Go toolchain module of about size bytes
// for goVersion (such as "go1.99.1") on goos/goarch, the version
// "v0.0.1-<goVersion>.<goos>-<goarch>" of ToolchainPath, and returns it.
// Its bin/go is goScript, which the go command executes in its own place
// once it has switched to the toolchain (a shell script starting with
// "#!" does on Unix), beside a bin/gofmt, a tool in pkg/tool and lib, as
// the go command expects of a toolchain; pseudo-random filler stored without compression
// makes up the size, so that the zip is as large on the wire. Memory use
// stays at a few MB whatever size is; sizes up to 500 MiB make valid
// module zips.
func ToolchainVersion(dir, goVersion, goos, goarch string, goScript []byte, size int64) (*Version, error) {
	version := "v0.0.1-" + goVersion + "." + goos + "-" + goarch
	if err := module.Check(ToolchainPath, version); err != nil {
		return nil, err
	}
	// Besides bin/go, the directories the go command makes executable
	// after the download (cmd/go/internal/toolchain.Exec), which must
	// exist.
	small := []memFile{
		{"bin/go", goScript},
		{"bin/gofmt", []byte("#!/bin/sh\nexit 0\n")},
		{"pkg/tool/" + goos + "_" + goarch + "/vet", []byte("#!/bin/sh\nexit 0\n")},
		{"lib/README", []byte("A test toolchain.\n")},
	}
	name, err := writeZipOfSize(dir, ToolchainPath, version, ToolchainPath+"@"+version, small, size)
	if err != nil {
		return nil, fmt.Errorf("writing the toolchain %s: %w", goVersion, err)
	}
	return &Version{
		Path:    ToolchainPath,
		Version: version,
		Time:    time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC),
		Mod:     []byte("module " + ToolchainPath + "\n"),
		ZipFile: name,
	}, nil
}
