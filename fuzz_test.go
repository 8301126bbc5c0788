package goproxy

import (
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// The fuzz targets of the package: everything that parses what a client or
// an upstream sends. Their seed corpora are in testdata/fuzz; the README's
// test command runs those seeds, and `go test -fuzz=^FuzzName$` searches
// further.

// FuzzParseDNSAnswer feeds parseAnswer arbitrary server answers to a fixed
// question: it must never panic, and what it accepts must be usable (a
// positive answer has addresses, every TTL stays within its cap).
func FuzzParseDNSAnswer(f *testing.F) {
	const id = 0x1234
	for _, qtype := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		f.Add(dnsAnswerSeed(f, id, qtype, dnsmessage.RCodeSuccess, true), qtype == dnsmessage.TypeAAAA)
		f.Add(dnsAnswerSeed(f, id, qtype, dnsmessage.RCodeNameError, false), qtype == dnsmessage.TypeAAAA)
	}
	f.Add([]byte{0x12, 0x34, 0x80}, false)
	f.Fuzz(func(t *testing.T, resp []byte, ipv6 bool) {
		q := dnsmessage.Question{Name: dnsmessage.MustNewName("example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
		if ipv6 {
			q.Type = dnsmessage.TypeAAAA
		}
		ans, err := parseAnswer(resp, id, q)
		if err != nil {
			return
		}
		switch {
		case ans.ttl < 0:
			t.Fatalf("negative TTL %v", ans.ttl)
		case ans.notFound && (len(ans.addrs) > 0 || ans.ttl > maxNegativeTTL):
			t.Fatalf("negative answer with %d addresses, TTL %v", len(ans.addrs), ans.ttl)
		case !ans.notFound && (len(ans.addrs) == 0 || ans.ttl > maxDNSTTL):
			t.Fatalf("positive answer with %d addresses, TTL %v", len(ans.addrs), ans.ttl)
		}
		for _, a := range ans.addrs {
			if a.Is6() != ipv6 {
				t.Fatalf("address %v answers a question of type %v", a, q.Type)
			}
		}
	})
}

// dnsAnswerSeed builds a well-formed answer: a CNAME to a name with one
// address, or a negative answer with an SOA record.
func dnsAnswerSeed(f *testing.F, id uint16, qtype dnsmessage.Type, rcode dnsmessage.RCode, positive bool) []byte {
	name := dnsmessage.MustNewName("example.com.")
	target := dnsmessage.MustNewName("cdn.example.net.")
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RCode: rcode})
	b.EnableCompression()
	must := func(err error) {
		if err != nil {
			f.Fatal(err)
		}
	}
	must(b.StartQuestions())
	must(b.Question(dnsmessage.Question{Name: name, Type: qtype, Class: dnsmessage.ClassINET}))
	if positive {
		must(b.StartAnswers())
		must(b.CNAMEResource(dnsmessage.ResourceHeader{Name: name, Class: dnsmessage.ClassINET, TTL: 300}, dnsmessage.CNAMEResource{CNAME: target}))
		h := dnsmessage.ResourceHeader{Name: target, Class: dnsmessage.ClassINET, TTL: 60}
		if qtype == dnsmessage.TypeA {
			must(b.AResource(h, dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}))
		} else {
			must(b.AAAAResource(h, dnsmessage.AAAAResource{AAAA: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}}))
		}
	} else {
		must(b.StartAuthorities())
		must(b.SOAResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("example.com."), Class: dnsmessage.ClassINET, TTL: 900},
			dnsmessage.SOAResource{NS: target, MBox: target, Serial: 1, Refresh: 1, Retry: 1, Expire: 1, MinTTL: uint32((30 * time.Second).Seconds())}))
	}
	msg, err := b.Finish()
	must(err)
	return msg
}
