package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// options are the command line: the flags people type, and what to do.
type options struct {
	configFile  string
	printConfig bool
	checkConfig bool
	healthcheck string
	// set are the config keys the flags set, with the value and the flag.
	set []flagSetting
}

type flagSetting struct {
	flag, key, value string
}

// flagKeys are the flags that set config keys, with those keys.
var flagKeys = []struct{ flag, key, usage string }{
	{"addr", "addr", "listen address (default localhost:8080)"},
	{"cache", "cache", "cache directory (default goproxy in the user cache directory)"},
	{"tls-cert", "tls.cert_file", "TLS certificate file (PEM); with -tls-key, serve HTTPS"},
	{"tls-key", "tls.key_file", "TLS key file (PEM)"},
	{"log-level", "log.level", "log level: debug, info, warn or error (default info)"},
	{"log-format", "log.format", "log format: text or json (default text)"},
	{"progress", "progress.mode", "progress of downloads: auto (bars on a terminal, else log lines), bars, lines or off (default auto)"},
}

// envKeys are the environment variables that set config keys over the
// file (and under the flags).
var envKeys = []struct{ env, key string }{
	{"GOPROXY_ADDR", "addr"},
	{"GOPROXY_CACHE", "cache"},
	{"GOPROXY_TLS_CERT", "tls.cert_file"},
	{"GOPROXY_TLS_KEY", "tls.key_file"},
	{"GOPROXY_LOG_LEVEL", "log.level"},
	{"GOPROXY_LOG_FORMAT", "log.format"},
	{"GOPROXY_LOG_FILE", "log.file"},
	{"GOPROXY_ACCESS_LOG", "access_log.file"},
	{"GOPROXY_AUDIT_LOG", "audit_log.file"},
	{"GOPROXY_PROGRESS", "progress.mode"},
}

