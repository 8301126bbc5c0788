package egresstest

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// HTTPProxy is an HTTP forward proxy: it tunnels CONNECT requests (what
// clients send for https:// URLs) and forwards absolute-form requests
// (what they send for http:// URLs). Set its fields, then call Start.
type HTTPProxy struct {
	// Username and Password, if Username is set, are the Basic credentials
	// clients must give in Proxy-Authorization; others get 407.
	Username, Password string

	// Dial connects to the destinations clients ask for. If nil,
	// LoopbackOnly is used.
	Dial DialFunc

	// Addr is the proxy's address, 127.0.0.1:port, once started.
	Addr string

	server
	transport *http.Transport
}

// Start starts the proxy; it stops when t ends.
func (p *HTTPProxy) Start(t testing.TB) {
	t.Helper()
	dial := p.Dial
	if dial == nil {
		dial = LoopbackOnly
	}
	p.transport = &http.Transport{
		Proxy:              nil,
		DialContext:        dial,
		DisableCompression: true, // pass bodies through as they come
	}
	t.Cleanup(p.transport.CloseIdleConnections)
	p.Addr = p.start(t, p.handle)
}

// Requests returns what clients asked for, in order: "CONNECT host:port"
// for tunnels, the method and absolute URL for forwarded requests.
func (p *HTTPProxy) Requests() []string { return p.server.Requests() }

func (p *HTTPProxy) handle(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		c.SetDeadline(time.Now().Add(handshakeTimeout))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if !p.authorized(req) {
			p.failedAuth()
			resp := &http.Response{
				StatusCode: http.StatusProxyAuthRequired,
				ProtoMajor: 1, ProtoMinor: 1,
				Header: http.Header{"Proxy-Authenticate": {`Basic realm="egresstest"`}},
				Close:  true,
			}
			resp.Write(c)
			return
		}
		if req.Method == http.MethodConnect {
			p.tunnel(c, br, req)
			return
		}
		if !p.forward(c, req) {
			return
		}
	}
}

func (p *HTTPProxy) authorized(req *http.Request) bool {
	if p.Username == "" {
		return true
	}
	scheme, cred, _ := strings.Cut(req.Header.Get("Proxy-Authorization"), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(cred)
	return err == nil && string(b) == p.Username+":"+p.Password
}

func (p *HTTPProxy) tunnel(c net.Conn, br *bufio.Reader, req *http.Request) {
	p.record("CONNECT " + req.Host)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	dst, err := p.transport.DialContext(ctx, "tcp", req.Host)
	cancel()
	if err != nil {
		writeStatus(c, http.StatusBadGateway, err.Error())
		return
	}
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		dst.Close()
		return
	}
	c.SetDeadline(time.Time{})
	p.relay(&bufferedConn{Conn: c, r: br}, dst)
}

// forward sends an absolute-form request on and writes the response back,
// reporting whether the client connection may carry another request.
func (p *HTTPProxy) forward(c net.Conn, req *http.Request) bool {
	if !req.URL.IsAbs() {
		writeStatus(c, http.StatusBadRequest, "egresstest: a proxy request needs an absolute URL")
		return false
	}
	p.record(req.Method + " " + req.URL.String())
	out := req.Clone(context.Background())
	out.RequestURI = ""
	for _, h := range []string{"Proxy-Authorization", "Proxy-Connection", "Connection", "Keep-Alive", "Te", "Trailer", "Upgrade"} {
		out.Header.Del(h)
	}
	c.SetDeadline(time.Time{})
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		writeStatus(c, http.StatusBadGateway, err.Error())
		return false
	}
	defer resp.Body.Close()
	resp.Close = resp.Close || req.Close
	if err := resp.Write(c); err != nil {
		return false
	}
	return !resp.Close
}

func writeStatus(c net.Conn, code int, msg string) {
	resp := &http.Response{
		StatusCode:    code,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:          io.NopCloser(strings.NewReader(msg)),
		ContentLength: int64(len(msg)),
		Close:         true,
	}
	resp.Write(c)
}
