// Package egresstest runs egress proxies for tests on 127.0.0.1: a SOCKS5
// server and an HTTP proxy (CONNECT tunnels and absolute-form requests),
// each recording what it was asked, so that tests can assert how a client
// reached its destination.
package egresstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// DialFunc connects a proxy to a destination: host:port as the client asked
// for it, a name or an address.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// LoopbackOnly is the proxies' default DialFunc: it connects to loopback
// addresses and "localhost" only, so a test cannot reach the network
// through a proxy by mistake. Tests that need names resolved, or
// destinations remapped, give a DialFunc of their own.
func LoopbackOnly(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if a, err := netip.ParseAddr(host); (err != nil || !a.IsLoopback()) && host != "localhost" {
		return nil, fmt.Errorf("egresstest: no route to %s: only loopback addresses are reachable", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// server is what both proxies share: a listener, the record of requests,
// and the tracking of connections so Close can cut them.
type server struct {
	ln   net.Listener
	done chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]bool
	requests []string
	accepted int
	authFail int
}

func (s *server) start(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ln = ln
	s.done = make(chan struct{})
	s.conns = make(map[net.Conn]bool)
	t.Cleanup(s.close)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.accepted++
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.forget(c)
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func (s *server) forget(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *server) close() {
	if s.ln == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *server) record(req string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
}

func (s *server) failedAuth() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authFail++
}

// Requests returns the destinations clients asked for, in order.
func (s *server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Connections returns how many client connections the proxy has accepted.
func (s *server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// AuthFailures returns how many clients were refused for their credentials.
func (s *server) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFail
}

// relay copies between the client and the destination until both are done
// or the server closes.
func (s *server) relay(client, dst net.Conn) {
	defer dst.Close()
	done := make(chan struct{}, 2)
	pipe := func(to, from net.Conn) {
		io.Copy(to, from)
		if cw, ok := to.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			to.Close()
		}
		done <- struct{}{}
	}
	go pipe(dst, client)
	go pipe(client, dst)
	for range 2 {
		select {
		case <-done:
		case <-s.done:
			client.Close()
			dst.Close()
			<-done
		}
	}
}

// handshakeTimeout bounds a client's proxy handshake, so a client that
// stalls does not hold a goroutine forever.
const handshakeTimeout = 10 * time.Second

var errAuth = errors.New("authentication failed")

// Echo starts a TCP server on 127.0.0.1 that echoes what it reads, a
// destination for tests of tunnels, and returns its address.
func Echo(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}
