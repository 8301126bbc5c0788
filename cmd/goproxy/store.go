package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/goproxy-team/goproxy"
	"github.com/goproxy-team/goproxy/s3cacher"
)

// A repository keeps its cache and its published versions in directories
// (DirCacher) or in buckets of an S3-compatible store (s3cacher.Cacher),
// which several servers can share.

// s3Spec is an S3Config resolved: secrets read, values checked. It is
// part of a proxySpec, so it compares by value.
type s3Spec struct {
	Endpoint, Bucket, Prefix, Region         string
	AccessKeyID, SecretAccessKey, SessionKey string
	Addressing                               s3cacher.Addressing
	CAPEM                                    []byte
	Timeout                                  time.Duration
	Redirect                                 bool
	RedirectExpiry                           time.Duration
}

// resolveS3 checks and resolves c, the store at key; cache says whether
// it is a cache (redirects are for caches only). It returns nil for a
// nil c.
func resolveS3(c *S3Config, key string, cache bool, getenv func(string) string, p *problems) *s3Spec {
	if c == nil {
		return nil
	}
	s := &s3Spec{Endpoint: c.Endpoint, Bucket: c.Bucket, Prefix: c.Prefix, Region: c.Region,
		Timeout: time.Duration(c.Timeout), Redirect: c.RedirectDownloads, RedirectExpiry: time.Duration(c.RedirectExpiry)}
	if s.Prefix != "" && !strings.HasSuffix(s.Prefix, "/") {
		s.Prefix += "/"
	}
	if c.Bucket == "" {
		p.add(key+".bucket", "must be set")
	}
	for _, secret := range []struct {
		name      string
		env, file string
		v         *string
	}{
		{"access_key_id", c.AccessKeyIDEnv, c.AccessKeyIDFile, &s.AccessKeyID},
		{"secret_access_key", c.SecretAccessKeyEnv, c.SecretAccessKeyFile, &s.SecretAccessKey},
		{"session_token", c.SessionTokenEnv, c.SessionTokenFile, &s.SessionKey},
	} {
		v, err := readSecret(getenv, secret.env, secret.file)
		if err != nil {
			p.add(key+"."+secret.name+"_env", "%v", err)
		}
		*secret.v = v
	}
	if (s.AccessKeyID == "") != (s.SecretAccessKey == "") {
		p.add(key, "give both access_key_id and secret_access_key, or neither (for the credentials of the environment)")
	}
	if s.SessionKey != "" && s.AccessKeyID == "" {
		p.add(key+".session_token_env", "a session token goes with access_key_id and secret_access_key")
	}
	switch c.Addressing {
	case "", "auto":
		s.Addressing = s3cacher.AddressingAuto
	case "path":
		s.Addressing = s3cacher.AddressingPath
	case "virtual_host":
		s.Addressing = s3cacher.AddressingVirtualHost
	default:
		p.add(key+".addressing", "%q is not auto, path or virtual_host", c.Addressing)
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			p.add(key+".ca_file", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			p.add(key+".ca_file", "%s has no PEM certificate", c.CAFile)
		}
		s.CAPEM = pem
	}
	if c.Timeout < 0 || c.RedirectExpiry < 0 {
		p.add(key, "timeout and redirect_expiry must not be negative")
	}
	if !cache && (c.RedirectDownloads || c.RedirectExpiry != 0) {
		p.add(key+".redirect_downloads", "only a cache's zips are redirected: published versions are served by the server, which checks who may read them")
	}
	if c.RedirectExpiry > Duration(7*24*time.Hour) {
		p.add(key+".redirect_expiry", "a presigned URL lasts a week at most")
	}
	return s
}

// nests reports whether the keys of s and o overlap: the same bucket, and
// one prefix a prefix of the other's (the bucket's root nests all).
func (s *s3Spec) nests(o *s3Spec) bool {
	return s != nil && o != nil && sameEndpoint(s.Endpoint, o.Endpoint) && s.Bucket == o.Bucket &&
		(strings.HasPrefix(s.Prefix, o.Prefix) || strings.HasPrefix(o.Prefix, s.Prefix))
}

// sameEndpoint reports whether two Endpoints name one store however they
// are spelled: s3cacher reads empty as AWS S3 and a bare host as HTTPS,
// host names are not case-sensitive, and a trailing slash is allowed. An
// overlap missed would let one store's eviction remove the other's files.
func sameEndpoint(a, b string) bool {
	canonical := func(e string) string {
		if e == "" {
			e = "s3.amazonaws.com"
		}
		if !strings.Contains(e, "://") {
			e = "https://" + e
		}
		return strings.ToLower(strings.TrimSuffix(e, "/"))
	}
	return canonical(a) == canonical(b)
}

// String names the store in messages and /readyz.
func (s *s3Spec) String() string {
	return "s3://" + s.Bucket + "/" + s.Prefix
}

// cacher makes the store's Cacher.
func (s *s3Spec) cacher() (*s3cacher.Cacher, error) {
	c := &s3cacher.Cacher{
		Endpoint:        s.Endpoint,
		Bucket:          s.Bucket,
		Prefix:          s.Prefix,
		Region:          s.Region,
		AccessKeyID:     s.AccessKeyID,
		SecretAccessKey: s.SecretAccessKey,
		SessionToken:    s.SessionKey,
		Addressing:      s.Addressing,
		Timeout:         s.Timeout,
	}
	if len(s.CAPEM) > 0 {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.CAPEM)
		c.TLSConfig = &tls.Config{RootCAs: pool}
	}
	if err := c.Init(); err != nil {
		return nil, err
	}
	return c, nil
}

// stores makes the Cacher and Hosted store of a spec.
func (spec *proxySpec) stores() (cache, hosted goproxy.Cacher, err error) {
	cache = goproxy.DirCacher(spec.Cache)
	if spec.CacheS3 != nil {
		if cache, err = spec.CacheS3.cacher(); err != nil {
			return nil, nil, fmt.Errorf("cache_s3: %w", err)
		}
	}
	switch {
	case spec.HostedS3 != nil:
		if hosted, err = spec.HostedS3.cacher(); err != nil {
			return nil, nil, fmt.Errorf("hosted_s3: %w", err)
		}
	case spec.Hosted != "":
		hosted = goproxy.DirCacher(spec.Hosted)
	}
	return cache, hosted, nil
}

// storeChecker is a store that can check that it answers and takes
// writes: s3cacher.Cacher.
type storeChecker interface {
	Check(ctx context.Context) error
}

// checkStore checks that a repository can write to one of its stores: a
// directory (dir) or a store with a check of its own.
func checkStore(ctx context.Context, c goproxy.Cacher, dir string) error {
	if sc, ok := c.(storeChecker); ok {
		return sc.Check(ctx)
	}
	return checkWritable(dir)
}
