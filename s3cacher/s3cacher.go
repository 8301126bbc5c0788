// Package s3cacher is a goproxy.Cacher for S3-compatible object stores:
// AWS S3, MinIO, Ceph's RADOS Gateway, Cloudflare R2, Google Cloud
// Storage's XML interoperability API and others. Several proxies may share
// one bucket, each with its own Prefix or all with the same one.
//
// Besides the Cacher methods it has every capability the proxy uses, and
// what proxies sharing a bucket need to coordinate through the bucket
// alone, with no other service: a conditional create that never
// overwrites ([Cacher.Create]), leases that expire when their holder dies
// ([Cacher.HoldLease], [Cacher.AcquireLease]), last uses every replica
// sees ([Cacher.RecordUses]), an index feed every replica appends to
// ([Cacher.AppendIndex]) and short-lived presigned download URLs
// ([Cacher.PresignGet]).
package s3cacher

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/goproxy-team/goproxy"
)

// Cacher is a [goproxy.Cacher] that keeps each entry as an object named
// Prefix + name in Bucket. It implements [goproxy.CacheStater],
// [goproxy.CacheDeleter], [goproxy.CacheWalker], the capabilities of
// eviction ([goproxy.CacheUsageRecorder], [goproxy.CacheInfoWalker],
// [goproxy.CacheUnchangedDeleter]) and of the index feed
// ([goproxy.CacheIndexLog]), and those of stores shared by several
// proxies ([goproxy.CacheCreator], [goproxy.CacheLeaser],
// [goproxy.CacheRedirector]) too. Its own objects (leases, use marks, the
// index feed) live under Prefix + ".lease/", ".use/" and ".index/", where
// no entry's name can reach.
//
// Get returns a file that fetches what is read lazily, in ranges that grow
// while reading goes on sequentially, so a client asking for a kilobyte of a
// large zip costs one small ranged GET; every range is asked for with
// If-Match on the ETag seen when the file was opened, so bytes of two
// versions of an object are never stitched together. Put streams the
// content in one PUT, or in parts for content over PartSize; either way the
// object appears whole or not at all.
//
// Set the fields, then call Init (or let the first method call it). Only
// Bucket is required: the zero value of every other field talks to AWS S3
// with credentials from the environment. Fields must not change after Init.
type Cacher struct {
	// Endpoint is the store's URL, such as "https://s3.eu-west-1.amazonaws.com"
	// or "http://127.0.0.1:9000"; its scheme chooses between HTTPS and plain
	// HTTP, and a bare host[:port] means HTTPS. Empty means AWS S3.
	Endpoint string

	// Bucket is the bucket holding the entries. It must exist: the Cacher
	// never creates or deletes buckets.
	Bucket string

	// Prefix is prepended to every entry's name to form its object key, so
	// that several proxies or repositories can share a bucket: entries of
	// one Prefix are invisible to the others, Walk included. A Prefix that
	// does not end in "/" gets one. Empty means the bucket's root.
	Prefix string

	// Region is the bucket's region, which requests are signed for. Empty
	// means asking the store once (GetBucketLocation) and remembering it,
	// or the one the Endpoint's host name implies on AWS.
	Region string

	// AccessKeyID, SecretAccessKey and SessionToken are static credentials.
	// When AccessKeyID is empty (and Credentials is nil), credentials are
	// looked for, in this order, in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
	// (with AWS_SESSION_TOKEN), MINIO_ROOT_USER/MINIO_ROOT_PASSWORD (or
	// MINIO_ACCESS_KEY/MINIO_SECRET_KEY), the AWS shared credentials file
	// (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile
	// AWS_PROFILE or "default"), the MinIO client's ~/.mc/config.json, and
	// last the IAM role of the machine, container or Kubernetes service
	// account (instance metadata, ECS task role, web identity token), which
	// is reached over the network. None found means anonymous requests,
	// and the search is made again a minute later.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string

	// Credentials, when not nil, is used instead of the static keys and the
	// search above: any minio-go credentials provider (STS assume-role,
	// LDAP, client certificates...). credentials.NewStaticV4("", "", "")
	// makes anonymous requests, for a public bucket, without looking
	// anywhere.
	Credentials *credentials.Credentials

	// Addressing chooses how the bucket appears in request URLs. The zero
	// value, AddressingAuto, uses virtual-host style where the store is
	// known to support it (AWS, and some others) and path style elsewhere
	// (MinIO, an IP address, a custom host name).
	Addressing Addressing

	// TLSConfig configures HTTPS connections, for a store whose certificate
	// is signed by a private CA, or which wants client certificates. Nil
	// means the system's roots. (Its InsecureSkipVerify is for tests only.)
	// It is ignored when Transport is set.
	TLSConfig *tls.Config

	// Transport carries the requests. Nil means a transport of the Cacher's
	// own, built from http.DefaultTransport's settings, TLSConfig and
	// Timeout.
	Transport http.RoundTripper

	// Timeout bounds how long one request waits for the store: to connect,
	// for the response's header, and for each further piece of a body being
	// read. A store that has gone away thus gives errors, not hangs. Once a
	// request gets no answer, the store is taken for unresponsive: requests
	// fail at once for the next Timeout (5 seconds at most), then one at a
	// time is sent until one is answered. Zero means 30 seconds.
	Timeout time.Duration

	// Retries is how many times a request that failed in a way worth
	// retrying (a dropped connection, a 5xx answer) is tried again, after
	// short growing pauses. Zero means 2; a negative value means never.
	Retries int

	// PartSize is the size of the parts in which content larger than it is
	// uploaded. Parts are read straight from the content when it is an
	// io.ReaderAt (files, byte slices, section readers), several at once;
	// from any other io.ReadSeeker one part at a time is held in memory.
	// Zero means 16 MiB; S3 wants at least 5 MiB.
	PartSize int64

	// UsePrecision is how precisely last uses are kept for eviction
	// (RecordUses): an entry in steady use costs one small PUT per
	// UsePrecision and proxy. Zero means an hour, plenty for eviction by
	// days or by the order of uses.
	UsePrecision time.Duration

	// LeaseTTL is how long a lease taken by HoldLease lasts after each
	// renewal: how long the other proxies wait for a file whose fetcher
	// died before one of them takes the fetch over. The holder renews it
	// every third of LeaseTTL. Zero means 30 seconds.
	LeaseTTL time.Duration

	// Holder names this Cacher's leases, in the errors and logs of the
	// other proxies. Empty means the host name, the process ID and a
	// random suffix.
	Holder string

	initOnce     sync.Once
	initErr      error
	client       *minio.Client
	core         minio.Core
	http         *http.Client // for the requests minio-go cannot make
	prefix       string
	timeout      time.Duration
	usePrecision time.Duration
	leaseTTL     time.Duration
	holder       string
	uses         useMemo
	unresponsive *unresponsiveTransport
	index        indexCache
}

