module github.com/goproxy-team/goproxy/cmd/goproxy

go 1.26.0

require (
	github.com/goproxy-team/goproxy v0.0.0-00010101000000-000000000000
	github.com/goproxy-team/goproxy/dnsquic v0.0.0-00010101000000-000000000000
	go.yaml.in/yaml/v3 v3.0.5
	golang.org/x/mod v0.42.0
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/quic-go/quic-go v0.65.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
