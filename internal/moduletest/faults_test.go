package moduletest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

const bigPath = "example.com/big"

// bigVersion returns a version whose "zip" is size pseudo-random bytes;
// the server does not look inside, and random data keeps it honest.
func bigVersion(size int, seed byte) *moduletest.Version {
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{seed}).Read(data)
	return &moduletest.Version{
		Path:    bigPath,
		Version: "v1.0.0",
		Time:    time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC),
		Mod:     []byte("module " + bigPath + "\n"),
		Zip:     data,
	}
}

const bigZip = "/" + bigPath + "/@v/v1.0.0.zip"

// faultServer serves vs through f and returns the upstream (for Add)
// and the base URL of the faulty front.
func faultServer(t *testing.T, f *moduletest.Faults, vs ...*moduletest.Version) (*moduletest.Server, string) {
	t.Helper()
	s := moduletest.NewServer(vs)
	ts := httptest.NewServer(f.Wrap(s.Handler()))
	t.Cleanup(func() { ts.Close(); s.Close() })
	return s, ts.URL
}

type result struct {
	code int
	hdr  http.Header
	body []byte
	err  error // from reading the body
}

func fetch(t *testing.T, method, url string, hdr ...string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, b, err}
}

func TestFaultsZeroValueIsTransparent(t *testing.T) {
	t.Parallel()
	v := bigVersion(100<<10, 1)
	f := &moduletest.Faults{}
	_, url := faultServer(t, f, v)
	if r := fetch(t, "GET", url+bigZip); r.err != nil || r.code != 200 || !bytes.Equal(r.body, v.Zip) || r.hdr.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("GET: %d %v, %d bytes, Accept-Ranges %q", r.code, r.err, len(r.body), r.hdr.Get("Accept-Ranges"))
	}
	if r := fetch(t, "GET", url+bigZip, "Range", "bytes=10-19"); r.code != 206 || !bytes.Equal(r.body, v.Zip[10:20]) {
		t.Fatalf("ranged GET: %d, %q", r.code, r.body)
	}
	if f.Requests() != 2 || f.RangeRequests() != 1 || f.BodyBytes() != int64(len(v.Zip))+10 {
		t.Errorf("Requests %d, RangeRequests %d, BodyBytes %d", f.Requests(), f.RangeRequests(), f.BodyBytes())
	}
	want := []moduletest.RequestRecord{
		{Method: "GET", Path: bigZip, Status: 200, Bytes: int64(len(v.Zip))},
		{Method: "GET", Path: bigZip, Range: "bytes=10-19", Status: 206, Bytes: 10},
	}
	if got := f.Log(); !slices.Equal(got, want) {
		t.Errorf("Log() = %+v, want %+v", got, want)
	}
}

func TestFaultsBandwidth(t *testing.T) {
	// Speed is never asserted in unit tests: load only slows a transfer,
	// so only lower bounds hold, and they are taken with a margin.
	t.Parallel()
	const size, rate = 2 << 20, 4 << 20
	v := bigVersion(size, 2)
	f := &moduletest.Faults{BytesPerSecond: rate}
	_, url := faultServer(t, f, v)

	start := time.Now()
	r := fetch(t, "GET", url+bigZip)
	d := time.Since(start)
	if r.err != nil || !bytes.Equal(r.body, v.Zip) {
		t.Fatalf("GET: %v, %d bytes", r.err, len(r.body))
	}
	want := time.Duration(float64(size) / rate * float64(time.Second))
	t.Logf("%d bytes at %d B/s took %v, at least %v", size, rate, d, want)
	if d < want*7/10 {
		t.Errorf("took %v, faster than the cap allows (%v)", d, want)
	}

	// The cap is per response: each of four ranges fetched in parallel
	// is paced by a pacer of its own, its own length at the whole rate
	// (the log says so; times under load would only give lower bounds).
	f.Reset()
	const parts = 4
	var wg sync.WaitGroup
	got := make([][]byte, parts)
	for i := range parts {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", url+bigZip, nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", i*size/parts, (i+1)*size/parts-1))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			got[i], err = io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 206 {
				t.Errorf("part %d: %d %v", i, resp.StatusCode, err)
			}
		})
	}
	wg.Wait()
	if !bytes.Equal(bytes.Join(got, nil), v.Zip) {
		t.Error("parts do not add up to the zip")
	}
	var ranged int
	for _, rec := range f.Log() {
		if rec.Range == "" {
			continue
		}
		ranged++
		if rec.PacedBytes != size/parts || rec.PacedRate != rate {
			t.Errorf("%s %s: %d bytes paced at %d B/s; want its own %d at the whole %d B/s", rec.Path, rec.Range, rec.PacedBytes, rec.PacedRate, size/parts, rate)
		}
	}
	if ranged != parts {
		t.Errorf("%d ranged requests logged, want %d", ranged, parts)
	}
}

