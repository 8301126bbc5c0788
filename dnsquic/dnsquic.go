// Package dnsquic carries DNS over QUIC (RFC 9250) for the quic:// servers
// of a goproxy.Resolver:
//
//	r := &goproxy.Resolver{
//		Servers: []string{"quic://dns.example:853"},
//		QUIC:    new(dnsquic.Transport),
//	}
//
// It is a package of its own so that programs that do not ask DNS over QUIC
// do not link a QUIC implementation.
package dnsquic

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Error codes of RFC 9250 §4.3.
const (
	codeNoError          = 0x0
	codeRequestCancelled = 0x3
)

// idleTimeout is how long a connection with no queries stays open. Servers
// close idle connections on their own, usually sooner; the Transport then
// dials again.
const idleTimeout = 30 * time.Second

// Transport sends DNS queries over QUIC. It keeps one connection per server
// and sends each query on a stream of its own, as RFC 9250 prescribes, so
// concurrent queries to one server share a connection without waiting for
// each other.
//
// The zero value is ready to use. A Transport implements the
// goproxy.DNSTransport interface and may be shared by several resolvers.
type Transport struct {
	mu    sync.Mutex
	conns map[connKey]*dialing
}

type connKey struct{ addr, serverName string }

// dialing is a connection, possibly still being dialed: ready is closed
// once conn or err is set.
type dialing struct {
	ready chan struct{}
	conn  *quic.Conn
	err   error
}

// Exchange sends query, a DNS message in wire format, to the DoQ server at
// addr (host:port) and returns its response. conf must name the server
// (ServerName) and says which certificates to trust; the "doq" protocol is
// added to its NextProtos. The message ID goes out as 0, which DoQ
// requires, and the response carries the query's ID again, as the
// caller expects from any DNS transport.
func (t *Transport) Exchange(ctx context.Context, addr string, conf *tls.Config, query []byte) ([]byte, error) {
	if len(query) < 12 {
		return nil, errors.New("dnsquic: query is shorter than a DNS header")
	}
	if len(query) > 0xffff {
		return nil, errors.New("dnsquic: query is longer than a DNS message may be")
	}
	id := binary.BigEndian.Uint16(query)
	q := append([]byte(nil), query...)
	binary.BigEndian.PutUint16(q, 0)
	key := connKey{addr, ""}
	if conf != nil {
		key.serverName = conf.ServerName
	}
	// A connection taken from the pool may have been closed by the server
	// while idle; the query is then tried once more on a new one.
	for attempt := 0; ; attempt++ {
		conn, reused, err := t.conn(ctx, key, conf)
		if err != nil {
			return nil, fmt.Errorf("dnsquic: connecting to %s: %w", addr, err)
		}
		resp, err := exchange(ctx, conn, q)
		if err == nil {
			binary.BigEndian.PutUint16(resp, id)
			return resp, nil
		}
		if conn.Context().Err() != nil {
			t.forget(key, conn)
		}
		if !reused || attempt > 0 || ctx.Err() != nil || conn.Context().Err() == nil {
			return nil, fmt.Errorf("dnsquic: query to %s: %w", addr, err)
		}
	}
}

// conn returns the connection to key, dialing one if there is none or it
// has closed. reused reports whether it was already open.
func (t *Transport) conn(ctx context.Context, key connKey, conf *tls.Config) (conn *quic.Conn, reused bool, err error) {
	for {
		t.mu.Lock()
		d := t.conns[key]
		if d == nil {
			d = &dialing{ready: make(chan struct{})}
			if t.conns == nil {
				t.conns = make(map[connKey]*dialing)
			}
			t.conns[key] = d
			t.mu.Unlock()
			d.conn, d.err = dial(ctx, key.addr, conf)
			close(d.ready)
			if d.err != nil {
				t.forget(key, nil)
			}
			return d.conn, false, d.err
		}
		t.mu.Unlock()
		select {
		case <-d.ready:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
		if d.err == nil && d.conn.Context().Err() == nil {
			return d.conn, true, nil
		}
		// That dial failed for its caller, or the connection has since
		// closed: drop it and dial anew.
		t.mu.Lock()
		if t.conns[key] == d {
			delete(t.conns, key)
		}
		t.mu.Unlock()
	}
}

// forget drops the pool's entry for key if it still holds conn (or any
// failed dial, when conn is nil).
func (t *Transport) forget(key connKey, conn *quic.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d := t.conns[key]; d != nil && d.conn == conn {
		delete(t.conns, key)
	}
}

func dial(ctx context.Context, addr string, conf *tls.Config) (*quic.Conn, error) {
	if conf == nil {
		conf = &tls.Config{}
	} else {
		conf = conf.Clone()
	}
	conf.NextProtos = []string{"doq"}
	return quic.DialAddr(ctx, addr, conf, &quic.Config{MaxIdleTimeout: idleTimeout})
}

// exchange sends one query on a stream of its own and reads the answer.
func exchange(ctx context.Context, conn *quic.Conn, query []byte) ([]byte, error) {
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() {
		str.CancelRead(codeRequestCancelled)
		str.CancelWrite(codeRequestCancelled)
	})
	defer stop()
	if _, err := str.Write(binary.BigEndian.AppendUint16(nil, uint16(len(query)))); err != nil {
		return nil, err
	}
	if _, err := str.Write(query); err != nil {
		return nil, err
	}
	// The client must end its side of the stream after the query (RFC 9250
	// §4.2); servers wait for it before they answer.
	if err := str.Close(); err != nil {
		return nil, err
	}
	var n [2]byte
	if _, err := io.ReadFull(str, n[:]); err != nil {
		return nil, cause(ctx, err)
	}
	resp := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(str, resp); err != nil {
		return nil, cause(ctx, err)
	}
	if len(resp) < 12 {
		return nil, errors.New("response is shorter than a DNS header")
	}
	// The answer is complete; whatever else the server may send (only its
	// end of stream) is not needed, and releasing the stream now frees it
	// for the next query.
	str.CancelRead(codeNoError)
	return resp, nil
}

// cause prefers the context's error to the stream's, which only says the
// stream was cancelled when it was the context that ran out.
func cause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Close closes the Transport's connections. The Transport stays usable: a
// later query dials again.
func (t *Transport) Close() error {
	t.mu.Lock()
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for _, d := range conns {
		<-d.ready
		if d.conn != nil {
			d.conn.CloseWithError(codeNoError, "")
		}
	}
	return nil
}
