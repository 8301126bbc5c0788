// Package doqtest serves a dnstest.Server's zone over DNS over QUIC
// (RFC 9250) on 127.0.0.1, so that the root module's DNS test server needs
// no QUIC implementation.
package doqtest

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/goproxy-team/goproxy/internal/dnstest"
)

// Serve starts answering s's queries over QUIC, counted as dnstest.QUIC,
// until s is closed, and returns the address, 127.0.0.1:port.
func Serve(t testing.TB, s *dnstest.Server) string {
	t.Helper()
	conf := s.ServerConfig(t)
	conf.NextProtos = []string{"doq"}
	ln, err := quic.ListenAddr("127.0.0.1:0", conf, &quic.Config{MaxIdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s.OnClose(func() { ln.Close() })
	s.Go(func() { serve(s, ln) })
	return ln.Addr().String()
}

func serve(s *dnstest.Server, ln *quic.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		s.OnClose(func() { conn.CloseWithError(0, "") })
		s.Go(func() {
			for {
				str, err := conn.AcceptStream(ctx)
				if err != nil {
					return
				}
				s.Go(func() { serveStream(s, str) })
			}
		})
	}
}

// serveStream answers the one query a DoQ stream carries: the client ends
// its side after the query, and so does the server after the answer.
func serveStream(s *dnstest.Server, str *quic.Stream) {
	str.SetDeadline(time.Now().Add(30 * time.Second))
	var n [2]byte
	if _, err := io.ReadFull(str, n[:]); err != nil {
		str.CancelRead(0)
		str.CancelWrite(0)
		return
	}
	msg := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(str, msg); err != nil {
		str.CancelRead(0)
		str.CancelWrite(0)
		return
	}
	resp := s.Answer(msg, dnstest.QUIC)
	if resp == nil {
		select {
		case <-str.Context().Done():
		case <-s.Done():
		}
		str.CancelWrite(0)
		return
	}
	out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
	if _, err := str.Write(append(out, resp...)); err != nil && !errors.Is(err, net.ErrClosed) {
		str.CancelWrite(0)
		return
	}
	str.Close()
}
