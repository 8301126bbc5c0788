package goproxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
)

// TestMain keeps the tests hermetic: no GO* setting of the developer's
// reaches a Proxy whose Env is nil, and the default transport refuses to dial
// anything but loopback, so no test can reach the internet by mistake.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GO") && k != "GOROOT" && k != "GOCACHE" && k != "GOPATH" && k != "GOMODCACHE" {
			os.Unsetenv(k)
		}
	}
	t := http.DefaultTransport.(*http.Transport)
	dialer := &net.Dialer{}
	t.Proxy = nil
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("test dialed %s: tests may only reach loopback", addr)
		}
		return dialer.DialContext(ctx, network, addr)
	}
	code := m.Run()
	fixtureDirs.Lock()
	for _, dir := range fixtureDirs.names {
		os.RemoveAll(dir)
	}
	fixtureDirs.Unlock()
	os.Exit(code)
}

// fixtureDirs are the directories of fixtures shared by several tests,
// removed once they have all run.
var fixtureDirs struct {
	sync.Mutex
	names []string
}

// fixtureDir makes a directory for a shared fixture.
func fixtureDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err == nil {
		fixtureDirs.Lock()
		fixtureDirs.names = append(fixtureDirs.names, dir)
		fixtureDirs.Unlock()
	}
	return dir, err
}
