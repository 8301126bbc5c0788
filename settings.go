package goproxy

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/goproxy-team/goproxy/internal/netrc"
)

// settings are the go command's environment variables as the proxy reads them.
type settings struct {
	upstreams []Upstream
	noProxy   string // GONOPROXY, defaulting to GOPRIVATE
	noSumDB   string // GONOSUMDB, defaulting to GOPRIVATE
	private   string // GOPRIVATE
	sumDB     string
	insecure  string
	netrc     []netrc.Line
}

// readSettings reads the go command's variables from env, applying the same
// defaults and fallbacks as the go command.
func readSettings(env []string) (*settings, error) {
	get := func(key string) string {
		// The last definition wins, as with os/exec.
		for i := len(env) - 1; i >= 0; i-- {
			if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
				return v
			}
		}
		return ""
	}
	s := &settings{
		noProxy:  get("GONOPROXY"),
		noSumDB:  get("GONOSUMDB"),
		private:  get("GOPRIVATE"),
		sumDB:    get("GOSUMDB"),
		insecure: get("GOINSECURE"),
	}
	if s.noProxy == "" {
		s.noProxy = s.private
	}
	if s.noSumDB == "" {
		s.noSumDB = s.private
	}
	goproxy := get("GOPROXY")
	if goproxy == "" {
		goproxy = "https://proxy.golang.org,direct"
	}
	var err error
	if s.upstreams, err = ParseUpstreams(goproxy); err != nil {
		return nil, fmt.Errorf("GOPROXY: %w", err)
	}
	if path := netrc.Path(get); path != "" {
		if data, err := os.ReadFile(path); err == nil {
			s.netrc = netrc.Parse(string(data))
		}
	}
	return s, nil
}

func ttlOrDefault(d time.Duration) time.Duration {
	if d == 0 {
		return time.Minute
	}
	return max(d, 0)
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}