func TestFaultsPacingStopsOnCancel(t *testing.T) {
	t.Parallel()
	f := &moduletest.Faults{BytesPerSecond: 64 << 10} // 1 MB would take 16 s
	_, url := faultServer(t, f, bigVersion(1<<20, 3))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url+bigZip, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, cancel)
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	testwait.Within(t, 5*time.Second, func() bool { return len(f.Log()) != 0 }, "the handler to stop pacing once the client went away")
	if n >= 1<<20 || f.BodyBytes() >= 1<<20 {
		t.Errorf("client read %d, server wrote %d of 1 MB in 100ms at 64 KB/s", n, f.BodyBytes())
	}
}

// TestFaultsFractions checks that the fractions hold roughly and that
// a seed reproduces the same sequence of faults.
func TestFaultsFractions(t *testing.T) {
	t.Parallel()
	v := bigVersion(8<<10, 4)
	f := &moduletest.Faults{
		FailFraction:    0.2,
		TooManyFraction: 0.1,
		RetryAfter:      1500 * time.Millisecond,
		CutFraction:     0.25,
		Seed:            42,
	}
	_, url := faultServer(t, f, v)

	const n = 200
	run := func() []moduletest.RequestRecord {
		var ok int
		for range n {
			r := fetch(t, "GET", url+bigZip)
			switch r.code {
			case 200:
				if r.err == nil {
					ok++
					if !bytes.Equal(r.body, v.Zip) {
						t.Fatal("200 with the wrong body")
					}
				} else if !errors.Is(r.err, io.ErrUnexpectedEOF) || !bytes.HasPrefix(v.Zip, r.body) {
					t.Fatalf("cut body: %v after %d bytes", r.err, len(r.body))
				}
			case 429:
				if ra := r.hdr.Get("Retry-After"); ra != "2" {
					t.Fatalf("Retry-After %q, want 2 (1.5 s rounded up)", ra)
				}
			case 502:
			default:
				t.Fatalf("status %d", r.code)
			}
		}
		cut, e502, e429 := f.Cut(), f.Injected502(), f.Injected429()
		t.Logf("%d requests: %d 502, %d 429, %d cut, %d whole", n, e502, e429, cut, ok)
		if f.Requests() != n || e502+e429+cut+int64(ok) != n {
			t.Errorf("Requests %d; outcomes do not add up", f.Requests())
		}
		// Expected 40, 20 and 35 (a quarter of about 140).
		if e502 < 25 || e502 > 55 || e429 < 8 || e429 > 32 || cut < 20 || cut > 52 {
			t.Errorf("fractions off: %d 502, %d 429, %d cut", e502, e429, cut)
		}
		log := f.Log()
		for _, rec := range log {
			if rec.Cut && (rec.Status != 200 || rec.Bytes <= 0 || rec.Bytes >= int64(len(v.Zip))) {
				t.Errorf("cut record %+v", rec)
			}
		}
		return log
	}
	first := run()
	f.Reset()
	if f.Requests() != 0 || f.Cut() != 0 || f.BodyBytes() != 0 || len(f.Log()) != 0 {
		t.Fatal("Reset left counters or log")
	}
	if second := run(); !slices.Equal(first, second) {
		t.Error("same seed, different faults")
	}
}

func TestFaultsCut(t *testing.T) {
	t.Parallel()
	v := bigVersion(256<<10, 5)
	f := &moduletest.Faults{CutFraction: 1, Seed: 7}
	_, url := faultServer(t, f, v)

	r := fetch(t, "GET", url+bigZip)
	if r.code != 200 || r.hdr.Get("Content-Length") != fmt.Sprint(len(v.Zip)) {
		t.Fatalf("status %d, Content-Length %q", r.code, r.hdr.Get("Content-Length"))
	}
	if !errors.Is(r.err, io.ErrUnexpectedEOF) || len(r.body) == 0 || !bytes.HasPrefix(v.Zip, r.body) {
		t.Fatalf("got %v after %d bytes, want io.ErrUnexpectedEOF after a prefix", r.err, len(r.body))
	}

	// A resumption gets cut as well, inside its own range.
	from := len(r.body)
	r2 := fetch(t, "GET", url+bigZip, "Range", fmt.Sprintf("bytes=%d-", from))
	if r2.code != 206 || !errors.Is(r2.err, io.ErrUnexpectedEOF) || !bytes.HasPrefix(v.Zip[from:], r2.body) {
		t.Fatalf("ranged: %d %v after %d bytes", r2.code, r2.err, len(r2.body))
	}

	// No body, nothing to cut.
	if r3 := fetch(t, "HEAD", url+bigZip); r3.code != 200 || r3.err != nil {
		t.Fatalf("HEAD: %d %v", r3.code, r3.err)
	}
	if f.Cut() != 2 {
		t.Errorf("Cut() = %d, want 2", f.Cut())
	}
	log := f.Log()
	if len(log) != 3 || !log[0].Cut || !log[1].Cut || log[2].Cut ||
		log[0].Bytes != int64(len(r.body)) || log[1].Bytes != int64(len(r2.body)) {
		t.Errorf("log %+v; client got %d and %d bytes", log, len(r.body), len(r2.body))
	}
	if f.BodyBytes() != int64(len(r.body)+len(r2.body)) {
		t.Errorf("BodyBytes %d, client got %d", f.BodyBytes(), len(r.body)+len(r2.body))
	}
}

