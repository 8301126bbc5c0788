package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/goproxy-team/goproxy"
)

// fillFigure is figure 9: Proxy.Fill of the graph's go.mod (its plan,
// reading the graph's .mod files through the proxy, then the fill at the
// default concurrency, each file stored before it counts) into a fresh
// proxy and cache, against "go mod download all" through a fresh proxy
// and cache in the same graph, both cold, over the same upstream with the
// same latency, GOSUMDB=off. The sides take turns, reps runs each; the
// medians are compared.
func fillFigure(up string, goMod []byte, wantZips int, godir string, reps int,
	newProxy func(up string, opts ...func(*goproxy.Proxy)) (*goproxy.Proxy, string)) ([]row, []string) {
	g := newGoRunner(filepath.Join(godir, "fill-baseline"), "", goMod, wantZips)
	g.args = []string{"mod", "download", "all"}
	var fills, downloads []time.Duration
	var items, fetched int
	runFill := func() time.Duration {
		p, _ := newProxy(up)
		ctx := context.Background()
		start := time.Now()
		plan, err := p.PlanFill(ctx, "go.mod", goMod)
		if err != nil {
			fatalf("fill plan: %v", err)
		}
		rep, err := p.Fill(ctx, plan, nil)
		d := time.Since(start)
		if err != nil || len(rep.Failed) > 0 || len(rep.Fetched) != len(plan.Items) {
			fatalf("fill: %s, %v: %v", rep.Summary(), err, rep.Failed)
		}
		items, fetched = len(plan.Items), len(rep.Fetched)
		return d
	}
	runDownload := func() time.Duration {
		p, _ := newProxy(up)
		srv := serve(http.Handler(p))
		defer srv.Close()
		g.env.Set("GOPROXY", srv.URL)
		return g.modDownload()
	}
	progress("fill of the graph's go.mod against go mod download all, %d runs each", reps)
	for i := range reps {
		sides := []func(){
			func() { fills = append(fills, runFill()) },
			func() { downloads = append(downloads, runDownload()) },
		}
		for j := range sides {
			sides[(i+j)%len(sides)]()
		}
		progress("  run %d: fill %s, go mod download all %s", i+1, secs(fills[i]), secs(downloads[i]))
	}
	mf, md := median(fills), median(downloads)
	return []row{durRow("cold fill of the graph's go.mod", mf, md, 1.0)}, []string{
		fmt.Sprintf("fill          median %s  runs %s  (%d items in the plan, %d fetched, at the default concurrency %d)",
			secs(mf), durList(fills), items, fetched, goproxy.DefaultFillConcurrency),
		fmt.Sprintf("download all  median %s  runs %s  (go mod download all through a fresh proxy)", secs(md), durList(downloads)),
	}
}
