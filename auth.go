package goproxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/mod/module"
)

// Operation is what a request asks to do, as [Proxy.Authorize] sees it.
type Operation int

const (
	// OpRead is fetching anything the proxy serves: module files, version
	// lists, checksum database files.
	OpRead Operation = iota
	// OpPublish is storing a new module version (PUT of a .zip, or
	// [Proxy.Publish] on behalf of a request).
	OpPublish
	// OpAdminister is removing cached entries, listing what is cached for a
	// module, and reading the index feed.
	OpAdminister
)

// String names the operation in messages: read, publish or administer.
func (op Operation) String() string {
	switch op {
	case OpRead:
		return "read"
	case OpPublish:
		return "publish"
	case OpAdminister:
		return "administer"
	}
	return "unknown operation"
}

// authorize applies the Authorize hook, writing the refusal if any.
func (p *Proxy) authorize(w http.ResponseWriter, r *http.Request, op Operation, modulePath string) bool {
	if p.conf.authorize == nil {
		return true
	}
	err := p.conf.authorize(r, op, modulePath)
	if err == nil {
		return true
	}
	what := op.String()
	if modulePath != "" {
		what += " " + modulePath
	}
	if errors.Is(err, ErrUnauthenticated) {
		p.writeFailure(w, failed(failUnauthenticated, "authentication required to %s", what))
		return false
	}
	p.writeFailure(w, failed(failForbidden, "not allowed to %s: %w", what, err))
	return false
}

// Grant is what one identity of a [StaticAuth] may do: read and publish
// the modules matching patterns in GOPRIVATE syntax (comma-separated glob
// prefixes; "*" for every module), and administer the cache.
type Grant struct {
	Read       string
	Publish    string
	Administer bool
}

// User is a basic-auth identity of a [StaticAuth].
type User struct {
	Password string
	Grant
}

// StaticAuth authorizes requests against fixed bearer tokens and basic-auth
// users. Its Authorize method is meant for [Proxy.Authorize]. Secrets are
// compared as SHA-256 digests in constant time, so neither their content
// nor their length shows in response times. Fields must not change once it
// is in use.
type StaticAuth struct {
	// Tokens maps bearer tokens to what they grant.
	Tokens map[string]Grant
	// Users maps user names to passwords and what they grant.
	Users map[string]User
	// AnonymousRead lists the modules anyone may read, with or without
	// credentials, in GOPRIVATE syntax; "*" makes the proxy readable by
	// all, publishing and administering still needing credentials.
	AnonymousRead string

	once   sync.Once
	tokens []tokenGrant
	users  map[string]userDigest
}

type tokenGrant struct {
	digest [sha256.Size]byte
	grant  Grant
}

type userDigest struct {
	digest [sha256.Size]byte
	grant  Grant
}

// dummyDigest stands in for a missing user's password, so an unknown user
// costs the same comparison as a known one.
var dummyDigest = sha256.Sum256([]byte("goproxy: no such user"))

func (a *StaticAuth) prepare() {
	a.once.Do(func() {
		for token, g := range a.Tokens {
			a.tokens = append(a.tokens, tokenGrant{sha256.Sum256([]byte(token)), g})
		}
		a.users = make(map[string]userDigest, len(a.Users))
		for name, u := range a.Users {
			a.users[name] = userDigest{sha256.Sum256([]byte(u.Password)), u.Grant}
		}
	})
}

// Authorize implements the [Proxy.Authorize] hook.
func (a *StaticAuth) Authorize(r *http.Request, op Operation, modulePath string) error {
	a.prepare()
	grant, ok := a.identify(r)
	if !ok {
		if op == OpRead && allows(a.AnonymousRead, modulePath) {
			return nil
		}
		return ErrUnauthenticated
	}
	switch op {
	case OpRead:
		// Credentials never reduce access: what anyone may read, an
		// authenticated user may read too. The go command sends its
		// credentials with every request to a proxy, public modules
		// included.
		if allows(grant.Read, modulePath) || allows(grant.Publish, modulePath) || allows(a.AnonymousRead, modulePath) {
			return nil
		}
	case OpPublish:
		if modulePath != "" && module.MatchPrefixPatterns(grant.Publish, modulePath) {
			return nil
		}
	case OpAdminister:
		if grant.Administer {
			return nil
		}
	}
	return errors.New("the credentials do not grant it")
}

// identify finds the grant of the request's credentials.
func (a *StaticAuth) identify(r *http.Request) (Grant, bool) {
	if name, password, ok := r.BasicAuth(); ok {
		u, known := a.users[name]
		want := dummyDigest
		if known {
			want = u.digest
		}
		got := sha256.Sum256([]byte(password))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 && known {
			return u.grant, true
		}
		return Grant{}, false
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return Grant{}, false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	var found Grant
	matched := 0
	// Every token is compared, so the time taken says nothing about
	// which one, if any, matched.
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(got[:], t.digest[:]) == 1 {
			found, matched = t.grant, 1
		}
	}
	return found, matched == 1
}

// allows reports whether patterns grant access to modulePath. Requests
// that concern no one module (checksum database tiles, for instance) are
// allowed to anyone granted any module.
func allows(patterns, modulePath string) bool {
	if patterns == "" {
		return false
	}
	if modulePath == "" {
		return true
	}
	return module.MatchPrefixPatterns(patterns, modulePath)
}