func TestFaultsTooManyAndMatch(t *testing.T) {
	t.Parallel()
	v := bigVersion(1<<10, 6)
	f := &moduletest.Faults{TooManyFraction: 1, Match: moduletest.MatchSuffix(".zip")}
	_, url := faultServer(t, f, v)

	r := fetch(t, "GET", url+bigZip)
	if r.code != 429 || r.hdr.Get("Retry-After") != "0" {
		t.Errorf("zip: %d, Retry-After %q", r.code, r.hdr.Get("Retry-After"))
	}
	if r := fetch(t, "GET", url+"/"+bigPath+"/@v/v1.0.0.mod"); r.code != 200 {
		t.Errorf("unmatched .mod: %d", r.code)
	}

	f.Update(func(f *moduletest.Faults) {
		f.TooManyFraction = 0
		f.FailFraction = 1
	})
	if r := fetch(t, "GET", url+bigZip); r.code != 502 {
		t.Errorf("after Update: %d", r.code)
	}
	if f.Injected429() != 1 || f.Injected502() != 1 || f.Requests() != 3 {
		t.Errorf("429 %d, 502 %d, requests %d", f.Injected429(), f.Injected502(), f.Requests())
	}
}

func TestFaultsIgnoreRange(t *testing.T) {
	t.Parallel()
	v := bigVersion(64<<10, 7)
	f := &moduletest.Faults{IgnoreRange: true}
	_, url := faultServer(t, f, v)
	r := fetch(t, "GET", url+bigZip, "Range", "bytes=100-199", "If-Range", `"whatever"`)
	if r.code != 200 || !bytes.Equal(r.body, v.Zip) || r.hdr.Get("Accept-Ranges") != "" {
		t.Fatalf("ranged GET: %d, %d bytes, Accept-Ranges %q", r.code, len(r.body), r.hdr.Get("Accept-Ranges"))
	}
	if f.RangeRequests() != 1 {
		t.Errorf("RangeRequests() = %d", f.RangeRequests())
	}
	if log := f.Log(); len(log) != 1 || log[0].Range != "bytes=100-199" || log[0].IfRange != `"whatever"` || log[0].Status != 200 {
		t.Errorf("log %+v", log)
	}
}

// TestIfRangeAfterReplace checks the Server side of resumption: once Add
// replaces a zip, If-Range with either old validator must yield the new
// zip whole, for in-memory and on-disk zips alike.
func TestIfRangeAfterReplace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	large := func(size int64) *moduletest.Version {
		v, err := moduletest.LargeVersion(dir, "example.com/large", "v1.0.0", size)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name     string
		old, new func() *moduletest.Version
		url      string
	}{
		// Same Time: only the content changes.
		{"Zip", func() *moduletest.Version { return bigVersion(64<<10, 8) }, func() *moduletest.Version { return bigVersion(64<<10, 9) }, bigZip},
		// Same file name and Time, rewritten in place.
		{"ZipFile", func() *moduletest.Version { return large(64 << 10) }, func() *moduletest.Version { return large(80 << 10) }, "/example.com/large/@v/v1.0.0.zip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &moduletest.Faults{}
			s, url := faultServer(t, f, tc.old())
			url += tc.url
			full := fetch(t, "GET", url)
			etag, lm := full.hdr.Get("ETag"), full.hdr.Get("Last-Modified")
			if full.code != 200 || len(etag) < 2 || etag[0] != '"' || lm == "" {
				t.Fatalf("GET: %d, ETag %q (must be strong), Last-Modified %q", full.code, etag, lm)
			}
			for _, ir := range []string{etag, lm} {
				if r := fetch(t, "GET", url, "Range", "bytes=10-19", "If-Range", ir); r.code != 206 || !bytes.Equal(r.body, full.body[10:20]) {
					t.Fatalf("unchanged, If-Range %s: %d", ir, r.code)
				}
			}

			nv := tc.new()
			s.Add(nv)
			want, err := io.ReadAll(must(nv.OpenZip()))
			if err != nil || bytes.Equal(want, full.body) {
				t.Fatalf("new zip: %v, or same as the old", err)
			}
			for _, ir := range []string{etag, lm} {
				r := fetch(t, "GET", url, "Range", "bytes=10-19", "If-Range", ir)
				if r.code != 200 || !bytes.Equal(r.body, want) {
					t.Errorf("changed, If-Range %s: %d, %d bytes", ir, r.code, len(r.body))
				}
				if r.hdr.Get("ETag") == etag || r.hdr.Get("Last-Modified") == lm {
					t.Errorf("validators unchanged: ETag %s, Last-Modified %s", etag, lm)
				}
			}
			if log := f.Log(); log[len(log)-1].IfRange != lm || log[len(log)-1].Status != 200 {
				t.Errorf("last record %+v, lm %q etag %q, %d records", log[len(log)-1], lm, etag, len(log))
			}
		})
	}
}

