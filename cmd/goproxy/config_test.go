package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, filepath.Join(t.TempDir(), "goproxy.yaml"), "addr: 127.0.0.1:1111\nlog:\n  level: debug\n")
	for _, tc := range []struct {
		name  string
		args  []string
		env   []string
		want  string
		level string
	}{
		{"defaults", nil, nil, "localhost:8080", "info"},
		{"the file over the defaults", []string{"-config", file}, nil, "127.0.0.1:1111", "debug"},
		{"the config file from the environment", nil, []string{"GOPROXY_CONFIG=" + file}, "127.0.0.1:1111", "debug"},
		{"the environment over the file", []string{"-config", file}, []string{"GOPROXY_ADDR=127.0.0.1:2222"}, "127.0.0.1:2222", "debug"},
		{"flags over the environment", []string{"-config", file, "-addr", "127.0.0.1:3333", "-log-level", "warn"},
			[]string{"GOPROXY_ADDR=127.0.0.1:2222", "GOPROXY_LOG_LEVEL=error"}, "127.0.0.1:3333", "warn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			cfg, _, err := loadConfig(o, lookupIn(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Addr != tc.want || cfg.Log.Level != tc.level {
				t.Errorf("addr %q, level %q; want %q, %q", cfg.Addr, cfg.Log.Level, tc.want, tc.level)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "goproxy.yaml"), `addr: nowhere
log: {level: loud, format: xml}
users:
  alice: {password_env: UNSET, password_file: /also}
repositories:
  - prefix: /healthz
  - prefix: /a/
    type: hosted
  - prefix: /b
    type: group
    cache: `+dir+`/same
    hosted: `+dir+`/same
`)
	cfg, src := loadFile(t, file, nil)
	err := cfg.Validate(src, nil)
	if err == nil {
		t.Fatal("Validate passed")
	}
	for _, want := range []string{
		`goproxy.yaml:1: addr: "nowhere" is not a listen address`,
		`goproxy.yaml:2: log.level: "loud" is not debug`,
		`goproxy.yaml:2: log.format: "xml" is not text or json`,
		`goproxy.yaml:4: users.alice: password: give the environment variable or the file, not both`,
		`goproxy.yaml:6: repositories[0].prefix: /healthz is the server's own`,
		`goproxy.yaml:7: repositories[1].prefix: "/a/" is not a path prefix`,
		`goproxy.yaml:7: repositories[1].hosted: a hosted repository needs the directory of its published versions`,
		`goproxy.yaml:12: repositories[2].hosted: `,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
}

func TestPrintConfigRedactsSecrets(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "goproxy.yaml"), `goproxy: https://bob:upstream-secret@proxy.example.com,direct
cache: `+dir+`/cache
users:
  alice: {password_env: ALICE_PASSWORD}
`)
	var out bytes.Buffer
	err := run(context.Background(), []string{"-config", file, "-print-config"}, []string{"ALICE_PASSWORD=alice-secret"}, nil, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"upstream-secret", "alice-secret"} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("-print-config shows %q:\n%s", secret, out.String())
		}
	}
	if !strings.Contains(out.String(), "https://bob:xxxxx@proxy.example.com") || !strings.Contains(out.String(), "password_env: ALICE_PASSWORD") {
		t.Errorf("-print-config:\n%s", out.String())
	}
}

// TestRunInProcess serves with run, as main does, until the context ends.
func TestRunInProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-cache", t.TempDir(), "-log-format", "json"},
			[]string{"GOPROXY=off", "TMPDIR=" + t.TempDir()}, nil, io.Discard, w)
		w.Close()
	}()
	lines := bufio.NewScanner(r)
	var url string
	for url == "" && lines.Scan() {
		var m map[string]any
		json.Unmarshal(lines.Bytes(), &m)
		if m["msg"] == "serving" {
			url, _ = m["url"].(string)
		}
	}
	go io.Copy(io.Discard, r)
	if url == "" {
		t.Fatalf("not serving: %v", <-done)
	}
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