// Addressing is how a bucket's name appears in the URLs of requests.
type Addressing int

const (
	// AddressingAuto picks per store; see [Cacher.Addressing].
	AddressingAuto Addressing = iota
	// AddressingPath puts the bucket in the path: https://host/bucket/key.
	AddressingPath
	// AddressingVirtualHost puts it in the host name: https://bucket.host/key.
	AddressingVirtualHost
)

// Init validates the configuration and prepares the client. Calling it is
// optional (every method calls it), but it reports a configuration mistake
// at start-up rather than at the first request. It sends no request.
func (c *Cacher) Init() error {
	c.initOnce.Do(func() { c.initErr = c.init() })
	return c.initErr
}

func (c *Cacher) init() error {
	if c.Bucket == "" {
		return errors.New("s3cacher: Bucket is not set")
	}
	host, secure, err := parseEndpoint(c.Endpoint)
	if err != nil {
		return err
	}
	c.timeout = c.Timeout
	if c.timeout <= 0 {
		c.timeout = 30 * time.Second
	}
	if c.PartSize != 0 && c.PartSize < 5<<20 {
		return fmt.Errorf("s3cacher: PartSize %d is under the 5 MiB that S3 requires", c.PartSize)
	}
	c.prefix = c.Prefix
	if c.prefix != "" && !strings.HasSuffix(c.prefix, "/") {
		c.prefix += "/"
	}
	lookup := minio.BucketLookupAuto
	switch c.Addressing {
	case AddressingAuto:
	case AddressingPath:
		lookup = minio.BucketLookupPath
	case AddressingVirtualHost:
		lookup = minio.BucketLookupDNS
	default:
		return fmt.Errorf("s3cacher: unknown Addressing %d", c.Addressing)
	}
	retries := c.Retries
	switch {
	case retries == 0:
		retries = 2
	case retries < 0:
		retries = 0
	}
	transport := c.Transport
	if transport == nil {
		transport = c.newTransport()
	}
	// Only the store's requests tell whether it answers: the credential
	// search's (to a metadata service there may not be) go around.
	c.unresponsive = &unresponsiveTransport{next: transport, window: min(c.timeout, unresponsiveFor)}
	client, err := minio.New(host, &minio.Options{
		Creds:        c.credentials(transport),
		Secure:       secure,
		Transport:    c.unresponsive,
		Region:       c.Region,
		BucketLookup: lookup,
		MaxRetries:   retries + 1, // minio-go counts the first try
	})
	if err != nil {
		return fmt.Errorf("s3cacher: %w", err)
	}
	c.client = client
	c.core = minio.Core{Client: client}
	c.http = &http.Client{Transport: c.unresponsive, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c.usePrecision = c.UsePrecision
	if c.usePrecision <= 0 {
		c.usePrecision = time.Hour
	}
	c.leaseTTL = c.LeaseTTL
	if c.leaseTTL <= 0 {
		c.leaseTTL = 30 * time.Second
	}
	if c.leaseTTL < time.Second {
		return fmt.Errorf("s3cacher: LeaseTTL %v is under a second, the precision of the store's clock", c.LeaseTTL)
	}
	c.holder = c.Holder
	if c.holder == "" {
		c.holder = defaultHolder()
	}
	return nil
}

// defaultHolder names a process: host, process ID and a random suffix
// (a restarted process in a container often has the same ID).
func defaultHolder() string {
	host, _ := os.Hostname()
	var suffix [4]byte
	rand.Read(suffix[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(suffix[:]))
}

// parseEndpoint splits an Endpoint into what minio-go wants: a host[:port]
// and whether to use TLS.
func parseEndpoint(endpoint string) (host string, secure bool, err error) {
	if endpoint == "" {
		return "s3.amazonaws.com", true, nil
	}
	if !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		// url.Parse's message repeats the input, which may hold a password.
		return "", false, errors.New("s3cacher: Endpoint is not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", false, fmt.Errorf("s3cacher: Endpoint %q: the scheme must be http or https", u.Redacted())
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("s3cacher: Endpoint %q must be scheme://host[:port], without a path, query or user", u.Redacted())
	}
	return u.Host, u.Scheme == "https", nil
}

// newTransport is http.DefaultTransport's configuration with the Cacher's
// timeouts and TLS settings. Cloning it keeps its proxy settings and dialer
// customizations.
func (c *Cacher) newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &writeDeadlineConn{Conn: conn, timeout: c.timeout}, nil
	}
	t.TLSHandshakeTimeout = c.timeout
	t.ResponseHeaderTimeout = c.timeout
	t.MaxIdleConnsPerHost = 64 // many concurrent ranged reads of one store
	// Objects are stored as given; a transparent gzip would hide the
	// Content-Length and Content-Range that ranged reads rely on.
	t.DisableCompression = true
	if c.TLSConfig != nil {
		t.TLSClientConfig = c.TLSConfig.Clone()
	}
	return t
}

