package goproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// maxDNSMessage is the largest DNS message: its length must fit the two
// bytes that frame it on streams.
const maxDNSMessage = 0xffff

// exchange sends msg to s over s's transport and returns the response.
func (r *Resolver) exchange(ctx context.Context, s *dnsServer, msg []byte) ([]byte, error) {
	switch s.scheme {
	case "udp":
		resp, err := r.exchangeUDP(ctx, s, msg)
		if err != nil {
			return nil, err
		}
		var p dnsmessage.Parser
		if h, err := p.Start(resp); err == nil && h.Truncated {
			// Too large for a datagram: the same question over TCP gets
			// the whole answer (RFC 7766).
			return s.tcp.exchange(ctx, msg)
		}
		return resp, nil
	case "tcp":
		return s.tcp.exchange(ctx, msg)
	case "tls":
		return s.tls.exchange(ctx, msg)
	case "https":
		return r.exchangeHTTPS(ctx, s, msg)
	case "quic":
		addrs, err := r.serverAddrs(ctx, s.host, s.port)
		if err != nil {
			return nil, err
		}
		// The transport dials a single address: try each in turn, as a
		// name may have addresses of a family this host cannot reach.
		return firstSuccess(ctx, len(addrs), func(i int) ([]byte, error) {
			return r.QUIC.Exchange(ctx, addrs[i], r.tlsConfig(s.host), msg)
		})
	}
	return nil, fmt.Errorf("unknown DNS transport %q", s.scheme)
}

// dialServer connects to a DNS server, resolving its name, if it has one,
// through the bootstrap servers.
func (r *Resolver) dialServer(ctx context.Context, network, host, port string) (net.Conn, error) {
	var d net.Dialer
	if r.bootstrap == nil || isIPLiteral(host) {
		return d.DialContext(ctx, network, net.JoinHostPort(host, port))
	}
	addrs, err := r.bootstrap.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	// For UDP this takes the first address: connecting a datagram socket
	// succeeds whether or not anyone answers there.
	return dialParallel(ctx, &d, network, addrs, port)
}

// serverAddrs are the addresses to give a DNSTransport for a server: its
// IP addresses from the bootstrap servers when it has a name and they are
// configured, else host:port for the transport to resolve.
func (r *Resolver) serverAddrs(ctx context.Context, host, port string) ([]string, error) {
	if r.bootstrap == nil || isIPLiteral(host) {
		return []string{net.JoinHostPort(host, port)}, nil
	}
	addrs, err := r.bootstrap.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = net.JoinHostPort(a.String(), port)
	}
	return out, nil
}

func (r *Resolver) tlsConfig(serverName string) *tls.Config {
	conf := clientTLSConfig(r.TLSConfig)
	conf.ServerName = serverName
	return conf
}

