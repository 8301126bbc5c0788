package goproxy

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// The SBOM generators the fill-from-SBOM tests run. TestMain clears GO*
// variables, hence names without that prefix.
const (
	// cyclonedxGomodVar names the cyclonedx-gomod binary (CycloneDX).
	cyclonedxGomodVar = "TEST_CYCLONEDX_GOMOD"
	// syftVar names the syft binary (SPDX 2.3 and CycloneDX).
	syftVar = "TEST_SYFT"
	// requireSBOMToolsVar, when set (.ci/run sets it), makes a missing
	// generator fail the tests instead of skipping them.
	requireSBOMToolsVar = "TEST_REQUIRE_SBOM_TOOLS"
)

// sbomTool finds a generator through its variable or on PATH.
func sbomTool(t *testing.T, name, envVar string) string {
	t.Helper()
	if p := os.Getenv(envVar); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	msg := name + " not found: set " + envVar + " or put it on PATH (.ci/run installs it)"
	if os.Getenv(requireSBOMToolsVar) != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// sbomModule makes a main module importing packages of three graph
// modules (one of them with upper case in its path) and fills an
// isolated module cache for it, then turns GOPROXY off: the generators
// must work from the cache alone. It returns the environment and what
// "go mod download all" needs in that module.
func sbomModule(t *testing.T) (*gocmdtest.Env, *FillPlan) {
	t.Helper()
	vs := moduletest.Graph(12)
	up := moduletest.NewServer(vs)
	defer up.Close()
	gomod := "module example.com/app\n\ngo 1.21\n\nrequire (\n\texample.com/mod000 v1.1.0\n\texample.com/mod005 v1.0.0\n\t" +
		moduletest.UpperCasePath + " v1.1.0\n)\n"
	e := gocmdtest.New(t)
	e.Set("GOPROXY", up.URL)
	e.WriteGoMod([]byte(gomod))
	main := "package main\n\nimport (\n\tmod \"" + moduletest.UpperCasePath + "\"\n\t\"example.com/mod000\"\n\t\"example.com/mod005\"\n)\n\n" +
		"func main() { println(mod000.Version, mod005.Version, mod.Version) }\n"
	if err := os.WriteFile(filepath.Join(e.Dir, "main.go"), []byte(main), 0o666); err != nil {
		t.Fatal(err)
	}
	e.MustRun(t, "mod", "download", "all")
	e.MustRun(t, "mod", "tidy")
	e.MustRun(t, "build", "-o", "app", ".")

	plan, err := FillPlanFromGoMod(context.Background(), []byte(gomod), func(ctx context.Context, path, version string) ([]byte, error) {
		for _, v := range vs {
			if v.Path == path && v.Version == version {
				return v.Mod, nil
			}
		}
		return nil, fs.ErrNotExist
	})
	if err != nil {
		t.Fatal(err)
	}

	// Offline from here on: no proxy, and any HTTP a generator attempts
	// goes to a port nothing listens on.
	e.Set("GOPROXY", "off")
	e.Set("GOFLAGS", "-mod=mod -modcacherw")
	dead := closedPort(t)
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"} {
		e.Set(k, "http://"+dead)
	}
	e.Set("SYFT_CHECK_FOR_APP_UPDATE", "false")
	return e, plan
}

// runTool runs a generator in the module and returns the SBOM it wrote.
func runTool(t *testing.T, e *gocmdtest.Env, out string, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = e.Dir
	cmd.Env = e.Vars
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.Bytes())
	}
	t.Logf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	data, err := os.ReadFile(filepath.Join(e.Dir, out))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkSBOMPlan checks a plan made from a generator's SBOM: it names the
// three imported modules, with the case of their paths kept, and nothing
// a fill could not fetch for the module (everything is in the go.mod's
// download set), and it skips the entries it names.
func checkSBOMPlan(t *testing.T, sbom []byte, want *FillPlan, mustSkip ...string) {
	t.Helper()
	plan, err := FillPlanFromSBOM(sbom)
	if err != nil {
		t.Fatalf("%v\n%s", err, sbom)
	}
	t.Logf("items %q, skipped %v", itemStrings(plan), plan.Skipped)
	downloads := map[string]bool{}
	for _, it := range want.Items {
		if it.Files == FillModule {
			downloads[it.String()] = true
		}
	}
	got := itemStrings(plan)
	for _, it := range got {
		if !downloads[it] {
			t.Errorf("the plan names %s, which go mod download all does not need", it)
		}
	}
	for _, it := range []string{"example.com/mod000@v1.1.0", "example.com/mod005@v1.0.0", moduletest.UpperCasePath + "@v1.1.0"} {
		if !slices.Contains(got, it) {
			t.Errorf("the plan lacks %s, which the program imports", it)
		}
	}
	for _, s := range mustSkip {
		if !slices.ContainsFunc(plan.Skipped, func(sk FillSkip) bool { return strings.Contains(sk.Entry, s) }) {
			t.Errorf("no skipped entry mentions %q", s)
		}
	}
}

func TestFillPlanFromCycloneDXOfCyclonedxGomod(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and an SBOM generator")
	}
	bin := sbomTool(t, "cyclonedx-gomod", cyclonedxGomodVar)
	e, plan := sbomModule(t)
	t.Run("mod", func(t *testing.T) {
		sbom := runTool(t, e, "mod.cdx.json", bin, "mod", "-json", "-licenses=false", "-output", "mod.cdx.json", ".")
		checkSBOMPlan(t, sbom, plan, "example.com/app")
	})
	t.Run("app with the standard library", func(t *testing.T) {
		// app names the main module's version after its git commit.
		commit(t, e)
		sbom := runTool(t, e, "app.cdx.json", bin, "app", "-json", "-std", "-packages", "-main", ".", "-output", "app.cdx.json", ".")
		checkSBOMPlan(t, sbom, plan, "example.com/app", "pkg:golang/std@")
	})
	t.Run("bin", func(t *testing.T) {
		sbom := runTool(t, e, "bin.cdx.json", bin, "bin", "-json", "-std", "-output", "bin.cdx.json", "app")
		checkSBOMPlan(t, sbom, plan, "example.com/app", "pkg:golang/std@")
	})
}

func TestFillPlanFromSPDXAndCycloneDXOfSyft(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command and an SBOM generator")
	}
	bin := sbomTool(t, "syft", syftVar)
	e, plan := sbomModule(t)
	for _, tc := range []struct {
		name, source, format string
		skipped              []string
	}{
		{"SPDX of the module directory", "dir:.", "spdx-json", nil},
		{"SPDX of the binary", "file:app", "spdx-json", []string{"stdlib", "example.com/app"}},
		{"CycloneDX of the binary", "file:app", "cyclonedx-json", []string{"stdlib", "example.com/app"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := strings.NewReplacer(":", "-", ".", "").Replace(tc.source) + "." + tc.format
			sbom := runTool(t, e, out, bin, "scan", tc.source, "-q", "-o", tc.format+"="+out)
			checkSBOMPlan(t, sbom, plan, tc.skipped...)
		})
	}
}

// commit makes the module directory a git repository with one commit.
func commit(t *testing.T, e *gocmdtest.Env) {
	t.Helper()
	for _, args := range [][]string{
		{"init", "-q"},
		{"add", "go.mod", "go.sum", "main.go"},
		{"-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "app"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Dir = e.Dir
		cmd.Env = e.Vars
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