// writeDeadlineConn fails a write that makes no progress for timeout, which
// is how an upload to a store that stopped reading (but keeps the
// connection open) ends: http.Transport has no timeout for sending a body.
type writeDeadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *writeDeadlineConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// key is the object key of an entry's name.
func (c *Cacher) key(name string) string { return c.prefix + name }

// Get implements [goproxy.Cacher]. It asks the store for the object's size,
// time and ETag (a HEAD request); reading the returned file fetches ranges
// of the content on demand, using ctx: reads fail once ctx ends.
func (c *Cacher) Get(ctx context.Context, name string) (goproxy.CachedFile, error) {
	info, err := c.stat(ctx, "get", name)
	if err != nil {
		return nil, err
	}
	f := &objectFile{
		ctx: ctx, c: c, name: name, key: c.key(name),
		size: info.Size, modTime: info.LastModified, etag: info.ETag,
	}
	if t, ok := keptModTime(info); ok {
		// No ETag method: the proxy tags the file by this time and its
		// size, as it tagged the answer that fetched it.
		f.modTime = t
		return f, nil
	}
	return taggedObjectFile{f}, nil
}

// modTimeMeta is the user metadata (x-amz-meta-goproxy-mod-time) in which
// Put keeps the ModTime of content that has one: the time the proxy
// fetched a file, which the answer that fetched it was validated by. The
// store's own Last-Modified is later, and in whole seconds.
const modTimeMeta = "Goproxy-Mod-Time"

