package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

func TestIssuedCertificateIsTrusted(t *testing.T) {
	ca := New(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerConfig(t, "127.0.0.1", "server.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	for _, name := range []string{"", "server.test"} {
		conf := ca.ClientConfig()
		conf.ServerName = name
		c, err := tls.Dial("tcp", ln.Addr().String(), conf)
		if err != nil {
			t.Fatalf("server name %q: %v", name, err)
		}
		c.Close()
	}
	conf := ca.ClientConfig()
	conf.ServerName = "other.test"
	if c, err := tls.Dial("tcp", ln.Addr().String(), conf); err == nil {
		c.Close()
		t.Error("a certificate for server.test was accepted for other.test")
	}
	if _, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "server.test", RootCAs: x509.NewCertPool()}); err == nil {
		t.Error("a client not trusting the CA accepted its certificate")
	}

	block, _ := pem.Decode(ca.PEM())
	if block == nil {
		t.Fatal("PEM does not decode")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatal(err)
	}
}
