package main

import (
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
)

// certificate serves the TLS certificate of a pair of files, reading
// them again when either changes, so that a renewed certificate reaches
// new connections without a restart. A pair that fails to load (a
// renewal half written) is logged and the previous certificate kept.
type certificate struct {
	logger *slog.Logger

	mu                 sync.Mutex
	certFile, keyFile  string
	cert               *tls.Certificate
	certStat, keyStat  os.FileInfo
	failedCert, failed os.FileInfo // the stats of the last pair that failed, logged once
}

func newCertificate(certFile, keyFile string, logger *slog.Logger) (*certificate, error) {
	c := &certificate{logger: logger}
	if err := c.setFiles(certFile, keyFile); err != nil {
		return nil, err
	}
	return c, nil
}

// setFiles switches to another pair of files, as a reload may.
func (c *certificate) setFiles(certFile, keyFile string) error {
	cs, err1 := os.Stat(certFile)
	ks, err2 := os.Stat(keyFile)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	for _, e := range []error{err1, err2, err} {
		if e != nil {
			return e
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.certFile, c.keyFile = certFile, keyFile
	c.cert, c.certStat, c.keyStat = &cert, cs, ks
	return nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (c *certificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs, err1 := os.Stat(c.certFile)
	ks, err2 := os.Stat(c.keyFile)
	if err1 != nil || err2 != nil || (sameStat(cs, c.certStat) && sameStat(ks, c.keyStat)) {
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		if !sameStat(cs, c.failedCert) || !sameStat(ks, c.failed) {
			c.failedCert, c.failed = cs, ks
			c.logger.Error("the TLS certificate changed but does not load: still serving the previous one", "cert_file", c.certFile, "key_file", c.keyFile, "error", err)
		}
		return c.cert, nil
	}
	c.cert, c.certStat, c.keyStat = &cert, cs, ks
	c.logger.Info("TLS certificate reloaded", "cert_file", c.certFile)
	return c.cert, nil
}

// sameStat reports whether a file is the same, unchanged: the same
// inode (renaming a new file into place changes it), size and time.
func sameStat(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
