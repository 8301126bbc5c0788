package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"golang.org/x/mod/module"
)

// requestInfo is what the server learns about a request while serving it,
// for its access log line and audit lines.
type requestInfo struct {
	id   string
	who  string // the identity's name, "anonymous", or the name given with bad credentials
	auth string // how: none, password, token, invalid
	repo string // the repository that served it, if any
	// cache is where the answer came from (hot, hit, miss, stale,
	// not-found-memo), as the library's Request metric says once the
	// Proxy has answered; empty for requests that reach no cache.
	cache string
}

type requestInfoKey struct{}

func infoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	if info == nil {
		return &requestInfo{}
	}
	return info
}

// validRequestID is what an X-Request-ID from a client must look like to
// be kept: short, and nothing that could forge a log line.
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:/+=-]{1,128}$`)

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// identify says who sent r: the identity whose credentials it carries.
// Secrets are compared as digests in constant time.
func (ids *identities) identify(r *http.Request) (who, auth string, admin bool) {
	if name, password, ok := r.BasicAuth(); ok {
		u, known := ids.users[name]
		got := sha256.Sum256([]byte(password))
		if subtle.ConstantTimeCompare(got[:], u.digest[:]) == 1 && known {
			return name, "password", u.admin
		}
		return name, "invalid", false
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		if r.Header.Get("Authorization") != "" {
			return "anonymous", "invalid", false
		}
		return "anonymous", "none", false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	var found identity
	matched := 0
	for _, t := range ids.tokens {
		if subtle.ConstantTimeCompare(got[:], t.digest[:]) == 1 {
			found, matched = t, 1
		}
	}
	if matched == 1 {
		return found.name, "token", found.admin
	}
	return "anonymous", "invalid", false
}

// responseRecorder notes what a handler answered, for the logs: the
// status, the bytes of the body, and the start of an error body (the
// reason of a refusal).
type responseRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	reason []byte
}

const maxReason = 300

func (w *responseRecorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status >= 400 && len(w.reason) < maxReason {
		w.reason = append(w.reason, b[:min(len(b), maxReason-len(w.reason))]...)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the underlying writer's sendfile path for zips.
func (w *responseRecorder) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok || w.status >= 400 {
		return io.Copy(writerOnly{w}, r)
	}
	n, err := rf.ReadFrom(r)
	w.bytes += n
	return n, err
}

type writerOnly struct{ io.Writer }

func (w *responseRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		f.Flush()
	}
}

func (w *responseRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *responseRecorder) reasonText() string {
	return strings.TrimSpace(strings.ToValidUTF8(string(w.reason), "?"))
}

// ServeHTTP gives each request its ID and identity, serves it with the
// current configuration, and writes its access log line.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := s.state.Load()
	info := &requestInfo{id: r.Header.Get("X-Request-ID")}
	if !validRequestID.MatchString(info.id) {
		info.id = newRequestID()
	}
	info.who, info.auth, _ = st.plan.identities.identify(r)
	ctx := context.WithValue(withRequestID(r.Context(), info.id), requestInfoKey{}, info)
	r = r.WithContext(ctx)
	w.Header().Set("X-Request-ID", info.id)
	rec := &responseRecorder{ResponseWriter: w}
	defer func() {
		aborted := recover()
		if s.logs.access != nil {
			attrs := []slog.Attr{
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.Int("status", rec.status),
				slog.Int64("bytes", rec.bytes),
				slog.Duration("duration", time.Since(start)),
				slog.String("remote", r.RemoteAddr),
				slog.String("who", info.who),
			}
			if info.repo != "" {
				attrs = append(attrs, slog.String("repository", info.repo))
			}
			if info.cache != "" {
				attrs = append(attrs, slog.String("cache", info.cache))
			}
			if aborted != nil {
				attrs = append(attrs, slog.Bool("aborted", true))
			}
			if ua := r.UserAgent(); ua != "" {
				attrs = append(attrs, slog.String("user_agent", ua))
			}
			s.logs.access.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
		}
		if aborted != nil {
			panic(aborted)
		}
	}()
	st.mux.ServeHTTP(rec, r)
}

// auditAction names what a repository request does, if it is one the
// audit log records: publishing, deleting, and reading administrative
// lists. Reads of modules are not audited (the access log has them).
func auditAction(r *http.Request) string {
	switch {
	case r.Method == http.MethodPut:
		return "publish"
	case r.Method == http.MethodDelete:
		return "delete"
	case r.URL.Path == "/index":
		return "read-index"
	case strings.HasPrefix(r.URL.Path, "/-/cached/"):
		return "list-cached"
	case r.URL.Path == "/-/fill" || r.URL.Path == "/-/export" || r.URL.Path == "/-/import" || r.URL.Path == "/-/scrub":
		// The cache's operations (POST; anything else is refused, and
		// audited as refused).
		return strings.TrimPrefix(r.URL.Path, "/-/")
	}
	return ""
}

// moduleOf finds the module and version a repository path is about.
func moduleOf(path string) (mod, version string) {
	path = strings.TrimPrefix(path, "/")
	if rest, ok := strings.CutPrefix(path, "-/cached/"); ok {
		m, _ := module.UnescapePath(rest)
		return m, ""
	}
	escMod, rest, ok := strings.Cut(path, "/@v/")
	if !ok {
		escMod, _, ok = strings.Cut(path, "/@latest")
		if !ok {
			return "", ""
		}
		m, _ := module.UnescapePath(escMod)
		return m, "latest"
	}
	m, err := module.UnescapePath(escMod)
	if err != nil {
		return "", ""
	}
	for _, ext := range []string{".zip", ".mod", ".info"} {
		if escVer, ok := strings.CutSuffix(rest, ext); ok {
			v, _ := module.UnescapeVersion(escVer)
			return m, v
		}
	}
	return m, ""
}

// outcome classifies a status for the audit log.
func outcome(status int) string {
	switch {
	case status == 0:
		return "aborted"
	case status < 400:
		return "done"
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return "refused"
	}
	return "failed"
}

// audit writes the audit line of an action.
func (s *server) audit(ctx context.Context, action, repo, mod, version string, status int, reason string) {
	info := infoFrom(ctx)
	attrs := []slog.Attr{
		slog.String("who", info.who),
		slog.String("auth", info.auth),
		slog.String("action", action),
		slog.String("outcome", outcome(status)),
		slog.Int("status", status),
	}
	if repo != "" {
		attrs = append(attrs, slog.String("repository", repo))
	}
	if mod != "" {
		m := mod
		if version != "" {
			m += "@" + version
		}
		attrs = append(attrs, slog.String("module", m))
	}
	if reason != "" && status >= 400 {
		attrs = append(attrs, slog.String("reason", reason))
	}
	s.logs.audit.LogAttrs(ctx, slog.LevelInfo, "audit", attrs...)
}
