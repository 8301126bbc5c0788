module github.com/goproxy-team/goproxy/dnsquic

go 1.26.0

require (
	github.com/goproxy-team/goproxy v0.0.0-00010101000000-000000000000
	github.com/quic-go/quic-go v0.65.0
	golang.org/x/net v0.62.0
)
