package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/goproxy-team/goproxy"
)

// The cache's operations as subcommands: each builds the Proxy of one
// repository from the same configuration the server reads (-config,
// GOPROXY_CONFIG, -cache, the environment), runs, and exits. They may run
// beside a server on the same directories, which a DirCacher shares.
var cacheOps = map[string]struct {
	summary, usage string
	run            func(ctx context.Context, op *cacheOp) error
}{
	"fill": {"fetch into the cache what a go.mod, go.sum, module list or SBOM needs",
		"goproxy fill [flags] FILE...  (FILE: go.mod, go.sum, a list of module@version, a CycloneDX or SPDX JSON SBOM; - for standard input)",
		runFill},
	"export": {"write cached module versions, with their checksum database proofs, as a bundle or a GOPROXY tree",
		"goproxy export [flags] (-o BUNDLE.tar.gz | -dir DIR) (-all | FILE...)",
		runExport},
	"import": {"store bundles, module caches or GOPROXY trees in the cache, after verifying them",
		"goproxy import [flags] PATH...  (PATH: a bundle made by goproxy export, a module cache, or a GOPROXY-layout directory)",
		runImport},
	"scrub": {"re-check every cached .mod and .zip, removing those that fail",
		"goproxy scrub [flags]",
		runScrub},
}

// cacheOp is one subcommand run: its flags and the Proxy it acts on.
type cacheOp struct {
	name   string
	flags  *flag.FlagSet
	args   []string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	proxy  *goproxy.Proxy
	logger *slog.Logger

	// Flags of the subcommands.
	journal     string
	concurrency int
	input       string
	output      string
	dir         string
	all         bool
}

