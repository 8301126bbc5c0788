// Package dnstest runs a DNS server for tests on 127.0.0.1, answering from a
// small zone the test controls, over every transport a resolver may use:
// plain DNS over UDP and TCP, DNS over HTTPS (RFC 8484, GET and POST), DNS
// over TLS (RFC 7858); the dnsquic module adds DNS over QUIC (RFC 9250)
// through Answer, keeping QUIC out of the root module. It counts the
// queries of each transport and can be made to fail or to truncate UDP
// answers.
package dnstest

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/goproxy-team/goproxy/internal/testcert"
)

// Transport names one way of asking the server, for Queries.
type Transport string

// The transports the server answers on.
const (
	UDP       Transport = "udp"
	TCP       Transport = "tcp"
	HTTPSGet  Transport = "https-get"
	HTTPSPost Transport = "https-post"
	TLS       Transport = "tls"
	QUIC      Transport = "quic"
)

// Name is a host name the server's certificates are valid for, besides
// 127.0.0.1, so that tests can reach the server by name.
const Name = "dns.test"

// DoHPath is the path of the DNS-over-HTTPS endpoint.
const DoHPath = "/dns-query"

// Failure is how the server answers every query.
type Failure int

const (
	// Answer answers from the zone: the normal behaviour.
	Answer Failure = iota
	// ServFail answers SERVFAIL.
	ServFail
	// Drop never answers; the client must time out.
	Drop
)

// Server is a DNS server for one test. Its addresses are set by NewServer;
// its methods may be called concurrently.
type Server struct {
	// UDPAddr, TCPAddr and TLSAddr are the server's addresses, as
	// 127.0.0.1:port, for plain DNS over UDP and TCP and DNS over TLS.
	UDPAddr, TCPAddr, TLSAddr string
	// DoHURL is the DNS-over-HTTPS endpoint, https://127.0.0.1:port/dns-query.
	// The HTTPS server speaks HTTP/2 and HTTP/1.1.
	DoHURL string
	// CA signed the server's certificates; trust it to reach the server
	// over TLS, HTTPS or QUIC.
	CA *testcert.CA

	mu       sync.Mutex
	zone     map[string][]record // by lower-case fully qualified name
	negTTL   uint32
	counts   map[Transport]int
	failure  Failure
	truncate bool

	done    chan struct{}
	closeMu sync.Mutex
	closers []func()
	wg      sync.WaitGroup
}

type record struct {
	ttl   uint32
	addr  netip.Addr // for A and AAAA
	cname string     // for CNAME, fully qualified
}

// NewServer starts a server with an empty zone on every transport, its
// certificates signed by ca (a new CA if nil), and stops it when t ends.
func NewServer(t testing.TB, ca *testcert.CA) *Server {
	t.Helper()
	if ca == nil {
		ca = testcert.New(t)
	}
	s := &Server{
		CA:     ca,
		zone:   make(map[string][]record),
		negTTL: 30,
		counts: make(map[Transport]int),
		done:   make(chan struct{}),
	}
	t.Cleanup(s.Close)
	tlsConf := ca.ServerConfig(t, "127.0.0.1", Name)

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.onClose(func() { pc.Close() })
	s.UDPAddr = pc.LocalAddr().String()
	s.goServe(func() { s.serveUDP(pc) })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.onClose(func() { ln.Close() })
	s.TCPAddr = ln.Addr().String()
	s.goServe(func() { s.serveStream(ln, TCP) })

	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.onClose(func() { tln.Close() })
	s.TLSAddr = tln.Addr().String()
	s.goServe(func() { s.serveStream(tls.NewListener(tln, tlsConf), TLS) })

	doh := httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTPS))
	doh.TLS = tlsConf.Clone()
	doh.EnableHTTP2 = true
	doh.StartTLS()
	s.onClose(doh.Close)
	s.DoHURL = doh.URL + DoHPath

	return s
}

func (s *Server) onClose(f func()) {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.closers = append(s.closers, f)
}

