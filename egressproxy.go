package goproxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// egressProxy is the HTTP proxy through which one go command run, and the
// git it starts, reach the network: the run's HTTPS_PROXY, HTTP_PROXY and
// ALL_PROXY. It listens on 127.0.0.1 only while the run lasts, answers only
// the run's own credentials, so that no other local process can use it, and
// connects with the Proxy's dialer: every destination passes the egress
// policy and leaves through the configured egress proxy, if there is one.
//
// https:// URLs arrive as CONNECT tunnels, http:// URLs as absolute-form
// requests, which are forwarded without following redirects (the client
// follows them, through the proxy again).
type egressProxy struct {
	dialer    *Dialer
	transport http.RoundTripper // for absolute-form requests
	ctx       context.Context   // carries the module; ended by close
	cancel    context.CancelFunc
	ln        net.Listener
	auth      []byte // the expected Proxy-Authorization header
	url       string // the proxy's URL, with its credentials

	mu      sync.Mutex
	conns   map[net.Conn]bool
	refused error // the first refusal of the policy
	wg      sync.WaitGroup
}

// Bounds on what a client of an egressProxy may hold.
const (
	// egressHeaderTimeout bounds reading a request's header, and how long
	// an idle client connection is kept.
	egressHeaderTimeout = 30 * time.Second
	// maxEgressConns bounds the connections of one run: the go command
	// and git make a handful.
	maxEgressConns = 64
	// maxEgressHeaderBytes bounds a request's line and header, which are
	// read before the credential is checked: net/http's server default.
	maxEgressHeaderBytes = http.DefaultMaxHeaderBytes
)

// startEgressProxy starts an egress proxy for one run, connecting with
// dialer and forwarding http:// requests with transport; ctx carries the
// module for the policy's log lines. The caller must call close.
func startEgressProxy(ctx context.Context, dialer *Dialer, transport http.RoundTripper) (*egressProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var secret [16]byte
	rand.Read(secret[:])
	password := hex.EncodeToString(secret[:])
	e := &egressProxy{
		dialer:    dialer,
		transport: transport,
		ln:        ln,
		auth:      []byte("Basic " + base64.StdEncoding.EncodeToString([]byte("goproxy:"+password))),
		url:       (&url.URL{Scheme: "http", User: url.UserPassword("goproxy", password), Host: ln.Addr().String()}).String(),
		conns:     make(map[net.Conn]bool),
	}
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	e.wg.Go(e.accept)
	return e, nil
}

// environ returns the variables that send a child's connections through
// the proxy, in upper and lower case as programs differ in which they read.
func (e *egressProxy) environ() [][2]string {
	var env [][2]string
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"} {
		env = append(env, [2]string{k, e.url}, [2]string{strings.ToLower(k), e.url})
	}
	// Nothing is reached around the proxy (the go command still reaches
	// loopback addresses directly: see EgressPolicy).
	return append(env, [2]string{"NO_PROXY", ""}, [2]string{"no_proxy", ""})
}

// refusal returns the policy's first refusal, if there was one.
func (e *egressProxy) refusal() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.refused
}

// close stops the proxy, cutting its connections, and waits for its
// goroutines.
func (e *egressProxy) close() {
	e.cancel()
	e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// track remembers c, to be cut by close; it reports false, closing c,
// when the proxy is closed or holds too many connections.
func (e *egressProxy) track(c net.Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx.Err() != nil || len(e.conns) >= maxEgressConns {
		c.Close()
		return false
	}
	e.conns[c] = true
	return true
}

func (e *egressProxy) forget(c net.Conn) {
	c.Close()
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
}

func (e *egressProxy) accept() {
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		if !e.track(c) {
			continue
		}
		e.wg.Go(func() {
			defer e.forget(c)
			e.serve(c)
		})
	}
}

