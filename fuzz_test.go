package goproxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/tlog"
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

// fuzzProxy returns an initialized Proxy that reaches nothing, for the
// parsing targets.
func fuzzProxy(f *testing.F) *Proxy {
	p := &Proxy{Cacher: &MemCacher{}, Env: []string{"GOPROXY=off", "GOSUMDB=off"}, TempDir: f.TempDir()}
	if err := p.Init(); err != nil {
		f.Fatal(err)
	}
	return p
}

// FuzzParseRequest feeds request paths to parseRequest: whatever it
// accepts must be a safe cache name, within the length limits, naming a
// valid module path and (for files of a version) a valid version.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"/example.com/a/@v/list", "/example.com/a/@latest", "/example.com/a/@v/v1.0.0.info",
		"/example.com/a/@v/v1.0.0.mod", "/example.com/a/@v/v1.0.0.zip", "/example.com/a/@v/master.info",
		"/github.com/!burnt!sushi/toml/@v/v1.2.0.zip", "/example.com/a/v2/@v/v2.0.0+incompatible.info",
		"/gopkg.in/yaml.v2/@v/v2.4.0.mod", "/example.com/a/@v/v0.0.0-20240102030405-abcdefabcdef.zip",
		"/sumdb/sum.golang.org/supported", "/sumdb/sum.golang.org/latest",
		"/sumdb/sum.golang.org/lookup/example.com/a@v1.0.0", "/sumdb/sum.golang.org/tile/8/0/x001/234.p/5",
		"/example.com/../a/@v/list", "/example.com/a/@v/..%2f.info", "/.x/@v/list",
	} {
		f.Add(s)
	}
	p := fuzzProxy(f)
	f.Fuzz(func(t *testing.T, path string) {
		req, err := p.parseRequest(path)
		if err != nil {
			if status, _ := answerFor(err); status < 400 || status > 499 {
				t.Fatalf("parseRequest(%q): %v, want a 4xx", path, err)
			}
			return
		}
		if err := checkCacheName(req.name); err != nil {
			t.Fatalf("parseRequest(%q) accepted the cache name %q: %v", path, req.name, err)
		}
		if err := checkElemLen(req.name); err != nil || len(req.name) > maxPathLen {
			t.Fatalf("parseRequest(%q) accepted an over-long name %q", path, req.name)
		}
		if req.kind == kindSumDB {
			if !strings.HasPrefix(req.name, "sumdb/") {
				t.Fatalf("checksum database request named %q", req.name)
			}
			return
		}
		if err := module.CheckPath(req.modPath); err != nil {
			t.Fatalf("parseRequest(%q) accepted module path %q: %v", path, req.modPath, err)
		}
		esc, err := module.EscapePath(req.modPath)
		if err != nil || !strings.HasPrefix(req.name, esc+"/@") {
			t.Fatalf("name %q does not start with the escaped path %q (%v)", req.name, esc, err)
		}
		if req.canonical {
			if err := module.Check(req.modPath, req.version); err != nil {
				t.Fatalf("parseRequest(%q) accepted %s@%s: %v", path, req.modPath, req.version, err)
			}
		} else if req.kind == kindMod || req.kind == kindZip {
			t.Fatalf("parseRequest(%q) accepted a non-canonical version %q for a %v", path, req.version, req.kind)
		}
	})
}

// FuzzSumDBTilePath feeds checksum database tile paths to
// parseSumDBRequest: an accepted one is a safe cache name, immutable
// exactly when the tile is full.
func FuzzSumDBTilePath(f *testing.F) {
	for _, s := range []string{"tile/8/0/000", "tile/8/1/x001/234.p/5", "tile/8/0/x123/456", "tile/8/data/000.p/1",
		"tile/8/0/../../x", "tile/8/0/000.p/256", "tile/30/0/000"} {
		f.Add(s)
	}
	p := fuzzProxy(f)
	f.Fuzz(func(t *testing.T, path string) {
		req, err := p.parseSumDBRequest("sum.golang.org/" + path)
		if err != nil || !strings.HasPrefix(path, "tile/") {
			return
		}
		if err := checkCacheName(req.name); err != nil {
			t.Fatalf("tile path %q accepted as cache name %q: %v", path, req.name, err)
		}
		tile, err := tlog.ParseTilePath(path)
		if err != nil {
			t.Fatalf("tile path %q accepted, but tlog cannot parse it: %v", path, err)
		}
		if req.immutable != (tile.W == 1<<tile.H) || req.mutable() == req.immutable {
			t.Fatalf("tile %q (width %d of %d): immutable %v", path, tile.W, 1<<tile.H, req.immutable)
		}
	})
}

