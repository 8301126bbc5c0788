module github.com/goproxy-team/goproxy/cmd/goproxy

go 1.26.0

require (
	github.com/goproxy-team/goproxy v0.0.0-00010101000000-000000000000
	github.com/goproxy-team/goproxy/dnsquic v0.0.0-00010101000000-000000000000
	go.yaml.in/yaml/v3 v3.0.4
	golang.org/x/mod v0.42.0
)