// runCacheOp runs the subcommand name with its arguments.
func runCacheOp(ctx context.Context, name string, args, env []string, stdin io.Reader, stdout, stderr io.Writer) error {
	desc := cacheOps[name]
	// The log and the progress lines share standard error, written from
	// the fill's goroutines and the Proxy's.
	stderr = &lockedWriter{w: stderr}
	op := &cacheOp{name: name, stdin: stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("goproxy "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	fs.StringVar(&o.configFile, "config", "", "configuration file, as for the server (env GOPROXY_CONFIG)")
	cache := fs.String("cache", "", "cache directory of the repository, as for the server (env GOPROXY_CACHE)")
	logLevel := fs.String("log-level", "", "log level: debug, info, warn or error (default: the configuration's)")
	repo := fs.String("repository", "", "`name` of the repository to act on (default: the only one)")
	switch name {
	case "fill":
		fs.StringVar(&op.journal, "journal", "", "`file` recording the versions filled, so that a fill run again after an interruption skips them")
		fs.IntVar(&op.concurrency, "concurrency", goproxy.DefaultFillConcurrency, "module versions filled at once")
		fs.StringVar(&op.input, "input", "", "kind of the files: go.mod, go.sum, list or sbom (default: by name, then content)")
	case "export":
		fs.StringVar(&op.output, "o", "", "write a bundle (a gzip-compressed tar) to `file`; - for standard output")
		fs.StringVar(&op.dir, "dir", "", "write a GOPROXY-layout tree into `directory` instead")
		fs.BoolVar(&op.all, "all", false, "export everything cached")
		fs.StringVar(&op.input, "input", "", "kind of the files: go.mod, go.sum, list or sbom (default: by name, then content)")
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s, for one repository of the configuration.\n\nFlags:\n", desc.usage, desc.summary)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	op.flags, op.args = fs, fs.Args()
	if *cache != "" {
		o.set = append(o.set, flagSetting{"-cache", "cache", *cache})
	}
	cfg, src, err := loadConfig(o, lookupIn(env))
	if err != nil {
		return err
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	pl, err := newPlan(cfg, src, env)
	if err != nil {
		return fmt.Errorf("bad configuration:\n%w", err)
	}
	rp, err := chooseRepository(pl, *repo)
	if err != nil {
		return err
	}
	level, _ := parseLevel(cfg.Log.Level)
	var handler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if cfg.Log.Format == "json" {
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	op.logger = slog.New(handler).With("repository", rp.Name)
	directDir, err := os.MkdirTemp(cfg.TempDir, "goproxy-direct-")
	if err != nil {
		return fmt.Errorf("a directory for direct fetches: %w", err)
	}
	defer os.RemoveAll(directDir)
	spec := rp.spec
	spec.Scrub.Interval = 0 // the subcommand's own work only
	p, adm, err := newProxy(&spec, directDir, op.logger, nil, goproxy.Metrics{}, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", cmpKeyOr(rp.key), err)
	}
	// Close waits for the files being stored.
	defer p.Close()
	if adm != nil && adm.feed != nil {
		// The admission policy decides what a fill or an import brings
		// in: its cooldown needs the index feed read first.
		if err := adm.feed.Update(ctx); err != nil {
			op.logger.Warn("reading the index feed of the admission policy", "error", err)
		}
	}
	op.proxy = p
	return desc.run(ctx, op)
}

// lockedWriter writes to w one write at a time.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// chooseRepository finds the repository a subcommand acts on.
func chooseRepository(pl *plan, name string) (*repoPlan, error) {
	var names []string
	for _, rp := range pl.repos {
		if rp.Name == name || name == "" && len(pl.repos) == 1 {
			return rp, nil
		}
		names = append(names, rp.Name)
	}
	if name == "" {
		return nil, fmt.Errorf("the configuration has several repositories: choose one with -repository (%s)", strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("no repository %q in the configuration (%s)", name, strings.Join(names, ", "))
}

// readInput reads a file named on the command line, - for standard input.
func (op *cacheOp) readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(op.stdin)
	}
	return os.ReadFile(name)
}

// plan plans what the files named on the command line ask for, merged.
func (op *cacheOp) plan(ctx context.Context) (*goproxy.FillPlan, error) {
	if len(op.args) == 0 {
		return nil, fmt.Errorf("goproxy %s: name the files that say what to %s (see -h)", op.name, op.name)
	}
	byVersion := map[[2]string]goproxy.FillFiles{}
	merged := &goproxy.FillPlan{}
	for _, name := range op.args {
		data, err := op.readInput(name)
		if err != nil {
			return nil, err
		}
		kindName := name
		switch op.input {
		case "":
		case "go.mod", "go.sum", "list":
			kindName = op.input
		case "sbom":
			kindName = "sbom.json"
		default:
			return nil, fmt.Errorf("-input %q: want go.mod, go.sum, list or sbom", op.input)
		}
		if name == "-" && op.input == "" {
			return nil, errors.New("reading standard input: say what it is with -input")
		}
		plan, err := op.proxy.PlanFill(ctx, kindName, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, it := range plan.Items {
			byVersion[[2]string{it.Path, it.Version}] |= it.Files
		}
		merged.Skipped = append(merged.Skipped, plan.Skipped...)
	}
	for k, files := range byVersion {
		merged.Items = append(merged.Items, goproxy.FillItem{Path: k[0], Version: k[1], Files: files})
	}
	slices.SortFunc(merged.Items, func(a, b goproxy.FillItem) int {
		return strings.Compare(a.Path+"@"+a.Version, b.Path+"@"+b.Version)
	})
	return merged, nil
}

func runFill(ctx context.Context, op *cacheOp) error {
	plan, err := op.plan(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(op.stderr, "fill: %d module versions\n", len(plan.Items))
	var last time.Time
	rep, err := op.proxy.Fill(ctx, plan, &goproxy.FillOptions{
		Concurrency: op.concurrency,
		Journal:     op.journal,
		Progress: func(fp goproxy.FillProgress) {
			done := fp.Fetched + fp.Cached + fp.Resumed + fp.Failed
			if time.Since(last) >= time.Second || done == fp.Total {
				last = time.Now()
				fmt.Fprintf(op.stderr, "fill: %d/%d (%d fetched, %d cached, %d failed)\n", done, fp.Total, fp.Fetched, fp.Cached+fp.Resumed, fp.Failed)
			}
		},
	})
	if rep == nil {
		return err
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(op.stdout, "skipped %s: %s\n", s.Entry, s.Reason)
	}
	for _, f := range rep.Failed {
		fmt.Fprintf(op.stdout, "FAILED %s: %v\n", f.Item, f.Err)
	}
	fmt.Fprintf(op.stdout, "fill: %s\n", rep.Summary())
	switch {
	case err != nil:
		return fmt.Errorf("fill: %w (run it again with the same -journal to go on)", err)
	case len(rep.Failed) > 0:
		return fmt.Errorf("fill: %d module versions failed", len(rep.Failed))
	}
	return nil
}

func runExport(ctx context.Context, op *cacheOp) error {
	if (op.output == "") == (op.dir == "") {
		return errors.New("export: give -o (a bundle) or -dir (a GOPROXY tree), one of the two")
	}
	var plan *goproxy.FillPlan
	var err error
	switch {
	case op.all && len(op.args) > 0:
		return errors.New("export: -all or files, not both")
	case op.all:
		plan, err = op.proxy.PlanCached(ctx)
	default:
		plan, err = op.plan(ctx)
	}
	if err != nil {
		return err
	}
	var m *goproxy.BundleManifest
	if op.dir != "" {
		m, err = op.proxy.ExportDir(ctx, op.dir, plan.Items)
	} else {
		m, err = exportBundle(ctx, op, plan.Items)
	}
	if err != nil {
		return err
	}
	where := op.dir
	if where == "" {
		where = op.output
	}
	tiles := 0
	if m.SumDB != nil {
		tiles = len(m.Tiles)
	}
	fmt.Fprintf(op.stdout, "export: %d module versions and %d checksum database tiles to %s\n", len(m.Modules), tiles, where)
	return nil
}

// exportBundle writes the bundle to -o, through a temporary file renamed
// into place: a failed export leaves nothing that looks like a bundle.
func exportBundle(ctx context.Context, op *cacheOp, items []goproxy.FillItem) (*goproxy.BundleManifest, error) {
	if op.output == "-" {
		return op.proxy.ExportBundle(ctx, op.stdout, items)
	}
	tmp, err := os.CreateTemp(filepath.Dir(op.output), "."+filepath.Base(op.output)+".tmp-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	m, err := op.proxy.ExportBundle(ctx, tmp, items)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), op.output)
	}
	return m, err
}

func runImport(ctx context.Context, op *cacheOp) error {
	if len(op.args) == 0 {
		return errors.New("import: name the bundles or directories to import (see -h)")
	}
	var failed []string
	for _, path := range op.args {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			rep, err := op.proxy.ImportBundle(ctx, f)
			f.Close()
			if errors.Is(err, goproxy.ErrBundleRefused) {
				fmt.Fprintf(op.stdout, "REFUSED %s: %v\n", path, err)
				failed = append(failed, path)
				continue
			}
			if err != nil {
				return fmt.Errorf("import %s: %w", path, err)
			}
			fmt.Fprintf(op.stdout, "import %s: %d module versions (%d verified against the checksum database, %d exempt), %d files\n",
				path, len(rep.Manifest.Modules), rep.Verified, rep.Exempt, rep.Files)
			continue
		}
		rep, err := op.proxy.ImportModuleDir(ctx, path)
		if err != nil {
			return fmt.Errorf("import %s: %w", path, err)
		}
		for _, r := range rep.Refused {
			fmt.Fprintf(op.stdout, "REFUSED %s: %v\n", r.Item, r.Err)
			failed = append(failed, r.Item.String())
		}
		fmt.Fprintf(op.stdout, "import %s: %d module versions imported, %d already cached, %d refused, %d entries skipped\n",
			path, len(rep.Imported), len(rep.Cached), len(rep.Refused), len(rep.Skipped))
	}
	if len(failed) > 0 {
		return fmt.Errorf("import: %d refused: %s", len(failed), strings.Join(failed, ", "))
	}
	return nil
}

func runScrub(ctx context.Context, op *cacheOp) error {
	if len(op.args) > 0 {
		return fmt.Errorf("scrub: unexpected arguments %q", op.args)
	}
	rep, err := op.proxy.ScrubNow(ctx)
	if rep == nil {
		return err
	}
	bad := 0
	for _, pr := range rep.Problems {
		what := string(pr.Outcome)
		switch {
		case pr.Removed:
			what += ", removed"
		case pr.Published:
			what += ", published: kept"
		}
		if pr.Outcome != goproxy.ScrubUnverifiable {
			bad++
		}
		fmt.Fprintf(op.stdout, "%s (%s): %v\n", pr.Name, what, pr.Err)
	}
	fmt.Fprintf(op.stdout, "scrub: %d files checked (%d bytes), %d problems\n", rep.Checked, rep.Bytes, len(rep.Problems))
	switch {
	case err != nil:
		return fmt.Errorf("scrub: %w (the next scrub goes on from there)", err)
	case bad > 0:
		return fmt.Errorf("scrub: %d files failed their checks", bad)
	}
	return nil
}
