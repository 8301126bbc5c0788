package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"

	"github.com/goproxy-team/goproxy/internal/moduletest"
)

// checksumDB is a real checksum database in this process: the sumdb
// package's server over its signing test server, on 127.0.0.1, recording
// the true hashes of the graph's versions (as sumdb_test.go builds it),
// with the upstream's latency added to every request, since a real
// database is remote too.
//
// Its log is filled before any timed run: first pad made-up records, then
// the graph's, so that verifying a record takes the tiles of several
// levels (a log of ~100,000 records has three levels of height-8 tiles;
// sum.golang.org's has four), and no timed run pays for records being
// added, which a real database has long had.
type checksumDB struct {
	URL  string
	name string
	vkey string // verifier key, for GOSUMDB
	srv  *server
	reqs atomic.Int64
	// lookups counts /lookup/ requests, tiles /tile/ requests.
	lookups, tiles atomic.Int64
}

func newChecksumDB(vs []*moduletest.Version, pad int, latency time.Duration) *checksumDB {
	skey, vkey, err := note.GenerateKey(rand.Reader, "sumdb.bench")
	if err != nil {
		fatalf("%v", err)
	}
	lines := map[string][]byte{} // path@version -> go.sum lines
	for _, v := range vs {
		b, err := gosumLines(v)
		if err != nil {
			fatalf("hashing %s@%s: %v", v.Path, v.Version, err)
		}
		lines[v.Path+"@"+v.Version] = b
	}
	gosum := func(path, vers string) ([]byte, error) {
		if b, ok := lines[path+"@"+vers]; ok {
			return b, nil
		}
		if strings.HasPrefix(path, padPrefix) {
			return padLines(path, vers), nil
		}
		return nil, fmt.Errorf("%s@%s: %w", path, vers, fs.ErrNotExist)
	}
	ts := sumdb.NewTestServer(skey, gosum)
	ctx := context.Background()
	for i := range pad {
		if _, err := ts.Lookup(ctx, module.Version{Path: fmt.Sprintf("%s%06d", padPrefix, i), Version: "v1.0.0"}); err != nil {
			fatalf("filling the checksum database: %v", err)
		}
	}
	for _, v := range vs {
		if _, err := ts.Lookup(ctx, module.Version{Path: v.Path, Version: v.Version}); err != nil {
			fatalf("filling the checksum database: %v", err)
		}
	}
	db := &checksumDB{name: "sumdb.bench", vkey: vkey}
	h := sumdb.NewServer(ts)
	db.srv = serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		db.reqs.Add(1)
		switch {
		case strings.HasPrefix(r.URL.Path, "/lookup/"):
			db.lookups.Add(1)
		case strings.HasPrefix(r.URL.Path, "/tile/"):
			db.tiles.Add(1)
		}
		if latency > 0 {
			t := time.NewTimer(latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	db.URL = db.srv.URL
	return db
}

func (db *checksumDB) Close() { db.srv.Close() }

// counts returns the request counters, to be subtracted around a run.
func (db *checksumDB) counts() [3]int64 {
	return [3]int64{db.reqs.Load(), db.lookups.Load(), db.tiles.Load()}
}

// padPrefix names the made-up modules that pad the log.
const padPrefix = "example.org/pad/m"

// padLines makes up the go.sum lines of a padding record: well-formed
// hashes of nothing in particular.
func padLines(path, vers string) []byte {
	h1 := sha256.Sum256([]byte(path + "@" + vers))
	h2 := sha256.Sum256([]byte(path + "@" + vers + "/go.mod"))
	return fmt.Appendf(nil, "%s %s h1:%s\n%s %s/go.mod h1:%s\n",
		path, vers, base64.StdEncoding.EncodeToString(h1[:]), path, vers, base64.StdEncoding.EncodeToString(h2[:]))
}

// gosumLines returns the go.sum lines of v, hashing what the upstream
// serves: its zip (when it has one) and its .mod.
func gosumLines(v *moduletest.Version) ([]byte, error) {
	var b []byte
	if len(v.Zip) > 0 || v.ZipFile != "" {
		h, err := hashZip(v)
		if err != nil {
			return nil, err
		}
		b = fmt.Appendf(b, "%s %s %s\n", v.Path, v.Version, h)
	}
	if v.Mod != nil {
		h, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(v.Mod)), nil
		})
		if err != nil {
			return nil, err
		}
		b = fmt.Appendf(b, "%s %s/go.mod %s\n", v.Path, v.Version, h)
	}
	return b, nil
}

// hashZip is dirhash.HashZip over a zip in memory or on disk.
func hashZip(v *moduletest.Version) (string, error) {
	if v.ZipFile != "" {
		return dirhash.HashZip(v.ZipFile, dirhash.Hash1)
	}
	z, err := zip.NewReader(bytes.NewReader(v.Zip), int64(len(v.Zip)))
	if err != nil {
		return "", err
	}
	var names []string
	files := map[string]*zip.File{}
	for _, f := range z.File {
		if strings.Contains(f.Name, "\n") {
			return "", fmt.Errorf("file name with a newline in the zip")
		}
		names = append(names, f.Name)
		files[f.Name] = f
	}
	return dirhash.Hash1(names, func(name string) (io.ReadCloser, error) { return files[name].Open() })
}
