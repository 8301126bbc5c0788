package egresstest

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// SOCKS5 is a SOCKS version 5 server (RFC 1928) supporting CONNECT only,
// without authentication or with a user name and password (RFC 1929).
// Set its fields, then call Start.
type SOCKS5 struct {
	// Username and Password, if Username is set, are the credentials
	// clients must give.
	Username, Password string

	// Dial connects to the destinations clients ask for. If nil,
	// LoopbackOnly is used.
	Dial DialFunc

	// Addr is the server's address, 127.0.0.1:port, once started.
	Addr string

	server
}

// Start starts the server; it stops when t ends.
func (s *SOCKS5) Start(t testing.TB) {
	t.Helper()
	s.Addr = s.start(t, s.handle)
}

// Requests returns the destinations clients asked for, as host:port in the
// form received: a domain name, or an IPv4 or IPv6 address.
func (s *SOCKS5) Requests() []string { return s.server.Requests() }

// SOCKS5 constants of RFC 1928 and RFC 1929.
const (
	socksVersion        = 5
	methodNoAuth        = 0x00
	methodUserPass      = 0x02
	methodNoAcceptable  = 0xff
	cmdConnect          = 0x01
	atypIPv4            = 0x01
	atypDomain          = 0x03
	atypIPv6            = 0x04
	replySucceeded      = 0x00
	replyHostUnreach    = 0x04
	replyConnRefused    = 0x05
	replyCmdUnsupported = 0x07
	replyAtypUnsupport  = 0x08
)

func (s *SOCKS5) handle(c net.Conn) {
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReader(c)
	if err := s.negotiate(br, c); err != nil {
		return
	}
	dst, err := readRequest(br)
	if err != nil {
		var r replyError
		if errors.As(err, &r) {
			writeReply(c, byte(r), nil)
		}
		return
	}
	s.record(dst)
	dial := s.Dial
	if dial == nil {
		dial = LoopbackOnly
	}
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	up, err := dial(ctx, "tcp", dst)
	cancel()
	if err != nil {
		code := byte(replyHostUnreach)
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			code = replyConnRefused
		}
		writeReply(c, code, nil)
		return
	}
	if err := writeReply(c, replySucceeded, up.LocalAddr()); err != nil {
		up.Close()
		return
	}
	c.SetDeadline(time.Time{})
	// The client may have sent data after its request; it is in br.
	s.relay(&bufferedConn{Conn: c, r: br}, up)
}

// negotiate agrees on an authentication method and authenticates.
func (s *SOCKS5) negotiate(br *bufio.Reader, c net.Conn) error {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != socksVersion {
		return fmt.Errorf("SOCKS version %d", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return err
	}
	want := byte(methodNoAuth)
	if s.Username != "" {
		want = methodUserPass
	}
	offered := false
	for _, m := range methods {
		offered = offered || m == want
	}
	if !offered {
		s.failedAuth() // before the reply, which lets the client go on
		c.Write([]byte{socksVersion, methodNoAcceptable})
		return errAuth
	}
	if _, err := c.Write([]byte{socksVersion, want}); err != nil {
		return err
	}
	if want == methodNoAuth {
		return nil
	}
	// RFC 1929: VER=1, ULEN, UNAME, PLEN, PASSWD.
	var ver [2]byte
	if _, err := io.ReadFull(br, ver[:]); err != nil {
		return err
	}
	user := make([]byte, ver[1])
	if _, err := io.ReadFull(br, user); err != nil {
		return err
	}
	plen, err := br.ReadByte()
	if err != nil {
		return err
	}
	pass := make([]byte, plen)
	if _, err := io.ReadFull(br, pass); err != nil {
		return err
	}
	if ver[0] != 1 || string(user) != s.Username || string(pass) != s.Password {
		s.failedAuth()
		c.Write([]byte{1, 1})
		return errAuth
	}
	_, err = c.Write([]byte{1, 0})
	return err
}

// replyError is a request the server refuses with a reply code.
type replyError byte

func (r replyError) Error() string { return "SOCKS reply " + strconv.Itoa(int(r)) }

// readRequest reads a CONNECT request and returns its destination as
// host:port, the host as sent.
func readRequest(br *bufio.Reader) (string, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return "", err
	}
	if hdr[0] != socksVersion {
		return "", fmt.Errorf("SOCKS version %d", hdr[0])
	}
	var host string
	switch hdr[3] {
	case atypIPv4:
		var a [4]byte
		if _, err := io.ReadFull(br, a[:]); err != nil {
			return "", err
		}
		host = netip.AddrFrom4(a).String()
	case atypIPv6:
		var a [16]byte
		if _, err := io.ReadFull(br, a[:]); err != nil {
			return "", err
		}
		host = netip.AddrFrom16(a).String()
	case atypDomain:
		n, err := br.ReadByte()
		if err != nil {
			return "", err
		}
		name := make([]byte, n)
		if _, err := io.ReadFull(br, name); err != nil {
			return "", err
		}
		host = string(name)
	default:
		return "", replyError(replyAtypUnsupport)
	}
	var port [2]byte
	if _, err := io.ReadFull(br, port[:]); err != nil {
		return "", err
	}
	if hdr[1] != cmdConnect {
		return "", replyError(replyCmdUnsupported)
	}
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))), nil
}

// writeReply answers a request; bound is the server's address for the
// connection, or nil on failure.
func writeReply(c net.Conn, code byte, bound net.Addr) error {
	reply := []byte{socksVersion, code, 0}
	addr := netip.IPv4Unspecified()
	port := 0
	if ta, ok := bound.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		addr, port = ap.Addr().Unmap(), int(ap.Port())
	}
	if addr.Is4() {
		a := addr.As4()
		reply = append(append(reply, atypIPv4), a[:]...)
	} else {
		a := addr.As16()
		reply = append(append(reply, atypIPv6), a[:]...)
	}
	reply = binary.BigEndian.AppendUint16(reply, uint16(port))
	_, err := c.Write(reply)
	return err
}

// bufferedConn reads first what a bufio.Reader holds of a connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite lets relay end the client's direction without closing the
// whole connection.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