func must(rc io.ReadSeekCloser, err error) io.Reader {
	if err != nil {
		panic(err)
	}
	return rc
}

// TestFaultsUpdateWhileServing is for the race detector.
func TestFaultsUpdateWhileServing(t *testing.T) {
	t.Parallel()
	f := &moduletest.Faults{Seed: 1, Match: moduletest.MatchSuffix(".zip")}
	_, url := faultServer(t, f, bigVersion(4<<10, 10))
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 20 {
				if i == 0 {
					f.Update(func(f *moduletest.Faults) {
						f.FailFraction = float64(j%2) / 2
						f.CutFraction = 0.3
						f.IgnoreRange = j%3 == 0
						f.BytesPerSecond = int64(j%2) << 30
						f.Seed = uint64(j)
					})
				}
				resp, err := http.Get(url + bigZip)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				_ = f.Log()
			}
		})
	}
	wg.Wait()
	if f.Requests() != 80 || len(f.Log()) != 80 {
		t.Errorf("Requests %d, log %d, want 80", f.Requests(), len(f.Log()))
	}
}

// fetchFresh is fetch over a connection of its own, so that the
// transport's automatic retry of a request that failed on a reused
// connection cannot hide (or repeat) a fault.
func fetchFresh(t *testing.T, method, url string, hdr ...string) (result, error) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, b, err}, nil
}

func TestFaultsRequestLevelModes(t *testing.T) {
	t.Parallel()
	v := bigVersion(64<<10, 11)
	tests := []struct {
		name  string
		set   func(f *moduletest.Faults)
		check func(t *testing.T, r result, err error)
		count func(c moduletest.FaultCounts) int64
	}{
		{
			name: "503 with Retry-After",
			set:  func(f *moduletest.Faults) { f.UnavailableFraction, f.RetryAfter = 1, 2*time.Second },
			check: func(t *testing.T, r result, err error) {
				if err != nil || r.code != 503 || r.hdr.Get("Retry-After") != "2" {
					t.Errorf("%d %v, Retry-After %q", r.code, err, r.hdr.Get("Retry-After"))
				}
			},
			count: func(c moduletest.FaultCounts) int64 { return c.Unavailable },
		},
		{
			name: "connection reset before the header",
			set:  func(f *moduletest.Faults) { f.ResetFraction = 1 },
			check: func(t *testing.T, r result, err error) {
				if err == nil {
					t.Errorf("got %d, want a connection error", r.code)
				}
			},
			count: func(c moduletest.FaultCounts) int64 { return c.Reset },
		},
		{
			name: "header never sent",
			set:  func(f *moduletest.Faults) { f.StallHeadersFraction, f.StallFor = 1, 50*time.Millisecond },
			check: func(t *testing.T, r result, err error) {
				if err == nil {
					t.Errorf("got %d, want a connection error", r.code)
				}
			},
			count: func(c moduletest.FaultCounts) int64 { return c.StalledHeaders },
		},
		{
			name: "body stalled midway",
			set:  func(f *moduletest.Faults) { f.StallBodyFraction, f.StallFor = 1, 50*time.Millisecond },
			check: func(t *testing.T, r result, err error) {
				if err != nil || r.code != 200 || !errors.Is(r.err, io.ErrUnexpectedEOF) || len(r.body) == 0 || !bytes.HasPrefix(v.Zip, r.body) {
					t.Errorf("%d %v %v after %d bytes, want a prefix then io.ErrUnexpectedEOF", r.code, err, r.err, len(r.body))
				}
			},
			count: func(c moduletest.FaultCounts) int64 { return c.StalledBody },
		},
		{
			name: "body cut without validators",
			set:  func(f *moduletest.Faults) { f.CutUnvalidatedFraction = 1 },
			check: func(t *testing.T, r result, err error) {
				if err != nil || r.code != 200 || !errors.Is(r.err, io.ErrUnexpectedEOF) || r.hdr.Get("ETag") != "" || r.hdr.Get("Last-Modified") != "" {
					t.Errorf("%d %v %v, ETag %q, Last-Modified %q", r.code, err, r.err, r.hdr.Get("ETag"), r.hdr.Get("Last-Modified"))
				}
			},
			count: func(c moduletest.FaultCounts) int64 { return c.CutUnvalidated },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &moduletest.Faults{}
			tt.set(f)
			_, url := faultServer(t, f, v)
			r, err := fetchFresh(t, "GET", url+bigZip)
			tt.check(t, r, err)
			if n := tt.count(f.Counts()); n != 1 || f.Counts().Total() != 1 {
				t.Errorf("counted %d of this fault, %d in all; want 1", n, f.Counts().Total())
			}
			if log := f.Log(); len(log) != 1 || log[0].Fault == "" {
				t.Errorf("log %+v", log)
			}
		})
	}
}

