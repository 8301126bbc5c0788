package s3cacher

import (
	"net/http"
	"sync"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"
)

// credentials returns the configured credentials or the search described at
// Cacher.AccessKeyID, whose requests (to the instance metadata service or
// STS) go through transport.
func (c *Cacher) credentials(transport http.RoundTripper) *credentials.Credentials {
	if c.Credentials != nil {
		return c.Credentials
	}
	if c.AccessKeyID != "" {
		return credentials.NewStaticV4(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
	}
	return credentials.New(&credentialSearch{
		chain: credentials.Chain{Providers: []credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.EnvMinio{},
			&credentials.FileAWSCredentials{},
			&credentials.FileMinioClient{},
			// A machine with no metadata service must not hold every
			// search up for long.
			&credentials.IAM{Client: &http.Client{Transport: transport, Timeout: 5 * time.Second}},
		}},
	})
}

// forgetNothingFound is how long a search that found no credentials is
// taken as the answer before searching again.
const forgetNothingFound = time.Minute

// credentialSearch is a chain of providers that remembers for a while that
// it found nothing. minio-go asks a chain that found nothing again before
// every request, and its last link, the instance metadata service, may take
// seconds to fail where there is none.
type credentialSearch struct {
	chain credentials.Chain

	mu          sync.Mutex
	nothingTill time.Time
}

// RetrieveWithCredContext implements credentials.Provider.
func (s *credentialSearch) RetrieveWithCredContext(cc *credentials.CredContext) (credentials.Value, error) {
	v, err := s.chain.RetrieveWithCredContext(cc)
	s.remember(v)
	return v, err
}

// Retrieve implements credentials.Provider.
func (s *credentialSearch) Retrieve() (credentials.Value, error) {
	v, err := s.chain.Retrieve()
	s.remember(v)
	return v, err
}

func (s *credentialSearch) remember(v credentials.Value) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nothingTill = time.Time{}
	if v.AccessKeyID == "" && v.SecretAccessKey == "" {
		s.nothingTill = time.Now().Add(forgetNothingFound)
	}
}

// IsExpired implements credentials.Provider: found credentials expire as
// their provider says, finding none after forgetNothingFound.
func (s *credentialSearch) IsExpired() bool {
	s.mu.Lock()
	nothingTill := s.nothingTill
	s.mu.Unlock()
	if !nothingTill.IsZero() {
		return time.Now().After(nothingTill)
	}
	return s.chain.IsExpired()
}