// FuzzNormalizeVersionList feeds version lists to normalizeVersionList:
// what it keeps is valid, unique and stable under normalizing again.
func FuzzNormalizeVersionList(f *testing.F) {
	f.Add("example.com/a", "v1.0.0\nv1.1.0\n")
	f.Add("example.com/a", "v1.0.0\r\nv1.0.0\n\x1b[31mjunk\n../../etc/passwd\nv1.2\n")
	f.Add("example.com/a/v2", "v2.0.0 2024-01-02T03:04:05Z\nv2.1.0+incompatible\nv1.0.0\n")
	f.Add("gopkg.in/yaml.v2", "v2.4.0\nv3.0.0\n")
	f.Add("example.com/a", "v1.0.0 9999-12-31T23:59:59-23:59\n")
	f.Add("example.com/a", "")
	f.Fuzz(func(t *testing.T, modPath, list string) {
		if module.CheckPath(modPath) != nil {
			return
		}
		out, err := normalizeVersionList(modPath, []byte(list))
		if err != nil {
			if strings.TrimSpace(list) == "" {
				t.Fatalf("an empty list is refused: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for line := range strings.Lines(string(out)) {
			f := strings.Fields(line)
			if len(f) == 0 || len(f) > 2 || !strings.HasSuffix(line, "\n") || seen[f[0]] {
				t.Fatalf("normalized list %q has the line %q", out, line)
			}
			seen[f[0]] = true
			if module.CanonicalVersion(f[0]) != f[0] || module.Check(modPath, f[0]) != nil {
				t.Fatalf("normalized list keeps %q for %s", f[0], modPath)
			}
		}
		again, err := normalizeVersionList(modPath, out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("normalizing %q again gives %q, %v", out, again, err)
		}
	})
}

// FuzzValidateInfo feeds .info and @latest bodies to validate: what it
// accepts names a canonical version valid for the module, the one asked
// for when a canonical version was.
func FuzzValidateInfo(f *testing.F) {
	f.Add(`{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}`, true)
	f.Add(`{"Version":"v1.0.0"}`, false)
	f.Add(`{"Version":"v2.0.0+incompatible","Time":"2024-01-02T03:04:05Z","Origin":{"VCS":"git"}}`, false)
	f.Add(`{"Version":"v1.0"}`, false)
	f.Add(`{not json`, true)
	f.Add(`[]`, false)
	f.Fuzz(func(t *testing.T, body string, canonical bool) {
		req := &request{modPath: "example.com/a", kind: kindLatest}
		if canonical {
			req.kind, req.version, req.canonical = kindInfo, "v1.0.0", true
		}
		if req.validate(&fetched{data: []byte(body), size: int64(len(body))}) != nil {
			return
		}
		var info struct{ Version string }
		if err := json.Unmarshal([]byte(body), &info); err != nil {
			t.Fatalf("accepted %q, which is no JSON object: %v", body, err)
		}
		if module.CanonicalVersion(info.Version) != info.Version || module.Check(req.modPath, info.Version) != nil ||
			canonical && info.Version != req.version {
			t.Fatalf("accepted %q naming %q", body, info.Version)
		}
	})
}

// FuzzParseContentRange feeds Content-Range values to parseContentRange:
// what it accepts is a range inside the size, and reads back the same.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 10-19/*", "bytes 0-0/1", "bytes 5-4/10", "bytes 0-99/99",
		"bytes -1-5/10", "bytes 0-9223372036854775807/9223372036854775807", "items 0-1/2", "bytes 0-1/2/3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		start, end, size, ok := parseContentRange(v)
		if !ok {
			return
		}
		if start < 0 || end < start || size < -1 || size >= 0 && end >= size {
			t.Fatalf("parseContentRange(%q) = %d, %d, %d", v, start, end, size)
		}
		total := "*"
		if size >= 0 {
			total = strconv.FormatInt(size, 10)
		}
		s2, e2, z2, ok2 := parseContentRange(fmt.Sprintf("bytes %d-%d/%s", start, end, total))
		if !ok2 || s2 != start || e2 != end || z2 != size {
			t.Fatalf("parseContentRange(%q) does not read back", v)
		}
	})
}

// FuzzParseRetryAfter feeds Retry-After values to parseRetryAfter: the
// wait is never negative nor longer than its cap, whatever the header.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "18446744073709551615", "9223372036854775807", "-1", "1.5",
		"Wed, 21 Oct 2015 07:28:00 GMT", "Sun, 06 Nov 2094 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if d := parseRetryAfter(v, now); d < 0 || d > maxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %v", v, d)
		}
	})
}

// FuzzUpstreamMessage feeds error bodies to upstreamMessage: what reaches
// clients is one short line of printable text.
func FuzzUpstreamMessage(f *testing.F) {
	f.Add([]byte("not found: example.com/a@v1.0.0"), "text/plain")
	f.Add([]byte("\x1b[31mred\x1b[0m\r\nline\x07\x1b]0;t\x07\xff"), "text/plain")
	f.Add([]byte("<html><title>502 Bad Gateway</title></html>"), "text/html")
	f.Add([]byte("safe\u202etxt"), "")
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff<title>x</title>"), "text/html")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		msg := upstreamMessage(body, contentType)
		if len(msg) > maxMessage || !utf8.ValidString(msg) || strings.ContainsFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }) {
			t.Fatalf("upstreamMessage(%q) = %q", body, msg)
		}
		if strings.HasPrefix(msg, " ") || strings.HasSuffix(msg, " ") || strings.Contains(msg, "  ") {
			t.Fatalf("upstreamMessage(%q) = %q: spaces not collapsed", body, msg)
		}
	})
}
