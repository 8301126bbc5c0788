package dnsquic

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/goproxy-team/goproxy/dnsquic/internal/doqtest"
	"github.com/goproxy-team/goproxy/internal/dnstest"
)

func query(t *testing.T, id uint16, name string) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestExchange(t *testing.T) {
	s := dnstest.NewServer(t, nil)
	addr := doqtest.Serve(t, s)
	s.Set("quic.test", time.Minute, "192.0.2.9")
	conf := s.CA.ClientConfig()
	conf.ServerName = dnstest.Name
	tr := new(Transport)
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	check := func(id uint16) {
		resp, err := tr.Exchange(ctx, addr, conf, query(t, id, "quic.test."))
		if err != nil {
			t.Error(err)
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Error(err)
			return
		}
		if m.ID != id || len(m.Answers) != 1 {
			t.Errorf("answer ID %d with %d records, want ID %d and 1 record", m.ID, len(m.Answers), id)
		}
	}
	check(1234) // the ID goes out as 0 and comes back as sent

	// Concurrent queries share one connection, a stream each.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { check(uint16(i + 1)) })
	}
	wg.Wait()
	tr.mu.Lock()
	conns := len(tr.conns)
	tr.mu.Unlock()
	if conns != 1 {
		t.Errorf("%d connections kept, want 1", conns)
	}

	// After Close the Transport dials again.
	tr.Close()
	check(7)
	if got := s.Queries(dnstest.QUIC); got != 10 {
		t.Errorf("server saw %d queries, want 10", got)
	}
}

func TestExchangeServerGone(t *testing.T) {
	s := dnstest.NewServer(t, nil)
	conf := s.CA.ClientConfig()
	conf.ServerName = dnstest.Name
	addr := doqtest.Serve(t, s)
	tr := new(Transport)
	defer tr.Close()
	s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := tr.Exchange(ctx, addr, conf, query(t, 1, "quic.test.")); err == nil {
		t.Fatal("a stopped server answered")
	}
}
