package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/testcert"
)

// nofileVar makes the test binary a wrapper: it lowers its open-file
// limit (soft and hard, so the Go runtime cannot raise it again) and
// executes its arguments in its place.
const nofileVar = "GOPROXY_TEST_EXEC_WITH_NOFILE"

var binDir string

func TestMain(m *testing.M) {
	if n := os.Getenv(nofileVar); n != "" {
		execWithNofile(n)
	}
	var err error
	binDir, err = os.MkdirTemp("", "goproxy-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

func execWithNofile(n string) {
	limit, err := strconv.ParseUint(n, 10, 64)
	if err == nil {
		err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: limit, Max: limit})
	}
	if err == nil {
		env := slicesDelete(os.Environ(), nofileVar+"="+n)
		err = syscall.Exec(os.Args[1], os.Args[1:], env)
	}
	fmt.Fprintln(os.Stderr, "exec with a lower open-file limit:", err)
	os.Exit(1)
}

func slicesDelete(s []string, v string) []string {
	var out []string
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// binary builds the server once per test binary, as the Dockerfile
// builds it: static, from the workspace at the repository's root.
var binary = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "goproxy")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/goproxy")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func buildServer(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// proc is a server process started by a test, its log read as it comes.
type proc struct {
	t   *testing.T
	cmd *exec.Cmd
	URL string // the base URL it serves, from its "serving" line

	mu    sync.Mutex
	lines []map[string]any
	raw   []string
	done  chan struct{} // closed when the process has exited
	err   error         // its exit status, once done
}

// serverEnv is a clean environment for a server: nothing of the
// developer's go settings, proxies or home.
func serverEnv(t *testing.T, extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}
	return append(env, extra...)
}

// startServer runs the server with args and env; wrap, if set, comes
// before the binary (a wrapper command). It waits until the server
// serves, and stops it at the end of the test.
func startServer(t *testing.T, args, env []string, wrap ...string) *proc {
	t.Helper()
	bin := buildServer(t)
	argv := append(append(wrap, bin), args...)
	p := &proc{t: t, cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.cmd.Env = env
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = p.cmd.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stderr)
		s.Buffer(nil, 1<<20)
		for s.Scan() {
			line := s.Text()
			var m map[string]any
			json.Unmarshal([]byte(line), &m)
			p.mu.Lock()
			p.raw = append(p.raw, line)
			p.lines = append(p.lines, m)
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			p.mu.Lock()
			t.Logf("server log:\n%s", strings.Join(p.raw, "\n"))
			p.mu.Unlock()
		}
	})
	serving := p.waitLog(t, 60*time.Second, func(m map[string]any) bool { return m["msg"] == "serving" })
	p.URL, _ = serving["url"].(string)
	return p
}

// waitLog waits for a log line for which match is true, failing the test
// at the deadline or if the server exits.
func (p *proc) waitLog(t *testing.T, timeout time.Duration, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		exited := false
		select {
		case <-p.done: // every line is read by then
			exited = true
		default:
		}
		p.mu.Lock()
		for _, m := range p.lines {
			if m != nil && match(m) {
				p.mu.Unlock()
				return m
			}
		}
		p.mu.Unlock()
		if exited {
			t.Fatalf("the server exited (%v) before the awaited log line", p.err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no awaited log line within %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logLines returns the log lines so far with msg.
func (p *proc) logLines(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, m := range p.lines {
		if m != nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the process to exit, up to timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("the server did not exit within %v", timeout)
		return nil
	}
}

// serverCert writes a certificate for 127.0.0.1 from ca and its key
// into dir, as cert.pem and key.pem, replacing any there (by rename, as
// certificate renewal tools do).
func serverCert(t *testing.T, ca *testcert.CA, dir string) (certFile, keyFile string, leaf *x509.Certificate) {
	t.Helper()
	cert := ca.Issue(t, "127.0.0.1")
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for name, data := range map[string][]byte{keyFile: keyPEM, certFile: certPEM} {
		tmp := name + ".new"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, name); err != nil {
			t.Fatal(err)
		}
	}
	leaf, err = x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, leaf
}

// peerCertificate connects anew and returns the certificate presented.
func peerCertificate(t *testing.T, addr string, ca *testcert.CA) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, ca.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