func (s *Server) goServe(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Close stops the server on every transport, cutting open connections.
func (s *Server) Close() {
	s.closeMu.Lock()
	select {
	case <-s.done:
		s.closeMu.Unlock()
		return
	default:
	}
	close(s.done)
	closers := s.closers
	s.closers = nil
	s.closeMu.Unlock()
	for _, f := range closers {
		f()
	}
	s.wg.Wait()
}

// Set gives name the records for values, replacing any it had, with the
// time to live ttl: an IP address gives an A or AAAA record, anything else
// a CNAME record pointing at that name. With no values, name is removed
// and answers NXDOMAIN.
func (s *Server) Set(name string, ttl time.Duration, values ...string) {
	name = fqdn(name)
	var rs []record
	for _, v := range values {
		r := record{ttl: uint32(ttl / time.Second)}
		if a, err := netip.ParseAddr(v); err == nil {
			r.addr = a
		} else {
			r.cname = fqdn(v)
		}
		rs = append(rs, r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(rs) == 0 {
		delete(s.zone, name)
		return
	}
	s.zone[name] = rs
}

// SetNegativeTTL sets how long clients may remember that a name or record
// type does not exist (the SOA minimum of negative answers); the default is
// 30 seconds.
func (s *Server) SetNegativeTTL(ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.negTTL = uint32(ttl / time.Second)
}

// SetFailure makes every later query fail as f says, on every transport.
func (s *Server) SetFailure(f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = f
}

// SetTruncateUDP makes UDP answers carry no records and the TC bit, which
// tells the client to ask again over TCP.
func (s *Server) SetTruncateUDP(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncate = on
}

// Queries returns how many queries arrived over tr.
func (s *Server) Queries(tr Transport) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[tr]
}

// TotalQueries returns how many queries arrived over all transports.
func (s *Server) TotalQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.counts {
		n += c
	}
	return n
}

func fqdn(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// answer returns the response to query received over tr, or nil if there
// is none to send.
func (s *Server) answer(query []byte, tr Transport) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[tr]++
	if s.failure == Drop {
		return nil
	}
	rh := dnsmessage.Header{
		ID:                 h.ID,
		Response:           true,
		Authoritative:      true,
		RecursionDesired:   h.RecursionDesired,
		RecursionAvailable: true,
	}
	var answers []dnsmessage.Resource
	soa := false
	switch {
	case s.failure == ServFail:
		rh.RCode = dnsmessage.RCodeServerFailure
	case tr == UDP && s.truncate:
		rh.Truncated = true
	default:
		answers, rh.RCode = s.lookupLocked(q)
		soa = len(answers) == 0 || rh.RCode == dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	for _, a := range answers {
		switch body := a.Body.(type) {
		case *dnsmessage.AResource:
			b.AResource(a.Header, *body)
		case *dnsmessage.AAAAResource:
			b.AAAAResource(a.Header, *body)
		case *dnsmessage.CNAMEResource:
			b.CNAMEResource(a.Header, *body)
		}
	}
	b.StartAuthorities()
	if soa {
		b.SOAResource(dnsmessage.ResourceHeader{
			Name:  dnsmessage.MustNewName("test."),
			Class: dnsmessage.ClassINET,
			TTL:   s.negTTL,
		}, dnsmessage.SOAResource{
			NS:      dnsmessage.MustNewName("ns.test."),
			MBox:    dnsmessage.MustNewName("hostmaster.test."),
			Serial:  1,
			Refresh: 3600,
			Retry:   600,
			Expire:  86400,
			MinTTL:  s.negTTL,
		})
	}
	msg, err := b.Finish()
	if err != nil {
		return nil
	}
	return msg
}

// lookupLocked answers q from the zone, following CNAME records in it.
func (s *Server) lookupLocked(q dnsmessage.Question) ([]dnsmessage.Resource, dnsmessage.RCode) {
	name := strings.ToLower(q.Name.String())
	if _, ok := s.zone[name]; !ok {
		return nil, dnsmessage.RCodeNameError
	}
	var out []dnsmessage.Resource
	for range 8 {
		rs := s.zone[name]
		owner := dnsmessage.MustNewName(name)
		next := ""
		for _, r := range rs {
			rh := dnsmessage.ResourceHeader{Name: owner, Class: dnsmessage.ClassINET, TTL: r.ttl}
			switch {
			case r.cname != "":
				rh.Type = dnsmessage.TypeCNAME
				out = append(out, dnsmessage.Resource{Header: rh, Body: &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(r.cname)}})
				next = r.cname
			case r.addr.Is4() && q.Type == dnsmessage.TypeA:
				rh.Type = dnsmessage.TypeA
				out = append(out, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AResource{A: r.addr.As4()}})
			case r.addr.Is6() && q.Type == dnsmessage.TypeAAAA:
				rh.Type = dnsmessage.TypeAAAA
				out = append(out, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AAAAResource{AAAA: r.addr.As16()}})
			}
		}
		if next == "" {
			break
		}
		name = next
	}
	return out, dnsmessage.RCodeSuccess
}

func (s *Server) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := s.answer(buf[:n], UDP); resp != nil {
			pc.WriteTo(resp, addr)
		}
	}
}

// serveStream answers length-prefixed messages on each connection ln
// accepts, as DNS over TCP and over TLS frame them.
func (s *Server) serveStream(ln net.Listener, tr Transport) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.onClose(func() { c.Close() })
		s.goServe(func() {
			defer c.Close()
			for {
				msg, err := readFramed(c)
				if err != nil {
					return
				}
				if resp := s.answer(msg, tr); resp != nil {
					if _, err := c.Write(framed(resp)); err != nil {
						return
					}
				}
			}
		})
	}
}

func readFramed(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

func framed(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)
}

func (s *Server) serveHTTPS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != DoHPath {
		http.NotFound(w, r)
		return
	}
	var (
		query []byte
		err   error
		tr    Transport
	)
	switch r.Method {
	case http.MethodGet:
		tr = HTTPSGet
		query, err = base64.RawURLEncoding.DecodeString(r.URL.Query().Get("dns"))
	case http.MethodPost:
		tr = HTTPSPost
		if ct := r.Header.Get("Content-Type"); ct != "application/dns-message" {
			http.Error(w, "content type "+ct+" is not application/dns-message", http.StatusUnsupportedMediaType)
			return
		}
		query, err = io.ReadAll(io.LimitReader(r.Body, 65535))
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err != nil || len(query) == 0 {
		http.Error(w, "no DNS message", http.StatusBadRequest)
		return
	}
	resp := s.answer(query, tr)
	if resp == nil {
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	}
	w.Header().Set("Content-Type", "application/dns-message")
	w.Write(resp)
}

// Answer answers query, a DNS message in wire format, as the server answers
// it over tr, counting it; nil means no answer (the server drops it). Other
// transports (DNS over QUIC) are served through it.
func (s *Server) Answer(query []byte, tr Transport) []byte { return s.answer(query, tr) }

// Done is closed when the server is closed.
func (s *Server) Done() <-chan struct{} { return s.done }

// OnClose runs f when the server is closed, to stop listeners added from
// outside.
func (s *Server) OnClose(f func()) { s.onClose(f) }

// Go runs f on a goroutine that Close waits for.
func (s *Server) Go(f func()) { s.goServe(f) }

// ServerConfig returns the TLS configuration of the server's certificate.
func (s *Server) ServerConfig(t testing.TB) *tls.Config {
	return s.CA.ServerConfig(t, "127.0.0.1", Name)
}
