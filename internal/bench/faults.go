package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// faultSide is one upstream condition of the cold runs under faults.
type faultSide struct {
	name   string
	faults *moduletest.Faults
	srv    *server
	g      *goRunner
	times  []time.Duration // of the runs that succeeded
	failed []string        // why runs failed
	reqs   []int64         // upstream requests per run
	faulty []int64         // faults injected per run
}

// coldUnderFaults times cold go mod downloads through a fresh proxy (with
// its default download options) while the upstream answers 30% of its
// requests with 502, or cuts 30% of its bodies midway without validators,
// against the same runs with an upstream failing nothing. The sides take
// turns, -reps runs each; the medians of the runs that succeeded are
// compared, and every failed run is reported.
func coldUnderFaults(b *bench) ([]row, []string) {
	vs, goMod, wantZips, godir := b.vs, b.goMod, b.wantZips, b.godir
	// An upstream without latency of its own: the latency is added in
	// front of the faults, so that an injected 502 takes as long to come
	// as a real one.
	up := moduletest.NewServer(vs)
	atExit(up.Close)
	sides := []*faultSide{
		{name: "clean", faults: &moduletest.Faults{}},
		{name: "502", faults: &moduletest.Faults{FailFraction: 0.3, Seed: 1}},
		{name: "cut", faults: &moduletest.Faults{CutUnvalidatedFraction: 0.3, Seed: 2}},
	}
	for _, s := range sides {
		s.srv = serve(withLatency(*latency, s.faults.Wrap(up.Handler())))
		atExit(s.srv.Close)
		s.g = newGoRunner(filepath.Join(godir, "faults-"+s.name), "", goMod, wantZips)
	}
	progress("cold go mod download under upstream faults, %d runs each of %d sides", *faultReps, len(sides))
	for i := range *faultReps {
		var line []string
		for j := range sides {
			s := sides[(i+j)%len(sides)]
			p, _ := b.newProxy(s.srv.URL, noSumDB(s.srv.URL))
			psrv := serve(p)
			s.g.env.Set("GOPROXY", psrv.URL)
			reqs, c := s.faults.Requests(), s.faults.Counts().Total()
			d, err := s.g.tryModDownload()
			psrv.Close()
			s.reqs = append(s.reqs, s.faults.Requests()-reqs)
			s.faulty = append(s.faulty, s.faults.Counts().Total()-c)
			if err != nil {
				first, _, _ := strings.Cut(strings.TrimSpace(err.Error()), "\n")
				s.failed = append(s.failed, first+": "+lastLines(err.Error(), 3))
				line = append(line, s.name+" FAILED")
				continue
			}
			s.times = append(s.times, d)
			line = append(line, fmt.Sprintf("%s %s", s.name, secs(d)))
		}
		slices.Sort(line)
		progress("  run %d: %s", i+1, strings.Join(line, ", "))
	}
	clean := sides[0]
	base := median(clean.times)
	var rows []row
	var raw []string
	for _, s := range sides {
		raw = append(raw, fmt.Sprintf("faults %-5s median %s  runs %s  failed runs %d  (upstream requests per run %v, faults injected per run %v)",
			s.name, secs(median(s.times)), durList(s.times), len(s.failed), s.reqs, s.faulty))
		for _, f := range s.failed {
			raw = append(raw, "  FAILED: "+f)
		}
	}
	for _, s := range sides[1:] {
		what := map[string]string{"502": "30% upstream 502s", "cut": "30% bodies cut, no validators"}[s.name]
		r := row{figure: "cold, " + what + " vs none", proxy: secs(median(s.times)), baseline: secs(base), target: "<=1.50x, 0 failed"}
		if len(s.times) > 0 && len(clean.times) > 0 {
			ratio := median(s.times).Seconds() / base.Seconds()
			r.ratio = fmt.Sprintf("%.2fx", ratio)
			r.met = yesNo(ratio <= 1.5 && len(s.failed) == 0 && len(clean.failed) == 0)
		} else {
			r.ratio, r.met = "-", "NO"
		}
		if len(s.failed) > 0 {
			r.ratio += fmt.Sprintf(", %d failed", len(s.failed))
		}
		rows = append(rows, r)
	}
	return rows, raw
}

// withLatency delays every request by d before h answers it.
func withLatency(d time.Duration, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			h.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	})
}

// lastLines returns the last n non-empty lines of s, joined by " | ".
func lastLines(s string, n int) string {
	var lines []string
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(len(lines)-n, 0):], " | ")
}

// formatMB prints a byte count in MB.
func formatMB(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// sizeSpread describes zip sizes: the range, the median, the share above
// 2 MB and above 512 KiB.
func sizeSpread(sizes []int64) string {
	if len(sizes) == 0 {
		return "no zips"
	}
	s := slices.Clone(sizes)
	slices.Sort(s)
	above := func(limit int64) int {
		return len(s) - func() int { i, _ := slices.BinarySearch(s, limit+1); return i }()
	}
	return fmt.Sprintf("%d zips from %s to %s, median %s, %d above 2 MB, %d above 512 KiB",
		len(s), kb(s[0]), kb(s[len(s)-1]), kb(s[len(s)/2]), above(2e6), above(512<<10))
}

func kb(n int64) string {
	if n >= 1e6 {
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.0f KB", float64(n)/1e3)
}
