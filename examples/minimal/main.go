// Command minimal serves a Go module proxy on -addr, caching in -cache, with
// upstream settings (GOPROXY, GONOPROXY, GOPRIVATE, ...) from the environment.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"path/filepath"

	"github.com/goproxy-team/goproxy"
)

func main() {
	userCache, _ := os.UserCacheDir()
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	cache := flag.String("cache", filepath.Join(userCache, "goproxy"), "cache directory")
	flag.Parse()
	proxy := &goproxy.Proxy{Cacher: goproxy.DirCacher(*cache)}
	if err := proxy.Init(); err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.ListenAndServe(*addr, proxy))
}
