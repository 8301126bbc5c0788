// Package netrc reads .netrc files the way the go command does, so that
// credentials a developer set up for the go command work for the proxy.
package netrc

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Line is one machine's credentials.
type Line struct {
	Machine, Login, Password string
}

// Parse reads netrc text: "machine", "login" and "password" tokens, a
// "default" entry ending the list (it would apply to every host, which the
// go command does not allow either), and "macdef" bodies skipped.
func Parse(data string) []Line {
	var lines []Line
	var cur Line
	inMacro := false
	for line := range strings.SplitSeq(data, "\n") {
		if inMacro {
			if strings.TrimSpace(line) == "" {
				inMacro = false
			}
			continue
		}
		f := strings.Fields(line)
		for i := 0; i < len(f); i++ {
			switch f[i] {
			case "machine", "default":
				if cur.Machine != "" && cur.Login != "" && cur.Password != "" {
					lines = append(lines, cur)
				}
				cur = Line{}
				if f[i] == "default" {
					return lines
				}
				if i+1 < len(f) {
					i++
					cur.Machine = f[i]
				}
			case "login":
				if i+1 < len(f) {
					i++
					cur.Login = f[i]
				}
			case "password":
				if i+1 < len(f) {
					i++
					cur.Password = f[i]
				}
			case "macdef":
				inMacro = true
				i = len(f)
			}
		}
	}
	if cur.Machine != "" && cur.Login != "" && cur.Password != "" {
		lines = append(lines, cur)
	}
	return lines
}

// Path returns the netrc file the go command would read given the
// environment lookup getenv: $NETRC, else .netrc (_netrc on Windows) in the
// home directory.
func Path(getenv func(string) string) string {
	if p := getenv("NETRC"); p != "" {
		return p
	}
	home := getenv("HOME")
	if runtime.GOOS == "windows" {
		if home = getenv("USERPROFILE"); home == "" {
			return ""
		}
		return filepath.Join(home, "_netrc")
	}
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return ""
		}
	}
	return filepath.Join(home, ".netrc")
}

// Find returns the credentials for host (a host name, without port), if any.
func Find(lines []Line, host string) (Line, bool) {
	for _, l := range lines {
		if l.Machine == host {
			return l, true
		}
	}
	return Line{}, false
}
