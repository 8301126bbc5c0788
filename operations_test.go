package goproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
)

// TestOperationEndpointsArePOSTsForAdministrators checks the method and
// the permission every operation endpoint requires.
func TestOperationEndpointsArePOSTsForAdministrators(t *testing.T) {
	p := newTestProxy(t, "off")
	var asked []Operation
	p.Authorize = func(r *http.Request, op Operation, modulePath string) error {
		asked = append(asked, op)
		if r.Header.Get("Authorization") == "" {
			return ErrUnauthenticated
		}
		if op == OpAdminister && r.Header.Get("Authorization") != "Bearer admin" {
			return errors.New("not an administrator")
		}
		return nil
	}
	for _, path := range []string{fillPath, exportPath, importPath, scrubPath} {
		if w := do(p, "GET", path, "Authorization", "Bearer admin"); w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "POST" {
			t.Errorf("GET %s: %d %v", path, w.Code, w.Header())
		}
		if w := do(p, "POST", path); w.Code != http.StatusUnauthorized {
			t.Errorf("POST %s without credentials: %d %s", path, w.Code, w.Body)
		}
		if w := do(p, "POST", path, "Authorization", "Bearer reader"); w.Code != http.StatusForbidden {
			t.Errorf("POST %s by a reader: %d %s", path, w.Code, w.Body)
		}
	}
	for _, op := range asked {
		if op != OpAdminister {
			t.Errorf("asked for %v", op)
		}
	}
	if w := do(p, "POST", scrubPath, "Authorization", "Bearer admin"); w.Code != http.StatusOK {
		t.Errorf("POST %s by an administrator: %d %s", scrubPath, w.Code, w.Body)
	}
}

// TestFillEndpointFillsFromAListAndReportsFailures posts a list with a
// version the upstream lacks: the others are fetched, the missing one is
// reported with the upstream's reason, and a second post finds all cached.
func TestFillEndpointFillsFromAListAndReportsFailures(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := newTestProxy(t, up.URL)
	list := "# what the build needs\nexample.com/mod000@v1.1.0\nexample.com/mod001 v1.0.0\nexample.com/mod002@v1.9.9\nexample.com/root\n"
	w := post(p, fillPath, []byte(list))
	var res fillResult
	if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || w.Code != http.StatusOK {
		t.Fatalf("%d %s: %v", w.Code, w.Body, err)
	}
	if len(res.Fetched) != 2 || len(res.Failed) != 1 || res.Failed[0].Item != "example.com/mod002@v1.9.9" ||
		!strings.Contains(res.Failed[0].Error, "not found") || len(res.Skipped) != 1 {
		t.Errorf("%s", w.Body)
	}
	testwait.For(t, p.flights.idle)
	w = post(p, fillPath+"?input=list", []byte(list))
	if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || len(res.Cached) != 2 || len(res.Fetched) != 0 {
		t.Errorf("the second fill: %s", w.Body)
	}
	if w := post(p, fillPath+"?input=yaml", []byte(list)); w.Code != http.StatusBadRequest {
		t.Errorf("an unknown input: %d %s", w.Code, w.Body)
	}
	if w := post(p, fillPath+"?input=go.sum", []byte("example.com/mod000 v1.1.0\n")); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "go.sum:1") {
		t.Errorf("a malformed go.sum: %d %s", w.Code, w.Body)
	}
}

func TestGuessFillInput(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"go.mod after a comment", "// the app\nmodule example.com/app\n\ngo 1.21\n", "go.mod"},
		{"go.sum", "example.com/a v1.0.0 h1:abc=\nexample.com/a v1.0.0/go.mod h1:def=\n", "go.sum"},
		{"CycloneDX", "\n{\"bomFormat\": \"CycloneDX\"}", "sbom.json"},
		{"go list -m all", "example.com/app\nexample.com/a v1.0.0\n", "list"},
		{"empty", "", "list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := guessFillInput([]byte(tc.data)); got != tc.want {
				t.Errorf("%q: %s, want %s", tc.data, got, tc.want)
			}
		})
	}
}

// TestFillEndpointIgnoresAJournalPlantedInTheTempDir: the endpoint's
// journals live in TempDir, often shared; one another user created first
// under the name a plan's journal would have, claiming its items done,
// must not make the fill skip them.
func TestFillEndpointIgnoresAJournalPlantedInTheTempDir(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	p := newTestProxy(t, up.URL)
	list := "example.com/mod000@v1.1.0\nexample.com/mod001@v1.0.0\n"
	plan, err := FillPlanFromList([]byte(list))
	if err != nil {
		t.Fatal(err)
	}
	// The names a plan's journal had, or might have: its digest unkeyed.
	h := sha256.New()
	content := fillJournalHeader
	for _, it := range plan.Items {
		fmt.Fprintf(h, "%s %s %d\n", it.Path, it.Version, it.Files)
		content += formatJournalLine(it)
	}
	digest := hex.EncodeToString(h.Sum(nil))
	for _, n := range []int{24, 32, 64} {
		if err := os.WriteFile(filepath.Join(p.TempDir, "goproxy-fill-"+digest[:n]+".journal"), []byte(content), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	w := post(p, fillPath, []byte(list))
	var res fillResult
	if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || w.Code != http.StatusOK {
		t.Fatalf("%d %s: %v", w.Code, w.Body, err)
	}
	if len(res.Fetched) != 2 || len(res.Resumed) != 0 {
		t.Errorf("a planted journal was believed: %s", w.Body)
	}
}

// TestImportEndpointNamesTheVersionsTheAdmissionPolicyRefused: a bundle
// that passes its checks is stored but for what the admission policy
// refuses, and the answer names each of those with the reason.
func TestImportEndpointNamesTheVersionsTheAdmissionPolicyRefused(t *testing.T) {
	vs := moduletest.Graph(10)
	up := moduletest.NewServer(vs)
	defer up.Close()
	src := newTestProxy(t, up.URL)
	list := "example.com/mod000@v1.1.0\nexample.com/mod001@v1.0.0\n"
	w := post(src, exportPath+"?input=list", []byte(list))
	if w.Code != http.StatusOK {
		t.Fatalf("export: %d %s", w.Code, w.Body)
	}
	bundle := w.Body.Bytes()

	dst := newTestProxy(t, "off")
	policy := &AdmissionPolicy{Deny: []AdmissionRule{{Match: "example.com/mod001", Reason: "not in this building"}}}
	dst.Admission = policy.Decide
	w = post(dst, importPath, bundle)
	var res importResult
	if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || w.Code != http.StatusOK {
		t.Fatalf("import: %d %s: %v", w.Code, w.Body, err)
	}
	if len(res.Refused) != 1 || res.Refused[0].Item != "example.com/mod001@v1.0.0" || !strings.Contains(res.Refused[0].Error, "not in this building") {
		t.Errorf("the answer does not name the refused version: %s", w.Body)
	}
	for _, name := range cachedNames(dst.Cacher) {
		if strings.HasPrefix(name, "example.com/mod001/") {
			t.Errorf("a refused version was stored: %s", name)
		}
	}
}