// keptModTime returns the time Put kept for the object, if any.
func keptModTime(info minio.ObjectInfo) (time.Time, bool) {
	v := info.Metadata.Get("X-Amz-Meta-" + modTimeMeta)
	if v == "" {
		v = info.UserMetadata[modTimeMeta]
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil && !t.IsZero()
}

// keepModTime sets opts to keep content's ModTime, if it has one, for Get
// and Stat to report (see modTimeMeta).
func keepModTime(opts *minio.PutObjectOptions, content io.ReadSeeker) {
	if t, ok := content.(interface{ ModTime() time.Time }); ok && !t.ModTime().IsZero() {
		opts.UserMetadata = map[string]string{modTimeMeta: t.ModTime().UTC().Format(time.RFC3339Nano)}
	}
}

// Put implements [goproxy.Cacher]. The content's size is found by seeking,
// so the upload streams without buffering the content, and the object is
// replaced atomically: readers see the old content or the new, whole.
// The ModTime of content that has one is kept with the object (as user
// metadata) and reported by Get and Stat.
func (c *Cacher) Put(ctx context.Context, name string, content io.ReadSeeker) error {
	if err := c.check("put", name); err != nil {
		return err
	}
	body, size, err := sizedBody(content)
	if err != nil {
		return &fs.PathError{Op: "put", Path: name, Err: err}
	}
	opts := c.putOptions()
	keepModTime(&opts, content)
	if _, err := c.client.PutObject(ctx, c.Bucket, c.key(name), body, size, opts); err != nil {
		return c.wrap("put", name, err)
	}
	return nil
}

// putOptions are the options every upload uses.
func (c *Cacher) putOptions() minio.PutObjectOptions {
	part := c.PartSize
	if part == 0 {
		part = 16 << 20
	}
	return minio.PutObjectOptions{
		PartSize: uint64(part),
		// The proxy verifies what it stores; a content type would only
		// matter to someone browsing the bucket.
		ContentType: "application/octet-stream",
	}
}

// sizedBody measures content by seeking and returns a reader for minio-go
// that starts at the beginning. It is a section reader when content can
// read at offsets, which lets minio-go upload several parts at once with no
// buffer, and never an io.Closer: minio-go closes bodies that are.
func sizedBody(content io.ReadSeeker) (io.Reader, int64, error) {
	size, err := content.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, 0, err
	}
	if _, err := content.Seek(0, io.SeekStart); err != nil {
		return nil, 0, err
	}
	if ra, ok := content.(io.ReaderAt); ok {
		return io.NewSectionReader(ra, 0, size), size, nil
	}
	return struct{ io.ReadSeeker }{content}, size, nil
}

