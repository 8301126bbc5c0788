package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"

	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// slowUpstream serves a large version of path@version whose zip comes at
// bytesPerSecond, and the small modules of moduletest.Graph(10) at full
// speed. It returns the upstream's URL.
func slowUpstream(t *testing.T, path, version string, size, bytesPerSecond int64) string {
	t.Helper()
	large, err := moduletest.LargeVersion(t.TempDir(), path, version, size)
	if err != nil {
		t.Fatal(err)
	}
	up := moduletest.NewServer(append(moduletest.Graph(10), large))
	t.Cleanup(up.Close)
	faults := &moduletest.Faults{BytesPerSecond: bytesPerSecond, Match: moduletest.MatchSuffix(path + "/@v/" + version + ".zip")}
	slow := httptest.NewServer(faults.Wrap(up.Handler()))
	t.Cleanup(slow.Close)
	return slow.URL
}

// getInBackground GETs url and returns a channel that gets the error (or
// nil) once the whole body is read.
func getInBackground(url string) <-chan error {
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(url)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("%s: %s", url, resp.Status)
			}
		}
		done <- err
	}()
	return done
}

// TestProgressBarsOnATerminal runs the server on a pseudo-terminal and
// downloads a large zip slowly through it: the screen shows a bar with
// the module@version and a percentage at the bottom, log lines written
// meanwhile appear above it, and the bar goes when the download ends.
func TestProgressBarsOnATerminal(t *testing.T) {
	bin := buildServer(t)
	const path, version = "example.com/large", "v1.0.0"
	upstream := slowUpstream(t, path, version, 4<<20, 512<<10)
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-cache", filepath.Join(t.TempDir(), "cache"))
	cmd.Env = serverEnv(t, "TERM=xterm", "GOPROXY="+upstream, "GOSUMDB=off")
	term, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	scr := newScreen(40, 160)
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := term.Read(buf)
			scr.write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		term.Close()
		<-read
		if t.Failed() {
			t.Logf("the screen:\n%s", scr.text())
		}
	})

	serving := scr.waitFor(t, 60*time.Second, regexp.MustCompile(`msg=serving url=(http://\S+)`))
	base := serving[1]
	download := getInBackground(base + "/" + path + "/@v/" + version + ".zip")

	bar := regexp.MustCompile(regexp.QuoteMeta(path+"@"+version) + `\s+(\d+) % \[[=>-]+\]`)
	scr.waitFor(t, 30*time.Second, bar)
	// A log line written while the bar is shown: it must scroll above it.
	req, _ := http.NewRequest("GET", base+"/healthz", nil)
	req.Header.Set("X-Request-ID", "written-while-the-bar-shows")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	logged := regexp.MustCompile(`request_id=written-while-the-bar-shows`)
	scr.waitFor(t, 10*time.Second, logged)
	rows := scr.rows()
	logRow, barRow := -1, -1
	for i, row := range rows {
		if logged.MatchString(row) {
			logRow = i
		}
		if bar.MatchString(row) {
			barRow = i
		}
	}
	if logRow < 0 || barRow < 0 || logRow > barRow {
		t.Fatalf("the log line (row %d) is not above the bar (row %d):\n%s", logRow, barRow, scr.text())
	}
	for _, row := range rows[barRow+1:] {
		if strings.TrimSpace(row) != "" {
			t.Errorf("the bar is not the last line: %q follows", row)
		}
	}
	if m := bar.FindStringSubmatch(rows[barRow]); m != nil {
		if p, _ := strconv.Atoi(m[1]); p >= 100 {
			t.Errorf("the bar shows %d %% while the download runs", p)
		}
	}
	t.Logf("the screen with the bar:\n%s", strings.Join(rows[:barRow+1], "\n"))
	if !strings.Contains(rows[barRow], "/s") || !strings.Contains(rows[barRow], "ETA") {
		t.Errorf("the bar shows no speed or ETA: %q", rows[barRow])
	}

	if err := <-download; err != nil {
		t.Fatal(err)
	}
	scr.waitFor(t, 10*time.Second, regexp.MustCompile(`msg="upstream fetch".*file=example.com/large/@v/v1.0.0.zip`))
	deadline := time.Now().Add(10 * time.Second)
	for bar.MatchString(scr.text()) {
		if time.Now().After(deadline) {
			t.Fatalf("the bar stays after the download:\n%s", scr.text())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestProgressLinesOffATerminal downloads a large zip slowly through a
// server whose log is a pipe: it logs throttled progress lines for that
// download (none for a small one), and no control characters.
func TestProgressLinesOffATerminal(t *testing.T) {
	buildServer(t)
	const path, version = "example.com/large", "v1.0.0"
	upstream := slowUpstream(t, path, version, 4<<20, 1<<20)
	dir := t.TempDir()
	config := writeFile(t, filepath.Join(dir, "goproxy.yaml"), `addr: 127.0.0.1:0
cache: `+filepath.Join(dir, "cache")+`
goproxy: `+upstream+`
gosumdb: "off"
log: {format: json}
progress: {interval: 1s, min_size: 1MiB}
download: {connections: 1}
`)
	srv := startServer(t, []string{"-config", config}, serverEnv(t))
	if err := <-getInBackground(srv.URL + "/" + moduletest.GraphPath(0) + "/@v/v1.0.0.zip"); err != nil {
		t.Fatal(err)
	}
	if err := <-getInBackground(srv.URL + "/" + path + "/@v/" + version + ".zip"); err != nil {
		t.Fatal(err)
	}
	srv.waitLog(t, 10*time.Second, func(m map[string]any) bool {
		return m["msg"] == "upstream fetch" && m["file"] == "example.com/large/@v/v1.0.0.zip"
	})

	lines := srv.logLines("download progress")
	if len(lines) < 2 {
		t.Fatalf("%d progress lines for a 4-second download, want 2 or more", len(lines))
	}
	var last time.Time
	for i, m := range lines {
		if m["module"] != path+"@"+version {
			t.Errorf("a progress line for %v", m["module"])
		}
		if m["total"] != float64(4<<20) {
			t.Errorf("total %v", m["total"])
		}
		at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"]))
		// The lines are checked every second, at most one per interval.
		if i > 0 && at.Sub(last) < 900*time.Millisecond {
			t.Errorf("two progress lines %v apart", at.Sub(last))
		}
		last = at
	}
	srv.mu.Lock()
	raw := strings.Join(srv.raw, "\n")
	srv.mu.Unlock()
	for i, c := range []byte(raw) {
		if c < 0x20 && c != '\n' || c == 0x7f {
			t.Fatalf("control character %#x in the log at byte %d: %q", c, i, raw[max(0, i-40):min(len(raw), i+40)])
		}
	}
}

// screen is what a terminal shows of the output written to it, for the
// subset of control sequences the server's bars use: carriage return,
// line feed, cursor up (CSI n A), erase below (CSI J) and erase line
// (CSI K). Other sequences are ignored.
type screen struct {
	mu          sync.Mutex
	lines       [][]rune
	rowsN, cols int
	row, col    int           // the cursor
	pending     []byte        // an incomplete escape sequence or UTF-8 rune
	cond        chan struct{} // closed at each write
}

func newScreen(rows, cols int) *screen {
	s := &screen{rowsN: rows, cols: cols, cond: make(chan struct{})}
	s.lines = make([][]rune, rows)
	return s
}

func (s *screen) write(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b = append(s.pending, b...)
	s.pending = nil
	for len(b) > 0 {
		c := b[0]
		switch {
		case c == '\r':
			s.col = 0
			b = b[1:]
		case c == '\n':
			s.newline()
			b = b[1:]
		case c == 0x1b:
			n, ok := s.escape(b)
			if !ok {
				s.pending = append([]byte(nil), b...)
				b = nil
				continue
			}
			b = b[n:]
		case c < 0x20:
			b = b[1:]
		default:
			if !utf8.FullRune(b) {
				s.pending = append([]byte(nil), b...)
				b = nil
				continue
			}
			r, n := utf8.DecodeRune(b)
			s.put(r)
			b = b[n:]
		}
	}
	close(s.cond)
	s.cond = make(chan struct{})
}

// escape interprets the sequence at the start of b, returning its length,
// or false if b ends before it does.
func (s *screen) escape(b []byte) (int, bool) {
	if len(b) < 2 {
		return 0, false
	}
	if b[1] != '[' {
		return 2, true
	}
	for i := 2; i < len(b); i++ {
		if b[i] >= 0x40 && b[i] <= 0x7e {
			arg := strings.TrimPrefix(string(b[2:i]), "?")
			n, err := strconv.Atoi(arg)
			if err != nil || n == 0 {
				n = 1
			}
			switch b[i] {
			case 'A':
				s.row = max(0, s.row-n)
			case 'J':
				s.lines[s.row] = s.lines[s.row][:min(s.col, len(s.lines[s.row]))]
				for r := s.row + 1; r < s.rowsN; r++ {
					s.lines[r] = nil
				}
			case 'K':
				s.lines[s.row] = s.lines[s.row][:min(s.col, len(s.lines[s.row]))]
			}
			return i + 1, true
		}
	}
	return 0, false
}

func (s *screen) newline() {
	s.col = 0
	if s.row < s.rowsN-1 {
		s.row++
		return
	}
	copy(s.lines, s.lines[1:])
	s.lines[s.rowsN-1] = nil
}

func (s *screen) put(r rune) {
	if s.col >= s.cols {
		s.newline()
	}
	line := s.lines[s.row]
	for len(line) <= s.col {
		line = append(line, ' ')
	}
	line[s.col] = r
	s.lines[s.row] = line
	s.col++
}

// rows returns the screen's rows, top first.
func (s *screen) rows() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, s.rowsN)
	for i, l := range s.lines {
		out[i] = strings.TrimRight(string(l), " ")
	}
	return out
}

func (s *screen) text() string { return strings.Join(s.rows(), "\n") }

// waitFor waits until a row of the screen matches re, and returns the
// match.
func (s *screen) waitFor(t *testing.T, timeout time.Duration, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		changed := s.cond
		s.mu.Unlock()
		for _, row := range s.rows() {
			if m := re.FindStringSubmatch(row); m != nil {
				return m
			}
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("nothing on the screen matches %v within %v:\n%s", re, timeout, s.text())
		}
	}
}
