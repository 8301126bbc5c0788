package goproxy

import (
	"encoding/json"
	"errors"
	"net/http"
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
