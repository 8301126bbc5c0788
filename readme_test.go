package goproxy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The README's Embedding section is a program that compiles as written.
func TestREADMEEmbeddingCompiles(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Embedding\n")
	if !ok {
		t.Fatal("README.md has no Embedding section")
	}
	_, code, ok := strings.Cut(section, "```go\n")
	code, _, closed := strings.Cut(code, "```\n")
	if !ok || !closed {
		t.Fatal("the Embedding section has no Go code block")
	}
	main := filepath.Join(t.TempDir(), "main.go")
	if err := os.WriteFile(main, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	// From this module's directory, so that the package resolves to
	// this very code; nothing is downloaded.
	cmd := exec.Command(goBin, "vet", main)
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOPROXY=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("go vet of the README's Embedding program: %v\n%s\n%s", err, out, code)
	}
}
