package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/goproxy-team/goproxy"
)

var (
	exitMu    sync.Mutex
	exitFuncs []func()
)

// atExit registers f to run, last registered first, when the program ends,
// normally or through fatalf.
func atExit(f func()) {
	exitMu.Lock()
	defer exitMu.Unlock()
	exitFuncs = append(exitFuncs, f)
}

func runExitFuncs() {
	exitMu.Lock()
	fs := exitFuncs
	exitFuncs = nil
	exitMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// fatalf reports err, cleans up (servers, temporary directories) and exits.
func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	runExitFuncs()
	os.Exit(1)
}

// loopbackDialer refuses anything but loopback addresses, so that no phase
// of the benchmark can reach beyond this machine, whatever the settings.
func loopbackDialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return loopbackOnly(d.DialContext)
}

// loopbackOnly wraps dial so that it refuses any address but a loopback
// IP address.
func loopbackOnly(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("bench dialed %s: only loopback is allowed", addr)
		}
		return dial(ctx, network, addr)
	}
}

// proxyTransport returns the transport a Proxy with neither Transport nor
// Dialer set builds for itself (goproxy.Dialer.Transport: its pool sizes
// and timeouts), with no egress proxy and every dial checked to be
// loopback. Each Proxy gets its own, as it would out of the box.
func proxyTransport() http.RoundTripper {
	t, err := (&goproxy.Dialer{Proxy: "direct", Env: []string{}}).Transport()
	if err != nil {
		fatalf("building the proxy's transport: %v", err)
	}
	if t.DialContext == nil {
		fatalf("the proxy's transport has no DialContext to restrict")
	}
	t.DialContext = loopbackOnly(t.DialContext)
	if t.DialTLSContext != nil {
		t.DialTLSContext = loopbackOnly(t.DialTLSContext)
	}
	return t
}

// restrictDefaultTransport makes http.DefaultTransport loopback-only and
// proxy-free, for anything in this process that uses it.
func restrictDefaultTransport() {
	t := http.DefaultTransport.(*http.Transport)
	t.Proxy = nil
	t.DialContext = loopbackDialer()
}

// server is an http.Server on 127.0.0.1, as a deployment would run the
// handler (not httptest, whose server tracks every connection).
type server struct {
	URL string
	srv *http.Server
}

func serve(h http.Handler) *server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("%v", err)
	}
	s := &server{URL: "http://" + ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "bench: serving: %v\n", err)
		}
	}()
	return s
}

func (s *server) Close() { s.srv.Close() }

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// byteSize is a flag holding a number of bytes, written with an optional
// unit: B, KB/MB/GB (powers of 1000) or KiB/MiB/GiB (powers of 1024).
type byteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9},
	{"b", 1},
}

func (b *byteSize) Set(s string) error {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 {
		return fmt.Errorf("invalid size %q", s)
	}
	*b = byteSize(f * float64(mult))
	return nil
}

func (b *byteSize) String() string { return formatBytes(int64(*b)) }

// formatBytes prints n in MB (10^6) when that is whole, else in bytes.
func formatBytes(n int64) string {
	if n >= 1e6 && n%1e6 == 0 {
		return fmt.Sprintf("%dMB", n/1e6)
	}
	return fmt.Sprintf("%dB", n)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

func durList(ds []time.Duration) string {
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(secs(d))
	}
	return b.String()
}
