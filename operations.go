package goproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The operations on the cache as administration endpoints: POST to them,
// with the OpAdminister permission. Their paths are no module's (no module
// path element starts with "-").
const (
	fillPath   = "/-/fill"
	exportPath = "/-/export"
	importPath = "/-/import"
	scrubPath  = "/-/scrub"
)

// maxFillInput caps the body of a fill or export request: a go.mod, a
// go.sum, a list or an SBOM, which can be large, but not that large.
const maxFillInput = 64 << 20

// isOperationPath reports whether path is one of the operations'.
func isOperationPath(path string) bool {
	switch path {
	case fillPath, exportPath, importPath, scrubPath:
		return true
	}
	return false
}

// serveOperation answers the POST of an operation; ServeHTTP has
// initialized the Proxy.
func (p *Proxy) serveOperation(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		p.writeFailure(w, &failure{kind: failMethod, allow: "POST", msg: "method " + r.Method + " is not allowed here: " + r.URL.Path + " is a POST"})
		return
	}
	if p.closed.Load() {
		p.writeFailure(w, errClosed)
		return
	}
	p.start()
	if !p.authorize(w, r, OpAdminister, "") {
		return
	}
	switch r.URL.Path {
	case fillPath:
		p.serveFill(w, r)
	case exportPath:
		p.serveExport(w, r)
	case importPath:
		p.serveImport(w, r)
	case scrubPath:
		p.serveScrub(w, r)
	}
}

// requestPlan reads the plan a fill or export request's body gives: a
// file of the kind its input parameter names (go.mod, go.sum, list, sbom),
// else recognized by its content.
func (p *Proxy) requestPlan(r *http.Request) (*FillPlan, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxFillInput+1))
	if err != nil {
		return nil, failed(failBadRequest, "reading the request body: %w", err)
	}
	if len(data) > maxFillInput {
		return nil, failed(failBadRequest, "the request body is larger than %d bytes", maxFillInput)
	}
	var name string
	switch input := r.URL.Query().Get("input"); input {
	case "go.mod", "go.sum", "list":
		name = input
	case "sbom":
		name = "sbom.json"
	case "":
		name = guessFillInput(data)
	default:
		return nil, failed(failBadRequest, "input %q is not go.mod, go.sum, list or sbom", input)
	}
	plan, err := p.PlanFill(r.Context(), name, data)
	if f := (*failure)(nil); errors.As(err, &f) {
		return nil, err // a go.mod of the graph could not be had
	}
	if err != nil {
		return nil, failed(failBadRequest, "%s: %w", name, err)
	}
	return plan, nil
}

// guessFillInput names the kind of a fill input by its content, as
// FillPlanFromFile reads names: a go.mod starts with a module directive
// (after comments), a go.sum has lines of three fields ending in h1:
// hashes, an SBOM is JSON; anything else is a list.
func guessFillInput(data []byte) string {
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch f := strings.Fields(line); {
		case line == "" || strings.HasPrefix(line, "//"):
			continue
		case strings.HasPrefix(line, "{"):
			return "sbom.json"
		case f[0] == "module":
			return "go.mod"
		case len(f) == 3 && strings.HasPrefix(f[2], "h1:"):
			return "go.sum"
		}
		return "list"
	}
	return "list"
}

// fillResult is a fill's report as the fill endpoint answers it.
type fillResult struct {
	Fetched     []string    `json:"fetched"`
	Cached      []string    `json:"cached"`
	Resumed     []string    `json:"resumed"`
	Failed      []itemError `json:"failed"`
	Skipped     []FillSkip  `json:"skipped"`
	Interrupted int         `json:"interrupted"`
	Summary     string      `json:"summary"`
	Error       string      `json:"error,omitempty"`
}

type itemError struct {
	Item  string `json:"item"`
	Error string `json:"error"`
}

// jsonFillResult turns a fill report into what the endpoint answers.
func jsonFillResult(rep *FillReport) *fillResult {
	res := &fillResult{Fetched: []string{}, Cached: []string{}, Resumed: []string{}, Failed: []itemError{}, Skipped: rep.Skipped}
	for _, it := range rep.Fetched {
		res.Fetched = append(res.Fetched, it.String())
	}
	for _, it := range rep.Cached {
		res.Cached = append(res.Cached, it.String())
	}
	for _, it := range rep.Resumed {
		res.Resumed = append(res.Resumed, it.String())
	}
	for _, f := range rep.Failed {
		res.Failed = append(res.Failed, itemError{f.Item.String(), f.Err.Error()})
	}
	if res.Skipped == nil {
		res.Skipped = []FillSkip{}
	}
	res.Interrupted = rep.Interrupted
	res.Summary = rep.Summary()
	return res
}

// Summary says in one line what the fill did.
func (r *FillReport) Summary() string {
	s := fmt.Sprintf("%d fetched, %d already cached, %d failed", len(r.Fetched), len(r.Cached), len(r.Failed))
	if len(r.Resumed) > 0 {
		s += fmt.Sprintf(", %d done before (journal)", len(r.Resumed))
	}
	if len(r.Skipped) > 0 {
		s += fmt.Sprintf(", %d entries skipped", len(r.Skipped))
	}
	if r.Interrupted > 0 {
		s += fmt.Sprintf(", %d interrupted", r.Interrupted)
	}
	return s
}