// parseFlags reads the command line. An error is a usage error, already
// reported on stderr with the usage.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("goproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	fs.StringVar(&o.configFile, "config", "", "configuration file, YAML (.yaml, .yml) or JSON (.json) (env GOPROXY_CONFIG)")
	fs.BoolVar(&o.printConfig, "print-config", false, "print the effective configuration, secrets redacted, and exit")
	fs.BoolVar(&o.checkConfig, "check-config", false, "check the configuration and exit")
	fs.StringVar(&o.healthcheck, "healthcheck", "", "`URL` to GET, exiting 0 if it answers 200 (for container health checks, where there is no curl)")
	values := make([]*string, len(flagKeys))
	for i, f := range flagKeys {
		values[i] = fs.String(f.flag, "", f.usage)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: goproxy [flags]
       goproxy fill|export|import|scrub [flags] [args] (see goproxy fill -h)

goproxy serves the Go module proxy protocol. With no configuration it caches
under the user cache directory and fetches from the upstreams in GOPROXY, as
the go command would; a config file (-config) sets up several repositories,
hosted modules, access control and everything else (see the README).
Precedence: defaults < config file < environment < flags.

Flags:
`)
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "\nEnvironment:\n  GOPROXY_CONFIG (-config)")
		for _, e := range envKeys {
			fmt.Fprintf(fs.Output(), ", %s (%s)", e.env, e.key)
		}
		fmt.Fprintf(fs.Output(), `
  GOPROXY, GONOPROXY, GOPRIVATE, GOSUMDB, GONOSUMDB, GOINSECURE, NETRC: as for
  the go command, for what a repository's configuration leaves unset;
  HTTP_PROXY, HTTPS_PROXY, NO_PROXY, ALL_PROXY, SOCKS5_PROXY: the egress proxy
  unless dialer.proxy is set; DNS_SERVER: comma-separated resolvers unless
  dialer.dns_servers is set.

Signals: SIGHUP reloads the configuration; SIGINT and SIGTERM shut down
gracefully.

Subcommands, on one repository of the same configuration:
`)
		for _, name := range sortedKeys(cacheOps) {
			fmt.Fprintf(fs.Output(), "  %-7s %s\n", name, cacheOps[name].summary)
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "goproxy: unexpected arguments: %q\n", fs.Args())
		fs.Usage()
		return nil, errors.New("unexpected arguments")
	}
	fs.Visit(func(f *flag.Flag) {
		for i, fk := range flagKeys {
			if fk.flag == f.Name {
				o.set = append(o.set, flagSetting{"-" + fk.flag, fk.key, *values[i]})
			}
		}
	})
	return o, nil
}

// configSources says where each key of a loaded Config came from, so
// that a problem is reported where it can be fixed.
type configSources struct {
	file  string         // the config file, "" if none
	lines map[string]int // key path -> line in file
	// origins are the keys set by the environment or flags, with what set them.
	origins map[string]string
}

// where names key for a message: the file and line that set it (or its
// nearest enclosing key), or the variable or flag.
func (s *configSources) where(key string) string {
	if s == nil {
		return key
	}
	if o, ok := s.origins[key]; ok {
		return fmt.Sprintf("%s (from %s)", key, o)
	}
	for k := key; k != ""; k = parentKey(k) {
		if line, ok := s.lines[k]; ok {
			return fmt.Sprintf("%s:%d: %s", s.file, line, key)
		}
	}
	if s.file != "" && key != "" {
		return key + " (not in " + s.file + ")"
	}
	return key
}

// parentKey drops the last element of a key path: a.b[1].c -> a.b[1] -> a.b.
func parentKey(k string) string {
	i := strings.LastIndexAny(k, ".[")
	if i < 0 {
		return ""
	}
	return k[:i]
}

// configError is one problem with the configuration.
type configError struct {
	where string
	err   error
}

func (e *configError) Error() string { return e.where + ": " + e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// problems collects configuration errors, to report them all at once.
type problems struct {
	src  *configSources
	errs []error
}

func (p *problems) add(key string, format string, args ...any) {
	p.errs = append(p.errs, &configError{p.src.where(key), fmt.Errorf(format, args...)})
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// loadConfig merges defaults, the config file (from -config or
// GOPROXY_CONFIG), the environment and the flags.
func loadConfig(o *options, getenv func(string) string) (*Config, *configSources, error) {
	cfg := defaultConfig()
	src := &configSources{origins: map[string]string{}}
	path := o.configFile
	if path == "" {
		path = getenv("GOPROXY_CONFIG")
	}
	if path != "" {
		if err := readConfigFile(path, cfg, src); err != nil {
			return nil, src, err
		}
	}
	for _, e := range envKeys {
		if v := getenv(e.env); v != "" {
			setKey(cfg, e.key, v)
			src.origins[e.key] = "environment variable " + e.env
		}
	}
	for _, f := range o.set {
		setKey(cfg, f.key, f.value)
		src.origins[f.key] = "flag " + f.flag
	}
	return cfg, src, nil
}

// setKey sets one of the keys that flags and variables set.
func setKey(c *Config, key, v string) {
	switch key {
	case "addr":
		c.Addr = v
	case "cache":
		c.Cache = v
	case "tls.cert_file":
		c.TLS.CertFile = v
	case "tls.key_file":
		c.TLS.KeyFile = v
	case "log.level":
		c.Log.Level = v
	case "log.format":
		c.Log.Format = v
	case "log.file":
		c.Log.File = v
	case "access_log.file":
		c.AccessLog.File = v
	case "audit_log.file":
		c.AuditLog.File = v
	case "progress.mode":
		c.Progress.Mode = v
	default:
		panic("setKey: unknown key " + key)
	}
}

// readConfigFile decodes the file at path over cfg: keys it has replace
// the defaults, keys it lacks keep them. Unknown keys are errors.
func readConfigFile(path string, cfg *Config, src *configSources) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the config file: %w", err)
	}
	src.file = path
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml":
	case ".json":
		// JSON is read as YAML, of which it is a subset, after a check
		// that it is JSON indeed.
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			var syn *json.SyntaxError
			if errors.As(err, &syn) {
				return fmt.Errorf("%s:%d: %v", path, lineAt(data, syn.Offset), err)
			}
			return fmt.Errorf("%s: %v", path, err)
		}
	default:
		return fmt.Errorf("%s: the config file must be YAML (.yaml, .yml) or JSON (.json), not %q", path, ext)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("%s: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(root.Content) == 0 {
		return nil // an empty file: the defaults
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: the configuration must be a mapping of keys to values", path, doc.Line)
	}
	src.lines = map[string]int{}
	recordLines(doc, "", src.lines)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && err != io.EOF {
		return decodeError(path, err, src.lines)
	}
	return nil
}

// lineAt returns the line of the byte at offset.
func lineAt(data []byte, offset int64) int {
	offset = min(max(offset, 0), int64(len(data)))
	return 1 + bytes.Count(data[:offset], []byte("\n"))
}

// recordLines maps each key path under n to its line.
func recordLines(n *yaml.Node, path string, lines map[string]int) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if path != "" {
				k = path + "." + k
			}
			lines[k] = n.Content[i].Line
			recordLines(n.Content[i+1], k, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			k := path + "[" + strconv.Itoa(i) + "]"
			lines[k] = c.Line
			recordLines(c, k, lines)
		}
	}
}

var (
	lineError    = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownField = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
)

// decodeError rewrites the YAML decoder's errors as file:line: key: why.
func decodeError(path string, err error, lines map[string]int) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	keyAt := map[int]string{}
	for k, l := range lines {
		if old, ok := keyAt[l]; !ok || len(k) > len(old) {
			keyAt[l] = k
		}
	}
	var errs []error
	for _, m := range msgs {
		sub := lineError.FindStringSubmatch(m)
		if sub == nil {
			errs = append(errs, fmt.Errorf("%s: %s", path, m))
			continue
		}
		line, _ := strconv.Atoi(sub[1])
		why := sub[2]
		if f := unknownField.FindStringSubmatch(why); f != nil {
			why = "unknown key " + strconv.Quote(f[1])
			switch f[1] {
			case "password", "token", "proxy_password":
				why += ": secrets are not written in the config file: give " + f[1] + "_env (an environment variable) or " + f[1] + "_file"
			}
		}
		if k, ok := keyAt[line]; ok {
			errs = append(errs, fmt.Errorf("%s:%d: %s: %s", path, line, k, why))
		} else {
			errs = append(errs, fmt.Errorf("%s:%d: %s", path, line, why))
		}
	}
	return errors.Join(errs...)
}
