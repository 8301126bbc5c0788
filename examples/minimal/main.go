// Command minimal serves a Go module proxy on -addr, caching in -cache. Like
// the go command, it takes its upstream settings (GOPROXY, GONOPROXY,
// GOPRIVATE, GOSUMDB, GONOSUMDB, GOINSECURE) and egress proxy (HTTP_PROXY,
// HTTPS_PROXY, NO_PROXY, ALL_PROXY, SOCKS5_PROXY) from the environment, and
// DNS_SERVER lists resolvers (udp://, tcp://, https://, tls://; DNS over
// QUIC needs the dnsquic module, which this example does without).
// -egress-allow and -egress-private-networks let direct fetches reach an
// internal git server, which the egress policy otherwise refuses.
//
// It is the smallest server worth running; cmd/goproxy is the one to deploy.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/goproxy-team/goproxy"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	cache := flag.String("cache", "", "cache directory (default goproxy in the user cache directory)")
	allow := flag.String("egress-allow", "", "comma-separated destinations the egress policy allows: IP addresses, CIDR prefixes, host names, *.domain, each with an optional :port")
	private := flag.Bool("egress-private-networks", false, "let the proxy reach private addresses (10.0.0.0/8, 192.168.0.0/16, ...)")
	flag.Parse()
	if *cache == "" {
		userCache, err := os.UserCacheDir()
		if err != nil {
			log.Fatalf("no -cache given, and no user cache directory to put one in: %v", err)
		}
		*cache = filepath.Join(userCache, "goproxy")
	}
	dialer := &goproxy.Dialer{}
	if servers := os.Getenv("DNS_SERVER"); servers != "" {
		dialer.Resolver = &goproxy.Resolver{Servers: strings.Split(servers, ",")}
	}
	proxy := &goproxy.Proxy{
		Cacher: goproxy.DirCacher(*cache),
		Dialer: dialer,
		Egress: goproxy.EgressPolicy{AllowPrivateNetworks: *private},
	}
	if *allow != "" {
		proxy.Egress.Allow = strings.Split(*allow, ",")
	}
	if err := proxy.Init(); err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Addr:    *addr,
		Handler: proxy,
		// Without these, clients that never finish their headers, or idle
		// keep-alive connections, hold file descriptors until the server
		// can accept no more connections.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	log.Fatal(srv.ListenAndServe())
}