// TestExampleConfigIsValid checks the complete example of the README,
// its secrets and directories given, and that the README shows it whole.
func TestExampleConfigIsValid(t *testing.T) {
	example, err := os.ReadFile("goproxy.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, example) {
		t.Error("the README does not show cmd/goproxy/goproxy.example.yaml as it is")
	}
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	os.Mkdir(creds, 0o700)
	writeFile(t, filepath.Join(creds, "alice-password"), "alice-pw\n")
	writeFile(t, filepath.Join(creds, "team-backup-password"), "backup-pw\n")
	vulndb := filepath.Join(dir, "lib", "goproxy", "vulndb")
	os.MkdirAll(vulndb, 0o755)
	writeFile(t, filepath.Join(vulndb, "GO-2099-0001.json"), `{"id": "GO-2099-0001", "affected": []}`)
	config := strings.NewReplacer("/run/credentials/goproxy.service", creds, "/var/", dir+"/").Replace(string(example))
	file := writeFile(t, filepath.Join(dir, "goproxy.yaml"), config)
	env := []string{"GOPROXY_CI_TOKEN=ci", "TEAM_PROXY_TOKEN=team", "TEAM_API_KEY=key"}
	cfg, src := loadFile(t, file, env)
	if err := cfg.Validate(src, env); err != nil {
		t.Error(err)
	}
}

// TestValidateRefusesNestedDirectories checks that stores are refused
// when one directory is within another, not only when they are the same:
// the outer cache's walks, eviction and scrubs would take the inner
// store's files for its own.
func TestValidateRefusesNestedDirectories(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, yaml, want string
	}{
		{"a cache within another repository's", `cache: ` + dir + `/caches
repositories:
  - {name: a, prefix: /a, cache: ` + dir + `/caches}
  - {name: b, prefix: /b}
`, "repositories[1].cache: " + dir + "/caches/b and the cache of repositories[0]"},
		{"a hosted store within another repository's cache", `repositories:
  - {name: a, prefix: /a, cache: ` + dir + `/a}
  - {name: b, prefix: /b, type: hosted, cache: ` + dir + `/b, hosted: ` + dir + `/a/published}
`, "repositories[1].hosted: "},
		{"a hosted store within its own cache", `cache: ` + dir + `/c
type: group
hosted: ` + dir + `/c/published
`, "hosted: " + dir + "/c/published is, or nests with, the cache"},
		{"a quarantine within the cache", `cache: ` + dir + `/c
scrub: {quarantine: ` + dir + `/c/q}
`, "scrub.quarantine: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, filepath.Join(t.TempDir(), "goproxy.yaml"), tt.yaml)
			cfg, src := loadFile(t, file, nil)
			err := cfg.Validate(src, []string{"GOPROXY=off"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate: %v\nwant %q", err, tt.want)
			}
		})
	}
	// Siblings with a common prefix of their names do not nest.
	if nestedDirs(dir+"/cache", dir+"/cache2") {
		t.Error("nestedDirs: siblings taken for nested")
	}
}

// TestRedactURLHidesTokensGivenAsUserNames: a token is often a URL's
// user name alone (https://TOKEN@host); it is hidden like a password, in
// -print-config, /readyz and the status page.
func TestRedactURLHidesTokensGivenAsUserNames(t *testing.T) {
	for in, want := range map[string]string{
		"https://bob:secret@proxy.example.com/x":                              "https://bob:xxxxx@proxy.example.com/x",
		"https://tok3n@proxy.example.com/x,https://other.example":             "https://xxxxx@proxy.example.com/x,https://other.example",
		"goproxy: https://tok3n@a.example,direct\nurl: https://b.example/p@v": "goproxy: https://xxxxx@a.example,direct\nurl: https://b.example/p@v",
		"https://proxy.example.com/x":                                         "https://proxy.example.com/x",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEveryDownloadOptionIsReachable: the download engine's settings
// the library offers are keys of a repository's download section, the
// negative values that turn features off included.
func TestEveryDownloadOptionIsReachable(t *testing.T) {
	dir := t.TempDir()
	pl := planOf(t, dir, `cache: `+dir+`/cache
goproxy: "off"
download: {retry_budget: -1, down_after: -1s, header_timeout: 7s, body_idle_timeout: 8s, partial_bytes: -1}
`)
	d := pl.repos[0].spec.Download
	if d.RetryBudget != -1 || d.DownAfter != -time.Second || d.HeaderTimeout != 7*time.Second || d.BodyIdleTimeout != 8*time.Second || d.PartialBytes != -1 {
		t.Errorf("download options %+v", d)
	}
}
