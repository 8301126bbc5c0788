package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"golang.org/x/mod/sumdb/dirhash"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

const bigZipPath = "/example.com/large/@v/v1.0.0.zip"

// bigZipLoopback times the big zip straight from the upstream, through a
// fresh verifying proxy, and the verification of the file alone.
func (b *bench) bigZipLoopback() {
	fi, err := os.Stat(b.large.ZipFile)
	if err != nil {
		fatalf("%v", err)
	}
	size := fi.Size()
	label := formatBytes(size/1e6*1e6) + " zip"
	progress("big zip on loopback: %s, %d runs each of direct, proxy and verify alone", label, *bigReps)
	var direct, proxied []heapResult
	var verify []time.Duration
	var proxyReqs []requestCounts
	sides := []func(){
		func() {
			b.counted.take()
			direct = append(direct, measureDownload(b.upURL+bigZipPath, size, *interval))
		},
		func() {
			p, cache := b.newProxy(b.upURL)
			srv := serve(p)
			b.counted.take()
			if *bigProfile != "" && len(proxied) == *bigReps-1 {
				stop := startProfile(*bigProfile)
				defer stop()
			}
			proxied = append(proxied, measureDownload(srv.URL+bigZipPath, size, *interval))
			waitCached(p, strings.TrimPrefix(bigZipPath, "/"), 2*time.Minute)
			proxyReqs = append(proxyReqs, b.counted.take())
			srv.Close()
			p.Close()
			os.RemoveAll(cache)
		},
		func() { verify = append(verify, verifyAlone(b.large)) },
	}
	for i := range *bigReps {
		for j := range sides {
			sides[(i+j)%len(sides)]()
		}
		progress("  run %d: direct %v; proxy %v; verify alone %s", i+1, direct[i], proxied[i], secs(verify[i]))
	}
	firstBytes := func(rs []heapResult) []time.Duration {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, r.firstByte)
		}
		return ds
	}
	totals := func(rs []heapResult) []time.Duration {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, r.elapsed)
		}
		return ds
	}
	var peak, directPeak int64
	for _, r := range proxied {
		peak = max(peak, r.peak)
	}
	for _, r := range direct {
		directPeak = max(directPeak, r.peak)
	}
	pf, df := median(firstBytes(proxied)), median(firstBytes(direct))
	pt, dt, vt := median(totals(proxied)), median(totals(direct)), median(verify)
	lastRow := durRow("  last byte, vs max(direct, verify alone "+secs(vt)+")", pt, max(dt, vt), 1.2)
	b.rows = append(b.rows,
		durRow("cold "+label+" on loopback: first byte", pf, df, 2),
		lastRow,
		row{figure: "  peak heap", proxy: mib(peak), baseline: mib(directPeak), ratio: "-", target: "<64MiB", met: yesNo(peak < 64<<20)})
	b.raw = append(b.raw,
		fmt.Sprintf("big zip direct  %s", heapList(direct)),
		fmt.Sprintf("big zip proxy   %s; upstream requests %v", heapList(proxied), requestList(proxyReqs)),
		fmt.Sprintf("big zip verify alone (zip.CheckZip, dirhash.HashZip)  runs %s", durList(verify)))
}

// verifyAlone times the checks the proxy makes of a zip, on the file
// alone: the golang.org/x/mod/zip checks and the hash (which reads every
// entry, checking its CRC-32).
func verifyAlone(v *moduletest.Version) time.Duration {
	start := time.Now()
	cf, err := modzip.CheckZip(module.Version{Path: v.Path, Version: v.Version}, v.ZipFile)
	if err == nil {
		err = cf.Err()
	}
	if err == nil {
		_, err = dirhash.HashZip(v.ZipFile, dirhash.Hash1)
	}
	if err != nil {
		fatalf("verifying the big zip: %v", err)
	}
	return time.Since(start)
}

// bigZipPaced times the big zip from an upstream that paces every
// connection, through a proxy with its default settings and one with one
// connection.
func (b *bench) bigZipPaced() {
	fi, err := os.Stat(b.large.ZipFile)
	if err != nil {
		fatalf("%v", err)
	}
	size := fi.Size()
	rate := int64(connRate)
	faults := &moduletest.Faults{BytesPerSecond: rate}
	capped := serve(faults.Wrap(b.up.Handler()))
	atExit(capped.Close)
	label := formatBytes(size/1e6*1e6) + " zip"
	progress("paced upstream: %s at %s per connection, default settings and one connection, %d runs each", label, formatRate(rate), *dlReps)
	var def, one []pacedResult
	sides := []func(){
		func() {
			def = append(def, b.pacedRun(capped.URL, faults, size, nil))
		},
		func() {
			one = append(one, b.pacedRun(capped.URL, faults, size, func(p *goproxy.Proxy) { p.Download.Connections = 1 }))
		},
	}
	for i := range *dlReps {
		for j := range sides {
			sides[(i+j)%len(sides)]()
		}
		progress("  run %d: default %v; one connection %v", i+1, def[i].res, one[i].res)
	}
	times := func(rs []pacedResult) []time.Duration {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, r.res.elapsed)
		}
		return ds
	}
	var peak, onePeak int64
	for _, r := range def {
		peak = max(peak, r.res.peak)
	}
	for _, r := range one {
		onePeak = max(onePeak, r.res.peak)
	}
	td, t1 := median(times(def)), median(times(one))
	b.rows = append(b.rows,
		durRow(fmt.Sprintf("paced %s/conn, %s: default settings", formatRate(rate), label), td, t1, 0.2),
		row{figure: "  peak heap", proxy: mib(peak), baseline: mib(onePeak), ratio: "-", target: "<64MiB", met: yesNo(peak < 64<<20)})
	describe := func(rs []pacedResult) string {
		var parts []string
		for _, r := range rs {
			parts = append(parts, fmt.Sprintf("%v; %d upstream requests, %d with a Range other than bytes=0-", r.res, r.reqs, r.rangeReq))
		}
		return strings.Join(parts, "  |  ")
	}
	b.raw = append(b.raw,
		fmt.Sprintf("paced default  median %s  %s", secs(td), describe(def)),
		fmt.Sprintf("paced 1 conn   median %s  %s", secs(t1), describe(one)))
}

// pacedRun downloads the big zip through a fresh proxy over the paced
// upstream.
func (b *bench) pacedRun(upURL string, faults *moduletest.Faults, size int64, opt func(*goproxy.Proxy)) pacedResult {
	var opts []func(*goproxy.Proxy)
	if opt != nil {
		opts = append(opts, opt)
	}
	p, cache := b.newProxy(upURL, opts...)
	srv := serve(p)
	before := faults.Log()
	res := measureDownload(srv.URL+bigZipPath, size, *interval)
	waitCached(p, strings.TrimPrefix(bigZipPath, "/"), 2*time.Minute)
	after := faults.Log()
	var reqs, ranged int64
	for _, r := range after[len(before):] {
		reqs++
		if r.Range != "" && r.Range != "bytes=0-" {
			ranged++
		}
	}
	srv.Close()
	p.Close()
	os.RemoveAll(cache)
	return pacedResult{res, reqs, ranged}
}

// pacedResult is one download of the big zip from the paced upstream.
type pacedResult struct {
	res            heapResult
	reqs, rangeReq int64 // upstream requests, those for a part of the file
}

func heapList(rs []heapResult) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, r.String())
	}
	return strings.Join(parts, "  |  ")
}

func requestList(rs []requestCounts) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%d (%d ranged)", r.requests, r.ranged))
	}
	return "[" + strings.Join(parts, " ") + "]"
}