// serve answers the requests of one client connection.
func (e *egressProxy) serve(c net.Conn) {
	// http.ReadRequest reads a header of any length: the limit is on
	// what br may read from c, lifted for the body once the header is in.
	limited := &io.LimitedReader{R: c}
	br := bufio.NewReader(limited)
	for {
		c.SetReadDeadline(time.Now().Add(egressHeaderTimeout))
		limited.N = maxEgressHeaderBytes
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		limited.N = math.MaxInt64
		c.SetReadDeadline(time.Time{})
		if subtle.ConstantTimeCompare([]byte(req.Header.Get("Proxy-Authorization")), e.auth) != 1 {
			writeProxyStatus(c, http.StatusProxyAuthRequired, "goproxy: this proxy serves one go command run only",
				http.Header{"Proxy-Authenticate": {`Basic realm="goproxy"`}})
			return
		}
		if req.Method == http.MethodConnect {
			e.tunnel(c, br, req)
			return
		}
		if !e.forward(c, req) {
			return
		}
	}
}

// failed answers a request whose destination could not be reached: 403
// if the policy refused it, else 502.
func (e *egressProxy) failed(c net.Conn, err error) {
	status := http.StatusBadGateway
	if re := egressRefusal(err); re != nil {
		status, err = http.StatusForbidden, re
		e.mu.Lock()
		if e.refused == nil {
			e.refused = re
		}
		e.mu.Unlock()
	}
	writeProxyStatus(c, status, "goproxy: "+err.Error(), nil)
}

// tunnel connects the client to the CONNECT request's destination.
func (e *egressProxy) tunnel(c net.Conn, br *bufio.Reader, req *http.Request) {
	if _, _, err := net.SplitHostPort(req.Host); err != nil {
		writeProxyStatus(c, http.StatusBadRequest, "goproxy: CONNECT needs host:port", nil)
		return
	}
	dst, err := e.dialer.DialContext(e.ctx, "tcp", req.Host)
	if err != nil {
		e.failed(c, err)
		return
	}
	if !e.track(dst) {
		return
	}
	defer e.forget(dst)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	var client io.Reader = c
	if br.Buffered() > 0 {
		client = io.MultiReader(io.LimitReader(br, int64(br.Buffered())), c)
	}
	relay(c, client, dst)
}

// relay copies between the client c (read from r) and dst until both
// directions are done; close cuts both.
func relay(c net.Conn, r io.Reader, dst net.Conn) {
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(dst, r)
		closeWrite(dst)
	})
	io.Copy(c, dst)
	closeWrite(c)
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close()
	}
}

// hopHeaders are the headers of one connection, not to be forwarded.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Authenticate", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for name := range strings.SplitSeq(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// forward sends an absolute-form http:// request on and writes the response
// back, reporting whether the client connection may carry another request.
func (e *egressProxy) forward(c net.Conn, req *http.Request) bool {
	if !req.URL.IsAbs() || req.URL.Scheme != "http" {
		writeProxyStatus(c, http.StatusBadRequest, "goproxy: want an absolute http:// URL, or CONNECT", nil)
		return false
	}
	out := req.Clone(e.ctx)
	out.RequestURI = ""
	out.Close = false
	removeHopHeaders(out.Header)
	if strings.EqualFold(out.Header.Get("Expect"), "100-continue") {
		// The client waits for this before it sends the body, which the
		// transport must read to send the request on.
		if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return false
		}
		out.Header.Del("Expect")
	}
	resp, err := e.transport.RoundTrip(out)
	if err != nil {
		e.failed(c, err)
		return false
	}
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	resp.ProtoMajor, resp.ProtoMinor = 1, 1
	resp.Close = resp.Close || req.Close
	if err := resp.Write(c); err != nil {
		return false
	}
	return !resp.Close
}

// writeProxyStatus answers a client with a status and a message, and
// closes the exchange.
func writeProxyStatus(c net.Conn, status int, msg string, header http.Header) {
	if header == nil {
		header = make(http.Header)
	}
	header.Set("Content-Type", "text/plain; charset=utf-8")
	resp := &http.Response{
		StatusCode:    status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          io.NopCloser(strings.NewReader(msg + "\n")),
		ContentLength: int64(len(msg) + 1),
		Close:         true,
	}
	resp.Write(c)
}