func (r *Resolver) dialServerTLS(ctx context.Context, host, port string) (net.Conn, error) {
	c, err := r.dialServer(ctx, "tcp", host, port)
	if err != nil {
		return nil, err
	}
	conf := r.tlsConfig(host)
	if conf.NextProtos == nil {
		conf.NextProtos = []string{"dot"} // RFC 7858's ALPN name; servers may ignore it
	}
	tc := tls.Client(c, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// exchangeUDP asks over a new socket, so every query has a source port
// of its own, which with the random ID makes spoofed answers hard to place.
func (r *Resolver) exchangeUDP(ctx context.Context, s *dnsServer, msg []byte) ([]byte, error) {
	c, err := r.dialServer(ctx, "udp", s.host, s.port)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := deadlineFromContext(ctx, c)
	defer stop()
	if _, err := c.Write(msg); err != nil {
		return nil, ctxErr(ctx, err)
	}
	buf := make([]byte, maxDNSMessage)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, ctxErr(ctx, err)
		}
		// A datagram with another ID is a stray or a spoofing attempt:
		// keep waiting for the real answer.
		if n >= 12 && bytes.Equal(buf[:2], msg[:2]) {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

// deadlineFromContext makes c's I/O end when ctx does; call stop after.
func deadlineFromContext(ctx context.Context, c net.Conn) (stop func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Time{})
	}
	return context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
}

// ctxErr prefers the context's error to the I/O error it caused, which
// says only that a deadline passed.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// streamPool exchanges length-prefixed messages (RFC 1035 §4.2.2) over TCP
// or TLS connections to one server, keeping a few open between queries
// (RFC 7766 §6.2.1) so that lookups do not pay a handshake each time. A
// connection carries one query at a time; concurrent queries open more.
type streamPool struct {
	dial func(ctx context.Context) (net.Conn, error)

	mu   sync.Mutex
	idle []idleDNSConn
}

type idleDNSConn struct {
	conn  net.Conn
	since time.Time
}

// Bounds on kept connections. Servers close idle connections after some
// seconds (RFC 7766 §6.2.3), so there is no point in keeping them longer.
const (
	maxIdleDNSConns = 2
	dnsIdleTimeout  = 10 * time.Second
)

func (p *streamPool) exchange(ctx context.Context, msg []byte) ([]byte, error) {
	if len(msg) > maxDNSMessage {
		return nil, errors.New("DNS message too long")
	}
	for {
		c := p.get()
		reused := c != nil
		if c == nil {
			var err error
			if c, err = p.dial(ctx); err != nil {
				return nil, err
			}
		}
		resp, err := roundTripStream(ctx, c, msg)
		if err == nil {
			p.put(c)
			return resp, nil
		}
		c.Close()
		// A kept connection may have been closed by the server in the
		// meantime: try the next, or a new one.
		if !reused || ctx.Err() != nil {
			return nil, err
		}
	}
}

func (p *streamPool) get() net.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) > 0 {
		ic := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if time.Since(ic.since) < dnsIdleTimeout {
			return ic.conn
		}
		ic.conn.Close()
	}
	return nil
}

func (p *streamPool) put(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) >= maxIdleDNSConns {
		c.Close()
		return
	}
	p.idle = append(p.idle, idleDNSConn{c, time.Now()})
}

func roundTripStream(ctx context.Context, c net.Conn, msg []byte) ([]byte, error) {
	stop := deadlineFromContext(ctx, c)
	defer stop()
	framed := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(msg)), uint16(len(msg)))
	if _, err := c.Write(append(framed, msg...)); err != nil {
		return nil, ctxErr(ctx, err)
	}
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return nil, ctxErr(ctx, err)
	}
	resp := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(c, resp); err != nil {
		return nil, ctxErr(ctx, err)
	}
	if len(resp) < 12 || !bytes.Equal(resp[:2], msg[:2]) {
		return nil, errors.New("the answer does not match the query")
	}
	return resp, nil
}

// newDoHClient returns the client of the Resolver's DNS-over-HTTPS
// servers: one transport, so connections (HTTP/2 where the server speaks
// it) are kept and shared by queries. DNS servers are dialed directly,
// never through an egress proxy.
func (r *Resolver) newDoHClient() *http.Client {
	t := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return r.dialServer(ctx, network, host, port)
		},
		TLSClientConfig:     r.tlsConfig(""),
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("DNS-over-HTTPS servers do not redirect")
		},
	}
}

const dnsMessageType = "application/dns-message"

func (r *Resolver) exchangeHTTPS(ctx context.Context, s *dnsServer, msg []byte) ([]byte, error) {
	var req *http.Request
	var err error
	if s.dohGet {
		u := *s.dohURL
		q := u.Query()
		q.Set("dns", base64.RawURLEncoding.EncodeToString(msg))
		u.RawQuery = q.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, s.dohURL.String(), bytes.NewReader(msg))
		if req != nil {
			req.Header.Set("Content-Type", dnsMessageType)
		}
	}
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", dnsMessageType)
	resp, err := r.doh.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the server answered %s", resp.Status)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != dnsMessageType {
		return nil, fmt.Errorf("the server answered with %q, not %s", resp.Header.Get("Content-Type"), dnsMessageType)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDNSMessage+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxDNSMessage {
		return nil, errors.New("the answer is longer than a DNS message may be")
	}
	return body, nil
}
