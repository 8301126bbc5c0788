package s3cacher

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/internal/gocmdtest"
	"github.com/goproxy-team/goproxy/internal/moduletest"
	"github.com/goproxy-team/goproxy/internal/testwait"
	"github.com/goproxy-team/goproxy/s3cacher/internal/miniotest"
)

// The replica tests run proxies as separate processes, the way they run
// in production: each with its own memory and in-process flight group, so
// that only the bucket can coordinate them, and each can be killed with
// SIGKILL. A replica is this test binary run again with replicaEnv set:
// TestMain then serves a goproxy.Proxy over an s3cacher.Cacher instead of
// running tests, with the same two packages cmd/goproxy would use, and
// without building another module's binary.

// replicaEnv carries a replica's configuration, as JSON.
const replicaEnv = "S3CACHER_TEST_REPLICA"

// replicaConfig is what a replica serves.
type replicaConfig struct {
	Name     string
	Endpoint string
	Bucket   string
	Prefix   string
	Upstream string
	LeaseTTL time.Duration
	TempDir  string
}

// runReplica serves a proxy as cfg says, printing its URL on the first
// line of its standard output, until it is killed.
func runReplica(cfg string) int {
	var rc replicaConfig
	if err := json.Unmarshal([]byte(cfg), &rc); err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		return 2
	}
	c := &Cacher{
		Endpoint: rc.Endpoint, Bucket: rc.Bucket, Prefix: rc.Prefix, Region: "us-east-1",
		AccessKeyID: miniotest.AccessKey, SecretAccessKey: miniotest.SecretKey,
		LeaseTTL: rc.LeaseTTL, Holder: rc.Name,
	}
	p := &goproxy.Proxy{
		Cacher:    c,
		Env:       []string{"GOPROXY=" + rc.Upstream, "GOSUMDB=off"},
		TempDir:   rc.TempDir,
		Transport: http.DefaultTransport, // loopback only, as TestMain made it
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if err := p.Init(); err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		return 2
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		return 2
	}
	fmt.Printf("http://%s\n", l.Addr())
	fmt.Fprintln(os.Stderr, "replica:", http.Serve(l, p))
	return 1
}

// replica is a running replica process.
type replica struct {
	name string
	url  string
	cmd  *exec.Cmd
	logs *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startReplica starts a replica and waits for its URL. It is killed when
// t ends; its log is shown if t failed.
func startReplica(t *testing.T, cfg replicaConfig) *replica {
	t.Helper()
	data, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), replicaEnv+"="+string(data))
	r := &replica{name: cfg.Name, cmd: cmd, logs: &lockedBuffer{}}
	cmd.Stderr = r.logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("log of %s:\n%s", r.name, r.logs)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("%s did not start: %v\n%s", cfg.Name, err, r.logs)
	}
	r.url = strings.TrimSpace(line)
	return r
}

// fetchCounter counts, per path, the fetches an upstream starts: requests
// with no Range or one from the first byte (the download engine asks for
// the rest of a large file in further ranges of the same fetch).
type fetchCounter struct {
	h  http.Handler
	mu sync.Mutex
	n  map[string]int
}

func (f *fetchCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rg := r.Header.Get("Range"); rg == "" || strings.HasPrefix(rg, "bytes=0-") {
		f.mu.Lock()
		f.n[r.URL.Path]++
		f.mu.Unlock()
	}
	f.h.ServeHTTP(w, r)
}

func (f *fetchCounter) fetches(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[path]
}

