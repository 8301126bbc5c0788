// Command goproxy is a Go module proxy server built on the goproxy
// library: one or several repositories (caching proxies, hosted modules,
// or groups of both) under their own path prefixes, with access control,
// an audit log, TLS, health checks, Prometheus metrics, a status page,
// cache eviction, reload on SIGHUP and graceful shutdown.
//
// With no configuration it caches under the user cache directory and
// fetches from the upstreams in GOPROXY:
//
//	goproxy -addr :8080 -cache /var/cache/goproxy
//
// Everything else is in a YAML or JSON file given with -config; see the
// README for the reference.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "goproxy:", err)
		os.Exit(1)
	}
}

// errUsage is a command line error, already reported with the usage.
var errUsage = errors.New("usage")

// run is the whole server: it reads its configuration from args and env,
// serves until ctx ends, then shuts down gracefully. SIGHUP reloads the
// configuration. A first argument naming a subcommand (fill, export,
// import, scrub) runs that instead, on the same configuration.
func run(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		if _, ok := cacheOps[args[0]]; ok {
			return runCacheOp(ctx, args[0], args[1:], env, stdin, stdout, stderr)
		}
	}
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return errUsage
	}
	if opts.healthcheck != "" {
		return healthcheck(ctx, opts.healthcheck)
	}
	cfg, src, err := loadConfig(opts, lookupIn(env))
	if err != nil {
		return err
	}
	pl, err := newPlan(cfg, src, env)
	if err != nil {
		return fmt.Errorf("bad configuration:\n%w", err)
	}
	if opts.printConfig {
		return printConfig(stdout, cfg)
	}
	if opts.checkConfig {
		fmt.Fprintln(stdout, "configuration ok")
		return nil
	}

	// Downloads in flight are shown while the server runs: as bars below
	// the log on a terminal, else as log lines now and then.
	live := newLiveViews()
	display := newProgressDisplay(cfg.Progress, stderr, lookupIn(env), live)
	logs, err := newLogs(cfg, display.logWriter())
	if err != nil {
		return err
	}
	defer logs.close()
	display.setLogger(logs.main)
	display.start()
	defer display.stop()
	metrics := newServerMetrics()
	s := &server{opts: opts, env: env, logs: logs, started: time.Now(), stopping: make(chan struct{}),
		live: live, downloads: live, failures: live, metrics: metrics, metricsHTTP: metrics.handler(logs.main),
		stats: metrics, caches: metrics, scanner: newCacheScanner(logs.main), errors: logs.errors, forms: newFormGuard(),
		admissions: newAdmissionCounters()}
	s.walks = s.scanner
	s.scanner.measured = metrics.measured
	if s.directBase = cfg.DirectDir; s.directBase == "" {
		if s.directBase, err = os.MkdirTemp(cfg.TempDir, "goproxy-direct-"); err != nil {
			return fmt.Errorf("a directory for direct fetches: %w", err)
		}
		s.removeDirectBase = true
	} else {
		clearRebuiltDirs(s.directBase)
	}
	defer func() {
		close(s.stopping)
		s.retiring.Wait()
		if s.removeDirectBase {
			os.RemoveAll(s.directBase)
		}
	}()
	if err := s.apply(pl); err != nil {
		return err
	}
	// The stores are walked for the status page in the background, until
	// the server stops.
	scanCtx, stopScanning := context.WithCancel(context.Background())
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		s.scanner.run(scanCtx, s.state.Load)
	}()
	defer func() {
		stopScanning()
		<-scanned
	}()

	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: time.Duration(cfg.HTTP.ReadHeaderTimeout),
		ReadTimeout:       time.Duration(cfg.HTTP.ReadTimeout),
		WriteTimeout:      time.Duration(cfg.HTTP.WriteTimeout),
		IdleTimeout:       time.Duration(cfg.HTTP.IdleTimeout),
		MaxHeaderBytes:    int(cfg.HTTP.MaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(logs.main.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	scheme := "http"
	if cfg.TLS.CertFile != "" {
		if s.cert, err = newCertificate(cfg.TLS.CertFile, cfg.TLS.KeyFile, logs.main); err != nil {
			ln.Close()
			return fmt.Errorf("tls: %w", err)
		}
		srv.TLSConfig = &tls.Config{GetCertificate: s.cert.GetCertificate, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}
	served := make(chan error, 1)
	go func() {
		if s.cert != nil {
			served <- srv.ServeTLS(ln, "", "")
		} else {
			served <- srv.Serve(ln)
		}
	}()
	var names []string
	for _, r := range s.state.Load().repos {
		names = append(names, r.Name+"="+r.Prefix)
	}
	// The metrics may have a listener of their own, for a network that
	// only the monitoring reaches.
	var metricsSrv *http.Server
	metricsServed := make(chan error, 1)
	if cfg.Metrics.Addr != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Addr)
		if err != nil {
			srv.Close()
			<-served
			return fmt.Errorf("metrics.addr: %w", err)
		}
		metricsSrv = &http.Server{Handler: s.metricsListener(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			ErrorLog: srv.ErrorLog}
		go func() { metricsServed <- metricsSrv.Serve(mln) }()
		logs.main.Info("serving metrics", "url", "http://"+mln.Addr().String()+cfg.Metrics.Path)
	}
	logs.main.Info("serving", "url", scheme+"://"+ln.Addr().String(), "repositories", strings.Join(names, " "))

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case err := <-served:
			return err
		case <-hup:
			s.reload(ctx, "SIGHUP")
		case <-ctx.Done():
			break wait
		}
	}

	limit := time.Duration(cfg.HTTP.ShutdownTimeout)
	logs.main.Info("shutting down: no new connections; requests in flight may finish", "limit", limit)
	sctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if limit == 0 {
		cancel()
	}
	if err := srv.Shutdown(sctx); err != nil {
		logs.main.Warn("requests still in flight at the shutdown limit were cut", "error", err)
		srv.Close()
	}
	<-served
	if metricsSrv != nil {
		metricsSrv.Close()
		<-metricsServed
	}
	// No request is served any more: the Proxies' background work
	// (eviction, probes, fetches nobody waits for) ends, and what they
	// were storing is stored.
	for _, r := range s.state.Load().repos {
		r.inst.admission.close()
		r.inst.proxy.Close()
	}
	logs.main.Info("stopped")
	return nil
}

// clearRebuiltDirs removes the direct-fetch directories of Proxies that
// a reload rebuilt in an earlier run ("name.N"); the first ones ("name")
// are kept with the clones they hold.
func clearRebuiltDirs(base string) {
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		if i := strings.LastIndexByte(e.Name(), '.'); i > 0 && strings.Trim(e.Name()[i+1:], "0123456789") == "" {
			os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
}

// printConfig writes the effective configuration as YAML. Secrets are
// never in it (the file only names where they are); credentials in URLs
// are redacted.
func printConfig(w io.Writer, cfg *Config) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return err
	}
	enc.Close()
	_, err := io.WriteString(w, redactURL(buf.String()))
	return err
}

// healthcheck GETs url and fails unless it answers 200. The certificate
// is not checked: the probe runs beside the server, for its liveness,
// where the server's name may not resolve to it.
func healthcheck(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	t := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer t.CloseIdleConnections()
	resp, err := t.RoundTrip(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
