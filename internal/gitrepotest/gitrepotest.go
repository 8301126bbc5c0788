// Package gitrepotest serves git repositories on loopback with git's own
// smart HTTP server (git http-backend, run through net/http/cgi), and
// writes git configuration that sends a made-up host there, so tests can
// have the go command fetch modules from their "origin" without DNS or
// the internet.
package gitrepotest

import (
	"bytes"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Server serves every repository below Root at URL/<name>.
type Server struct {
	URL  string // http://127.0.0.1:port, no trailing slash
	Root string

	git     string
	home    string // an empty HOME, so no developer configuration applies
	handler http.Handler
}

// NewServer starts a server that is stopped when t ends. It skips the test
// when git is not installed.
func NewServer(t testing.TB) *Server {
	t.Helper()
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed")
	}
	s := &Server{Root: t.TempDir(), git: git, home: t.TempDir()}
	s.handler = &cgi.Handler{
		Path: git,
		Args: []string{"http-backend"},
		Dir:  s.Root,
		Env: append(s.gitEnv(),
			"GIT_PROJECT_ROOT="+s.Root,
			// Serve every repository without a git-daemon-export-ok file.
			"GIT_HTTP_EXPORT_ALL=1",
		),
	}
	srv := httptest.NewServer(s.handler)
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// gitEnv isolates git from the developer's and the system's configuration.
func (s *Server) gitEnv() []string {
	return []string{"HOME=" + s.home, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=" + os.DevNull}
}

// Handler serves the repositories as the server does, for tests that serve
// them from a server of their own (over TLS, or beside go-import tags).
func (s *Server) Handler() http.Handler { return s.handler }

// GitConfig writes a git configuration file, for GIT_CONFIG_GLOBAL, that
// rewrites https://<host>/ to the server, so a module path such as
// <host>/name.git is fetched from the repository called name. It returns
// the file's path.
func (s *Server) GitConfig(t testing.TB, host string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gitconfig")
	content := "[url \"" + s.URL + "/\"]\n\tinsteadOf = https://" + host + "/\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Repo is a repository with a work tree, served as it changes.
type Repo struct {
	Dir string
	s   *Server
	// clock counts git runs, to give each commit a distinct, increasing
	// time.
	clock atomic.Int64
}

// NewRepo creates an empty repository served at URL/name, on branch main.
func (s *Server) NewRepo(t testing.TB, name string) *Repo {
	t.Helper()
	r := &Repo{Dir: filepath.Join(s.Root, name), s: s}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.Git(t, "init", "-q", "-b", "main")
	// The go command may fetch a commit by hash rather than by ref.
	r.Git(t, "config", "uploadpack.allowAnySHA1InWant", "true")
	return r
}

// WriteFile writes a file of the work tree, creating its directories.
func (r *Repo) WriteFile(t testing.TB, name, content string) {
	t.Helper()
	path := filepath.Join(r.Dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Commit commits everything in the work tree.
func (r *Repo) Commit(t testing.TB, message string) {
	t.Helper()
	r.Git(t, "add", "-A")
	r.Git(t, "commit", "-q", "-m", message)
}

// Tag tags the current commit.
func (r *Repo) Tag(t testing.TB, name string) {
	t.Helper()
	r.Git(t, "tag", name)
}

// Git runs git in the repository and returns its output.
func (r *Repo) Git(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(r.s.git, args...)
	cmd.Dir = r.Dir
	// Commit times a second apart, after a fixed start, keep versions in
	// order however fast the test runs.
	date := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(r.clock.Add(1)) * time.Second)
	stamp := strconv.FormatInt(date.Unix(), 10) + " +0000"
	cmd.Env = append(os.Environ(), r.s.gitEnv()...)
	cmd.Env = append(cmd.Env,
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com", "GIT_AUTHOR_DATE="+stamp,
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com", "GIT_COMMITTER_DATE="+stamp,
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, stderr.Bytes())
	}
	return string(out)
}