func TestReplicasOnOneBucketFetchEachFileOnceAndSurviveAKilledReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three proxy processes, 200 clients and three go commands")
	}
	s, bucket := sharedServer(t)
	prefix := fmt.Sprintf("t%d", prefixes.Add(1))
	vs := moduletest.Graph(30)
	large, err := moduletest.LargeVersion(t.TempDir(), "example.com/large", "v1.0.0", 30<<20)
	if err != nil {
		t.Fatal(err)
	}
	killed, err := moduletest.LargeVersion(t.TempDir(), "example.com/killed", "v1.0.0", 30<<20)
	if err != nil {
		t.Fatal(err)
	}
	up := moduletest.NewServer(append(vs, large, killed))
	defer up.Close()
	// The zip of the kill test comes slowly, so that a replica can be
	// killed in the middle of fetching it.
	killedPath := "/" + escapedName(killed, ".zip")
	slow := &moduletest.Faults{BytesPerSecond: 2 << 20, Match: func(r *http.Request) bool { return r.URL.Path == killedPath }}
	counter := &fetchCounter{h: slow.Wrap(up.Handler()), n: map[string]int{}}
	upSrv := httptest.NewServer(counter)
	defer upSrv.Close()

	// Short, so that the kill test takes over soon, yet long enough for
	// renewals on a machine this test keeps busy.
	const ttl = 5 * time.Second
	var rs []*replica
	for i := range 3 {
		rs = append(rs, startReplica(t, replicaConfig{
			Name: fmt.Sprintf("replica-%d", i), Endpoint: s.Endpoint, Bucket: bucket, Prefix: prefix,
			Upstream: upSrv.URL, LeaseTTL: ttl, TempDir: t.TempDir(),
		}))
	}
	observer := cacherFor(t, s, bucket, prefix)

	type file struct {
		path string
		sum  [sha256.Size]byte
	}
	var files []file
	for _, v := range vs {
		for _, ext := range []string{".info", ".mod", ".zip"} {
			var body []byte
			switch ext {
			case ".info":
				body = v.Info()
			case ".mod":
				body = v.Mod
			default:
				body = upstreamZip(t, v)
			}
			files = append(files, file{"/" + escapedName(v, ext), sha256.Sum256(body)})
		}
	}

	t.Run("200 cold clients and three go commands", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}, Timeout: 5 * time.Minute}
		var failures atomic.Int64
		var answers atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		const clients, perClient = 200, 20
		for i := range clients {
			wg.Go(func() {
				<-start
				r := rs[i%len(rs)]
				for k := range perClient {
					f := files[(i*7+k*13)%len(files)]
					resp, err := client.Get(r.url + f.path)
					if err != nil {
						failures.Add(1)
						t.Errorf("client %d: GET %s from %s: %v", i, f.path, r.name, err)
						continue
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != http.StatusOK || sha256.Sum256(body) != f.sum {
						failures.Add(1)
						t.Errorf("client %d: GET %s from %s: %s, %d bytes, %v; want the upstream's bytes", i, f.path, r.name, resp.Status, len(body), err)
						continue
					}
					answers.Add(1)
				}
			})
		}
		all := append(append([]*moduletest.Version(nil), vs...), large)
		for i, r := range rs {
			wg.Go(func() {
				gocmd := gocmdtest.New(t)
				gocmd.Set("GOPROXY", r.url)
				gocmd.WriteGoMod(moduletest.RootGoMod(all))
				<-start
				out, stderr, err := gocmd.Run("mod", "download", "-json")
				if err != nil {
					failures.Add(1)
					t.Errorf("go command %d through %s: %v\n%s", i, r.name, err, stderr)
					return
				}
				dec := json.NewDecoder(strings.NewReader(out))
				n := 0
				for dec.More() {
					var m struct{ Path, Version, Zip, Error string }
					if err := dec.Decode(&m); err != nil {
						t.Fatal(err)
					}
					n++
					want := upstreamZipOf(t, all, m.Path, m.Version)
					if got, err := os.ReadFile(m.Zip); err != nil || !bytes.Equal(got, want) {
						failures.Add(1)
						t.Errorf("go command %d: %s@%s: the zip differs from the upstream's (%v %s)", i, m.Path, m.Version, err, m.Error)
					}
				}
				if n < 30 {
					t.Errorf("go command %d downloaded %d modules", i, n)
				}
			})
		}
		began := time.Now()
		close(start)
		wg.Wait()
		t.Logf("%d answers to 200 clients and three go commands in %v", answers.Load(), time.Since(began).Round(time.Millisecond))
		if n := failures.Load(); n > 0 {
			t.Fatalf("%d failures", n)
		}
		// One fetch per file between the three replicas: every immutable
		// file the clients and the go commands asked for.
		paths := []string{"/" + escapedName(large, ".zip"), "/" + escapedName(large, ".mod")}
		for _, f := range files {
			paths = append(paths, f.path)
		}
		var fetched, extra int
		for _, path := range paths {
			n := counter.fetches(path)
			fetched += n
			if n > 1 {
				extra += n - 1
				t.Errorf("%s: fetched %d times from the upstream by three replicas", path, n)
			}
		}
		t.Logf("%d files fetched from the upstream %d times (%.2f fetches per file)", len(paths), fetched, float64(fetched)/float64(len(paths)))

		// The index feed, kept in the bucket and appended to by whichever
		// replica stored a version's .info, lists every version once, the
		// same through every replica.
		want := map[string]bool{}
		for _, v := range append(vs, large) {
			if counter.fetches("/"+escapedName(v, ".info")) > 0 {
				want[v.Path+"@"+v.Version] = true
			}
		}
		for _, r := range rs {
			var got map[string]int
			var lines int
			testwait.Within(t, time.Minute, func() bool {
				resp, err := http.Get(r.url + "/index")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				got, lines = map[string]int{}, 0
				dec := json.NewDecoder(resp.Body)
				for dec.More() {
					var e goproxy.IndexEntry
					if err := dec.Decode(&e); err != nil {
						t.Fatal(err)
					}
					got[e.Path+"@"+e.Version]++
					lines++
				}
				return len(got) >= len(want)
			}, r.name, "'s /index listing every version: ", " (", &lines, " lines)")
			for k := range want {
				if got[k] != 1 {
					t.Errorf("%s's /index lists %s %d times", r.name, k, got[k])
				}
			}
			if lines != len(want) {
				t.Errorf("%s's /index has %d entries for %d versions", r.name, lines, len(want))
			}
		}
	})

	t.Run("a replica killed in the middle of a large download", func(t *testing.T) {
		name := strings.TrimPrefix(killedPath, "/")
		want, err := os.ReadFile(killed.ZipFile)
		if err != nil {
			t.Fatal(err)
		}
		// Watch the bucket throughout: whatever is there under the zip's
		// name is the whole zip.
		stopWatch := make(chan struct{})
		watched := make(chan int)
		go func() {
			seen := 0
			for {
				select {
				case <-stopWatch:
					watched <- seen
					return
				case <-time.After(20 * time.Millisecond):
				}
				if fi, err := observer.Stat(t.Context(), name); err == nil {
					seen++
					if fi.Size() != int64(len(want)) {
						t.Errorf("the bucket holds %d bytes of a %d-byte zip", fi.Size(), len(want))
					}
				}
			}
		}()
		victim, survivor := rs[0], rs[1]
		slow.Reset() // from now on, only this zip's bytes are counted
		errc := make(chan error, 1)
		go func() {
			resp, err := http.Get(victim.url + killedPath)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					err = fmt.Errorf("answered %s", resp.Status)
				}
			}
			errc <- err
		}()
		testwait.Within(t, time.Minute, func() bool { return slow.BodyBytes() >= 6<<20 }, "the victim's download under way")
		if err := victim.cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		t.Logf("killed %s after the upstream sent %d MiB of the zip", victim.name, slow.BodyBytes()>>20)
		if err := <-errc; err == nil {
			t.Fatal("the client of the killed replica got an answer")
		}
		// The client tries again through another replica, which waits for
		// the dead replica's lease to lapse and fetches the zip itself.
		began := time.Now()
		resp, err := http.Get(survivor.url + killedPath)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
			t.Fatalf("the retry through %s: %s, %d bytes, %v; want the whole zip", survivor.name, resp.Status, len(got), err)
		}
		t.Logf("the retry through %s got the whole zip after %v", survivor.name, time.Since(began).Round(time.Millisecond))
		testwait.Within(t, time.Minute, func() bool { _, err := observer.Stat(t.Context(), name); return err == nil }, "the zip stored")
		close(stopWatch)
		<-watched
		f, err := observer.Get(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(stored, want) {
			t.Errorf("the bucket's zip: %d bytes, %v; not the upstream's", len(stored), err)
		}
		if n := counter.fetches(killedPath); n != 2 {
			t.Errorf("the zip was fetched %d times: want twice, by the killed replica and by the one that took over", n)
		}
		// And the third replica serves it from the bucket.
		resp, err = http.Get(rs[2].url + killedPath)
		if err != nil {
			t.Fatal(err)
		}
		got, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, want) {
			t.Errorf("the third replica served %d bytes", len(got))
		}
		if n := counter.fetches(killedPath); n != 2 {
			t.Errorf("after the third replica served it, the zip was fetched %d times", n)
		}
		// The dead replica's lease was taken over, then given up: the
		// bucket keeps no lease of a finished fetch.
		defer func() {
			if t.Failed() {
				for _, k := range keys(t, observer, leaseDir) {
					rec, _, age, err := observer.readLease(t.Context(), observer.prefix+k)
					t.Logf("left in the bucket: %s: %+v, %v old %v", k, rec, age, err)
				}
			}
		}()
		var left []string
		testwait.Within(t, time.Minute, func() bool { left = keys(t, observer, leaseDir); return len(left) == 0 }, "no lease left in the bucket: ", &left)
	})
}

// upstreamZipOf is the zip of path@version among vs.
func upstreamZipOf(t *testing.T, vs []*moduletest.Version, path, version string) []byte {
	for _, v := range vs {
		if v.Path == path && v.Version == version {
			return upstreamZip(t, v)
		}
	}
	t.Fatalf("%s@%s is not among the upstream's versions", path, version)
	return nil
}
