package dnstest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func query(t *testing.T, name string, qtype dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 4242, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET})
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// ask sends a query over tr with a client written here, independent of
// the resolver the server exists to test.
func ask(t *testing.T, s *Server, tr Transport, name string, qtype dnsmessage.Type) *dnsmessage.Message {
	t.Helper()
	q := query(t, name, qtype)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var resp []byte
	stream := func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(framed(q)); err != nil {
			t.Fatal(err)
		}
		var err error
		if resp, err = readFramed(c); err != nil {
			t.Fatal(err)
		}
	}
	switch tr {
	case UDP:
		c, err := net.Dial("udp", s.UDPAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(q)
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		resp = buf[:n]
	case TCP:
		c, err := net.Dial("tcp", s.TCPAddr)
		if err != nil {
			t.Fatal(err)
		}
		stream(c)
	case TLS:
		conf := s.CA.ClientConfig()
		conf.ServerName = Name
		c, err := tls.Dial("tcp", s.TLSAddr, conf)
		if err != nil {
			t.Fatal(err)
		}
		stream(c)
	case HTTPSGet, HTTPSPost:
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: s.CA.ClientConfig(), ForceAttemptHTTP2: true}}
		var req *http.Request
		if tr == HTTPSGet {
			req, _ = http.NewRequestWithContext(ctx, "GET", s.DoHURL+"?dns="+base64.RawURLEncoding.EncodeToString(q), nil)
		} else {
			req, _ = http.NewRequestWithContext(ctx, "POST", s.DoHURL, bytes.NewReader(q))
			req.Header.Set("Content-Type", "application/dns-message")
		}
		r, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		if r.StatusCode != 200 || r.ProtoMajor != 2 {
			t.Fatalf("DoH answered %s over %s", r.Status, r.Proto)
		}
		resp, _ = io.ReadAll(r.Body)
	}
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatalf("unpacking the answer: %v", err)
	}
	if m.ID != 4242 || !m.Response {
		t.Fatalf("answer header %+v does not match the query", m.Header)
	}
	return &m
}

func TestServerTransports(t *testing.T) {
	s := NewServer(t, nil)
	s.Set("host.test", time.Minute, "192.0.2.7", "2001:db8::7")
	for i, tr := range []Transport{UDP, TCP, TLS, HTTPSGet, HTTPSPost} {
		t.Run(string(tr), func(t *testing.T) {
			m := ask(t, s, tr, "host.test.", dnsmessage.TypeA)
			if m.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 1 {
				t.Fatalf("answer %v with %d records", m.RCode, len(m.Answers))
			}
			a := m.Answers[0]
			if got := netip.AddrFrom4(a.Body.(*dnsmessage.AResource).A); got.String() != "192.0.2.7" || a.Header.TTL != 60 {
				t.Errorf("answer %v TTL %d, want 192.0.2.7 TTL 60", got, a.Header.TTL)
			}
			if got := s.Queries(tr); got != 1 {
				t.Errorf("Queries(%s) = %d, want 1", tr, got)
			}
			if got := s.TotalQueries(); got != i+1 {
				t.Errorf("TotalQueries = %d, want %d", got, i+1)
			}
		})
	}
}

func TestServerAnswers(t *testing.T) {
	s := NewServer(t, nil)
	s.Set("host.test", time.Minute, "192.0.2.7", "2001:db8::7")
	s.Set("alias.test", 10*time.Second, "host.test")
	s.SetNegativeTTL(7 * time.Second)

	t.Run("AAAA", func(t *testing.T) {
		m := ask(t, s, UDP, "host.test.", dnsmessage.TypeAAAA)
		if len(m.Answers) != 1 || netip.AddrFrom16(m.Answers[0].Body.(*dnsmessage.AAAAResource).AAAA).String() != "2001:db8::7" {
			t.Fatalf("answers %v", m.Answers)
		}
	})
	t.Run("CNAME chain", func(t *testing.T) {
		m := ask(t, s, UDP, "ALIAS.test.", dnsmessage.TypeA)
		if len(m.Answers) != 2 || m.Answers[0].Header.Type != dnsmessage.TypeCNAME || m.Answers[1].Header.Type != dnsmessage.TypeA {
			t.Fatalf("answers %v", m.Answers)
		}
	})
	t.Run("NXDOMAIN with SOA", func(t *testing.T) {
		m := ask(t, s, UDP, "missing.test.", dnsmessage.TypeA)
		if m.RCode != dnsmessage.RCodeNameError || len(m.Authorities) != 1 || m.Authorities[0].Body.(*dnsmessage.SOAResource).MinTTL != 7 {
			t.Fatalf("answer %v, authorities %v", m.RCode, m.Authorities)
		}
	})
	t.Run("no data", func(t *testing.T) {
		s.Set("v4only.test", time.Minute, "192.0.2.8")
		m := ask(t, s, TCP, "v4only.test.", dnsmessage.TypeAAAA)
		if m.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 0 || len(m.Authorities) != 1 {
			t.Fatalf("answer %v %v %v", m.RCode, m.Answers, m.Authorities)
		}
	})
	t.Run("truncated over UDP only", func(t *testing.T) {
		s.SetTruncateUDP(true)
		defer s.SetTruncateUDP(false)
		if m := ask(t, s, UDP, "host.test.", dnsmessage.TypeA); !m.Truncated || len(m.Answers) != 0 {
			t.Errorf("UDP: truncated %v, %d answers", m.Truncated, len(m.Answers))
		}
		if m := ask(t, s, TCP, "host.test.", dnsmessage.TypeA); m.Truncated || len(m.Answers) != 1 {
			t.Errorf("TCP: truncated %v, %d answers", m.Truncated, len(m.Answers))
		}
	})
	t.Run("SERVFAIL", func(t *testing.T) {
		s.SetFailure(ServFail)
		defer s.SetFailure(Answer)
		if m := ask(t, s, HTTPSPost, "host.test.", dnsmessage.TypeA); m.RCode != dnsmessage.RCodeServerFailure {
			t.Errorf("answer %v, want SERVFAIL", m.RCode)
		}
	})
	t.Run("drop", func(t *testing.T) {
		s.SetFailure(Drop)
		defer s.SetFailure(Answer)
		c, err := net.Dial("udp", s.UDPAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(query(t, "host.test.", dnsmessage.TypeA))
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 512)); err == nil {
			t.Error("a dropping server answered")
		}
	})
}