func TestFaultsRangeIgnored(t *testing.T) {
	t.Parallel()
	v := bigVersion(64<<10, 12)
	f := &moduletest.Faults{RangeIgnoredFraction: 1}
	_, url := faultServer(t, f, v)
	if r := fetch(t, "GET", url+bigZip, "Range", "bytes=100-199"); r.code != 200 || !bytes.Equal(r.body, v.Zip) {
		t.Errorf("ranged GET: %d, %d bytes", r.code, len(r.body))
	}
	if r := fetch(t, "GET", url+bigZip); r.code != 200 {
		t.Errorf("GET: %d", r.code)
	}
	if c := f.Counts(); c.RangeIgnored != 1 || c.Total() != 1 {
		t.Errorf("counts %+v, want one range ignored: a request without Range has none to ignore", c)
	}
}

// TestFaultsFlap checks that flapped answers carry the other server's
// validators and judge If-Range by them, as a second origin would.
func TestFaultsFlap(t *testing.T) {
	t.Parallel()
	v := bigVersion(64<<10, 13)
	f := &moduletest.Faults{}
	_, url := faultServer(t, f, v)
	url += bigZip
	own := fetch(t, "GET", url)
	f.Update(func(f *moduletest.Faults) { f.FlapFraction = 1 })
	other := fetch(t, "GET", url)
	if other.code != 200 || !bytes.Equal(other.body, v.Zip) {
		t.Fatalf("flapped GET: %d", other.code)
	}
	if other.hdr.Get("ETag") == own.hdr.Get("ETag") || other.hdr.Get("Last-Modified") == own.hdr.Get("Last-Modified") {
		t.Fatalf("validators did not flap: %q %q", other.hdr.Get("ETag"), other.hdr.Get("Last-Modified"))
	}
	for _, tc := range []struct {
		name     string
		ifRange  string
		flapping bool
		want     int
	}{
		{"flapped server, its own ETag", other.hdr.Get("ETag"), true, 206},
		{"flapped server, its own date", other.hdr.Get("Last-Modified"), true, 206},
		{"flapped server, the file's ETag", own.hdr.Get("ETag"), true, 200},
		{"flapped server, the file's date", own.hdr.Get("Last-Modified"), true, 200},
		{"file's server, the flapped ETag", other.hdr.Get("ETag"), false, 200},
		{"file's server, the flapped date", other.hdr.Get("Last-Modified"), false, 200},
	} {
		f.Update(func(f *moduletest.Faults) { f.FlapFraction = map[bool]float64{true: 1}[tc.flapping] })
		r := fetch(t, "GET", url, "Range", "bytes=10-19", "If-Range", tc.ifRange)
		if r.code != tc.want || (r.code == 206 && !bytes.Equal(r.body, v.Zip[10:20])) || (r.code == 200 && !bytes.Equal(r.body, v.Zip)) {
			t.Errorf("%s: %d, want %d", tc.name, r.code, tc.want)
		}
	}
	if c := f.Counts(); c.Flapped != 5 {
		t.Errorf("%d flapped answers, want 5", c.Flapped)
	}
}
