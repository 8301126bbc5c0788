package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil || !strings.EqualFold(s, l.String()) && !strings.EqualFold(s, "warning") {
		return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return l, nil
}

// logs are the server's three logs: its own (with what the library
// logs), the access log and the audit log. Their files are opened again
// on reload, for log rotation; their level follows the configuration.
type logs struct {
	level  slog.LevelVar
	main   *slog.Logger
	access *slog.Logger // nil when the access log is off
	audit  *slog.Logger
	// errors keeps the latest error-level records of main, for the
	// status page.
	errors *errorRing

	files []*logFile
}

// newLogs opens the logs of cfg. stderr is where a log without a file goes.
func newLogs(cfg *Config, stderr io.Writer) (*logs, error) {
	l := &logs{errors: newErrorRing()}
	lvl, _ := parseLevel(cfg.Log.Level)
	l.level.Set(lvl)
	out := func(file string) (io.Writer, error) {
		if file == "" {
			return stderr, nil
		}
		f, err := openLogFile(file)
		if err != nil {
			return nil, err
		}
		l.files = append(l.files, f)
		return f, nil
	}
	handler := func(w io.Writer, level slog.Leveler) slog.Handler {
		opts := &slog.HandlerOptions{Level: level}
		if cfg.Log.Format == "json" {
			return requestIDHandler{slog.NewJSONHandler(w, opts)}
		}
		return requestIDHandler{slog.NewTextHandler(w, opts)}
	}
	w, err := out(cfg.Log.File)
	if err != nil {
		l.close()
		return nil, fmt.Errorf("log.file: %w", err)
	}
	l.main = slog.New(&errorRingHandler{Handler: handler(w, &l.level), ring: l.errors})
	if !cfg.AccessLog.Disabled {
		if cfg.AccessLog.File == "" {
			l.access = l.main.With("log", "access")
		} else {
			w, err := out(cfg.AccessLog.File)
			if err != nil {
				l.close()
				return nil, fmt.Errorf("access_log.file: %w", err)
			}
			l.access = slog.New(handler(w, slog.LevelInfo))
		}
	}
	if cfg.AuditLog.File == "" {
		l.audit = l.main.With("log", "audit")
	} else {
		w, err := out(cfg.AuditLog.File)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("audit_log.file: %w", err)
		}
		// Audit lines are written whatever the log level.
		l.audit = slog.New(handler(w, slog.LevelDebug))
	}
	return l, nil
}

// reopen opens the log files again, for log rotation.
func (l *logs) reopen() error {
	var first error
	for _, f := range l.files {
		if err := f.reopen(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (l *logs) close() {
	for _, f := range l.files {
		f.close()
	}
}

// logFile is a log file that can be opened again under its name after a
// rotation moved it away.
type logFile struct {
	name string
	mu   sync.Mutex
	f    *os.File
}

func openLogFile(name string) (*logFile, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	return &logFile{name: name, f: f}, nil
}

func (l *logFile) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(b)
}

func (l *logFile) reopen() error {
	f, err := os.OpenFile(l.name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

func (l *logFile) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Close()
}

type requestIDKey struct{}

// withRequestID returns ctx carrying a request's ID.
func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// requestIDHandler adds the request ID of the context to every record
// logged with one, so that every line a request causes, the library's
// included, can be found by its ID.
type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := requestIDFrom(ctx); id != "" {
		r = r.Clone()
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}