// serveFill answers POST /-/fill: the body is what to fill (see
// requestPlan), the answer the fill's report as JSON, once it is done. A
// fill cut short (the client gone) resumes when the same input is posted
// again: its journal is kept in TempDir, named after the plan, until a
// fill of it ends.
func (p *Proxy) serveFill(w http.ResponseWriter, r *http.Request) {
	plan, err := p.requestPlan(r)
	if err != nil {
		p.writeFailure(w, err)
		return
	}
	journal := filepath.Join(p.conf.tempDir, "goproxy-fill-"+planDigest(plan)+".journal")
	rep, err := p.Fill(r.Context(), plan, &FillOptions{Journal: journal})
	if err != nil && rep == nil {
		p.writeFailure(w, failed(failInternal, "fill: %w", err))
		return
	}
	res := jsonFillResult(rep)
	if err == nil && rep.Interrupted == 0 {
		os.Remove(journal)
	}
	if err != nil {
		res.Error = err.Error()
	}
	p.logger().Info("fill", "summary", res.Summary)
	writeJSON(w, http.StatusOK, res)
}

// planDigest names a plan by its items.
func planDigest(plan *FillPlan) string {
	h := sha256.New()
	for _, it := range plan.Items {
		fmt.Fprintf(h, "%s %s %d\n", it.Path, it.Version, it.Files)
	}
	return hex.EncodeToString(h.Sum(nil))[:24]
}

// serveExport answers POST /-/export with a bundle (application/gzip) of
// what the body names (see requestPlan), or of everything cached with
// ?all=1. A failure once the bundle has started aborts the connection:
// the client must not take a cut bundle for a whole one (an importer
// refuses one anyway).
func (p *Proxy) serveExport(w http.ResponseWriter, r *http.Request) {
	var plan *FillPlan
	var err error
	if all, _ := strconv.ParseBool(r.URL.Query().Get("all")); all {
		plan, err = p.PlanCached(r.Context())
		if err != nil {
			err = failed(failNotImplemented, "export: %w", err)
		}
	} else {
		plan, err = p.requestPlan(r)
	}
	if err != nil {
		p.writeFailure(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/gzip")
	h.Set("Content-Disposition", `attachment; filename="goproxy-bundle.tar.gz"`)
	h.Set("Cache-Control", "no-store")
	sw := &startedWriter{w: w}
	m, err := p.ExportBundle(r.Context(), sw, plan.Items)
	if err != nil {
		if sw.started {
			panic(http.ErrAbortHandler)
		}
		h.Del("Content-Disposition")
		p.writeFailure(w, failed(failUnavailable, "export: %w", err))
		return
	}
	p.logger().Info("export", "modules", len(m.Modules), "tiles", len(m.Tiles))
}

// startedWriter notes whether anything was written.
type startedWriter struct {
	w       io.Writer
	started bool
}

func (s *startedWriter) Write(b []byte) (int, error) {
	s.started = true
	return s.w.Write(b)
}

// importResult is what the import endpoint answers.
type importResult struct {
	Modules  int   `json:"modules"`
	Verified int   `json:"verified"`
	Exempt   int   `json:"exempt"`
	Files    int   `json:"files"`
	Bytes    int64 `json:"bytes"`
}

// serveImport answers POST /-/import, whose body is a bundle: it is
// imported, or refused whole (400, every problem listed).
func (p *Proxy) serveImport(w http.ResponseWriter, r *http.Request) {
	rep, err := p.ImportBundle(r.Context(), r.Body)
	switch {
	case errors.Is(err, ErrBundleRefused):
		p.writeFailure(w, failed(failBadRequest, "%w", err))
		return
	case err != nil:
		p.writeFailure(w, failed(failInternal, "import: %w", err))
		return
	}
	p.logger().Info("import", "modules", len(rep.Manifest.Modules), "files", rep.Files, "bytes", rep.Bytes)
	writeJSON(w, http.StatusOK, importResult{Modules: len(rep.Manifest.Modules), Verified: rep.Verified,
		Exempt: rep.Exempt, Files: rep.Files, Bytes: rep.Bytes})
}

// scrubResult is what the scrub endpoint answers.
type scrubResult struct {
	Checked  int            `json:"checked"`
	Bytes    int64          `json:"bytes"`
	Resumed  bool           `json:"resumed"`
	Problems []scrubFinding `json:"problems"`
	Error    string         `json:"error,omitempty"`
}

type scrubFinding struct {
	File        string `json:"file"`
	Module      string `json:"module"`
	Outcome     string `json:"outcome"`
	Published   bool   `json:"published"`
	Removed     bool   `json:"removed"`
	Quarantined bool   `json:"quarantined"`
	Error       string `json:"error"`
}

// serveScrub answers POST /-/scrub: a scrub runs now (or resumes), and
// its report is the answer; 409 if one is running.
func (p *Proxy) serveScrub(w http.ResponseWriter, r *http.Request) {
	rep, err := p.ScrubNow(r.Context())
	switch {
	case errors.Is(err, ErrScrubRunning):
		p.writeFailure(w, failed(failConflict, "%w", err))
		return
	case rep == nil:
		p.writeFailure(w, failed(failNotImplemented, "%w", err))
		return
	}
	res := scrubResult{Checked: rep.Checked, Bytes: rep.Bytes, Resumed: rep.Resumed, Problems: []scrubFinding{}}
	if err != nil {
		res.Error = err.Error()
	}
	for _, pr := range rep.Problems {
		res.Problems = append(res.Problems, scrubFinding{File: pr.Name, Module: pr.Path + "@" + pr.Version, Outcome: string(pr.Outcome),
			Published: pr.Published, Removed: pr.Removed, Quarantined: pr.Quarantined, Error: pr.Err.Error()})
	}
	writeJSON(w, http.StatusOK, res)
}

// writeJSON answers v as indented JSON, never to be cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.MarshalIndent(v, "", "\t")
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body)
}