// Stat implements [goproxy.CacheStater] with one HEAD request.
func (c *Cacher) Stat(ctx context.Context, name string) (fs.FileInfo, error) {
	info, err := c.stat(ctx, "stat", name)
	if err != nil {
		return nil, err
	}
	modTime := info.LastModified
	if t, ok := keptModTime(info); ok {
		modTime = t
	}
	return objectInfo{name: path.Base(name), size: info.Size, modTime: modTime}, nil
}

func (c *Cacher) stat(ctx context.Context, op, name string) (minio.ObjectInfo, error) {
	if err := c.check(op, name); err != nil {
		return minio.ObjectInfo{}, err
	}
	info, err := c.client.StatObject(ctx, c.Bucket, c.key(name), minio.StatObjectOptions{})
	if err != nil {
		return minio.ObjectInfo{}, c.wrap(op, name, err)
	}
	return info, nil
}

// Delete implements [goproxy.CacheDeleter]. It removes the entry's use mark
// (see MarkUsed) too.
func (c *Cacher) Delete(ctx context.Context, name string) error {
	if err := c.check("delete", name); err != nil {
		return err
	}
	for _, key := range []string{c.key(name), c.prefix + useDir + name} {
		err := c.client.RemoveObject(ctx, c.Bucket, key, minio.RemoveObjectOptions{})
		if err != nil && !isNotFound(err) {
			return c.wrap("delete", name, err)
		}
	}
	c.uses.forget(name)
	return nil
}

// Walk implements [goproxy.CacheWalker], listing the keys under Prefix +
// prefix page by page. Objects whose names are not entry names (the leases
// under ".lease/", the use marks under ".use/") are skipped.
func (c *Cacher) Walk(ctx context.Context, prefix string, fn func(name string) error) error {
	if err := c.Init(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing if fn returns early
	for obj := range c.listEntries(ctx, prefix) {
		if obj.Err != nil {
			return c.wrap("walk", prefix, obj.Err)
		}
		name, ok := strings.CutPrefix(obj.Key, c.prefix)
		if !ok || checkName(name) != nil {
			continue
		}
		if err := fn(name); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// check initializes c and refuses names a Cacher must never be asked for,
// and every request while the store is taken for unresponsive.
func (c *Cacher) check(op, name string) error {
	if err := c.Init(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return &fs.PathError{Op: op, Path: name, Err: err}
	}
	if err := c.unresponsive.refuse(); err != nil {
		return &fs.PathError{Op: "s3 " + op, Path: name, Err: err}
	}
	return nil
}

// checkName applies the rule of goproxy.Cacher's documentation: a
// slash-separated path with no empty, "." or ".." element and no element
// starting with a dot. The dot rule is what keeps the Cacher's own objects
// (leases) apart from entries.
func checkName(name string) error {
	if !fs.ValidPath(name) || name == "." || strings.ContainsAny(name, "\\\x00") {
		return fs.ErrInvalid
	}
	for elem := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(elem, ".") {
			return fs.ErrInvalid
		}
	}
	return nil
}

// wrap turns a store's error into one that names the entry and answers
// errors.Is(err, fs.ErrNotExist) for a missing object.
func (c *Cacher) wrap(op, name string, err error) error {
	if isNotFound(err) {
		err = fmt.Errorf("%w (%w)", fs.ErrNotExist, err)
	}
	return &fs.PathError{Op: "s3 " + op, Path: name, Err: err}
}

func isNotFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.Code == minio.NoSuchKey || (r.StatusCode == http.StatusNotFound && r.Code != minio.NoSuchBucket)
}

// objectInfo describes an entry for Stat.
type objectInfo struct {
	name    string
	size    int64
	modTime time.Time
}

func (i objectInfo) Name() string       { return i.name }
func (i objectInfo) Size() int64        { return i.size }
func (i objectInfo) Mode() fs.FileMode  { return 0o444 }
func (i objectInfo) ModTime() time.Time { return i.modTime }
func (i objectInfo) IsDir() bool        { return false }
func (i objectInfo) Sys() any           { return nil }
